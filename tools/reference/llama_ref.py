#!/usr/bin/python3
"""Float64 PyTorch reference of the Hugging Face LlamaForCausalLM / MistralForCausalLM forward.

This is the correctness oracle for zeroskip. It does not use transformers: it reads the HF
directory with tools/pylib/hfio.py (bf16/f16 weights are widened exactly) and spells out the
forward pass of transformers' modeling_llama.py in float64:

    h = embed_tokens[ids]
    for each layer:
        x  = rmsnorm(h, input_layernorm)
        q, k, v = x Wq^T, x Wk^T, x Wv^T            split into heads of head_dim
        q, k = rope(q), rope(k)                      rotate-half convention, rope_theta
        k, v repeated n_heads / n_kv_heads times     (GQA / MQA)
        a  = softmax(q k^T / sqrt(head_dim) + causal mask) v
        h  = h + a Wo^T
        x  = rmsnorm(h, post_attention_layernorm)
        h  = h + (act(x Wgate^T) * (x Wup^T)) Wdown^T   act = relu | silu
    logits = rmsnorm(h, norm) Wlm^T                  Wlm = embed_tokens when tied

    rmsnorm(x, w) = x / sqrt(mean(x^2) + eps) * w

Usage:
    /usr/bin/python3 tools/reference/llama_ref.py HF_DIR --tokens 1,5,9 [--greedy N]
prints JSON {"tokens", "logits": [[vocab floats] per position]} or, with --greedy N,
{"tokens", "continuation": [N ids], "margins": [top1 - top2 per step], "max_abs_logit": [...]}.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hfio  # noqa: E402
import quant  # noqa: E402

DT = torch.float64
SUPPORTED_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM")


class Config:
    def __init__(self, cfg, archs=SUPPORTED_ARCHS, acts=("relu", "silu")):
        arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        if arch not in archs:
            raise ValueError(f"unsupported architecture {arch}")
        if cfg.get("rope_scaling") is not None:
            raise ValueError("rope_scaling is not supported by the reference")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ValueError("attention_bias / mlp_bias are not supported by the reference")
        self.arch = arch
        self.hidden = cfg["hidden_size"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        # HF: head_dim defaults to hidden_size // num_attention_heads when absent or null.
        self.head_dim = cfg.get("head_dim") or self.hidden // self.n_heads
        self.ffn = cfg["intermediate_size"]
        self.vocab = cfg["vocab_size"]
        self.act = cfg.get("hidden_act", "silu")
        if self.act not in acts:
            raise ValueError(f"unsupported hidden_act {self.act}")
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.max_pos = cfg.get("max_position_embeddings")
        self.sliding_window = cfg.get("sliding_window")  # Mistral; None = full attention
        if self.n_heads % self.n_kv:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


class LlamaRef:
    # What this class computes; the families on a Llama body (prosparse_ref.py, bamboo_ref.py)
    # subclass it with their own names and MLP.
    ARCHS = SUPPORTED_ARCHS
    ACTS = ("relu", "silu")

    def __init__(self, hf_dir, weights=None):
        """weights: None (the checkpoint's values) or "q8" / "q4" / "bf16": the values
        `zeroskip convert --dtype` stores (quant.py), and for q8/q4 the products with a quantized
        matrix read their input quantized per block, as zeroskip's decode kernels do (the
        FFN down projection excepted: its kernel reads the activations as they are)."""
        cfg, tensors = hfio.read_hf_dir(hf_dir)
        self.quantized_inputs = set()
        if weights is not None:
            tensors, quantized = quant.as_converted(tensors, weights)
            self.quantized_inputs = {n for n in quantized if not n.endswith("down_proj.weight")}
        self.cfg = Config(cfg, self.ARCHS, self.ACTS)
        self.raw_cfg = cfg
        # float32 (already exact widenings of bf16/f16) -> float64, exactly.
        self.w = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in tensors.items()}
        c = self.cfg
        self.lm_head_name = "model.embed_tokens.weight" if c.tied else "lm_head.weight"
        self.lm_head = self.w[self.lm_head_name]
        self._check_shapes()

    def _check_shapes(self):
        c = self.cfg
        hd, h = c.head_dim, c.hidden
        want = {"model.embed_tokens.weight": (c.vocab, h), "model.norm.weight": (h,)}
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            want.update({
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (c.n_heads * hd, h),
                p + "self_attn.k_proj.weight": (c.n_kv * hd, h),
                p + "self_attn.v_proj.weight": (c.n_kv * hd, h),
                p + "self_attn.o_proj.weight": (h, c.n_heads * hd),
                p + "mlp.gate_proj.weight": (c.ffn, h),
                p + "mlp.up_proj.weight": (c.ffn, h),
                p + "mlp.down_proj.weight": (h, c.ffn),
            })
        if not c.tied:
            want["lm_head.weight"] = (c.vocab, h)
        for name, shape in want.items():
            if name not in self.w:
                raise ValueError(f"missing tensor {name}")
            if tuple(self.w[name].shape) != shape:
                raise ValueError(f"{name}: shape {tuple(self.w[name].shape)}, expected {shape}")

    # ---- building blocks -------------------------------------------------------------------
    def linear(self, x, name):
        """x W^T for the HF weight `name` ([out, in])."""
        if name in self.quantized_inputs:
            x = torch.from_numpy(quant.quantize_activations(x.numpy()))
        return x @ self.w[name].T

    def rmsnorm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps) * weight

    def rope_cos_sin(self, n):
        hd = self.cfg.head_dim
        inv_freq = 1.0 / (self.cfg.theta ** (torch.arange(0, hd, 2, dtype=DT) / hd))
        pos = torch.arange(n, dtype=DT)
        freqs = torch.outer(pos, inv_freq)           # [T, hd/2]
        emb = torch.cat([freqs, freqs], dim=-1)      # [T, hd]
        return emb.cos(), emb.sin()

    @staticmethod
    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

    def apply_rope(self, x, cos, sin):
        # x: [heads, T, hd]; cos/sin: [T, hd]
        return x * cos + self.rotate_half(x) * sin

    def act(self, x):
        return torch.relu(x) if self.cfg.act == "relu" else x * torch.sigmoid(x)

    def attention(self, x, i, cos, sin):
        c, p = self.cfg, f"model.layers.{i}.self_attn."
        T, hd = x.shape[0], c.head_dim
        q = self.linear(x, p + "q_proj.weight").view(T, c.n_heads, hd).transpose(0, 1)
        k = self.linear(x, p + "k_proj.weight").view(T, c.n_kv, hd).transpose(0, 1)
        v = self.linear(x, p + "v_proj.weight").view(T, c.n_kv, hd).transpose(0, 1)
        q, k = self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin)
        rep = c.n_heads // c.n_kv                    # query head j uses kv head j // rep
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)   # [heads, T, T]
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # key position > query position
        scores = scores.masked_fill(mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = (probs @ v).transpose(0, 1).reshape(T, c.n_heads * hd)
        return self.linear(out, p + "o_proj.weight")

    def mlp(self, x, i):
        p = f"model.layers.{i}.mlp."
        gate = self.linear(x, p + "gate_proj.weight")
        up = self.linear(x, p + "up_proj.weight")
        return self.linear(self.act(gate) * up, p + "down_proj.weight")

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, tokens):
        """tokens: list of ids -> float64 logits tensor [len(tokens), vocab]."""
        c = self.cfg
        T = len(tokens)
        if T == 0:
            raise ValueError("empty token list")
        if any(t < 0 or t >= c.vocab for t in tokens):
            raise ValueError("token id out of range")
        if c.sliding_window is not None and T > c.sliding_window:
            raise ValueError("sequence longer than sliding_window is not supported")
        cos, sin = self.rope_cos_sin(T)
        h = self.w["model.embed_tokens.weight"][torch.tensor(tokens, dtype=torch.long)]
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            h = h + self.attention(self.rmsnorm(h, self.w[p + "input_layernorm.weight"]), i,
                                   cos, sin)
            h = h + self.mlp(self.rmsnorm(h, self.w[p + "post_attention_layernorm.weight"]), i)
        h = self.rmsnorm(h, self.w["model.norm.weight"])
        return self.linear(h, self.lm_head_name)

    def greedy(self, tokens, n):
        """n greedy steps (argmax, EOS treated like any other token), recomputing the full
        sequence each step. -> (continuation, [top1 - top2], [max |logit|]) per step."""
        seq, cont, margins, maxabs = list(tokens), [], [], []
        for _ in range(n):
            logits = self.forward(seq)[-1]
            top2 = torch.topk(logits, 2)
            nxt = int(top2.indices[0])
            margins.append(float(top2.values[0] - top2.values[1]))
            maxabs.append(float(logits.abs().max()))
            cont.append(nxt)
            seq.append(nxt)
        return cont, margins, maxabs


def reference_class(hf_dir):
    """The reference of the checkpoint's architecture (config.json architectures[0])."""
    import bamboo_ref  # noqa: E402  (they import this module)
    import opt_ref  # noqa: E402
    import prosparse_ref  # noqa: E402
    with open(os.path.join(hf_dir, "config.json")) as f:
        arch = (json.load(f).get("architectures") or ["LlamaForCausalLM"])[0]
    for cls in (LlamaRef, prosparse_ref.ProSparseRef, bamboo_ref.BambooRef, opt_ref.OptRef):
        if arch in cls.ARCHS:
            return cls
    raise ValueError(f"no reference for architecture {arch}")


def main(cls=LlamaRef):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,5,9")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="print an N-token greedy continuation instead of logits")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    model = cls(args.hf_dir)
    with torch.no_grad():
        if args.greedy:
            cont, margins, maxabs = model.greedy(tokens, args.greedy)
            out = {"tokens": tokens, "continuation": cont, "margins": margins,
                   "max_abs_logit": maxabs}
        else:
            out = {"tokens": tokens, "logits": model.forward(tokens).tolist()}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
