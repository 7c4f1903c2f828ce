#!/usr/bin/python3
"""Generates the corrupt-input corpus: tests/corrupt/cases/<name>/ and tests/corrupt/cases.json.

    /usr/bin/python3 tests/corrupt/make_corpus.py [--zeroskip build/zeroskip]

Every case is a tiny, otherwise valid model (hidden 32, ffn 40, 1 layer, 4 heads / 2 kv heads,
vocab 384, f16 weights, tied embeddings, tests/data/tokenizer.model) with exactly one thing wrong.
Hugging Face cases are written with tools/pylib/hfio.py and then damaged by hand; .zsk cases
start from a file the zeroskip binary converts from the good checkpoint (the binary is only
needed to regenerate; the committed bytes are what the tests use) and are patched here. Patches
that must get past the header checksum recompute it with the pure-Python XXH64 below, which is
checked against the binary's own file first.

The output is deterministic: the same command writes byte-identical files. The manifest records
for each case the command line, the file the one error line must name and a distinctive
substring of the reason; tests/corrupt/check_corpus.py runs it.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ beside the committed corpus
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "pylib"))
import hfio  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
import make_gguf  # noqa: E402

TOKENIZER = os.path.join(ROOT, "tests", "data", "tokenizer.model")
CASES_DIR = os.path.join(HERE, "cases")
MANIFEST = os.path.join(HERE, "cases.json")
README = os.path.join(HERE, "README.md")

# ------------------------------------------------------------------------------------ XXH64

_M = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxh64(data, seed=0):
    """XXH64 (the reference algorithm), pure Python."""
    data = bytes(data)
    n, i = len(data), 0
    if n >= 32:
        v1, v2 = (seed + _P1 + _P2) & _M, (seed + _P2) & _M
        v3, v4 = seed & _M, (seed - _P1) & _M
        while i + 32 <= n:
            a, b, c, d = struct.unpack_from("<4Q", data, i)
            v1, v2, v3, v4 = _round(v1, a), _round(v2, b), _round(v3, c), _round(v4, d)
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M
        for v in (v1, v2, v3, v4):
            h = ((h ^ _round(0, v)) * _P1 + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        (k,) = struct.unpack_from("<Q", data, i)
        h = (_rotl(h ^ _round(0, k), 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        (k,) = struct.unpack_from("<I", data, i)
        h = (_rotl(h ^ ((k * _P1) & _M), 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * _P5) & _M), 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    h ^= h >> 32
    return h


# ------------------------------------------------------------------------------------ .zsk

HEADER_FIELDS = {  # name: (offset, struct format)
    "version": (8, "<I"), "header_bytes": (12, "<I"), "file_size": (16, "<Q"),
    "metadata_offset": (24, "<Q"), "metadata_size": (32, "<Q"),
    "tokenizer_offset": (40, "<Q"), "tokenizer_size": (48, "<Q"),
    "table_offset": (56, "<Q"), "tensor_count": (64, "<Q"), "data_offset": (72, "<Q"),
    "header_checksum": (80, "<Q"),
}
RECORD_BYTES = 192
RECORD_FIELDS = {"dtype": (96, "<I"), "layout": (100, "<I"), "ndim": (104, "<I"),
                 "shape0": (112, "<Q"), "shape1": (120, "<Q"),
                 "offset": (144, "<Q"), "nbytes": (152, "<Q"), "checksum": (160, "<Q")}


class Zsk:
    """A .zsk file as a mutable bytearray with typed access to the header and tensor records."""

    def __init__(self, raw):
        self.b = bytearray(raw)

    def get(self, field):
        off, fmt = HEADER_FIELDS[field]
        return struct.unpack_from(fmt, self.b, off)[0]

    def set(self, field, value):
        off, fmt = HEADER_FIELDS[field]
        struct.pack_into(fmt, self.b, off, value)

    def record_offset(self, i):
        return self.get("table_offset") + i * RECORD_BYTES

    def find(self, name):
        for i in range(self.get("tensor_count")):
            r = self.record_offset(i)
            if bytes(self.b[r:r + 96]).rstrip(b"\0") == name.encode():
                return i
        raise KeyError(name)

    def rget(self, i, field):
        off, fmt = RECORD_FIELDS[field]
        return struct.unpack_from(fmt, self.b, self.record_offset(i) + off)[0]

    def rset(self, i, field, value):
        off, fmt = RECORD_FIELDS[field]
        struct.pack_into(fmt, self.b, self.record_offset(i) + off, value)

    def rname(self, i, name):
        r = self.record_offset(i)
        self.b[r:r + 96] = name.encode().ljust(96, b"\0")

    def region(self, off_field, size):
        off = self.get(off_field)
        return bytes(self.b[off:off + size])

    def header_checksum(self):
        meta = self.region("metadata_offset", self.get("metadata_size"))
        tok = self.region("tokenizer_offset", self.get("tokenizer_size"))
        table = self.region("table_offset", self.get("tensor_count") * RECORD_BYTES)
        return xxh64(bytes(self.b[:80]) + meta + tok + table)

    def reseal(self):
        """Recomputes the header checksum so the damage is found by the checks behind it."""
        self.set("header_checksum", self.header_checksum())
        return self

    def replace_metadata(self, text):
        """Swaps the metadata JSON for `text` of the same length (padded with spaces)."""
        size = self.get("metadata_size")
        raw = text.encode()
        assert len(raw) <= size, (len(raw), size)
        off = self.get("metadata_offset")
        self.b[off:off + size] = raw.ljust(size, b" ")
        return self


def check_xxh64(zsk):
    """The pure-Python XXH64 must reproduce every checksum the binary wrote."""
    assert xxh64(b"") == 0xEF46DB3751D8E999, "xxh64 of the empty string"
    assert zsk.header_checksum() == zsk.get("header_checksum"), "header checksum"
    for i in range(zsk.get("tensor_count")):
        off, n = zsk.rget(i, "offset"), zsk.rget(i, "nbytes")
        assert xxh64(zsk.b[off:off + n]) == zsk.rget(i, "checksum"), f"tensor {i} checksum"


# ------------------------------------------------------------------------------------ models

BASE = dict(hidden=32, ffn=40, layers=1, heads=4, kv=2, vocab=384)


def make_config(layers=1, tied=True, **overrides):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": BASE["hidden"],
        "intermediate_size": BASE["ffn"],
        "num_hidden_layers": layers,
        "num_attention_heads": BASE["heads"],
        "num_key_value_heads": BASE["kv"],
        "vocab_size": BASE["vocab"],
        "hidden_act": "relu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "tie_word_embeddings": tied,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rope_scaling": None,
        "attention_bias": False,
    }
    cfg.update(overrides)
    return cfg


def make_tensors(layers=1, tied=True, seed=7):
    """float32 weights in HF names and [out, in] shapes (values are irrelevant, just finite)."""
    rng = np.random.default_rng(seed)
    h, f, v = BASE["hidden"], BASE["ffn"], BASE["vocab"]
    hd = h // BASE["heads"]
    q, kv = BASE["heads"] * hd, BASE["kv"] * hd
    shapes = {"input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
              "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h),
              "self_attn.v_proj.weight": (kv, h), "self_attn.o_proj.weight": (h, q),
              "mlp.gate_proj.weight": (f, h), "mlp.up_proj.weight": (f, h),
              "mlp.down_proj.weight": (h, f)}
    out = {}
    for name in hfio.llama_tensor_names(layers, tied):
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            shape = (v, h)
        elif name == "model.norm.weight":
            shape = (h,)
        else:
            shape = shapes[name.split(".", 3)[3]]
        scale = 0.1 if len(shape) == 1 else 1 / np.sqrt(shape[-1])
        t = rng.standard_normal(shape) * scale + (1.0 if len(shape) == 1 else 0.0)
        out[name] = t.astype(np.float32)
    return out


DTYPE = "F16"


def write_hf(case_dir, config=None, tensors=None, shards=1, tokenizer=True):
    """A complete checkpoint in case_dir/hf; returns its path."""
    hf = os.path.join(case_dir, "hf")
    hfio.write_hf_dir(hf, config or make_config(), tensors or make_tensors(), DTYPE,
                      tokenizer_model=TOKENIZER if tokenizer else None, shards=shards)
    return hf


def st_path(case_dir):
    return os.path.join(case_dir, "hf", "model.safetensors")


def read_st(path):
    """-> (header dict, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st_raw(path, header, data, pad=True):
    """Writes header/data verbatim: no consistency checks, so they can lie."""
    head = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head + data)


def edit_st_header(case_dir, fn):
    path = st_path(case_dir)
    header, data = read_st(path)
    fn(header)
    write_st_raw(path, header, data)


def edit_config(case_dir, fn):
    path = os.path.join(case_dir, "hf", "config.json")
    with open(path) as f:
        cfg = json.load(f)
    fn(cfg)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_text(path, text):
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())


# ------------------------------------------------------------------------------------ cases

CASES = []  # (name, builder(case_dir), manifest entry without name)


def case(name, args, error_file, expect, why, **extra):
    def register(fn):
        entry = {"name": name, "args": args, "error_file": error_file, "expect": expect,
                 "why": why}
        entry.update(extra)
        CASES.append((name, fn, entry))
        return fn
    return register


# sentencepiece's status text leaks its source location and ends in a space.
SP_NOISE = ["sentencepiece_processor.cc", "ParseFromArray"]

CONVERT = ["convert", "{case}/hf", "-o", "{out}/out.zsk"]
ST = "hf/model.safetensors"
CFG = "hf/config.json"
TOK = "hf/tokenizer.model"
INDEX = "hf/model.safetensors.index.json"

# --- safetensors framing


@case("st_truncated_length_prefix", CONVERT, ST, "file is truncated (no safetensors header length)",
      "model.safetensors is 5 bytes: cut inside the 8-byte header length")
def _(d):
    write_hf(d)
    write_text(st_path(d), read_bytes(st_path(d))[:5])


@case("st_truncated_mid_header", CONVERT, ST,
      "safetensors header length 1104 is larger than the file (560 bytes)",
      "model.safetensors cut in the middle of its JSON header")
def _(d):
    write_hf(d)
    raw = read_bytes(st_path(d))
    n = int.from_bytes(raw[:8], "little")
    write_text(st_path(d), raw[:8 + n // 2])


@case("st_truncated_mid_data", CONVERT, ST,
      "data_offsets end 24576 is past the end of the data (19296 bytes)",
      "model.safetensors cut in the middle of the tensor data (header intact)")
def _(d):
    write_hf(d)
    raw = read_bytes(st_path(d))
    n = int.from_bytes(raw[:8], "little")
    write_text(st_path(d), raw[:8 + n + (len(raw) - 8 - n) // 2])


@case("st_header_length_huge", CONVERT, ST, "safetensors header length 9223372036854775808 is "
      "larger than the file", "header length field is 2^63 (far larger than the file)")
def _(d):
    write_hf(d)
    raw = bytearray(read_bytes(st_path(d)))
    raw[:8] = (1 << 63).to_bytes(8, "little")
    write_text(st_path(d), bytes(raw))


@case("st_header_not_json", CONVERT, ST, "safetensors header is not valid JSON",
      "the header bytes are not JSON (a '{' replaced, garbage inside)")
def _(d):
    write_hf(d)
    raw = bytearray(read_bytes(st_path(d)))
    raw[8:16] = b"\x00garbag\xff"
    write_text(st_path(d), bytes(raw))


@case("st_header_not_object", CONVERT, ST, "safetensors header is not a JSON object",
      "the header is valid JSON but a list, not an object")
def _(d):
    write_hf(d)
    _, data = read_st(st_path(d))
    write_st_raw(st_path(d), [1, 2, 3], data)


# --- safetensors tensor entries


@case("st_offsets_past_end", CONVERT, ST, "is past the end of the data",
      "a tensor's data_offsets point 1 MB past the end of the file")
def _(d):
    write_hf(d)

    def fn(h):
        b, e = h["model.norm.weight"]["data_offsets"]
        h["model.norm.weight"]["data_offsets"] = [b + 1_000_000, e + 1_000_000]
    edit_st_header(d, fn)


@case("st_offsets_begin_after_end", CONVERT, ST, "data_offsets begin after end",
      "a tensor's data_offsets are [end, begin]")
def _(d):
    write_hf(d)

    def fn(h):
        h["model.norm.weight"]["data_offsets"].reverse()
    edit_st_header(d, fn)


@case("st_overlapping_tensors", CONVERT, ST, "overlap",
      "post_attention_layernorm's data_offsets are the same bytes as input_layernorm's")
def _(d):
    write_hf(d)

    def fn(h):
        src = h["model.layers.0.input_layernorm.weight"]["data_offsets"]
        h["model.layers.0.post_attention_layernorm.weight"]["data_offsets"] = list(src)
    edit_st_header(d, fn)


@case("st_size_mismatch", CONVERT, ST, "holds 64 bytes but dtype x shape needs 66",
      "model.norm.weight says shape [33] (66 bytes of F16) but its offsets span 64 bytes")
def _(d):
    write_hf(d)

    def fn(h):
        h["model.norm.weight"]["shape"] = [33]
    edit_st_header(d, fn)


@case("st_unknown_dtype", CONVERT, ST, "unknown dtype 'Q9'",
      "a tensor's dtype is 'Q9', which no safetensors writer produces")
def _(d):
    write_hf(d)
    edit_st_header(d, lambda h: h["model.norm.weight"].update(dtype="Q9"))


@case("st_dtype_i8", CONVERT, ST, "dtype I8 is not supported",
      "a tensor is stored as I8 (a real safetensors dtype zeroskip cannot convert)")
def _(d):
    write_hf(d)

    def fn(h):
        t = h["model.norm.weight"]
        t["dtype"], t["shape"] = "I8", [64]  # 64 int8 bytes: the size matches
    edit_st_header(d, fn)


@case("st_q8_scale_overflow", ["convert", "{case}/hf", "-o", "{out}/out.zsk", "--dtype", "q8"],
      ST, "values overflow q8 (their block scale exceeds f16)",
      "up_proj is F32 with one weight of 1e7: converting to q8, its block's scale 1e7 / 127 is "
      "past f16's largest value")
def _(d):
    tensors = make_tensors()
    up = tensors["model.layers.0.mlp.up_proj.weight"].copy()
    up[3, 5] = 1e7
    tensors["model.layers.0.mlp.up_proj.weight"] = ("F32", up)
    write_hf(d, tensors=tensors)


@case("st_negative_shape", CONVERT, ST, "shape entries must be integers >= 0",
      "a tensor's shape contains -32")
def _(d):
    write_hf(d)
    edit_st_header(d, lambda h: h["model.norm.weight"].update(shape=[-32]))


@case("st_too_many_dims", CONVERT, ST, "more than 4 dimensions",
      "a tensor has a 5-dimensional shape")
def _(d):
    write_hf(d)
    edit_st_header(d, lambda h: h["model.norm.weight"].update(shape=[1, 1, 1, 2, 16]))


@case("st_shape_vs_config", CONVERT, ST, "has shape [32, 40] but config.json implies [40, 32]",
      "gate_proj stored transposed ([hidden, ffn] instead of [ffn, hidden])")
def _(d):
    t = make_tensors()
    t["model.layers.0.mlp.gate_proj.weight"] = t["model.layers.0.mlp.gate_proj.weight"].T.copy()
    write_hf(d, tensors=t)


@case("st_missing_tensor", CONVERT, ST, "missing tensor 'model.layers.0.mlp.up_proj.weight'",
      "up_proj of layer 0 is not in the file")
def _(d):
    t = make_tensors()
    del t["model.layers.0.mlp.up_proj.weight"]
    write_hf(d, tensors=t)


@case("st_missing_layer", CONVERT, ST, "missing tensor 'model.layers.1.",
      "config.json says 2 layers, the file holds only layer 0")
def _(d):
    write_hf(d, config=make_config(layers=2), tensors=make_tensors(layers=1))


@case("st_unexpected_tensor", CONVERT, ST,
      "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'",
      "an extra q_proj.bias tensor the architecture does not have")
def _(d):
    t = make_tensors()
    t["model.layers.0.self_attn.q_proj.bias"] = np.zeros(32, np.float32)
    write_hf(d, tensors=t)


@case("st_extra_layer", CONVERT, ST, "unexpected tensor 'model.layers.1.",
      "config.json says 1 layer, the file holds 2 (a whole unexpected layer)")
def _(d):
    write_hf(d, config=make_config(layers=1), tensors=make_tensors(layers=2))


@case("warn_skipped_tensors", CONVERT, None, "skipping tensor 'lm_head.weight' (embeddings are tied)",
      "tied model that also stores lm_head.weight and rotary_emb.inv_freq: converted, with "
      "one warning per skipped tensor", expect_exit=0,
      expect_also=["skipping tensor 'model.layers.0.self_attn.rotary_emb.inv_freq' "
                   "(derived rotary buffer)"])
def _(d):
    t = make_tensors(tied=True)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()
    t["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    write_hf(d, tensors=t)


@case("warn_then_error", ["convert", "{case}/hf", "-o", "{out}/missing/out.zsk"],
      "missing/out.zsk", "cannot create output file: No such file or directory",
      "tied model with a redundant lm_head.weight (a warning) and an output directory that "
      "does not exist (an error): warnings are held back, the error is the only line")
def _(d):
    t = make_tensors(tied=True)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()
    write_hf(d, tensors=t)


# --- sharded checkpoints


@case("idx_missing_shard", CONVERT, "hf/model-00002-of-00002.safetensors",
      "cannot open: No such file or directory",
      "index names two shards; the second shard file is absent")
def _(d):
    hf = write_hf(d, shards=2)
    os.remove(os.path.join(hf, "model-00002-of-00002.safetensors"))


@case("idx_path_escape", CONVERT, INDEX, "invalid shard file name '../x.safetensors'",
      "index maps a tensor to '../x.safetensors' (outside the checkpoint directory)")
def _(d):
    hf = write_hf(d, shards=2)
    path = os.path.join(hf, "model.safetensors.index.json")
    with open(path) as f:
        index = json.load(f)
    index["weight_map"]["model.norm.weight"] = "../x.safetensors"
    write_text(path, json.dumps(index, indent=2))


@case("idx_not_json", CONVERT, INDEX, "is not valid JSON",
      "model.safetensors.index.json is cut in half")
def _(d):
    hf = write_hf(d, shards=2)
    path = os.path.join(hf, "model.safetensors.index.json")
    raw = read_bytes(path)
    write_text(path, raw[:len(raw) // 2])


@case("idx_no_weight_map", CONVERT, INDEX, "missing weight_map",
      "index JSON has metadata but no weight_map")
def _(d):
    hf = write_hf(d, shards=2)
    path = os.path.join(hf, "model.safetensors.index.json")
    write_text(path, json.dumps({"metadata": {"total_size": 0}}, indent=2))


@case("idx_tensor_in_two_shards", CONVERT, "hf/model-00002-of-00002.safetensors",
      "tensor 'model.embed_tokens.weight' appears in more than one shard",
      "both shard files contain model.embed_tokens.weight")
def _(d):
    t = make_tensors()
    hf = write_hf(d, tensors=t, shards=2)
    second = os.path.join(hf, "model-00002-of-00002.safetensors")
    part = hfio.read_safetensors(second)
    part["model.embed_tokens.weight"] = t["model.embed_tokens.weight"]
    hfio.write_safetensors(second, part, DTYPE)


@case("no_weights", CONVERT, "hf", "no model.safetensors or model.safetensors.index.json",
      "the checkpoint directory has config and tokenizer but no weights")
def _(d):
    hf = write_hf(d)
    os.remove(os.path.join(hf, "model.safetensors"))


# --- config.json


@case("cfg_missing", CONVERT, CFG, "missing (is this a checkpoint directory?)",
      "config.json is absent")
def _(d):
    hf = write_hf(d)
    os.remove(os.path.join(hf, "config.json"))


@case("cfg_not_json", CONVERT, CFG, "is not valid JSON",
      "config.json has a trailing comma and is cut off")
def _(d):
    hf = write_hf(d)
    write_text(os.path.join(hf, "config.json"), '{"hidden_size": 32,\n "vocab_size": 384,\n')


@case("cfg_zero_hidden", CONVERT, CFG, "hidden_size must be in [1, 65536], got 0",
      "hidden_size is 0")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(hidden_size=0))


@case("cfg_negative_layers", CONVERT, CFG, "num_hidden_layers must be in [1, 1024], got -2",
      "num_hidden_layers is -2")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(num_hidden_layers=-2))


@case("cfg_string_size", CONVERT, CFG, "intermediate_size must be an integer",
      'intermediate_size is the string "40"')
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(intermediate_size="40"))


@case("cfg_absurd_hidden", CONVERT, CFG, "hidden_size must be in [1, 65536], got 1000000000000000",
      "hidden_size is 10^15 (vocab x hidden x 4 bytes would overflow)")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(hidden_size=10**15))


@case("cfg_vocab_overflow", CONVERT, CFG, "vocab_size is out of range",
      "vocab_size is 2^64 - 1 (does not even fit a signed 64-bit integer)")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(vocab_size=2**64 - 1))


@case("cfg_unsupported_arch", CONVERT, CFG, "unsupported architecture 'GPT2LMHeadModel'",
      "architectures is [\"GPT2LMHeadModel\"]")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(architectures=["GPT2LMHeadModel"], model_type="gpt2"))


@case("cfg_rope_scaling", CONVERT, CFG, "rope_scaling is not supported",
      "rope_scaling is {\"type\": \"linear\", \"factor\": 2.0}")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}))


@case("cfg_gelu", CONVERT, CFG, "hidden_act 'gelu' is not supported",
      "hidden_act is gelu")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(hidden_act="gelu"))


@case("cfg_heads_not_multiple_of_kv", CONVERT, CFG,
      "num_attention_heads (4) must be a multiple of num_key_value_heads (3)",
      "4 attention heads, 3 key/value heads")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(num_key_value_heads=3))


@case("cfg_hidden_not_multiple_of_heads", CONVERT, CFG,
      "hidden_size must be a multiple of num_attention_heads",
      "hidden_size 32 with 3 heads (and no head_dim)")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(num_attention_heads=3, num_key_value_heads=1))


@case("cfg_bos_out_of_vocab", CONVERT, CFG, "bos_token_id must be in [0, 383], got 384",
      "bos_token_id equals vocab_size")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(bos_token_id=384))


# --- tokenizer.model


@case("tok_missing", CONVERT, TOK, "missing (a sentencepiece tokenizer.model is required)",
      "tokenizer.model is absent")
def _(d):
    write_hf(d, tokenizer=False)


@case("tok_garbage", CONVERT, TOK, "not a valid sentencepiece model",
      "tokenizer.model is 200 bytes of noise", forbid=SP_NOISE)
def _(d):
    hf = write_hf(d)
    rng = np.random.default_rng(11)
    write_text(os.path.join(hf, "tokenizer.model"), rng.integers(0, 256, 200, np.uint8).tobytes())


@case("tok_vocab_too_small", CONVERT, TOK, "tokenizer has 384 pieces but the model's vocab_size "
      "is 256", "config.json vocab_size 256 is smaller than the tokenizer's 384 pieces")
def _(d):
    write_hf(d)
    edit_config(d, lambda c: c.update(vocab_size=256))


# --- OPT: its config keys and its GPT-2 BPE tokenizer (vocab.json + merges.txt)

OPT_SPEC = dict(hidden=32, heads=4, ffn=40, layers=1, embed_dim=None, pre_norm=True,
                dtype="F16", shards=1, seed=9, arch="opt")
VOCAB_JSON = "hf/vocab.json"
MERGES_TXT = "hf/merges.txt"


def write_opt_hf(case_dir):
    """A complete tiny OPT checkpoint in case_dir/hf (tests/data/make_checkpoints.py's OPT
    writer, tests/data/bpe's tokenizer); returns its path."""
    import make_checkpoints
    hf = os.path.join(case_dir, "hf")
    hfio.write_hf_dir(hf, make_checkpoints.make_opt_config(OPT_SPEC),
                      make_checkpoints.make_opt_tensors(OPT_SPEC), DTYPE)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(ROOT, "tests", "data", "bpe", name), os.path.join(hf, name))
    return hf


def edit_merges(case_dir, fn):
    path = os.path.join(case_dir, MERGES_TXT)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    write_text(path, "\n".join(fn(lines)))


@case("opt_gelu", CONVERT, CFG, "activation_function 'gelu' is not supported (OPT: relu)",
      "an OPT config.json with activation_function gelu (OPT-IML and others use relu)")
def _(d):
    write_opt_hf(d)
    edit_config(d, lambda c: c.update(activation_function="gelu"))


@case("opt_llama_key", CONVERT, CFG, "intermediate_size is not an OPT config key",
      "an OPT config.json that also holds Llama's intermediate_size")
def _(d):
    write_opt_hf(d)
    edit_config(d, lambda c: c.update(intermediate_size=40))


@case("opt_fc1_bias_shape", CONVERT, ST, "has shape [41] but config.json implies [40]",
      "fc1.bias has one entry more than ffn_dim")
def _(d):
    import make_checkpoints
    tensors = make_checkpoints.make_opt_tensors(OPT_SPEC)
    tensors["model.decoder.layers.0.fc1.bias"] = np.zeros(41, np.float32)
    hf = write_opt_hf(d)
    hfio.write_safetensors(os.path.join(hf, "model.safetensors"), tensors, DTYPE)


@case("opt_shadow", CONVERT + ["--shadow"], CFG, "has no bias-free gate",
      "convert --shadow on OPT, whose fc1 has a bias the shadow's bound cannot cover")
def _(d):
    write_opt_hf(d)


@case("opt_merges_missing", CONVERT, MERGES_TXT, "missing (OPTForCausalLM's tokenizer)",
      "merges.txt is absent")
def _(d):
    os.remove(os.path.join(write_opt_hf(d), "merges.txt"))


@case("opt_vocab_not_json", CONVERT, "hf", "vocab.json is not valid JSON",
      "vocab.json is cut in the middle")
def _(d):
    hf = write_opt_hf(d)
    path = os.path.join(hf, "vocab.json")
    write_text(path, read_bytes(path)[:100])


@case("opt_vocab_id_twice", CONVERT, "hf", "vocab.json: id 5 twice",
      "two pieces of vocab.json share id 5 (and id 619 is nobody's)")
def _(d):
    hf = write_opt_hf(d)
    path = os.path.join(hf, "vocab.json")
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    last = max(vocab, key=vocab.get)
    vocab[last] = 5
    write_text(path, json.dumps(vocab, ensure_ascii=False))


@case("opt_vocab_missing_byte", CONVERT, "hf", "vocab.json has no piece for byte 0",
      "the piece of byte 0 (GPT-2 spells it U+0100) is missing, so some texts cannot be encoded")
def _(d):
    hf = write_opt_hf(d)
    path = os.path.join(hf, "vocab.json")
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    # Renumber without the byte-0 piece, so the ids stay 0..n-1.
    del vocab["\u0100"]
    ordered = sorted(vocab, key=vocab.get)
    write_text(path, json.dumps({p: i for i, p in enumerate(ordered)}, ensure_ascii=False))


@case("opt_vocab_too_large", CONVERT, VOCAB_JSON, "has 620 pieces, more than vocab_size 600",
      "config.json vocab_size 600 is smaller than vocab.json's 620 pieces")
def _(d):
    write_opt_hf(d)
    edit_config(d, lambda c: c.update(vocab_size=600))


@case("opt_merges_three_pieces", CONVERT, "hf", "merges.txt line 3 is not two pieces",
      "a merges.txt line holds three pieces")
def _(d):
    write_opt_hf(d)
    edit_merges(d, lambda lines: lines[:2] + [lines[2] + " x"] + lines[3:])


@case("opt_merges_unknown_piece", CONVERT, "hf", "or their merge is not in vocab.json",
      "a merge whose result is not a piece of vocab.json")
def _(d):
    write_opt_hf(d)
    edit_merges(d, lambda lines: lines[:1] + ["a \u00e9"] + lines[1:])


@case("opt_merges_not_utf8", CONVERT, "hf", "or their merge is not in vocab.json",
      "merges.txt holds a byte that is not UTF-8 (it cannot name a piece)")
def _(d):
    hf = write_opt_hf(d)
    path = os.path.join(hf, "merges.txt")
    write_text(path, read_bytes(path).replace(b"h e", b"h \xff", 1))


# --- GGUF (llama.cpp's file; tests/data/make_gguf.py writes the good one)

GGUF_CONVERT = ["convert", "{case}/model.gguf", "-o", "{out}/out.zsk"]
GGUF = "model.gguf"
GGUF_META = "model.gguf (metadata)"


def gguf_parts(d, dtype="f16", with_act=True):
    """The good tiny model as GGUF parts (metadata list, tensor list); nothing left in d."""
    hf = write_hf(d)
    meta, tensors = make_gguf.build(hf, dtype, with_act)
    shutil.rmtree(hf)
    return meta, tensors


def write_gguf(d, meta, tensors, **kw):
    write_text(os.path.join(d, GGUF), make_gguf.serialize(meta, tensors, **kw))


def set_meta(meta, key, vtype, value):
    for k, (name, _, _) in enumerate(meta):
        if name == key:
            meta[k] = (key, vtype, value)
            return
    meta.append((key, vtype, value))


def gguf_good(d, **kw):
    meta, tensors = gguf_parts(d, **kw)
    return make_gguf.serialize(meta, tensors)


def write_gguf_patched(d, offset, fmt, value):
    """The good GGUF with struct.pack(fmt, value) written over it at `offset`."""
    raw = bytearray(gguf_good(d))
    packed = struct.pack(fmt, value)
    raw[offset:offset + len(packed)] = packed
    write_text(os.path.join(d, GGUF), bytes(raw))


@case("gguf_bad_magic", GGUF_CONVERT, GGUF, "neither a checkpoint directory nor a GGUF file",
      "model.gguf starts with GGUX instead of GGUF")
def _(d):
    write_text(os.path.join(d, GGUF), b"GGUX" + gguf_good(d)[4:])


@case("gguf_version_1", GGUF_CONVERT, GGUF, "GGUF version 1 is not supported",
      "the version field says 1 (the old format without 64-bit counts)")
def _(d):
    write_gguf_patched(d, 4, "<I", 1)


@case("gguf_truncated_header", GGUF_CONVERT, GGUF, "truncated in metadata",
      "the file is cut 60 bytes in, inside the metadata")
def _(d):
    write_text(os.path.join(d, GGUF), gguf_good(d)[:60])


@case("gguf_truncated_token_list", GGUF_CONVERT, GGUF, "array of 384 elements does not fit",
      "the file is cut inside the tokenizer's token list (its count promises more than is left)")
def _(d):
    write_text(os.path.join(d, GGUF), gguf_good(d)[:3000])


@case("gguf_truncated_data", GGUF_CONVERT, GGUF, "data runs past the end of the file",
      "the file is cut in the middle of the tensor data (header intact)")
def _(d):
    raw = gguf_good(d)
    write_text(os.path.join(d, GGUF), raw[:len(raw) - 1000])


@case("gguf_tensor_count_huge", GGUF_CONVERT, GGUF, "tensors is absurd",
      "the tensor count is 2^40")
def _(d):
    write_gguf_patched(d, 8, "<Q", 1 << 40)


@case("gguf_key_length_huge", GGUF_CONVERT, GGUF, "bytes is absurd",
      "the first metadata key's length is 2^62")
def _(d):
    write_gguf_patched(d, 24, "<Q", 1 << 62)


@case("gguf_array_count_huge", GGUF_CONVERT, GGUF, "does not fit the file",
      "tokenizer.ggml.scores claims 2^33 floats")
def _(d):
    meta, tensors = gguf_parts(d)
    raw = make_gguf.serialize(meta, tensors)
    key = make_gguf.s("tokenizer.ggml.scores") + struct.pack("<I", make_gguf.ARRAY)
    at = raw.index(key) + len(key) + 4  # past the element type
    raw = bytearray(raw)
    raw[at:at + 8] = struct.pack("<Q", 1 << 33)
    write_text(os.path.join(d, GGUF), bytes(raw))


@case("gguf_nested_array", GGUF_CONVERT, GGUF, "arrays of arrays are not supported",
      "a metadata array whose elements are arrays")
def _(d):
    meta, tensors = gguf_parts(d)
    meta.insert(0, ("general.nested", make_gguf.ARRAY, (make_gguf.ARRAY, [])))
    write_gguf(d, meta, tensors)


@case("gguf_bool_not_0_or_1", GGUF_CONVERT, GGUF, "a bool must be 0 or 1",
      "tokenizer.ggml.add_space_prefix holds the byte 7")
def _(d):
    meta, tensors = gguf_parts(d)
    set_meta(meta, "tokenizer.ggml.add_space_prefix", make_gguf.U8, 7)
    raw = make_gguf.serialize(meta, tensors)
    key = make_gguf.s("tokenizer.ggml.add_space_prefix")
    at = raw.index(key) + len(key)
    raw = bytearray(raw)
    raw[at:at + 4] = struct.pack("<I", make_gguf.BOOL)
    write_text(os.path.join(d, GGUF), bytes(raw))


@case("gguf_duplicate_key", GGUF_CONVERT, GGUF, "metadata general.name repeats",
      "general.name appears twice")
def _(d):
    meta, tensors = gguf_parts(d)
    meta.append(("general.name", make_gguf.STRING, "again"))
    write_gguf(d, meta, tensors)


@case("gguf_unsupported_type", GGUF_CONVERT, GGUF, "ggml type IQ2_XXS (16) is not supported",
      "blk.0.ffn_up.weight says ggml type 16 (IQ2_XXS), which zeroskip does not read")
def _(d):
    meta, tensors = gguf_parts(d)
    tensors = [(n, dims, 16 if n == "blk.0.ffn_up.weight" else t, data)
               for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_q5_k_rows_not_blocks", GGUF_CONVERT, GGUF,
      "rows of 32 are not whole blocks of 256",
      "blk.0.ffn_up.weight says Q5_K (super-blocks of 256) for rows of 32 values")
def _(d):
    meta, tensors = gguf_parts(d)
    tensors = [(n, dims, 13 if n == "blk.0.ffn_up.weight" else t, data)
               for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_zero_dimension", GGUF_CONVERT, GGUF, "dimension 0",
      "output_norm.weight has a dimension of 0")
def _(d):
    meta, tensors = gguf_parts(d)
    tensors = [(n, [0] if n == "output_norm.weight" else dims, t, data)
               for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_overlapping_tensors", GGUF_CONVERT, GGUF, "overlap",
      "blk.0.ffn_norm.weight records the same offset as blk.0.attn_norm.weight")
def _(d):
    meta, tensors = gguf_parts(d)
    offsets, offset = [], 0
    for name, dims, t, data in tensors:
        offsets.append(offset)
        offset += len(data) + (-len(data)) % make_gguf.ALIGN
    names = [n for n, _, _, _ in tensors]
    offsets[names.index("blk.0.ffn_norm.weight")] = offsets[names.index("blk.0.attn_norm.weight")]
    write_gguf(d, meta, tensors, offsets=offsets)


@case("gguf_unaligned_offset", GGUF_CONVERT, GGUF, "offset is not aligned",
      "a tensor offset that is not a multiple of general.alignment (32)")
def _(d):
    meta, tensors = gguf_parts(d)
    offsets, offset = [], 0
    for name, dims, t, data in tensors:
        offsets.append(offset)
        offset += len(data) + (-len(data)) % make_gguf.ALIGN
    offsets[1] += 2
    write_gguf(d, meta, tensors, offsets=offsets)


@case("gguf_arch_not_llama", GGUF_CONVERT, GGUF, "general.architecture 'gpt2' is not supported",
      "general.architecture is gpt2")
def _(d):
    meta, tensors = gguf_parts(d)
    set_meta(meta, "general.architecture", make_gguf.STRING, "gpt2")
    write_gguf(d, meta, tensors)


@case("gguf_no_activation", GGUF_CONVERT, GGUF, "pass --act relu or --act silu",
      "no llama.hidden_act and no --act: llama.cpp would run SiLU, zeroskip refuses to guess")
def _(d):
    meta, tensors = gguf_parts(d, with_act=False)
    write_gguf(d, meta, tensors)


@case("gguf_act_disagrees", GGUF_CONVERT + ["--act", "silu"], GGUF,
      "llama.hidden_act is 'relu' but --act says 'silu'",
      "the metadata says relu, the command line silu")
def _(d):
    write_text(os.path.join(d, GGUF), gguf_good(d))


@case("gguf_act_not_utf8", GGUF_CONVERT, GGUF_META, "is not supported (relu, silu or fatrelu)",
      "llama.hidden_act is the bytes 'rel\\xff' (not UTF-8; found by fuzz_gguf)")
def _(d):
    meta, tensors = gguf_parts(d)
    raw = make_gguf.serialize(meta, tensors)
    key = make_gguf.s("llama.hidden_act") + struct.pack("<I", make_gguf.STRING) + make_gguf.s("relu")
    at = raw.index(key) + len(key) - 1
    raw = bytearray(raw)
    raw[at] = 0xFF
    write_text(os.path.join(d, GGUF), bytes(raw))


@case("gguf_shape_vs_metadata", GGUF_CONVERT, GGUF, "but the GGUF metadata implies",
      "llama.feed_forward_length says 48, the FFN tensors hold 40")
def _(d):
    meta, tensors = gguf_parts(d)
    set_meta(meta, "llama.feed_forward_length", make_gguf.U32, 48)
    write_gguf(d, meta, tensors)


@case("gguf_heads_not_divisor", GGUF_CONVERT, GGUF_META, "multiple of num_attention_heads",
      "llama.attention.head_count 3 does not divide the hidden size 32")
def _(d):
    meta, tensors = gguf_parts(d)
    set_meta(meta, "llama.attention.head_count", make_gguf.U32, 3)
    set_meta(meta, "llama.attention.head_count_kv", make_gguf.U32, 3)
    meta[:] = [m for m in meta if m[0] != "llama.rope.dimension_count"]
    write_gguf(d, meta, tensors)


@case("gguf_nan_block_scale", GGUF_CONVERT + ["--dtype", "q8"], GGUF, "values are NaN or Inf",
      "a q8_0 block of token_embd.weight has a NaN scale")
def _(d):
    meta, tensors = gguf_parts(d, dtype="q8_0")
    tensors = [(n, dims, t, (b"\xff\x7f" + data[2:]) if n == "token_embd.weight" else data)
               for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_nan_q5_0_scale", GGUF_CONVERT + ["--dtype", "q8"], GGUF, "values are NaN or Inf",
      "a Q5_0 block of token_embd.weight has a NaN scale (Q5_0 is rewritten as q8 with its d)")
def _(d):
    meta, tensors = gguf_parts(d, dtype="q5_0")
    tensors = [(n, dims, t, (b"\xff\x7f" + data[2:]) if n == "token_embd.weight" else data)
               for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_inf_q4_1_min", GGUF_CONVERT + ["--dtype", "q8"], GGUF, "values are NaN or Inf",
      "a Q4_1 block of blk.0.attn_q.weight has an infinite min (read as f32 before quantizing)")
def _(d):
    meta, tensors = gguf_parts(d, dtype="q4_1")
    tensors = [(n, dims, t, (data[:2] + b"\x00\x7c" + data[4:]) if n == "blk.0.attn_q.weight"
                else data) for n, dims, t, data in tensors]
    write_gguf(d, meta, tensors)


@case("gguf_token_type_bad", GGUF_CONVERT, GGUF, "is not a token type (1-6)",
      "tokenizer.ggml.token_type[5] is 9")
def _(d):
    meta, tensors = gguf_parts(d)
    for k, (name, vtype, value) in enumerate(meta):
        if name == "tokenizer.ggml.token_type":
            types = list(value[1])
            types[5] = 9
            meta[k] = (name, vtype, (value[0], types))
    write_gguf(d, meta, tensors)


@case("gguf_tokenizer_not_llama", GGUF_CONVERT, GGUF,
      "tokenizer.ggml.model 'gpt2' is not supported", "a GPT-2 BPE tokenizer (not sentencepiece)")
def _(d):
    meta, tensors = gguf_parts(d)
    set_meta(meta, "tokenizer.ggml.model", make_gguf.STRING, "gpt2")
    write_gguf(d, meta, tensors)


@case("gguf_unknown_tensor", GGUF_CONVERT, GGUF, "unexpected tensor 'rope_freqs.weight'",
      "an extra rope_freqs.weight (llama 3.1 rope scaling), which zeroskip does not apply")
def _(d):
    meta, tensors = gguf_parts(d)
    tensors.append(("rope_freqs.weight", [4], 0, b"\0" * 16))
    write_gguf(d, meta, tensors)


def retype_meta(meta, key, vtype, value=None):
    """Sets `key`'s type (and value, if given), keeping its place in the metadata."""
    for k, (name, old_type, old_value) in enumerate(meta):
        if name == key:
            meta[k] = (name, vtype, old_value if value is None else value)


@case("gguf_rms_eps_nan", GGUF_CONVERT, GGUF,
      "metadata llama.attention.layer_norm_rms_epsilon is NaN or infinite",
      "llama.attention.layer_norm_rms_epsilon is NaN (the config text said null, so the default "
      "was used)")
def _(d):
    meta, tensors = gguf_parts(d)
    retype_meta(meta, "llama.attention.layer_norm_rms_epsilon", make_gguf.F32, float("nan"))
    write_gguf(d, meta, tensors)


@case("gguf_rope_base_inf", GGUF_CONVERT, GGUF,
      "metadata llama.rope.freq_base is NaN or infinite",
      "llama.rope.freq_base is +Inf (the config text said null, so the default was used)")
def _(d):
    meta, tensors = gguf_parts(d)
    retype_meta(meta, "llama.rope.freq_base", make_gguf.F32, float("inf"))
    write_gguf(d, meta, tensors)


@case("gguf_hf_tensor_names", GGUF_CONVERT, GGUF,
      "unexpected tensor 'model.embed_tokens.weight' (not a tensor of llama.cpp's llama",
      "the tensors carry Hugging Face names, not llama.cpp's (q/k would not be un-permuted)")
def _(d):
    meta, tensors = gguf_parts(d)
    hf = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
          "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
          "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
          "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
          "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
          "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
          "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
          "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
          "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
          "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight"}
    write_gguf(d, meta, [(hf[n], dims, t, data) for n, dims, t, data in tensors])


@case("gguf_token_type_strings", GGUF_CONVERT, GGUF,
      "metadata tokenizer.ggml.token_type must be an array of numbers, not an array of strings",
      "tokenizer.ggml.token_type holds strings (integers of any width are accepted)")
def _(d):
    meta, tensors = gguf_parts(d)
    for k, (name, vtype, value) in enumerate(meta):
        if name == "tokenizer.ggml.token_type":
            meta[k] = (name, vtype, (make_gguf.STRING, [str(t) for t in value[1]]))
    write_gguf(d, meta, tensors)


# --- output


@case("out_missing_dir", ["convert", "{case}/hf", "-o", "{out}/no/such/dir/out.zsk"],
      "no/such/dir/out.zsk", "cannot create output file: No such file or directory",
      "valid checkpoint, but the output directory does not exist")
def _(d):
    write_hf(d)


# --- .zsk files (start from a good conversion; patched copies)

INFO = ["info", "{case}/model.zsk"]
VERIFY = ["verify", "{case}/model.zsk"]
RUN = ["run", "-m", "{case}/model.zsk", "-f", "{case}/prompt.txt", "-n", "1"]
ZSK = "model.zsk"
GOOD_ZSK = None  # bytes, filled in by main()
GOOD_SHADOW_ZSK = None  # the same with its shadow gate (`zeroskip shadow`)


def write_zsk(d, zsk_or_bytes):
    os.makedirs(d, exist_ok=True)
    raw = zsk_or_bytes.b if isinstance(zsk_or_bytes, Zsk) else zsk_or_bytes
    write_text(os.path.join(d, "model.zsk"), bytes(raw))


def good():
    return Zsk(GOOD_ZSK)


@case("zsk_empty", INFO, ZSK, "file is empty", "model.zsk has 0 bytes")
def _(d):
    write_zsk(d, b"")


@case("zsk_is_directory", INFO, ZSK, "not a regular file",
      "model.zsk is a directory")
def _(d):
    os.makedirs(os.path.join(d, "model.zsk"))
    write_text(os.path.join(d, "model.zsk", ".keep"), "")


@case("zsk_truncated_header", INFO, ZSK, "file is truncated (60 bytes; the header alone is 128)",
      "model.zsk cut to 60 bytes, inside the fixed header")
def _(d):
    write_zsk(d, GOOD_ZSK[:60])


@case("zsk_truncated", INFO, ZSK, "but its header records",
      "model.zsk cut in the middle of the tensor data")
def _(d):
    write_zsk(d, GOOD_ZSK[:len(GOOD_ZSK) // 2])


@case("zsk_bad_magic", INFO, ZSK, "not a zeroskip model file (bad magic)",
      "the magic is 'GGUF...' instead of 'ZSKMODEL'")
def _(d):
    write_zsk(d, b"GGUF\x03\x00\x00\x00" + GOOD_ZSK[8:])


@case("zsk_future_version", INFO, ZSK, "format version 2 is not supported",
      "header version 2 (this build reads version 1)")
def _(d):
    z = good()
    z.set("version", 2)
    write_zsk(d, z.reseal())


@case("zsk_version_zero", INFO, ZSK, "format version 0 is not supported",
      "header version 0")
def _(d):
    z = good()
    z.set("version", 0)
    write_zsk(d, z.reseal())


@case("zsk_metadata_past_eof", INFO, ZSK, "metadata region",
      "metadata_offset points 100 bytes before EOF with the original (larger) size")
def _(d):
    z = good()
    z.set("metadata_offset", len(z.b) - 100)
    write_zsk(d, z)


@case("zsk_tokenizer_size_lies", INFO, ZSK, "tokenizer region",
      "tokenizer_size is 2^40 (past EOF)")
def _(d):
    z = good()
    z.set("tokenizer_size", 1 << 40)
    write_zsk(d, z)


@case("zsk_table_offset_overflow", INFO, ZSK, "tensor table end overflows 64 bits",
      "table_offset is 2^64 - 64: offset + table size wraps around")
def _(d):
    z = good()
    z.set("table_offset", 2**64 - 64)
    write_zsk(d, z)


@case("zsk_table_past_eof", INFO, ZSK, "tensor table region",
      "table_offset points 64 bytes before EOF")
def _(d):
    z = good()
    z.set("table_offset", len(z.b) - 64)
    write_zsk(d, z)


@case("zsk_tensor_count_absurd", INFO, ZSK, "tensor count 1152921504606846976 is absurd",
      "tensor_count is 2^60")
def _(d):
    z = good()
    z.set("tensor_count", 1 << 60)
    write_zsk(d, z)


@case("zsk_header_checksum", INFO, ZSK, "header checksum mismatch",
      "one byte of the metadata JSON changed ('relu' -> 'rely'), checksum not updated")
def _(d):
    z = good()
    off, size = z.get("metadata_offset"), z.get("metadata_size")
    meta = bytes(z.b[off:off + size])
    i = meta.index(b'"relu"') + 4
    z.b[off + i] = ord("y")
    write_zsk(d, z)


@case("zsk_metadata_not_json", INFO, ZSK, "metadata is not a JSON object with a config",
      "metadata replaced by non-JSON text (checksum recomputed)")
def _(d):
    write_zsk(d, good().replace_metadata("this is not json").reseal())


@case("zsk_metadata_bad_config", INFO, ZSK, "metadata: hidden_size must be in [1, 65536], got 0",
      "metadata config has hidden_size 0 (checksum recomputed)")
def _(d):
    z = good()
    meta = json.loads(z.region("metadata_offset", z.get("metadata_size")))
    meta["config"]["hidden_size"] = 0
    write_zsk(d, z.replace_metadata(json.dumps(meta, separators=(",", ":"))).reseal())


@case("zsk_tokenizer_kind_wrong", INFO, ZSK,
      'metadata: tokenizer "gpt2_bpe" but LlamaForCausalLM needs "sentencepiece"',
      "a Llama file whose metadata says its tokenizer is GPT-2 BPE (checksum recomputed)")
def _(d):
    z = good()
    meta = json.loads(z.region("metadata_offset", z.get("metadata_size")))
    meta["tokenizer"] = "gpt2_bpe"
    write_zsk(d, z.replace_metadata(json.dumps(meta, separators=(",", ":"))).reseal())


@case("zsk_tensor_overlap", INFO, ZSK, "overlap",
      "layers.0.attn_k's offset moved onto layers.0.attn_q's data (checksum recomputed)")
def _(d):
    z = good()
    q, k = z.find("layers.0.attn_q"), z.find("layers.0.attn_k")
    z.rset(k, "offset", z.rget(q, "offset"))
    write_zsk(d, z.reseal())


@case("zsk_wrong_nbytes", INFO, ZSK, "does not match dtype x shape",
      "a tensor record's nbytes is 2 larger than dtype x shape (checksum recomputed)")
def _(d):
    z = good()
    i = z.find("output_norm")
    z.rset(i, "nbytes", z.rget(i, "nbytes") + 2)
    write_zsk(d, z.reseal())


@case("zsk_tensor_data_past_eof", INFO, ZSK, "tensor 'output_norm' data region",
      "output_norm's data offset is past EOF (checksum recomputed)")
def _(d):
    z = good()
    z.rset(z.find("output_norm"), "offset", len(z.b) + 64 * 16)
    write_zsk(d, z.reseal())


@case("zsk_tensor_misaligned", INFO, ZSK, "data offset is not 64-byte aligned",
      "a tensor's data offset is moved by 4 bytes (checksum recomputed)")
def _(d):
    z = good()
    i = z.find("output_norm")
    z.rset(i, "offset", z.rget(i, "offset") + 4)
    write_zsk(d, z.reseal())


@case("zsk_unknown_dtype_code", INFO, ZSK, "unknown dtype code 7",
      "a tensor record's dtype code is 7 (the first after q6k) (checksum recomputed)")
def _(d):
    z = good()
    z.rset(z.find("output_norm"), "dtype", 7)
    write_zsk(d, z.reseal())


@case("zsk_q8_without_scales", INFO, ZSK, "byte size 1280 does not match dtype x shape",
      "ffn_up [40, 32] relabelled q8 with 1 byte per element: its 40 block scales are missing "
      "(checksum recomputed)")
def _(d):
    z = good()
    i = z.find("layers.0.ffn_up")
    z.rset(i, "dtype", 3)
    z.rset(i, "nbytes", 40 * 32)
    write_zsk(d, z.reseal())


@case("zsk_q8_partial_blocks", INFO, ZSK, "rows of 40 elements are not whole q8 blocks of 32",
      "ffn_down relabelled q8 with its shape swapped to [32, 40]: rows of 40 are not whole blocks "
      "(checksum recomputed)")
def _(d):
    z = good()
    i = z.find("layers.0.ffn_down")
    z.rset(i, "dtype", 3)
    z.rset(i, "shape0", 32)
    z.rset(i, "shape1", 40)
    write_zsk(d, z.reseal())


@case("zsk_q8_norm_run", RUN, ZSK, "tensor 'output_norm' must be f32",
      "output_norm relabelled q8 (one well-formed block): the file parses, loading the model "
      "refuses a quantized norm (checksum recomputed)")
def _(d):
    z = good()
    i = z.find("output_norm")
    z.rset(i, "dtype", 3)
    z.rset(i, "nbytes", 34)
    write_zsk(d, z.reseal())
    write_text(os.path.join(d, "prompt.txt"), "the cat")


@case("zsk_duplicate_name", INFO, ZSK, "tensor 'layers.0.attn_q' appears twice",
      "attn_k's record renamed to layers.0.attn_q (checksum recomputed)")
def _(d):
    z = good()
    z.rname(z.find("layers.0.attn_k"), "layers.0.attn_q")
    write_zsk(d, z.reseal())


@case("zsk_name_unterminated", INFO, ZSK, "name is not terminated",
      "a tensor record's 96-byte name field has no NUL (checksum recomputed)")
def _(d):
    z = good()
    r = z.record_offset(0)
    z.b[r:r + 96] = b"x" * 96
    write_zsk(d, z.reseal())


@case("zsk_data_corrupted", VERIFY, ZSK, "checksum mismatch (data corrupted)",
      "one byte of layers.0.ffn_up data flipped: header is fine, `verify` catches it")
def _(d):
    z = good()
    i = z.find("layers.0.ffn_up")
    z.b[z.rget(i, "offset") + 17] ^= 0x40
    write_zsk(d, z)


@case("zsk_missing_tensor_run", RUN, ZSK, "layers.0.ffn_gate",
      "layers.0.ffn_gate record renamed (checksum recomputed): the file parses, loading the "
      "model finds the tensor missing")
def _(d):
    z = good()
    z.rname(z.find("layers.0.ffn_gate"), "layers.0.ffn_gatX")
    write_zsk(d, z.reseal())
    write_text(os.path.join(d, "prompt.txt"), "the cat")


@case("zsk_tokenizer_garbage_run", RUN, ZSK,
      "the embedded tokenizer is not a valid sentencepiece model",
      "embedded tokenizer bytes replaced by noise (checksum recomputed)", forbid=SP_NOISE)
def _(d):
    z = good()
    off, size = z.get("tokenizer_offset"), z.get("tokenizer_size")
    z.b[off:off + size] = np.random.default_rng(12).integers(0, 256, size, np.uint8).tobytes()
    write_zsk(d, z.reseal())
    write_text(os.path.join(d, "prompt.txt"), "the cat")


def good_shadowed():
    return Zsk(GOOD_SHADOW_ZSK)


def write_shadowed(d, z):
    write_zsk(d, z.reseal())
    write_text(os.path.join(d, "prompt.txt"), "the cat")


@case("zsk_shadow_half_run", RUN, ZSK,
      "missing tensor 'layers.0.ffn_gate_shadow_norms' (half a shadow gate)",
      "a shadowed file whose shadow norms record is renamed (to ..._normX; checksum "
      "recomputed): the shadow gate is half there")
def _(d):
    z = good_shadowed()
    z.rname(z.find("layers.0.ffn_gate_shadow_norms"), "layers.0.ffn_gate_shadow_normX")
    write_shadowed(d, z)


@case("zsk_shadow_norms_f16_run", RUN, ZSK,
      "tensor 'layers.0.ffn_gate_shadow_norms' must be f32 [2, 40], row-major",
      "the shadow norms [2, 40] f32 relabelled f16 [4, 40] (same bytes; checksum recomputed)")
def _(d):
    z = good_shadowed()
    i = z.find("layers.0.ffn_gate_shadow_norms")
    z.rset(i, "dtype", 1)
    z.rset(i, "shape0", 4)
    write_shadowed(d, z)


@case("zsk_shadow_negative_norm_run", RUN, ZSK, "holds a norm that is negative, infinite or NaN",
      "one shadow error norm set to -1 (it would certify neurons that fire)")
def _(d):
    z = good_shadowed()
    off = z.rget(z.find("layers.0.ffn_gate_shadow_norms"), "offset")
    struct.pack_into("<f", z.b, off + 4 * 3, -1.0)
    write_shadowed(d, z)


@case("shadow_truncated_input", ["shadow", "{case}/model.zsk", "-o", "{out}/out.zsk"], ZSK,
      "but its header records",
      "`zeroskip shadow` on a model.zsk cut in the middle of its data: nothing is written")
def _(d):
    write_zsk(d, GOOD_ZSK[:len(GOOD_ZSK) // 2])


@case("run_prompt_invalid_utf8", RUN, "prompt.txt", "is not valid UTF-8",
      "valid model; the prompt file holds bytes that are not UTF-8")
def _(d):
    write_zsk(d, GOOD_ZSK)
    write_text(os.path.join(d, "prompt.txt"), b"the cat \xff\xfe sat \xc3(")


@case("perplexity_invalid_utf8", ["perplexity", "-m", "{case}/model.zsk", "-f",
                                  "{case}/text.txt"], "text.txt", "is not valid UTF-8",
      "valid model; the perplexity text has an overlong UTF-8 encoding of '/'")
def _(d):
    write_zsk(d, GOOD_ZSK)
    write_text(os.path.join(d, "text.txt"), b"the cat sat on the mat \xc0\xaf again\n")


@case("run_model_missing", ["run", "-m", "{case}/missing.zsk", "-p", "hi", "-n", "1"],
      "missing.zsk", "cannot open: No such file or directory",
      "the model path does not exist")
def _(d):
    os.makedirs(d, exist_ok=True)
    write_text(os.path.join(d, ".keep"), "")


# ------------------------------------------------------------------------------------ main


def convert_good(zeroskip, work):
    """Converts the good base checkpoint with the binary; returns the .zsk bytes, plain and with
    its shadow gate."""
    hf = write_hf(work)
    out = os.path.join(work, "good.zsk")
    subprocess.run([zeroskip, "convert", hf, "-o", out], check=True, stdout=subprocess.DEVNULL)
    shadowed = os.path.join(work, "good-shadow.zsk")
    subprocess.run([zeroskip, "shadow", out, "-o", shadowed], check=True, stdout=subprocess.DEVNULL)
    raws = []
    for path in (out, shadowed):
        with open(path, "rb") as f:
            raws.append(f.read())
        # The committed references: make sure the bases really are good.
        subprocess.run([zeroskip, "verify", path], check=True, stdout=subprocess.DEVNULL)
    return raws


README_HEAD = """# Corrupt-input corpus

Handcrafted bad inputs for `zeroskip`, one per directory in `cases/`, and a manifest
(`cases.json`) pinning the error each must produce. The contract: every bad input ends with exit
status 1 and exactly one stderr line `zeroskip: error: <file>: <what is wrong>`, no crash, and no
output file (neither `OUT.zsk` nor `OUT.zsk.tmp`) left behind.

    /usr/bin/python3 tests/corrupt/make_corpus.py [--zeroskip build/zeroskip]   # regenerate
    python3 tests/corrupt/check_corpus.py build/zeroskip [--only NAME ...] [--strict]

`make_corpus.py` (numpy; Debian's `/usr/bin/python3`) writes every case from a tiny valid model
(hidden 32, ffn 40, 1 layer, 4 heads / 2 kv heads, vocab 384, f16, tied embeddings,
`tests/data/tokenizer.model`; `opt_*` cases: a tiny OPT checkpoint with `tests/data/bpe`'s
vocab.json and merges.txt) with one thing broken. `.zsk` cases start from a file the binary
converts and are patched in Python; patches that must get past the header checksum recompute it
with a pure-Python XXH64 that is first checked against the binary's own output. Output is
deterministic (byte-identical on every run), and this README is regenerated with it.
`check_corpus.py` (standard library only) runs each case in a fresh empty temp dir `{out}`,
checks the exit status, the single `zeroskip: error: ` line (naming a path that ends in
`error_file`, the reason containing `expect`, no trailing whitespace, none of `forbid`) and that
`{out}` is empty afterwards; it prints one line per case and `N passed, M failed`.

Manifest fields: `name`, `args` (`{case}` = the case dir, `{out}` = the fresh temp dir),
`error_file` (suffix of the path the error line must name), `expect` (substring of the reason),
`why`; optional `expect_exit` (0 for the one passing case, whose stderr must be warnings that
contain `expect` and every `expect_also`), `forbid`, and `known_bad` + `known_bad_note` for
messages the binary currently gets wrong: those are run and reported as KNOWN-BAD but do not fail
the run unless `--strict` is given.

"""


def md(text):
    return text.replace("|", "\\|").replace("\n", " ")


def write_readme(binary, manifest):
    """Documents each case with the line the binary prints for it today."""
    import check_corpus  # noqa: E402 (same directory)
    rows = ["| case | command | what is wrong | zeroskip says |", "|---|---|---|---|"]
    for e in manifest:
        _, lines, _ = check_corpus.invoke(binary, e, CASES_DIR)
        said = " / ".join(f"`{ln.rstrip()}`" for ln in lines) or "(nothing)"
        if e.get("known_bad"):
            said += f" **known bad:** {e['known_bad_note']}; should be `...{e['expect']}...`"
        rows.append(f"| `{e['name']}` | {e['args'][0]} | {md(e['why'])} | {md(said)} |")
    with open(README, "w") as f:
        f.write(README_HEAD + "\n".join(rows) + "\n")


def main():
    global GOOD_ZSK, GOOD_SHADOW_ZSK
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zeroskip", default=os.path.join(ROOT, "build", "zeroskip"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as work:
        GOOD_ZSK, GOOD_SHADOW_ZSK = convert_good(os.path.abspath(args.zeroskip), work)
    check_xxh64(Zsk(GOOD_ZSK))

    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    if os.path.isdir(CASES_DIR):
        shutil.rmtree(CASES_DIR)
    os.makedirs(CASES_DIR)
    manifest = []
    for name, build, entry in CASES:
        d = os.path.join(CASES_DIR, name)
        os.makedirs(d)
        build(d)
        manifest.append(entry)
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    write_readme(os.path.abspath(args.zeroskip), manifest)
    print(f"wrote {len(manifest)} cases to {os.path.relpath(CASES_DIR, ROOT)} and "
          f"{os.path.relpath(MANIFEST, ROOT)}")


if __name__ == "__main__":
    main()
