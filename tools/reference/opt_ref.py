#!/usr/bin/python3
"""Float64 PyTorch reference of OPT (OPTForCausalLM), written from the published modeling math
(Zhang et al. 2022; transformers' modeling_opt.py computes the same), not from zeroskip's C++.

    e = embed_tokens[ids]                          [T, word_embed_proj_dim]
    e = e project_in^T            when word_embed_proj_dim != hidden_size (no bias)
    h = e + embed_positions[pos + 2]               learned positions, OPT's offset of 2
    for each layer (pre-norm: do_layer_norm_before true; post-norm: false, as OPT-350m):
        pre:  h = h + attn(ln1(h));   h = h + ffn(ln2(h))
        post: h = ln1(h + attn(h));   h = ln2(h + ffn(h))
        attn(x) = concat_heads(softmax(q k^T / sqrt(head_dim) + causal mask) v) Wo^T + bo,
                  q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv      (no rotary embedding)
        ffn(x)  = relu(x W1^T + b1) W2^T + b2      (fc1, fc2)
    h = final_layer_norm(h)       only when do_layer_norm_before
    h = h project_out^T           when word_embed_proj_dim != hidden_size
    logits = h embed_tokens^T                      (the LM head is tied)

    layernorm(x) = (x - mean(x)) / sqrt(var(x) + 1e-5) * weight + bias     (biased variance)

Usage as llama_ref.py: /usr/bin/python3 tools/reference/opt_ref.py HF_DIR --tokens 2,5,9
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import quant  # noqa: E402

hfio = llama_ref.hfio
POSITION_OFFSET = 2
LAYER_NORM_EPS = 1e-5


class OptConfig:
    def __init__(self, cfg):
        arch = (cfg.get("architectures") or ["OPTForCausalLM"])[0]
        if arch != "OPTForCausalLM":
            raise ValueError(f"unsupported architecture {arch}")
        if cfg.get("activation_function", "relu") != "relu":
            raise ValueError("only activation_function relu")
        if not cfg.get("enable_bias", True) or not cfg.get("layer_norm_elementwise_affine", True):
            raise ValueError("enable_bias and layer_norm_elementwise_affine must be true")
        self.hidden = cfg["hidden_size"]
        self.embed_dim = cfg.get("word_embed_proj_dim") or self.hidden
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.head_dim = self.hidden // self.n_heads
        self.ffn = cfg["ffn_dim"]
        self.vocab = cfg["vocab_size"]
        self.max_pos = cfg["max_position_embeddings"]
        self.pre_norm = bool(cfg.get("do_layer_norm_before", True))
        self.projected = self.embed_dim != self.hidden


class OptRef:
    ARCHS = ("OPTForCausalLM",)

    def __init__(self, hf_dir, weights=None):
        cfg, tensors = hfio.read_hf_dir(hf_dir)
        if weights is not None:
            tensors, _ = quant.as_converted(tensors, weights)
        self.cfg = OptConfig(cfg)
        self.raw_cfg = cfg
        self.w = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in tensors.items()}
        self._check_shapes()

    def _check_shapes(self):
        c = self.cfg
        d, h, f = "model.decoder.", c.hidden, c.ffn
        want = {d + "embed_tokens.weight": (c.vocab, c.embed_dim),
                d + "embed_positions.weight": (c.max_pos + POSITION_OFFSET, h)}
        if c.pre_norm:
            want.update({d + "final_layer_norm.weight": (h,), d + "final_layer_norm.bias": (h,)})
        if c.projected:
            want.update({d + "project_in.weight": (h, c.embed_dim),
                         d + "project_out.weight": (c.embed_dim, h)})
        for i in range(c.n_layers):
            p = f"{d}layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                want[p + f"self_attn.{proj}.weight"] = (h, h)
                want[p + f"self_attn.{proj}.bias"] = (h,)
            for norm in ("self_attn_layer_norm", "final_layer_norm"):
                want[p + norm + ".weight"] = (h,)
                want[p + norm + ".bias"] = (h,)
            want.update({p + "fc1.weight": (f, h), p + "fc1.bias": (f,),
                         p + "fc2.weight": (h, f), p + "fc2.bias": (h,)})
        for name, shape in want.items():
            if name not in self.w:
                raise ValueError(f"missing tensor {name}")
            if tuple(self.w[name].shape) != shape:
                raise ValueError(f"{name}: shape {tuple(self.w[name].shape)}, expected {shape}")

    def linear(self, x, name, bias=True):
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if bias else y

    def layernorm(self, x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + LAYER_NORM_EPS) * self.w[name + ".weight"] \
            + self.w[name + ".bias"]

    def attention(self, x, p):
        c = self.cfg
        T = x.shape[0]
        q, k, v = (self.linear(x, p + f"self_attn.{n}").view(T, c.n_heads, c.head_dim)
                   .transpose(0, 1) for n in ("q_proj", "k_proj", "v_proj"))
        scores = q @ k.transpose(1, 2) / math.sqrt(c.head_dim)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(mask, float("-inf"))
        a = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(T, c.hidden)
        return self.linear(a, p + "self_attn.out_proj")

    def ffn(self, x, p):
        return self.linear(torch.relu(self.linear(x, p + "fc1")), p + "fc2")

    def forward(self, tokens):
        """tokens: list of ids -> float64 logits [len(tokens), vocab]."""
        c, d = self.cfg, "model.decoder."
        T = len(tokens)
        if T == 0 or T > c.max_pos:
            raise ValueError("sequence empty or longer than max_position_embeddings")
        if any(t < 0 or t >= c.vocab for t in tokens):
            raise ValueError("token id out of range")
        h = self.w[d + "embed_tokens.weight"][torch.tensor(tokens, dtype=torch.long)]
        if c.projected:
            h = self.linear(h, d + "project_in", bias=False)
        h = h + self.w[d + "embed_positions.weight"][POSITION_OFFSET:POSITION_OFFSET + T]
        for i in range(c.n_layers):
            p = f"{d}layers.{i}."
            if c.pre_norm:
                h = h + self.attention(self.layernorm(h, p + "self_attn_layer_norm"), p)
                h = h + self.ffn(self.layernorm(h, p + "final_layer_norm"), p)
            else:
                h = self.layernorm(h + self.attention(h, p), p + "self_attn_layer_norm")
                h = self.layernorm(h + self.ffn(h, p), p + "final_layer_norm")
        if c.pre_norm:
            h = self.layernorm(h, d + "final_layer_norm")
        if c.projected:
            h = self.linear(h, d + "project_out", bias=False)
        return h @ self.w[d + "embed_tokens.weight"].T

    greedy = llama_ref.LlamaRef.greedy


if __name__ == "__main__":
    llama_ref.main(OptRef)
