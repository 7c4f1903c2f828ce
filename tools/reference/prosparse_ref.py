#!/usr/bin/python3
"""Float64 reference of ProSparse (SparseLlamaForCausalLM, SparseLLM/prosparse-llama-2-*).

A Llama body (llama_ref.py computes attention, norms and the LM head) whose MLP activation is
FATReLU, the "shifted ReLU" of the ProSparse paper, with the threshold t = hidden_act_param:

    fatrelu(g) = g  if g > t  else 0        (vLLM's fatrelu_and_mul: x > threshold ? x : 0)
    mlp(x)     = (fatrelu(x Wgate^T) * (x Wup^T)) Wdown^T

Usage as llama_ref.py: /usr/bin/python3 tools/reference/prosparse_ref.py HF_DIR --tokens 1,5,9
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402


class ProSparseRef(llama_ref.LlamaRef):
    ARCHS = ("SparseLlamaForCausalLM",)
    ACTS = ("fatrelu",)

    def __init__(self, hf_dir, weights=None):
        super().__init__(hf_dir, weights)
        t = self.raw_cfg.get("hidden_act_param")
        if t is None or not t >= 0:
            raise ValueError("fatrelu needs hidden_act_param >= 0")
        self.threshold = float(t)

    # The closest any gate came to the threshold (make_golden.py resets it per candidate).
    min_threshold_gap = float("inf")

    def act(self, x):
        gap = float((x - self.threshold).abs().min())
        self.min_threshold_gap = min(self.min_threshold_gap, gap)
        return torch.where(x > self.threshold, x, torch.zeros_like(x))


if __name__ == "__main__":
    llama_ref.main(ProSparseRef)
