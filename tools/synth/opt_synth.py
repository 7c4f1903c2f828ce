#!/usr/bin/python3
"""Synthetic OPT checkpoint of a realistic size, for sparse vs dense decode benchmarks.

    /usr/bin/python3 tools/synth/opt_synth.py OUT_DIR [--hidden 2048 --ffn 8192 --layers 12
        --heads 32 --vocab 50272 --dtype BF16 --sparsity 0.9 --seed 0]

An OPTForCausalLM directory (config.json in OPT's keys, model.safetensors streamed tensor by
tensor, and tests/data/bpe's vocab.json + merges.txt as its tokenizer). Weights are Gaussian
(fan-in scaled), LayerNorm weights 1 and biases 0, so fc1's input after the pre-norm has unit
variance per element and fc1·x is about N(0, 1) per neuron: fc1's bias is then the N(0, 1)
quantile of `sparsity`, negated (-1.28 for 0.9), which makes that fraction of relu(fc1·x + b) zero
on average (engine-measured zeros are what BENCHMARKS.md reports). Like tools/synth/synth.py it
is for timing only: the text it generates is noise.
"""
import argparse
import json
import os
import shutil
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stream_writer  # noqa: E402

BPE_DIR = os.path.join(HERE, "..", "..", "tests", "data", "bpe")
MAX_POS = 2048


def tensor_specs(a):
    d, h, f, e = "model.decoder.", a.hidden, a.ffn, a.hidden
    specs = [(d + "embed_tokens.weight", (a.vocab, e)),
             (d + "embed_positions.weight", (MAX_POS + 2, h))]
    for i in range(a.layers):
        p = f"{d}layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            specs += [(p + f"self_attn.{proj}.weight", (h, h)), (p + f"self_attn.{proj}.bias", (h,))]
        specs += [(p + "self_attn_layer_norm.weight", (h,)), (p + "self_attn_layer_norm.bias", (h,)),
                  (p + "fc1.weight", (f, h)), (p + "fc1.bias", (f,)),
                  (p + "fc2.weight", (h, f)), (p + "fc2.bias", (h,)),
                  (p + "final_layer_norm.weight", (h,)), (p + "final_layer_norm.bias", (h,))]
    specs += [(d + "final_layer_norm.weight", (h,)), (d + "final_layer_norm.bias", (h,))]
    return specs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=50272)
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="BF16")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not 0 < a.sparsity < 1:
        ap.error("--sparsity must be in (0, 1)")
    os.makedirs(a.out_dir, exist_ok=True)
    config = {"architectures": ["OPTForCausalLM"], "model_type": "opt",
              "hidden_size": a.hidden, "ffn_dim": a.ffn, "num_hidden_layers": a.layers,
              "num_attention_heads": a.heads, "word_embed_proj_dim": a.hidden,
              "vocab_size": a.vocab, "max_position_embeddings": MAX_POS,
              "activation_function": "relu", "do_layer_norm_before": True,
              "enable_bias": True, "layer_norm_elementwise_affine": True,
              "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 2,
              "pad_token_id": 1,
              "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[a.dtype]}
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(BPE_DIR, name), os.path.join(a.out_dir, name))
    bias = statistics.NormalDist().inv_cdf(a.sparsity)  # P(z + b <= 0) = sparsity
    rng = np.random.default_rng(a.seed)
    specs = tensor_specs(a)
    with stream_writer.StreamWriter(a.out_dir, specs, dtype=a.dtype) as w:
        for name, shape in specs:
            if name.endswith("layer_norm.weight"):
                w.write(name, np.ones(shape, np.float32))
            elif name.endswith("fc1.bias"):
                w.write(name, np.full(shape, -bias, np.float32))
            elif name.endswith(".bias"):
                w.write(name, np.zeros(shape, np.float32))
            else:
                std = 0.02 if "embed" in name else 1.0 / np.sqrt(shape[1])
                for r0 in range(0, shape[0], 1024):
                    rows = min(1024, shape[0] - r0)
                    w.write(name, (std * rng.standard_normal((rows, shape[1]))).astype(np.float32))
    print(f"wrote {a.out_dir}")


if __name__ == "__main__":
    main()
