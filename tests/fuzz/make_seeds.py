#!/usr/bin/python3
"""Writes the small seed corpus of the fuzz targets (deterministic; numpy only for the tiny
checkpoint). The committed corpus/<target>/seed-* files came from this script; everything else in
corpus/ came from fuzzing (minimized with -merge=1) or is a crash reproducer (crash-*).

    /usr/bin/python3 tests/fuzz/make_seeds.py [--zeroskip BUILD/zeroskip]

With --zeroskip, also converts a tiny checkpoint (hidden 16, 1 layer, vocab 384, f16, the test
tokenizer) into corpus/zsk_header/seed-converted.zsk and takes its safetensors header and
config.json as seeds too.

The tokenizer seeds are the two committed tokenizer.model files and edits of them (hostile and
builtin normalizer charsmaps, self-test samples, a cut); the ones trained here in memory (unigram,
char and word models, NFKC rules) need python3-sentencepiece and are skipped without it.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
CORPUS = os.path.join(HERE, "corpus")
sys.path.insert(0, os.path.join(ROOT, "tools", "pylib"))

_xxhash = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xxhash.XXH64.restype = ctypes.c_uint64
_xxhash.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]


def xxh64(data):
    return _xxhash.XXH64(data, len(data), 0)


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- safetensors
# Input: 8-byte little-endian count of data bytes after the header, then the header JSON.

def safetensors_input(header, data_bytes, pad=True):
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * (-len(text) % 8)
    return struct.pack("<Q", data_bytes) + text.encode()


def safetensors_seeds():
    write("safetensors", "seed-two-tensors", safetensors_input({
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
        "__metadata__": {"format": "pt"}}, 32))
    write("safetensors", "seed-f16-rank4-empty", safetensors_input({
        "model.layers.0.w": {"dtype": "F16", "shape": [1, 2, 2, 2], "data_offsets": [16, 32]},
        "empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [16, 16]},
        "x": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, 40, pad=False))
    write("safetensors", "seed-unsupported-dtype", safetensors_input({
        "ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}, 16))
    write("safetensors", "seed-overlap", safetensors_input({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, 24))


# ---------------------------------------------------------------- config.json / metadata

TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
    "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "vocab_size": 384, "hidden_act": "relu", "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2, "rope_scaling": None, "attention_bias": False,
    "torch_dtype": "float16"}

METADATA_CONFIG = {
    "architecture": "LlamaForCausalLM", "bos_token_id": 1, "context_length": 64,
    "eos_token_id": 2, "head_dim": 8, "hidden_act": "relu", "hidden_size": 16,
    "intermediate_size": 24, "num_attention_heads": 2, "num_hidden_layers": 1,
    "num_key_value_heads": 1, "rms_norm_eps": 9.999999747378752e-06, "rope_theta": 10000.0,
    "tie_word_embeddings": True, "vocab_size": 384}


def hf_config_seeds():
    write("hf_config", "seed-llama.json", json.dumps(
        {k: v for k, v in TINY.items() if k != "torch_dtype"}, separators=(",", ":")))
    write("hf_config", "seed-mistral.json", json.dumps({
        "architectures": ["MistralForCausalLM"], "hidden_size": 24, "intermediate_size": 40,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "vocab_size": 100, "hidden_act": "silu", "sliding_window": 32,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "bos_token_id": None, "eos_token_id": [2, 3], "mlp_bias": False}))
    write("hf_config", "seed-model-type.json", json.dumps({
        "model_type": "llama", "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 4,
        "hidden_act": "relu"}))
    write("hf_config", "seed-metadata.json", json.dumps(METADATA_CONFIG,
                                                        separators=(",", ":")))
    write("hf_config", "seed-metadata-no-tokens.json", json.dumps(
        dict(METADATA_CONFIG, bos_token_id=-1, eos_token_id=-1, hidden_act="silu",
             architecture="MistralForCausalLM")))


# ---------------------------------------------------------------- .zsk

def align(x, a):
    return (x + a - 1) // a * a


def zsk_image(config, tensors, tokenizer=b"", hf_config=""):
    """tensors: list of (name, dtype code, layout code, shape, data bytes). Mirrors ZskWriter."""
    meta = json.dumps({"config": config, "hf_config": hf_config, "tokenizer": "sentencepiece"},
                      separators=(",", ":")).encode()
    meta_off = 128
    tok_off = meta_off + len(meta)
    table_off = align(tok_off + len(tokenizer), 8)
    data_off = align(table_off + 192 * len(tensors), 64)
    table, blobs, off = b"", [], data_off
    for name, dtype, layout, shape, data in tensors:
        rec = name.encode().ljust(96, b"\0") + struct.pack("<III", dtype, layout, len(shape))
        rec = rec.ljust(112, b"\0") + b"".join(struct.pack("<Q", d) for d in shape)
        rec = rec.ljust(144, b"\0") + struct.pack("<QQQ", off, len(data), xxh64(data))
        table += rec.ljust(192, b"\0")
        blobs.append((off, data))
        off = align(off + len(data), 64)
    size = off
    header = bytearray(b"ZSKMODEL" + struct.pack("<II", 1, 128) + struct.pack(
        "<8Q", size, meta_off, len(meta), tok_off, len(tokenizer), table_off, len(tensors),
        data_off))
    header += b"\0" * (128 - len(header))
    checksum = xxh64(bytes(header[:80]) + meta + tokenizer + table)
    header[80:88] = struct.pack("<Q", checksum)
    image = bytearray(size)
    image[0:128] = header
    image[meta_off:meta_off + len(meta)] = meta
    image[tok_off:tok_off + len(tokenizer)] = tokenizer
    image[table_off:table_off + len(table)] = table
    for o, data in blobs:
        image[o:o + len(data)] = data
    return bytes(image)


def zsk_seeds():
    write("zsk_header", "seed-minimal.zsk", zsk_image(METADATA_CONFIG, [
        ("w", 0, 0, [2, 3], bytes(range(24))),
        ("model.layers.0.mlp.down_proj.weight", 2, 1, [1, 2, 1, 2], bytes(8)),
        ("n", 1, 0, [5], b"\x00\x3c" * 5)]))
    write("zsk_header", "seed-no-tensors.zsk", zsk_image(
        dict(METADATA_CONFIG, bos_token_id=-1), [], tokenizer=b"\x0a\x03abc",
        hf_config=json.dumps(TINY)))


def tiny_tensors():
    import numpy as np
    import hfio
    rng = np.random.default_rng(7)
    h, ffn, heads, kv = 16, 24, 2, 1
    hd = h // heads
    shapes = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
              "self_attn.q_proj.weight": (heads * hd, h), "self_attn.k_proj.weight": (kv * hd, h),
              "self_attn.v_proj.weight": (kv * hd, h), "self_attn.o_proj.weight": (h, heads * hd),
              "mlp.gate_proj.weight": (ffn, h), "mlp.up_proj.weight": (ffn, h),
              "mlp.down_proj.weight": (h, ffn)}
    tensors = {}
    for name in hfio.llama_tensor_names(1, tied=True):
        if name == "model.embed_tokens.weight":
            shape = (TINY["vocab_size"], h)
        elif name == "model.norm.weight":
            shape = (h,)
        else:
            shape = shapes[name.split(".", 3)[3]]
        tensors[name] = rng.standard_normal(shape).astype(np.float32)
    return tensors


def converted_seeds(zeroskip):
    import hfio
    tensors = tiny_tensors()
    config = {k: v for k, v in TINY.items() if k != "torch_dtype"}
    with tempfile.TemporaryDirectory() as tmp:
        hf = os.path.join(tmp, "hf")
        hfio.write_hf_dir(hf, config, tensors, dtype="F16",
                          tokenizer_model=os.path.join(ROOT, "tests", "data", "tokenizer.model"))
        out = os.path.join(tmp, "tiny.zsk")
        subprocess.run([zeroskip, "convert", hf, "-o", out], check=True, stdout=subprocess.DEVNULL)
        with open(out, "rb") as f:
            write("zsk_header", "seed-converted.zsk", f.read())
        with open(os.path.join(hf, "model.safetensors"), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            head = f.read(n)
            data_bytes = len(f.read())
        write("safetensors", "seed-converted", struct.pack("<Q", data_bytes) + head)
        with open(os.path.join(hf, "config.json"), "rb") as f:
            write("hf_config", "seed-converted.json", f.read())


# ---------------------------------------------------------------- gguf
# Input: a whole GGUF image (tests/data/make_gguf.py writes llama.cpp's layout).

def gguf_seeds():
    import hfio
    sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
    import make_gguf as g
    write("gguf", "seed-empty.gguf", g.serialize([], []))
    write("gguf", "seed-v2-metadata.gguf", g.serialize(
        [("general.architecture", g.STRING, "llama"), ("general.alignment", g.U32, 64),
         ("llama.block_count", g.U32, 1), ("llama.attention.layer_norm_rms_epsilon", g.F32, 1e-5),
         ("tokenizer.ggml.tokens", g.ARRAY, (g.STRING, ["<unk>", "a", "b"])),
         ("tokenizer.ggml.scores", g.ARRAY, (g.F32, [0.0, -1.0, -2.0])),
         ("tokenizer.ggml.token_type", g.ARRAY, (g.I32, [2, 1, 1])),
         ("flag", g.BOOL, True), ("big", g.I64, -5), ("f", g.F64, 0.5)],
        [("output_norm.weight", [4], 0, b"\0" * 16)], version=2))
    config = {k: v for k, v in TINY.items() if k != "torch_dtype"}
    with tempfile.TemporaryDirectory() as tmp:
        hf = os.path.join(tmp, "hf")
        hfio.write_hf_dir(hf, config, tiny_tensors(), dtype="F16",
                          tokenizer_model=os.path.join(ROOT, "tests", "data", "tokenizer.model"))
        meta, tensors = g.build(hf, "f16")
        write("gguf", "seed-tiny-f16.gguf", g.serialize(meta, tensors))
        # q8_0 blocks: the embedding rows are 16 long, so pad a 32-wide matrix in by hand.
        tensors.append(("blk.0.extra.weight", [32, 2], 8, bytes(2 * 34)))
        write("gguf", "seed-tiny-q8-extra.gguf", g.serialize(meta, tensors))
        # One block of each type read by rewriting or dequantizing (ggml_quants.py's blocks of a
        # ramp) in place of attn_v, so the checkpoint view reads it.
        import ggml_quants
        import numpy as np
        for kind, code in ggml_quants.GGML_CODES.items():
            n = ggml_quants.BLOCK[kind][0]
            ramp = np.linspace(-1, 1, 2 * n, dtype=np.float32).reshape(2, n)
            blocks = ggml_quants.quantize(ramp, kind)
            other = [(name, [n, 2] if name == "blk.0.attn_v.weight" else dims,
                      code if name == "blk.0.attn_v.weight" else t,
                      blocks if name == "blk.0.attn_v.weight" else data)
                     for name, dims, t, data in tensors[:-1]]
            write("gguf", f"seed-tiny-{kind}.gguf", g.serialize(meta, other))
    # Large metadata arrays (read in blocks, not one read per element: 8 MiB of u8 took 21 s):
    # 256 Ki u8 elements, and 8 Ki token strings with u32 token types and i32 scores (integer
    # widths llama.cpp's writers use).
    write("gguf", "seed-big-u8-array.gguf", g.serialize(
        [("general.architecture", g.STRING, "llama"),
         ("general.blob", g.ARRAY, (g.U8, [k * 7 % 256 for k in range(1 << 18)]))], []))
    n = 1 << 13
    write("gguf", "seed-many-tokens.gguf", g.serialize(
        [("general.architecture", g.STRING, "llama"), ("tokenizer.ggml.model", g.STRING, "llama"),
         ("tokenizer.ggml.tokens", g.ARRAY, (g.STRING, [f"t{k}" for k in range(n)])),
         ("tokenizer.ggml.scores", g.ARRAY, (g.I32, [-k for k in range(n)])),
         ("tokenizer.ggml.token_type", g.ARRAY, (g.U32, [1] * n))], []))


# ---------------------------------------------------------------- tokenizer (sentencepiece ModelProto)

def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def proto_bytes(field, payload):
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def proto_records(message):
    """-> [(field, whole record bytes, payload or None)] of a trusted message."""
    def read_varint(i):
        v, shift = 0, 0
        while True:
            b = message[i]
            i += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return v, i
    out, i = [], 0
    while i < len(message):
        begin = i
        tag, i = read_varint(i)
        payload = None
        if tag & 7 == 0:
            _, i = read_varint(i)
        elif tag & 7 == 1:
            i += 8
        elif tag & 7 == 5:
            i += 4
        else:
            n, i = read_varint(i)
            payload = message[i:i + n]
            i += n
        out.append((tag >> 3, message[begin:i], payload))
    return out


def with_charsmap(model, charsmap, spec_field=3):
    """`model` with its NormalizerSpec `spec_field` holding `charsmap` (as
    tests/sentencepiece_bytes.cpp does)."""
    out, done = b"", False
    for field, record, payload in proto_records(model):
        if field == spec_field and not done:
            spec = b"".join(r for f, r, _ in proto_records(payload) if f != 2)
            out += proto_bytes(spec_field, spec + proto_bytes(2, charsmap))
            done = True
        else:
            out += record
    return out if done else out + proto_bytes(spec_field, proto_bytes(2, charsmap))


def with_self_test(model, text, expected):
    sample = proto_bytes(1, text.encode()) + proto_bytes(2, expected.encode())
    return model + proto_bytes(4, proto_bytes(1, sample))


# One-unit darts-clone trie whose root points ~4 GB past the blob (crashed sentencepiece before
# the charsmap check).
OUT_OF_RANGE_CHARSMAP = struct.pack("<II", 4, (0x3FFFFF << 10) | (1 << 9)) + b"\0"


def tokenizer_seeds():
    def read(*path):
        with open(os.path.join(ROOT, *path), "rb") as f:
            return f.read()
    test = read("tests", "data", "tokenizer.model")
    write("tokenizer", "seed-test.model", test)
    write("tokenizer", "seed-relu-ft.model", read("models", "relu-ft", "tokenizer.model"))
    write("tokenizer", "seed-hostile-charsmap", with_charsmap(test, OUT_OF_RANGE_CHARSMAP))
    write("tokenizer", "seed-hostile-charsmap-selftest",
          with_self_test(with_charsmap(test, OUT_OF_RANGE_CHARSMAP), "hello", "\u2581hello"))
    write("tokenizer", "seed-hostile-denormalizer", with_charsmap(test, OUT_OF_RANGE_CHARSMAP, 5))
    write("tokenizer", "seed-selftest-mismatch", with_self_test(test, "the cat", "wrong"))
    write("tokenizer", "seed-truncated", test[:len(test) // 2])
    # GPT-2 byte-level BPE as a .zsk of OPT embeds it (the JSON of vocab.json and merges.txt).
    bpe = {name: read("tests", "data", "bpe", name).decode() for name in ("merges.txt",
                                                                          "vocab.json")}
    write("tokenizer", "seed-bpe-packed.json",
          json.dumps(bpe, separators=(",", ":"), ensure_ascii=False, sort_keys=True))
    # User-defined pieces each a prefix of the next: 64 deep is accepted, 65 crashed sentencepiece.
    for depth in (64, 65):
        nested = test
        for i in range(1, depth + 1):
            piece = proto_bytes(1, b"@@@" + b"q" * i) + b"\x18\x04"  # type USER_DEFINED
            nested += proto_bytes(1, piece)
        write("tokenizer", f"seed-user-defined-nested-{depth}", nested)
    try:
        sys.path.insert(0, os.path.join(ROOT, "tools", "pylib"))
        import spm_train
    except ImportError:
        print("python3-sentencepiece missing: trained tokenizer seeds skipped", file=sys.stderr)
        return
    text = ["Ａnna reads a long letter at the café.", "The cat sees 12 dogs!", "ｶﾀｶﾅ and ①②"] * 20
    nfkc = spm_train.train_bpe(text, 300, normalization_rule_name="nmt_nfkc")
    write("tokenizer", "seed-bpe-nmt-nfkc.model", nfkc)
    # One builtin table is enough (each is ~240 KB and only compared byte for byte here).
    for kind in ("unigram", "char", "word"):
        write("tokenizer", f"seed-{kind}.model", spm_train.train_bpe(
            text, 60 if kind == "unigram" else 40, model_type=kind, byte_fallback=False,
            hard_vocab_limit=False, split_digits=False))


# ---------------------------------------------------------------- kl_base
# docs/FORMAT.md, "The KL divergence base file": header, token ids, f32 rows, xxh64 of it all.

def kl_base_image(vocab, context, bos, ids, rows):
    body = b"ZSKLBASE" + struct.pack("<IIIiQQ", 1, vocab, context, bos, len(ids), len(rows))
    body += b"".join(struct.pack("<I", i) for i in ids)
    body += b"".join(struct.pack("<%df" % vocab, *row) for row in rows)
    return body + struct.pack("<Q", xxh64(body))


def kl_base_seeds():
    rows = [[-0.25, -1.5, -3.0, -2.0], [-1.0, -1.0, -2.5, -1.0], [-0.1, -4.0, -5.0, -3.0]]
    good = kl_base_image(4, 3, 1, [2, 3, 0], rows)
    write("kl_base", "seed-bos.klb", good)
    write("kl_base", "seed-no-bos.klb", kl_base_image(4, 2, -1, [2, 3, 0], rows[:2]))
    write("kl_base", "seed-truncated.klb", good[:-5])
    write("kl_base", "seed-positive-log-prob.klb", kl_base_image(4, 3, 1, [2, 3, 0],
                                                                 rows[:2] + [[0.5, -1, -2, -3]]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zeroskip", help="the zeroskip CLI, to convert a tiny checkpoint")
    args = ap.parse_args()
    safetensors_seeds()
    hf_config_seeds()
    zsk_seeds()
    tokenizer_seeds()
    gguf_seeds()
    kl_base_seeds()
    if args.zeroskip:
        converted_seeds(args.zeroskip)


if __name__ == "__main__":
    main()
