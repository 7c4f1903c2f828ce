#!/usr/bin/python3
"""Writes the small synthetic Hugging Face test checkpoints (numpy only, deterministic).

    /usr/bin/python3 tests/data/make_checkpoints.py OUT_DIR [--only NAME] [--list]

Each checkpoint is OUT_DIR/<name>/ with config.json, model.safetensors (or shards plus
model.safetensors.index.json), tokenizer.model (copy of tests/data/tokenizer.model) and
tokenizer_config.json. Weights come from np.random.default_rng(<fixed seed per checkpoint>) in
float32 and are then stored in the checkpoint's dtype (bf16 round-to-nearest-even, f16 IEEE), so
the same command always produces byte-identical files. The golden fixtures in tests/data/golden/
were computed from exactly these files (tools/reference/make_golden.py).
"""
import argparse
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "pylib"))
import hfio  # noqa: E402

TOKENIZER = os.path.join(HERE, "tokenizer.model")
VOCAB = 384
MAX_POS = 64

# name: (architecture overrides, dtype, shards, seed)
CHECKPOINTS = {
    "llama_gqa_hd64_relu_f32": dict(
        hidden=256, heads=4, kv=2, head_dim=None, ffn=200, act="relu", tied=False,
        dtype="F32", theta=10000.0, eps=1e-5, layers=2, shards=1, seed=101),
    "llama_mqa_hd128_silu_tied_f32": dict(
        hidden=256, heads=2, kv=1, head_dim=None, ffn=300, act="silu", tied=True,
        dtype="F32", theta=500000.0, eps=1e-6, layers=2, shards=1, seed=102),
    "llama_mha_hd64_relu_bf16": dict(
        hidden=256, heads=4, kv=4, head_dim=None, ffn=264, act="relu", tied=False,
        dtype="BF16", theta=10000.0, eps=1e-5, layers=3, shards=1, seed=103),
    "llama_gqa_hd64_relu_f16_sharded": dict(
        hidden=256, heads=4, kv=2, head_dim=None, ffn=200, act="relu", tied=False,
        dtype="F16", theta=10000.0, eps=1e-5, layers=2, shards=3, seed=104),
    "mistral_headdim_relu_f32": dict(
        hidden=192, heads=4, kv=2, head_dim=64, ffn=232, act="relu", tied=False,
        dtype="F32", theta=10000.0, eps=1e-5, layers=2, shards=1, seed=105, mistral=True),
    "llama_gqa_hd128_relu_tied_bf16": dict(
        hidden=256, heads=4, kv=2, head_dim=128, ffn=200, act="relu", tied=True,
        dtype="BF16", theta=10000.0, eps=1e-5, layers=2, shards=1, seed=106),
    # ProSparse: FATReLU with a threshold large enough that ~8% of the gates fall in (0, t].
    "prosparse_gqa_hd56_fatrelu_f32": dict(
        hidden=224, heads=4, kv=2, head_dim=56, ffn=328, act="fatrelu", threshold=0.3,
        tied=False, dtype="F32", theta=10000.0, eps=1e-5, layers=2, shards=1, seed=107,
        arch="sparsellama"),
    # Bamboo / TurboSparse: dReLU, with a TurboSparse-style predictor tensor the converter skips.
    "bamboo_gqa_drelu_f32": dict(
        hidden=192, heads=6, kv=2, head_dim=None, ffn=250, act="relu", tied=False,
        dtype="F32", theta=10000.0, eps=1e-5, layers=2, shards=1, seed=108, arch="bamboo"),
    # OPT: pre-norm (OPT-125m/1.3b style), and post-norm with project_in/out (OPT-350m style).
    # Byte-level BPE tokenizer (tests/data/bpe); vocab_size pads the embeddings past its pieces.
    "opt_prenorm_f32": dict(
        hidden=192, heads=6, ffn=712, layers=2, embed_dim=None, pre_norm=True, dtype="F32",
        shards=1, seed=109, arch="opt"),
    "opt_postnorm_projected_f32": dict(
        hidden=160, heads=5, ffn=500, layers=3, embed_dim=96, pre_norm=False, dtype="F32",
        shards=1, seed=110, arch="opt"),
}

BPE_DIR = os.path.join(HERE, "bpe")
OPT_VOCAB = 640

# architecture key: (architectures[0], model_type)
ARCHS = {"llama": ("LlamaForCausalLM", "llama"), "mistral": ("MistralForCausalLM", "mistral"),
         "sparsellama": ("SparseLlamaForCausalLM", "sparsellama"),
         "bamboo": ("BambooForCausalLM", "bamboo")}


def arch_of(spec):
    return spec.get("arch", "mistral" if spec.get("mistral", False) else "llama")


def make_opt_config(spec):
    """An OPT config.json as facebook/opt-* publish it (their keys, their defaults spelled out)."""
    return {
        "architectures": ["OPTForCausalLM"], "model_type": "opt",
        "hidden_size": spec["hidden"], "ffn_dim": spec["ffn"],
        "num_hidden_layers": spec["layers"], "num_attention_heads": spec["heads"],
        "word_embed_proj_dim": spec["embed_dim"] or spec["hidden"],
        "vocab_size": OPT_VOCAB, "max_position_embeddings": MAX_POS,
        "activation_function": "relu", "do_layer_norm_before": spec["pre_norm"],
        "enable_bias": True, "layer_norm_elementwise_affine": True,
        "dropout": 0.1, "attention_dropout": 0.0, "layerdrop": 0.0, "init_std": 0.02,
        "use_cache": True, "tie_word_embeddings": True,
        "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1,
    }


def make_opt_tensors(spec):
    """float32 OPT weights, HF names and [out_features, in_features] shapes."""
    rng = np.random.default_rng(spec["seed"])
    h, f, e = spec["hidden"], spec["ffn"], spec["embed_dim"] or spec["hidden"]
    d = "model.decoder."

    def linear(out_f, in_f, gain=1.5):
        return (rng.standard_normal((out_f, in_f)) * (gain / np.sqrt(in_f))).astype(np.float32)

    def bias(n, scale=0.1):
        return (scale * rng.standard_normal(n)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    # The LM head is the (tied) embedding: small, so a token's own row does not dominate.
    t = {d + "embed_tokens.weight": (0.1 * rng.standard_normal((OPT_VOCAB, e))).astype(np.float32),
         d + "embed_positions.weight": (0.5 * rng.standard_normal((MAX_POS + 2, h))).astype(
             np.float32)}
    if spec["embed_dim"]:
        t[d + "project_in.weight"] = linear(h, e)
    for i in range(spec["layers"]):
        p = f"{d}layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[p + f"self_attn.{proj}.weight"] = linear(h, h)
            t[p + f"self_attn.{proj}.bias"] = bias(h)
        t[p + "self_attn_layer_norm.weight"] = norm(h)
        t[p + "self_attn_layer_norm.bias"] = bias(h)
        # fc1's bias is negative on average, as in trained OPT: most neurons are off.
        t[p + "fc1.weight"] = linear(f, h)
        t[p + "fc1.bias"] = (bias(f, 0.3) - 0.5).astype(np.float32)
        t[p + "fc2.weight"] = linear(h, f)
        t[p + "fc2.bias"] = bias(h)
        t[p + "final_layer_norm.weight"] = norm(h)
        t[p + "final_layer_norm.bias"] = bias(h)
    if spec["pre_norm"]:
        t[d + "final_layer_norm.weight"] = norm(h)
        t[d + "final_layer_norm.bias"] = bias(h)
    if spec["embed_dim"]:
        t[d + "project_out.weight"] = linear(e, h, gain=4.0)
    return t


def make_config(spec):
    arch = arch_of(spec)
    mistral = arch in ("mistral", "bamboo")
    cfg = {
        "architectures": [ARCHS[arch][0]],
        "model_type": ARCHS[arch][1],
        "hidden_size": spec["hidden"],
        "intermediate_size": spec["ffn"],
        "num_hidden_layers": spec["layers"],
        "num_attention_heads": spec["heads"],
        "num_key_value_heads": spec["kv"],
    }
    if spec["head_dim"] is not None:
        cfg["head_dim"] = spec["head_dim"]
    cfg.update({
        "vocab_size": VOCAB,
        "hidden_act": spec["act"],
        **({"hidden_act_param": spec["threshold"]} if "threshold" in spec else {}),
        "rms_norm_eps": spec["eps"],
        "rope_theta": spec["theta"],
        "max_position_embeddings": MAX_POS,
        "tie_word_embeddings": spec["tied"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rope_scaling": None,
        "attention_bias": False,
    })
    if mistral:
        cfg["sliding_window"] = None
    return cfg


def make_tensors(spec):
    """float32 weights in hfio.llama_tensor_names order, HF [out_features, in_features] shapes."""
    rng = np.random.default_rng(spec["seed"])
    h, ffn = spec["hidden"], spec["ffn"]
    hd = spec["head_dim"] or h // spec["heads"]
    q_out, kv_out = spec["heads"] * hd, spec["kv"] * hd

    def linear(out_f, in_f, gain=1.5):
        return (rng.standard_normal((out_f, in_f)) * (gain / np.sqrt(in_f))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    shapes = {
        "input_layernorm.weight": None, "post_attention_layernorm.weight": None,
        "self_attn.q_proj.weight": (q_out, h), "self_attn.k_proj.weight": (kv_out, h),
        "self_attn.v_proj.weight": (kv_out, h), "self_attn.o_proj.weight": (h, q_out),
        "mlp.gate_proj.weight": (ffn, h), "mlp.up_proj.weight": (ffn, h),
        "mlp.down_proj.weight": (h, ffn),
    }
    tensors = {}
    for name in hfio.llama_tensor_names(spec["layers"], spec["tied"]):
        if name == "model.embed_tokens.weight":
            # Tied checkpoints get small embeddings: with std 1 the token's own embedding
            # dominates the residual stream and e.e >> e.e', so greedy decoding would just
            # repeat the last token. Untied: std 1 (the first rmsnorm is scale-invariant).
            std = 0.1 if spec["tied"] else 1.0
            t = (std * rng.standard_normal((VOCAB, h))).astype(np.float32)
        elif name == "model.norm.weight":
            t = norm(h)
        elif name == "lm_head.weight":
            t = linear(VOCAB, h, gain=2.0)
        else:
            suffix = name.split(".", 3)[3]  # model.layers.<i>.<suffix>
            shape = shapes[suffix]
            t = norm(h) if shape is None else linear(*shape)
        tensors[name] = t
    if arch_of(spec) == "bamboo":
        # Drawn last, so the model's own weights do not depend on it.
        tensors["model.layers.0.mlp.predictor.fc1.weight"] = linear(16, h)
    return tensors


def write_checkpoint(out_dir, name):
    spec = CHECKPOINTS[name]
    path = os.path.join(out_dir, name)
    if arch_of(spec) == "opt":
        hfio.write_hf_dir(path, make_opt_config(spec), make_opt_tensors(spec), dtype=spec["dtype"])
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(BPE_DIR, f), os.path.join(path, f))
        return path
    hfio.write_hf_dir(path, make_config(spec), make_tensors(spec), dtype=spec["dtype"],
                      tokenizer_model=TOKENIZER, shards=spec["shards"])
    return path


# GGUF files (tests/data/make_gguf.py) of some checkpoints, for tests/gguf_test.cpp:
# OUT_DIR/gguf/<checkpoint>_<dtype>.gguf, <checkpoint>_noact.gguf without llama.hidden_act, and
# <checkpoint>_<dtype>_values.gguf: the f32 values of the <dtype> file's blocks.
GGML_OTHER = ["q4_1", "q5_0", "q5_1", "iq4_nl", "q2_k", "q3_k", "q5_k"]
GGUFS = [("llama_gqa_hd64_relu_f32",
          ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m", "noact"] + GGML_OTHER +
          [k + "_values" for k in GGML_OTHER]),
         ("llama_mqa_hd128_silu_tied_f32", ["f32"]),
         ("prosparse_gqa_hd56_fatrelu_f32", ["f32"])]


def write_ggufs(out_dir):
    import make_gguf
    os.makedirs(os.path.join(out_dir, "gguf"), exist_ok=True)
    paths = []
    for name, kinds in GGUFS:
        for kind in kinds:
            out = os.path.join(out_dir, "gguf", f"{name}_{kind}.gguf")
            dtype = "f32" if kind == "noact" else kind.removesuffix("_values")
            paths.append(make_gguf.make_gguf(os.path.join(out_dir, name), out, dtype,
                                             with_act=kind != "noact",
                                             values=kind.endswith("_values")))
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--only", action="append", choices=sorted(CHECKPOINTS),
                    help="write only this checkpoint (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the checkpoint names and exit")
    args = ap.parse_args()
    if args.list:
        print("\n".join(CHECKPOINTS))
        return
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    for name in args.only or CHECKPOINTS:
        print(write_checkpoint(args.out_dir, name))
    if not args.only:
        for path in write_ggufs(args.out_dir):
            print(path)


if __name__ == "__main__":
    main()
