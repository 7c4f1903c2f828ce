#!/usr/bin/python3
"""Float64 reference of dReLU models (BambooForCausalLM: PowerInfer's Bamboo, TurboSparse-Mistral).

A Mistral body (llama_ref.py computes attention, norms and the LM head) whose MLP applies ReLU
to both projections, as modeling_bamboo.py's BambooMLP does (hidden_act relu):

    mlp(x) = (relu(x Wgate^T) * relu(x Wup^T)) Wdown^T

TurboSparse's activation predictors (model.layers.N.mlp.predictor.*) only guess which neurons
fire; the exact output does not depend on them, so they are not read.

Usage as llama_ref.py: /usr/bin/python3 tools/reference/bamboo_ref.py HF_DIR --tokens 1,5,9
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402


class BambooRef(llama_ref.LlamaRef):
    ARCHS = ("BambooForCausalLM",)
    ACTS = ("relu",)

    def mlp(self, x, i):
        p = f"model.layers.{i}.mlp."
        gate = self.linear(x, p + "gate_proj.weight")
        up = self.linear(x, p + "up_proj.weight")
        return self.linear(torch.relu(gate) * torch.relu(up), p + "down_proj.weight")


if __name__ == "__main__":
    llama_ref.main(BambooRef)
