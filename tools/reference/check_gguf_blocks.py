#!/usr/bin/python3
"""Checks that `zeroskip convert` kept a GGUF's quantized blocks: every tensor of the .zsk in its
GGUF type, stored in the GGUF's layout byte for byte, and ffn_down (stored transposed) exactly its
dequantized values transposed and quantized again by tools/reference/quant.py.

    /usr/bin/python3 tools/reference/check_gguf_blocks.py MODEL.gguf MODEL.zsk

Reads both files itself (numpy only): the GGUF's header (v2/v3, little-endian) and the .zsk's
tensor table (docs/FORMAT.md, "Tensor record"). attn_q and attn_k rows are compared through
llama.cpp's rotary permutation (docs/FORMAT.md, "GGUF input"). Prints one line per tensor and a
summary; exits 1 if any tensor differs. Types other than f32/f16/bf16/q8_0/q4_0/q4_K/q6_K are
reported as unchecked.
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant  # noqa: E402

# ggml type -> (.zsk dtype code, bytes per block, elements per block)
GGML = {0: (0, 4, 1), 1: (1, 2, 1), 30: (2, 2, 1), 8: (3, 34, 32), 2: (4, 18, 32),
        12: (5, 144, 256), 14: (6, 210, 256)}
K_NAME = {12: "q4k", 14: "q6k"}
TYPE_NAME = {0: "f32", 1: "f16", 30: "bf16", 8: "q8_0", 2: "q4_0", 12: "q4_K", 14: "q6_K"}


def read_gguf(path):
    """-> (metadata {key: value}, {name: (dims fastest first, ggml type, bytes)})."""
    data = open(path, "rb").read()
    at = 0

    def take(fmt):
        nonlocal at
        v = struct.unpack_from("<" + fmt, data, at)
        at += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal at
        n = take("Q")
        at += n
        return data[at - n:at].decode()

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
              12: "d"}

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            return [value(et) for _ in range(n)]
        return take(scalar[t])

    assert data[:4] == b"GGUF", "not a GGUF file"
    at = 4
    take("I")  # version
    n_tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        infos.append((name, dims, take("I"), take("Q")))
    align = meta.get("general.alignment", 32)
    base = (at + align - 1) // align * align
    tensors = {}
    for name, dims, gtype, offset in infos:
        _, block_bytes, block_elems = GGML.get(gtype, (None, 0, 1))
        n = int(np.prod(dims)) // block_elems * block_bytes
        tensors[name] = (dims, gtype, data[base + offset:base + offset + n])
    return meta, tensors


def read_zsk(path):
    """-> {name: (dtype code, layout, shape, bytes)}."""
    data = open(path, "rb").read()
    table, count = struct.unpack_from("<QQ", data, 56)
    out = {}
    for i in range(count):
        r = table + 192 * i
        name = data[r:r + 96].split(b"\0")[0].decode()
        dtype, layout, rank = struct.unpack_from("<III", data, r + 96)
        shape = struct.unpack_from("<4Q", data, r + 112)[:rank]
        offset, nbytes = struct.unpack_from("<QQ", data, r + 144)
        out[name] = (dtype, layout, shape, data[offset:offset + nbytes])
    return out


def zsk_name(ggml_name):
    base = ggml_name.removesuffix(".weight")
    if base == "token_embd":
        return "tok_embeddings"
    if base.startswith("blk."):
        return "layers." + base[4:]
    return base


def unpermute_rows(rows, n_head):
    """llama.cpp's rotary row order -> the Hugging Face one (rows: [out, row bytes]): ggml row
    h*hd + 2i + j is row h*hd + j*hd/2 + i here."""
    hd = rows.shape[0] // n_head
    return rows.reshape(n_head, hd // 2, 2, -1).swapaxes(1, 2).reshape(rows.shape)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    meta, gguf = read_gguf(sys.argv[1])
    zsk = read_zsk(sys.argv[2])
    heads = {"attn_q": meta["llama.attention.head_count"],
             "attn_k": meta.get("llama.attention.head_count_kv",
                                meta["llama.attention.head_count"])}
    counts, bad = {}, 0
    for name, (dims, gtype, raw) in gguf.items():
        z = zsk.get(zsk_name(name))
        if z is None or gtype not in GGML:
            print(f"{name}: unchecked ({'not in the .zsk' if z is None else f'ggml type {gtype}'})")
            continue
        dtype, layout, shape, stored = z
        rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
        src = np.frombuffer(raw, np.uint8).reshape(rows, -1)
        role = name.split(".")[2] if name.startswith("blk.") else name
        if dtype != GGML[gtype][0]:
            verdict = "TYPE DIFFERS"
        elif layout == 0:
            want = unpermute_rows(src, heads[role]) if role in heads else src
            verdict = "copied" if want.tobytes() == stored else "BYTES DIFFER"
        elif gtype in K_NAME:
            kind = K_NAME[gtype]
            values = quant.dequantize_k(src.reshape(rows, -1, GGML[gtype][1]), kind)
            again = quant.quantize_k(np.ascontiguousarray(values.reshape(rows, -1).T), kind)
            verdict = "requantized exactly" if again.tobytes() == stored else "BYTES DIFFER"
        else:
            verdict = "unchecked (transposed, not a K-quant)"
        bad += verdict.isupper()
        key = f"{TYPE_NAME[gtype]} {verdict}"
        counts[key] = counts.get(key, 0) + 1
        print(f"{name}: {TYPE_NAME[gtype]} -> {zsk_name(name)}: {verdict}")
    print("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=str)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
