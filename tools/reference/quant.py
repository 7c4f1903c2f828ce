"""q8, q4, q4k and q6k weights as docs/FORMAT.md defines them, in numpy: an implementation independent of
zeroskip's C++ (src/format/dtype.cpp), for the reference on quantized weights and for pinning the
converter's bytes; and the activations' quantization that the products with them apply
(kernels/ref/kernels_ref.h, QuantizeActivations).

A row of a matrix is cut into blocks of 32 values v (float32):
  q8: d = f16(max|v| / 127); q = clip(rint(v / d), -127, 127) (0 where d == 0); value d * q.
  q4: m = the first v of largest |v|; d = f16(m / -8); q = clip(rint(v / d), -8, 7) + 8
      (8 where d == 0); value d * (q - 8).
The divisions are float32 and rint rounds half to even, as IEEE float32 code does. Bytes of a
block: d as little-endian f16, then q8: 32 int8; q4: 16 bytes, byte j = q[j] | q[j + 16] << 4.

q4k and q6k (llama.cpp's q4_K and q6_K, super-blocks of 256): quantize_k / dequantize_k below.

What a `zeroskip convert --dtype q8|q4|q4k|q6k` stores (the conversion policy, docs/FORMAT.md
"Weight types"): norms f32; matrices whose stored rows are not whole blocks of 32 bf16, K-quant
rows not whole blocks of 256 q8; under q4 the embeddings and the LM head q8, under q4k q6k;
everything else the requested type. The FFN down projection is
stored transposed ([ffn, hidden]), so its blocks run along the Hugging Face tensor's first axis.
"""
import os
import re
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


def more_bits(name, layers):
    """Whether --dtype q4k stores `name` in q6k: v_proj of llama.cpp's Q4_K_M use_more_bits
    layers, the first and last eighth and every third (Q4_K_M also keeps their down_proj Q6_K)."""
    m = re.search(r"layers\.(\d+)\.self_attn\.v_proj\.weight$", name)
    if not m:
        return False
    i = int(m.group(1))
    return i < layers // 8 or i >= 7 * layers // 8 or (i - layers // 8) % 3 == 2


def stored_dtype(name, stored_shape, dtype, layers=0):
    """The dtype `convert --dtype` gives the HF tensor `name` (stored shape: as in the .zsk) of a
    model of `layers` layers."""
    if len(stored_shape) != 2:
        return "f32"  # norms
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        dtype = {"q4": "q8", "q4k": "q6k"}.get(dtype, dtype)
    if dtype == "q4k" and more_bits(name, layers):
        dtype = "q6k"
    if stored_shape[1] % BLOCK:
        return "bf16"
    if dtype in K_BLOCK_BYTES and stored_shape[1] % SUPER:
        return "q8"
    return dtype


def as_converted(tensors, dtype):
    """HF tensors (name -> float32 array) with the values a conversion to `dtype` stores, and
    the names of those stored quantized."""
    out, quantized = {}, set()
    layers = 1 + max((int(m.group(1)) for m in map(re.compile(r"layers\.(\d+)\.").search, tensors)
                      if m), default=-1)
    for name, t in tensors.items():
        t = np.asarray(t, dtype=np.float32)
        transposed = name.endswith("mlp.down_proj.weight")
        stored = t.T if transposed else t
        kind = stored_dtype(name, stored.shape, dtype, layers)
        if kind == "f32":
            values = stored
        elif kind == "bf16":
            values = hfio.bf16_bits_to_f32(hfio.f32_to_bf16_bits(stored))
        elif kind in K_BLOCK_BYTES:
            values = dequantize_k(quantize_k(stored, kind), kind)
            quantized.add(name)
        else:
            values = dequantize(*quantize(stored, kind))
            quantized.add(name)
        out[name] = np.ascontiguousarray(values.T if transposed else values)
    return out, quantized


# K-quants: llama.cpp's q4_K and q6_K blocks byte for byte (docs/FORMAT.md, "Weight types"),
# super-blocks of 256 values. Arrays below are float32 and every sum runs element by element in
# index order, as the C++ quantizer (src/format/dtype.cpp) adds them.
SUPER = 256
K_BLOCK_BYTES = {"q4k": 144, "q6k": 210}
_ZERO_GROUP = np.float32(1e-15)


def _f32(x):
    return np.float32(x)


def q4k_scale_min(packed, j):
    """Sub-block j's 6-bit (scale, min) from the 12 packed bytes [..., 12] (uint8 arrays)."""
    packed = packed.astype(np.int32)
    if j < 4:
        return packed[..., j] & 63, packed[..., j + 4] & 63
    return ((packed[..., j + 4] & 15) | (packed[..., j - 4] >> 6) << 4,
            (packed[..., j + 4] >> 4) | (packed[..., j] >> 6) << 4)


def dequantize_k(raw, dtype):
    """Bytes of [r, c/256] K-quant blocks (uint8 [r, c/256, block bytes]) -> [r, c] float32."""
    raw = np.asarray(raw, dtype=np.uint8)
    out = np.empty(raw.shape[:-1] + (SUPER,), np.float32)
    if dtype == "q4k":
        d = raw[..., 0:2].copy().view("<f2")[..., 0].astype(np.float32)
        dmin = raw[..., 2:4].copy().view("<f2")[..., 0].astype(np.float32)
        for j in range(8):
            sc, m = q4k_scale_min(raw[..., 4:16], j)
            qs = raw[..., 16 + 32 * (j // 2):16 + 32 * (j // 2) + 32].astype(np.int32)
            q = qs & 15 if j % 2 == 0 else qs >> 4
            ds = (d * sc.astype(np.float32))[..., None]
            dm = (dmin * m.astype(np.float32))[..., None]
            out[..., 32 * j:32 * j + 32] = ds * q.astype(np.float32) - dm
    elif dtype == "q6k":
        d = raw[..., 208:210].copy().view("<f2")[..., 0].astype(np.float32)
        i = np.arange(SUPER)
        h, k, c = i // 128, i % 128 // 32, i % 32
        low = raw[..., 64 * h + 32 * (k % 2) + c].astype(np.int32) >> (4 * (k // 2)) & 15
        high = raw[..., 128 + 32 * h + c].astype(np.int32) >> (2 * k) & 3
        sc = raw[..., 192 + i // 16].view(np.int8).astype(np.float32)
        out[...] = d[..., None] * sc * ((low | high << 4) - 32).astype(np.float32)
    else:
        raise ValueError(f"not a K-quant: {dtype}")
    return out.reshape(out.shape[0], -1)


def _rint_clip(x, lo, hi):
    return np.clip(np.rint(x), lo, hi).astype(np.float32)


def _q4k_weights(x):
    """Sub-blocks x [n, 32] -> their fit's weights rms + |x|."""
    sum_x2 = np.zeros(len(x), np.float32)
    for i in range(x.shape[1]):
        sum_x2 = sum_x2 + x[:, i] * x[:, i]
    return np.sqrt(sum_x2 / _f32(32))[:, None] + np.abs(x)


def _fit_scale_min(x, w):
    """q4k's fit of sub-blocks x [n, 32] to scale * L - min (docs/FORMAT.md) -> (scale, min)."""
    n = x.shape[1]
    lo, hi = x[:, 0].copy(), x[:, 0].copy()
    sum_w = np.zeros(len(x), np.float32)
    sum_x = np.zeros(len(x), np.float32)
    for i in range(n):
        lo = np.minimum(lo, x[:, i])
        hi = np.maximum(hi, x[:, i])
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    lo = np.minimum(lo, _f32(0))
    flat = hi == lo
    flat_lo = lo.copy()

    def error(scale, offset, levels):
        e = np.zeros(len(x), np.float32)
        for i in range(n):
            diff = scale * levels[:, i] + offset - x[:, i]
            e = e + w[:, i] * diff * diff
        return e

    with np.errstate(all="ignore"):
        inv0 = _f32(15) / (hi - lo)
        levels = _rint_clip(inv0[:, None] * (x - lo[:, None]), 0, 15)
        scale = _f32(1) / inv0
        best = error(scale, lo, levels)
        # lo is also the grid's origin: a kept fit moves it to its offset (as llama.cpp does).
        for step in range(21):
            inv = (_f32(-1) + _f32(0.1) * _f32(step) + _f32(15)) / (hi - lo)
            trial = _rint_clip(inv[:, None] * (x - lo[:, None]), 0, 15)
            sl = np.zeros(len(x), np.float32)
            sl2 = np.zeros(len(x), np.float32)
            sxl = np.zeros(len(x), np.float32)
            for i in range(n):
                sl = sl + w[:, i] * trial[:, i]
                sl2 = sl2 + w[:, i] * trial[:, i] * trial[:, i]
                sxl = sxl + w[:, i] * trial[:, i] * x[:, i]
            det = sum_w * sl2 - sl * sl
            s = (sum_w * sxl - sum_x * sl) / det
            o = (sl2 * sum_x - sl * sxl) / det
            through_zero = o > 0
            s = np.where(through_zero, sxl / sl2, s)
            o = np.where(through_zero, _f32(0), o)
            e = error(s, o, trial)
            take = (det > 0) & (e < best)
            best = np.where(take, e, best)
            scale = np.where(take, s, scale)
            lo = np.where(take, o, lo)
    return np.where(flat, _f32(0), scale), np.where(flat, -flat_lo, -lo)


def _fit_scale(x):
    """q6k's fit of groups x [n, 16] to scale * l, l in -32..31, weights x^2 -> scale."""
    n = x.shape[1]
    first = np.abs(x).argmax(axis=1)
    extreme = x[np.arange(len(x)), first]
    zero = np.abs(extreme) < _ZERO_GROUP
    extreme = np.where(zero, _f32(1), extreme)
    scale = best = None
    with np.errstate(all="ignore"):
        for offset in [0] + list(range(-9, 0)) + list(range(1, 10)):
            inv = -(_f32(32) + _f32(0.1) * _f32(offset)) / extreme
            sum_lx = np.zeros(len(x), np.float32)
            sum_l2 = np.zeros(len(x), np.float32)
            for i in range(n):
                l = _rint_clip(inv * x[:, i], -32, 31)
                w = x[:, i] * x[:, i]
                sum_lx = sum_lx + w * x[:, i] * l
                sum_l2 = sum_l2 + w * l * l
            s = np.where(sum_l2 > 0, sum_lx / sum_l2, _f32(0))
            if scale is None:
                scale, best = s, s * sum_lx
            else:
                take = (sum_l2 > 0) & (sum_lx * sum_lx > best * sum_l2)
                scale = np.where(take, s, scale)
                best = np.where(take, s * sum_lx, best)
    return np.where(zero, _f32(0), scale)


def _f16(x):
    """f16(x) as float32, and whether it overflowed."""
    with np.errstate(over="ignore"):
        h = np.asarray(x, np.float32).astype(np.float16)
    return h, h.astype(np.float32)


def quantize_k(rows, dtype):
    """[r, c] float32 (c a multiple of 256) -> the K-quant blocks, uint8 [r, c/256, bytes]."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] % SUPER:
        raise ValueError(f"rows of shape {rows.shape} are not whole blocks of {SUPER}")
    v = rows.reshape(-1, SUPER)
    out = np.zeros((len(v), K_BLOCK_BYTES[dtype]), np.uint8)
    if dtype == "q4k":
        w = _q4k_weights(v.reshape(-1, 32))
        scales, mins = _fit_scale_min(v.reshape(-1, 32), w)
        scales, mins = scales.reshape(-1, 8), mins.reshape(-1, 8)
        max_scale = np.maximum(scales.max(axis=1), _f32(0))
        max_min = np.maximum(mins.max(axis=1), _f32(0))
        d16, d = _f16(max_scale / _f32(63))
        dmin16, dmin = _f16(max_min / _f32(63))
        out[:, 0:2] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
        out[:, 2:4] = dmin16.astype("<f2").view(np.uint8).reshape(-1, 2)
        with np.errstate(all="ignore"):
            inv_scale = np.where(max_scale > 0, _f32(63) / max_scale, _f32(0))
            inv_min = np.where(max_min > 0, _f32(63) / max_min, _f32(0))
            sc = _rint_clip(inv_scale[:, None] * scales, 0, 63).astype(np.uint8)
            m = _rint_clip(inv_min[:, None] * mins, 0, 63).astype(np.uint8)
            ds = (d[:, None] * sc.astype(np.float32))[..., None]
            dm = (dmin[:, None] * m.astype(np.float32))[..., None]
            x = v.reshape(-1, 8, 32)
            levels = np.where(ds == 0, _f32(0), _rint_clip((x + dm) / ds, 0, 15))
        levels = levels.astype(np.uint8).reshape(-1, 4, 2, 32)
        for j in range(4):
            out[:, 4 + j] = sc[:, j] | (sc[:, j + 4] >> 4) << 6
            out[:, 8 + j] = m[:, j] | (m[:, j + 4] >> 4) << 6
            out[:, 12 + j] = (sc[:, j + 4] & 15) | (m[:, j + 4] & 15) << 4
        out[:, 16:] = (levels[:, :, 0] | levels[:, :, 1] << 4).reshape(-1, 128)
        finite = np.isfinite(d16) & np.isfinite(dmin16)
    elif dtype == "q6k":
        scales = _fit_scale(v.reshape(-1, 16)).reshape(-1, 16)
        first = np.abs(scales).argmax(axis=1)
        extreme = scales[np.arange(len(v)), first]
        zero = np.abs(extreme) < _ZERO_GROUP
        with np.errstate(all="ignore"):
            inv = np.where(zero, _f32(0), _f32(-128) / np.where(zero, _f32(1), extreme))
            d16, d = _f16(np.where(zero, _f32(0), _f32(1) / inv))
            sc = _rint_clip(inv[:, None] * scales, -128, 127).astype(np.int8)
            ds = d[:, None] * sc.astype(np.float32)
            x = v.reshape(-1, 16, 16)
            levels = np.where(ds[..., None] == 0, _f32(32),
                              _rint_clip(x / ds[..., None], -32, 31) + _f32(32))
        levels = np.where(zero[:, None, None], 0, levels).astype(np.uint8).reshape(-1, 2, 4, 32)
        sc = np.where(zero[:, None], 0, sc)
        for h in range(2):
            lv = levels[:, h]
            out[:, 64 * h:64 * h + 32] = (lv[:, 0] & 15) | (lv[:, 2] & 15) << 4
            out[:, 64 * h + 32:64 * h + 64] = (lv[:, 1] & 15) | (lv[:, 3] & 15) << 4
            out[:, 128 + 32 * h:160 + 32 * h] = (lv[:, 0] >> 4 | (lv[:, 1] >> 4) << 2 |
                                                 (lv[:, 2] >> 4) << 4 | (lv[:, 3] >> 4) << 6)
        out[:, 192:208] = sc.view(np.uint8)
        out[:, 208:210] = d16.astype("<f2").view(np.uint8).reshape(-1, 2)
        finite = np.isfinite(d16)
    else:
        raise ValueError(f"not a K-quant: {dtype}")
    if not finite.all():
        raise OverflowError("a block scale overflows f16")
    return out.reshape(rows.shape[0], rows.shape[1] // SUPER, -1)
