#!/usr/bin/python3
"""Writes a llama-architecture GGUF from a Hugging Face test checkpoint, as llama.cpp's
convert_hf_to_gguf.py lays one out (numpy only, deterministic).

    /usr/bin/python3 tests/data/make_gguf.py HF_DIR OUT.gguf
                                            [--dtype f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|
                                                     iq4_nl|q2_k|q3_k|q4_k|q5_k|q6_k|q4_k_m]
                                            [--values] [--no-act] [--version 2|3]

GGUF v3, little-endian, alignment 32. Metadata: general.architecture "llama", the llama.* sizes,
rope and norm keys, tokenizer.ggml.{model "llama", tokens, scores, token_type, bos/eos/unknown ids}
read from tokenizer.model (tools/pylib/spm_model.py: no sentencepiece module needed), and (unless
--no-act) llama.hidden_act (and llama.hidden_act_param), the keys zeroskip reads for the
activation. Tensors under llama.cpp's names (token_embd, blk.N.attn_q, ..., output), dims in ggml
order (fastest first); the rows of attn_q and attn_k permuted as llama.cpp does for its rotary
layout; norms f32, matrices in --dtype (q8_0/q4_0/q4_K/q6_K blocks from
tools/reference/quant.py, ggml's layout; the other ggml types from
tools/reference/ggml_quants.py's plain quantizer; f32 for a matrix whose rows are not whole blocks
of 32, or of 256 for the K-quants). q4_k_m mixes types as llama.cpp's Q4_K_M does: q6_K for
attn_v, ffn_down and output.weight of its use_more_bits layers, q4_K for the other matrices.
--values writes, in f32, the values those blocks hold (ggml_quants.py's dequantization): what
converting the quantized file must read. The same input always gives the same bytes. Test code:
trusts its input.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "pylib"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "reference"))
import ggml_quants  # noqa: E402
import hfio  # noqa: E402
import quant  # noqa: E402
import spm_model  # noqa: E402

ALIGN = 32
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "q4_k": 12, "q6_k": 14, "bf16": 30,
        **ggml_quants.GGML_CODES}


def s(text):
    b = text.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def value(vtype, v):
    if vtype == STRING:
        return s(v)
    if vtype == ARRAY:
        etype, items = v
        return struct.pack("<IQ", etype, len(items)) + b"".join(value(etype, x) for x in items)
    fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
           U64: "Q", I64: "q", F64: "d"}[vtype]
    return struct.pack("<" + fmt, v)


def use_more_bits(layer, layers):
    """llama.cpp's (src/llama-quant.cpp): the layers whose attn_v and ffn_down Q4_K_M keeps Q6_K."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def q4_k_m_type(ggml_name, layers):
    parts = ggml_name.split(".")
    if ggml_name == "output.weight" or (
            parts[0] == "blk" and parts[2] in ("attn_v", "ffn_down")
            and use_more_bits(int(parts[1]), layers)):
        return "q6_k"
    return "q4_k"


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute: HF rotate-half rows -> ggml's interleaved rotary rows."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def encode(t, dtype):
    if dtype == "f32":
        return t.astype("<f4").tobytes()
    if dtype == "f16":
        return t.astype("<f2").tobytes()
    if dtype == "bf16":
        return hfio.encode(t, "BF16")
    rows = t.reshape(-1, t.shape[-1])
    if dtype in ggml_quants.GGML_CODES:
        return ggml_quants.quantize(rows, dtype)
    if dtype in ("q4_k", "q6_k"):
        return quant.quantize_k(rows, dtype.replace("_", "")).tobytes()
    d, levels = quant.quantize(rows, dtype[:2])
    return quant.to_bytes(d, levels, dtype[:2])


def tokenizer_metadata(path):
    sp = spm_model.load(path)
    # llama.cpp's token types: user-defined pieces are written as normal ones, as before.
    gguf_type = {spm_model.UNKNOWN: 2, spm_model.CONTROL: 3, spm_model.BYTE: 6, spm_model.UNUSED: 5}
    meta = [("tokenizer.ggml.model", STRING, "llama"),
            ("tokenizer.ggml.tokens", ARRAY, (STRING, [p[0] for p in sp.pieces])),
            ("tokenizer.ggml.scores", ARRAY, (F32, [p[1] for p in sp.pieces])),
            ("tokenizer.ggml.token_type", ARRAY,
             (I32, [gguf_type.get(p[2], 1) for p in sp.pieces])),
            ("tokenizer.ggml.unknown_token_id", U32, sp.unk_id)]
    if sp.bos_id >= 0:
        meta.append(("tokenizer.ggml.bos_token_id", U32, sp.bos_id))
    if sp.eos_id >= 0:
        meta.append(("tokenizer.ggml.eos_token_id", U32, sp.eos_id))
    return meta


def make_gguf(hf_dir, out, dtype="f32", with_act=True, version=3, values=False):
    meta, tensors = build(hf_dir, dtype, with_act, values)
    with open(out, "wb") as f:
        f.write(serialize(meta, tensors, version))
    return out


def build(hf_dir, dtype="f32", with_act=True, values=False):
    """-> (metadata [(key, type, value)], tensors [(name, dims, ggml type, data bytes)]).
    values: the matrices as the f32 values of dtype's blocks (ggml_quants.py's types only)."""
    cfg, tensors = hfio.read_hf_dir(hf_dir)
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or h // heads
    meta = [("general.architecture", STRING, "llama"),
            ("general.name", STRING, os.path.basename(os.path.normpath(hf_dir))),
            ("general.alignment", U32, ALIGN),
            ("llama.context_length", U32, cfg.get("max_position_embeddings", 2048)),
            ("llama.embedding_length", U32, h),
            ("llama.block_count", U32, cfg["num_hidden_layers"]),
            ("llama.feed_forward_length", U32, cfg["intermediate_size"]),
            ("llama.rope.dimension_count", U32, head_dim),
            ("llama.attention.head_count", U32, heads),
            ("llama.attention.head_count_kv", U32, kv),
            ("llama.attention.layer_norm_rms_epsilon", F32, cfg.get("rms_norm_eps", 1e-6)),
            ("llama.rope.freq_base", F32, cfg.get("rope_theta", 10000.0))]
    if cfg.get("head_dim"):
        meta += [("llama.attention.key_length", U32, head_dim),
                 ("llama.attention.value_length", U32, head_dim)]
    if with_act:
        meta.append(("llama.hidden_act", STRING, cfg.get("hidden_act", "silu")))
        if "hidden_act_param" in cfg:
            meta.append(("llama.hidden_act_param", F32, cfg["hidden_act_param"]))
    meta += tokenizer_metadata(os.path.join(hf_dir, "tokenizer.model"))

    names = [("model.embed_tokens.weight", "token_embd.weight", 0)]
    roles = [("input_layernorm", "attn_norm", 0), ("self_attn.q_proj", "attn_q", heads),
             ("self_attn.k_proj", "attn_k", kv), ("self_attn.v_proj", "attn_v", 0),
             ("self_attn.o_proj", "attn_output", 0), ("post_attention_layernorm", "ffn_norm", 0),
             ("mlp.gate_proj", "ffn_gate", 0), ("mlp.up_proj", "ffn_up", 0),
             ("mlp.down_proj", "ffn_down", 0)]
    for i in range(cfg["num_hidden_layers"]):
        names += [(f"model.layers.{i}.{hf}.weight", f"blk.{i}.{g}.weight", p) for hf, g, p in roles]
    names.append(("model.norm.weight", "output_norm.weight", 0))
    if "lm_head.weight" in tensors and not cfg.get("tie_word_embeddings", False):
        names.append(("lm_head.weight", "output.weight", 0))

    out = []
    for hf, g, n_head in names:
        t = np.asarray(tensors[hf], dtype=np.float32)
        if n_head:
            t = permute(t, n_head)
        tdtype = "f32" if t.ndim == 1 else dtype
        if tdtype == "q4_k_m":
            tdtype = q4_k_m_type(g, cfg["num_hidden_layers"])
        block = 256 if tdtype.endswith("_k") else 32
        if tdtype not in ("f32", "f16", "bf16") and t.shape[-1] % block:
            tdtype = "f32"  # rows not whole blocks: llama.cpp falls back to another type too
        data = encode(t, tdtype)
        if values and tdtype in ggml_quants.GGML_CODES:
            tdtype, data = "f32", ggml_quants.dequantize(data, tdtype).astype("<f4").tobytes()
        out.append((g, list(reversed(t.shape)), GGML[tdtype], data))
    return meta, out


def serialize(meta, tensors, version=3, offsets=None):
    """The file's bytes; `offsets` (optional) overrides each tensor's recorded offset."""
    infos, blobs, offset = [], [], 0
    for k, (name, dims, gtype, data) in enumerate(tensors):
        recorded = offset if offsets is None else offsets[k]
        infos.append(s(name) + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", d) for d in dims) +
                     struct.pack("<IQ", gtype, recorded))
        pad = (-len(data)) % ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos), len(meta))
    head += b"".join(s(k) + struct.pack("<I", t) + value(t, v) for k, t, v in meta)
    head += b"".join(infos)
    head += b"\0" * ((-len(head)) % ALIGN)
    return head + b"".join(blobs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="f32", choices=sorted(GGML) + ["q4_k_m"])
    ap.add_argument("--values", action="store_true",
                    help="the f32 values of --dtype's blocks instead of the blocks")
    ap.add_argument("--no-act", action="store_true", help="leave out llama.hidden_act")
    ap.add_argument("--version", type=int, default=3, choices=[2, 3])
    args = ap.parse_args()
    print(make_gguf(args.hf_dir, args.out, args.dtype, not args.no_act, args.version,
                    args.values))


if __name__ == "__main__":
    main()
