"""ggml's block types that are not zeroskip's own (Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q5_K), in
numpy:
their dequantization as ggml defines it (ggml-common.h's block layouts, ggml-quants.c's
dequantize_row_*), written from the layouts independently of zeroskip's C++ (src/format/gguf.cpp),
and a plain quantizer that makes valid blocks for test fixtures (not llama.cpp's search: any
valid blocks do).

Blocks (little-endian f16 scales; "level i" = element i of the block):
  Q4_1 (32 values, 20 bytes): d, m, 16 bytes: level i < 16 the low nibble of byte i, level
       i + 16 its high nibble; value d * q + m.
  Q5_0 (32, 22): d, 4 bytes qh, 16 bytes as Q4_1; bit i of qh (a little-endian uint32) is level
       i's fifth bit; value d * (q - 16).
  Q5_1 (32, 24): d, m, qh, 16 bytes; value d * q + m.
  IQ4_NL (32, 18): d, 16 bytes as Q4_1; value d * IQ4NL_LEVELS[q].
  Q2_K (256, 84): 16 bytes of group scales (low nibble) and mins (high nibble), one per 16
       values; 64 bytes of 2-bit levels: value 128h + 32s + r is bits 2s..2s+1 of byte 32h + r;
       d, dmin; value d * sc * q - dmin * m.
  Q3_K (256, 110): 32 bytes hmask, 64 bytes of 2-bit levels as Q2_K, 12 bytes of 6-bit group
       scales, d. Value 128h + 32s + r takes bit 4h + s of hmask[r]: q = low - (bit ? 0 : 4).
       Group g's scale: low 4 bits byte g (g < 8) or the high nibble of byte g - 8, top 2 bits
       byte 8 + g % 4 at bit 2 * (g // 4); value d * (scale - 32) * q.
  Q5_K (256, 176): d, dmin, 12 bytes of 6-bit scales and mins (q4k's packing), 32 bytes qh, 128
       bytes qs: sub-block j's value r (j * 32 + r) is nibble j % 2 of qs[32 * (j // 2) + r]
       plus 16 * bit j of qh[r]; value d * sc * q - dmin * m.
Every product of a scale and a level is exact in float32; the offset adds one rounding.
"""
import numpy as np

import quant

GGML_CODES = {"q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_k": 10, "q3_k": 11, "q5_k": 13, "iq4_nl": 20}
BLOCK = {"q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24), "iq4_nl": (32, 18),
         "q2_k": (256, 84), "q3_k": (256, 110), "q5_k": (256, 176)}


IQ4NL_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                        np.float32)


def _half(raw, at):
    return raw[:, at:at + 2].copy().view("<f2")[:, 0].astype(np.float32)


def _nibbles32(qs):
    """[n, 16] bytes -> [n, 32] levels: low nibbles then high nibbles."""
    qs = qs.astype(np.int32)
    return np.concatenate([qs & 15, qs >> 4], axis=1)


def _fifth_bits(qh):
    word = qh.copy().view("<u4")[:, 0].astype(np.int64)
    return ((word[:, None] >> np.arange(32)) & 1).astype(np.int32)


def _two_bits(qs):
    """[n, 64] bytes -> [n, 256] 2-bit levels."""
    i = np.arange(256)
    return (qs[:, 32 * (i // 128) + i % 32].astype(np.int32) >> (2 * (i % 128 // 32))) & 3


def dequantize(raw, kind):
    """Bytes of whole blocks (any shape ending in whole blocks) -> float32 [blocks * n]."""
    n, size = BLOCK[kind]
    raw = np.frombuffer(bytes(raw), np.uint8).reshape(-1, size)
    f = np.float32
    if kind in ("q4_1", "q5_1"):
        d, m = _half(raw, 0), _half(raw, 2)
        q = _nibbles32(raw[:, -16:])
        if kind == "q5_1":
            q = q | _fifth_bits(raw[:, 4:8]) << 4
        out = d[:, None] * q.astype(f) + m[:, None]
    elif kind == "q5_0":
        q = (_nibbles32(raw[:, 6:]) | _fifth_bits(raw[:, 2:6]) << 4) - 16
        out = _half(raw, 0)[:, None] * q.astype(f)
    elif kind == "iq4_nl":
        out = _half(raw, 0)[:, None] * IQ4NL_LEVELS[_nibbles32(raw[:, 2:])]
    elif kind == "q2_k":
        d, dmin = _half(raw, 80), _half(raw, 82)
        sm = raw[:, np.arange(256) // 16].astype(np.int32)
        out = (d[:, None] * (sm & 15).astype(f)) * _two_bits(raw[:, 16:80]).astype(f) - \
            dmin[:, None] * (sm >> 4).astype(f)
    elif kind == "q3_k":
        i = np.arange(256)
        bit = (raw[:, i % 32].astype(np.int32) >> (4 * (i // 128) + i % 128 // 32)) & 1
        q = _two_bits(raw[:, 32:96]) - np.where(bit == 1, 0, 4)
        g = np.arange(16)
        p = raw[:, 96:108].astype(np.int32)
        low = np.where(g < 8, p[:, g % 8] & 15, p[:, g % 8] >> 4)
        scale = low | ((p[:, 8 + g % 4] >> (2 * (g // 4))) & 3) << 4
        ds = _half(raw, 108)[:, None] * (scale - 32).astype(f)
        out = ds[:, i // 16] * q.astype(f)
    elif kind == "q5_k":
        d, dmin = _half(raw, 0), _half(raw, 2)
        i = np.arange(256)
        j, r = i // 32, i % 32
        low = (raw[:, 48 + 32 * (j // 2) + r].astype(np.int32) >> (4 * (j % 2))) & 15
        q = low | ((raw[:, 16 + r].astype(np.int32) >> j) & 1) << 4
        sc = np.stack([quant.q4k_scale_min(raw[:, 4:16], k)[0] for k in range(8)], axis=1)
        m = np.stack([quant.q4k_scale_min(raw[:, 4:16], k)[1] for k in range(8)], axis=1)
        ds = d[:, None] * sc.astype(f)
        dm = dmin[:, None] * m.astype(f)
        out = ds[:, j] * q.astype(f) - dm[:, j]
    else:
        raise ValueError(kind)
    return out.astype(f).reshape(-1)


def _f16(x):
    h = np.asarray(x, np.float32).astype(np.float16)
    return h, h.astype(np.float32)


def _bytes16(h):
    return h.astype("<f2").view(np.uint8).reshape(-1, 2)


def _pack_nibbles(q):
    return (q[:, :16] | q[:, 16:] << 4).astype(np.uint8)


def _pack_bits(bits):
    """[n, 32] 0/1 -> [n, 4] bytes of a little-endian uint32."""
    word = (bits.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1)
    return word.astype("<u4").view(np.uint8).reshape(-1, 4)


def _pack_two_bits(q):
    """[n, 256] levels 0..3 -> [n, 64] bytes (Q2_K / Q3_K order)."""
    q = q.astype(np.uint8).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | q[:, :, 1] << 2 | q[:, :, 2] << 4 | q[:, :, 3] << 6).reshape(-1, 64)


def _levels(x, step, offset, lo, hi):
    with np.errstate(all="ignore"):
        q = np.rint((x + offset) / step)
    return np.clip(np.where(step == 0, 0, q), lo, hi).astype(np.int32)


def quantize(rows, kind):
    """[r, c] float32 (c whole blocks) -> the blocks' bytes (a plain min/max quantizer)."""
    n, size = BLOCK[kind]
    x = np.asarray(rows, np.float32).reshape(-1, n)
    f = np.float32
    if kind in ("q4_1", "q5_1"):
        top = 15 if kind == "q4_1" else 31
        lo, hi = x.min(axis=1), x.max(axis=1)
        d16, d = _f16((hi - lo) / f(top))
        m16, m = _f16(lo)
        q = _levels(x, d[:, None], -m[:, None], 0, top)
        parts = [_bytes16(d16), _bytes16(m16)]
        if kind == "q5_1":
            parts.append(_pack_bits(q >> 4))
        parts.append(_pack_nibbles(q & 15))
    elif kind == "q5_0":
        extreme = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
        d16, d = _f16(extreme / f(-16))
        q = _levels(x, d[:, None], f(0), -16, 15) + 16
        parts = [_bytes16(d16), _pack_bits(q >> 4), _pack_nibbles(q & 15)]
    elif kind == "iq4_nl":
        d16, d = _f16(np.abs(x).max(axis=1) / f(127))
        with np.errstate(all="ignore"):
            t = np.where(d[:, None] > 0, x / d[:, None], 0)
        q = np.abs(t[..., None] - IQ4NL_LEVELS).argmin(axis=2).astype(np.int32)
        parts = [_bytes16(d16), _pack_nibbles(q)]
    elif kind in ("q2_k", "q5_k"):
        group, top, smax = (16, 3, 15) if kind == "q2_k" else (32, 31, 63)
        g = x.reshape(len(x), -1, group)
        lo = np.minimum(g.min(axis=2), f(0))
        scale, mins = (g.max(axis=2) - lo) / f(top), -lo
        d16, d = _f16(scale.max(axis=1) / f(smax))
        dmin16, dmin = _f16(mins.max(axis=1) / f(smax))
        with np.errstate(all="ignore"):
            sc = np.clip(np.rint(np.where(d[:, None] > 0, scale / d[:, None], 0)), 0, smax)
            m = np.clip(np.rint(np.where(dmin[:, None] > 0, mins / dmin[:, None], 0)), 0, smax)
        sc, m = sc.astype(np.int32), m.astype(np.int32)
        ds = (d[:, None] * sc.astype(f))[..., None]
        dm = (dmin[:, None] * m.astype(f))[..., None]
        q = _levels(g, ds, dm, 0, top).reshape(len(x), n)
        if kind == "q2_k":
            parts = [(sc | m << 4).astype(np.uint8), _pack_two_bits(q), _bytes16(d16),
                     _bytes16(dmin16)]
        else:
            packed = np.zeros((len(x), 12), np.uint8)
            for j in range(4):
                packed[:, j] = sc[:, j] | (sc[:, j + 4] >> 4) << 6
                packed[:, 4 + j] = m[:, j] | (m[:, j + 4] >> 4) << 6
                packed[:, 8 + j] = (sc[:, j + 4] & 15) | (m[:, j + 4] & 15) << 4
            qs = q.reshape(len(x), 4, 2, 32)
            parts = [_bytes16(d16), _bytes16(dmin16), packed, _q5k_high(q),
                     ((qs[:, :, 0] & 15) | (qs[:, :, 1] & 15) << 4).astype(np.uint8)
                     .reshape(-1, 128)]
    elif kind == "q3_k":
        g = x.reshape(len(x), 16, 16)
        extreme = np.take_along_axis(g, np.abs(g).argmax(axis=2)[..., None], 2)[..., 0]
        scale = extreme / f(-4)
        big = np.abs(scale).max(axis=1)
        d16, d = _f16(big / f(31))
        with np.errstate(all="ignore"):
            s = np.clip(np.rint(np.where(d[:, None] > 0, scale / d[:, None], 0)), -32, 31)
        s = s.astype(np.int32)
        ds = (d[:, None] * s.astype(f))[..., None]
        q = _levels(g, ds, f(0), -4, 3).reshape(len(x), n)
        u = s + 32
        packed = np.zeros((len(x), 12), np.uint8)
        for k in range(8):
            packed[:, k] = (u[:, k] & 15) | (u[:, k + 8] & 15) << 4
        for k in range(4):
            packed[:, 8 + k] = sum(((u[:, k + 4 * t] >> 4) & 3) << (2 * t) for t in range(4))
        high = (q >= 0).astype(np.int32)  # set: level = low bits; clear: low bits - 4
        hmask = np.zeros((len(x), 32), np.int32)
        for k in range(256):
            hmask[:, k % 32] |= high[:, k] << (4 * (k // 128) + k % 128 // 32)
        parts = [hmask.astype(np.uint8), _pack_two_bits(q + 4 * (1 - high)), packed,
                 _bytes16(d16)]
    else:
        raise ValueError(kind)
    if not np.isfinite(d16).all():
        raise OverflowError("a block scale overflows f16")
    out = np.concatenate(parts, axis=1).astype(np.uint8)
    assert out.shape[1] == size
    return out.tobytes()


def _q5k_high(q):
    """[n, 256] 5-bit levels -> [n, 32] bytes: bit j of byte r is the fifth bit of value 32j + r."""
    high = (q >> 4).reshape(len(q), 8, 32).astype(np.int32)
    return (high << np.arange(8)[None, :, None]).sum(axis=1).astype(np.uint8)
