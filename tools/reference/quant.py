"""q8 and q4 weights as docs/FORMAT.md defines them, in numpy: an implementation independent of
zeroskip's C++ (src/format/dtype.cpp), for the reference on quantized weights and for pinning the
converter's bytes; and the activations' quantization that the products with them apply
(kernels/ref/kernels_ref.h, QuantizeActivations).

A row of a matrix is cut into blocks of 32 values v (float32):
  q8: d = f16(max|v| / 127); q = clip(rint(v / d), -127, 127) (0 where d == 0); value d * q.
  q4: m = the first v of largest |v|; d = f16(m / -8); q = clip(rint(v / d), -8, 7) + 8
      (8 where d == 0); value d * (q - 8).
The divisions are float32 and rint rounds half to even, as IEEE float32 code does. Bytes of a
block: d as little-endian f16, then q8: 32 int8; q4: 16 bytes, byte j = q[j] | q[j + 16] << 4.

What a `zeroskip convert --dtype q8|q4` stores (the conversion policy, docs/FORMAT.md "Weight
types"): norms f32; matrices whose stored rows are not whole blocks bf16; under q4 the
embeddings and the LM head q8; everything else the requested type. The FFN down projection is
stored transposed ([ffn, hidden]), so its blocks run along the Hugging Face tensor's first axis.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402

BLOCK = 32


MIN_ACTIVATION_SCALE = np.float32(2.0 ** -96)


def quantize_activations(x):
    """x [..., n] (n whole blocks) -> the values d * q the kernels multiply with, float64:
    per block amax = max|x|, d = amax / 127, q = rint(x * (127 / amax)), in float32; q = 0 when
    amax < 2^-96; d = NaN when the block holds Inf or NaN."""
    v = np.asarray(x, dtype=np.float32)
    v = v.reshape(*v.shape[:-1], v.shape[-1] // BLOCK, BLOCK)
    amax = np.abs(v).max(axis=-1, keepdims=True)
    finite = np.isfinite(v).all(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = amax / np.float32(127)
        q = np.rint(v * (np.float32(127) / amax))
    q = np.where(amax < MIN_ACTIVATION_SCALE, np.float32(0), q)
    d = np.where(finite, d, np.float32(np.nan))
    q = np.where(finite, q, np.float32(0))
    return (d.astype(np.float64) * q.astype(np.float64)).reshape(np.shape(x))


def _blocks(rows):
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] % BLOCK:
        raise ValueError(f"rows of shape {rows.shape} are not whole blocks of {BLOCK}")
    return rows.reshape(rows.shape[0], rows.shape[1] // BLOCK, BLOCK)


def quantize(rows, dtype):
    """[r, c] float32 -> (d float16 [r, c/32], levels int8 [r, c/32, 32]) with value d * level."""
    v = _blocks(rows)
    if dtype == "q8":
        d = (np.abs(v).max(axis=-1) / np.float32(127)).astype(np.float16)
        lo, hi = -127, 127
    elif dtype == "q4":
        first_largest = np.abs(v).argmax(axis=-1)[..., None]  # argmax: the first of equals
        extreme = np.take_along_axis(v, first_largest, axis=-1)[..., 0]
        d = (extreme / np.float32(-8)).astype(np.float16)
        lo, hi = -8, 7
    else:
        raise ValueError(f"not a quantized type: {dtype}")
    if not np.isfinite(d).all():
        raise OverflowError("a block scale overflows f16")
    df = d.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        levels = np.where(df == 0, np.float32(0), np.clip(np.rint(v / df), lo, hi))
    return d, levels.astype(np.int8)


def dequantize(d, levels):
    """The stored values, [r, c] float32 (exact: an f16 times a small integer)."""
    values = d.astype(np.float32)[..., None] * levels.astype(np.float32)
    return values.reshape(values.shape[0], -1)


def to_bytes(d, levels, dtype):
    """The bytes of the rows as a .zsk stores them (blocks in row order)."""
    scale = d.astype("<f2").view(np.uint8).reshape(*d.shape, 2)
    if dtype == "q8":
        body = levels.view(np.uint8)
    else:
        q = (levels + 8).astype(np.uint8)
        body = q[..., :BLOCK // 2] | (q[..., BLOCK // 2:] << 4)
    return np.concatenate([scale, body], axis=-1).tobytes()


def stored_dtype(name, stored_shape, dtype):
    """The dtype `convert --dtype` gives the HF tensor `name` (stored shape: as in the .zsk)."""
    if len(stored_shape) != 2:
        return "f32"  # norms
    if stored_shape[1] % BLOCK:
        return "bf16"
    if dtype == "q4" and name in ("model.embed_tokens.weight", "lm_head.weight"):
        return "q8"
    return dtype


def as_converted(tensors, dtype):
    """HF tensors (name -> float32 array) with the values a conversion to `dtype` stores, and
    the names of those stored quantized."""
    out, quantized = {}, set()
    for name, t in tensors.items():
        t = np.asarray(t, dtype=np.float32)
        transposed = name.endswith("mlp.down_proj.weight")
        stored = t.T if transposed else t
        kind = stored_dtype(name, stored.shape, dtype)
        if kind == "f32":
            values = stored
        elif kind == "bf16":
            values = hfio.bf16_bits_to_f32(hfio.f32_to_bf16_bits(stored))
        else:
            values = dequantize(*quantize(stored, kind))
            quantized.add(name)
        out[name] = np.ascontiguousarray(values.T if transposed else values)
    return out, quantized
