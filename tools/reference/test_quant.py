#!/usr/bin/python3
"""Self-checks of tools/reference/quant.py, the numpy definition of q8/q4/q4k/q6k
(docs/FORMAT.md).

    /usr/bin/python3 -m unittest discover -s tools/reference -p 'test_quant.py' -v

Blocks worked out by hand (the same ones tests/format_test.cpp pins on the C++ converter, so the
two implementations agree byte for byte on them), the dequantized values against the format's
formula, the conversion policy, and the activations' quantization on hand-made ties.
"""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant  # noqa: E402


def block(*values):
    v = np.zeros((1, 32), np.float32)
    v[0, :len(values)] = values
    return v


class Blocks(unittest.TestCase):
    def test_by_hand(self):
        v = block(127, -126.4, 0.5, 1.5, 2.5, -3.5, 0.49, -0.51)
        d, q = quant.quantize(v, "q8")
        self.assertEqual(quant.to_bytes(d, q, "q8").hex(), "003c7f82000202fc00ff" + "00" * 24)
        d, q = quant.quantize(v, "q4")
        self.assertEqual(quant.to_bytes(d, q, "q4").hex(), "f0cb808f" + "88" * 14)
        d, q = quant.quantize(block(-4, 4), "q4")  # equal magnitudes: the first sets the sign
        self.assertEqual(quant.to_bytes(d, q, "q4").hex()[:8], "0038808f")
        self.assertEqual(quant.dequantize(d, q)[0, :2].tolist(), [-4.0, 3.5])
        d, q = quant.quantize(np.zeros((1, 32), np.float32), "q4")
        self.assertEqual(quant.to_bytes(d, q, "q4").hex(), "0080" + "88" * 16)
        with self.assertRaises(OverflowError):
            quant.quantize(block(127 * 65520.0), "q8")

    def test_dequantized_values_are_scale_times_level(self):
        rng = np.random.default_rng(1)
        rows = rng.normal(0, 0.05, (7, 96)).astype(np.float32)
        for dtype, lo, hi in (("q8", -127, 127), ("q4", -8, 7)):
            d, q = quant.quantize(rows, dtype)
            self.assertTrue(((q >= lo) & (q <= hi)).all())
            back = quant.dequantize(d, q)
            step = np.abs(d.astype(np.float32)).repeat(32, axis=1)
            # q4's far side clips (one level short of the extreme's mirror), hence 1.5 steps.
            self.assertTrue((np.abs(back - rows) <= (0.5 if dtype == "q8" else 1.5) * step).all())
            raw = quant.to_bytes(d, q, dtype)
            self.assertEqual(len(raw), 7 * 3 * (34 if dtype == "q8" else 18))

    def test_conversion_policy(self):
        t = {"model.embed_tokens.weight": np.ones((4, 64), np.float32),
             "model.layers.0.self_attn.o_proj.weight": np.full((64, 24), 0.3, np.float32),
             "model.layers.0.mlp.down_proj.weight": np.arange(64 * 40, dtype=np.float32)
             .reshape(64, 40),
             "model.norm.weight": np.full(64, 0.123456789, np.float32)}
        for dtype in ("q8", "q4"):
            self.assertEqual(quant.stored_dtype("model.embed_tokens.weight", (4, 64), dtype),
                             "q8")
            self.assertEqual(quant.stored_dtype("x.o_proj.weight", (64, 24), dtype), "bf16")
            self.assertEqual(quant.stored_dtype("x.norm.weight", (64,), dtype), "f32")
            out, quantized = quant.as_converted(t, dtype)
            self.assertEqual(quantized, {"model.embed_tokens.weight",
                                         "model.layers.0.mlp.down_proj.weight"})
            np.testing.assert_array_equal(out["model.norm.weight"], t["model.norm.weight"])
            self.assertEqual(out["model.layers.0.self_attn.o_proj.weight"][0, 0], 0.30078125)
            # down is stored [ffn, hidden]: each block runs along 32 of the 64 HF rows.
            down = t["model.layers.0.mlp.down_proj.weight"]
            want = quant.dequantize(*quant.quantize(down.T, dtype)).T
            np.testing.assert_array_equal(out["model.layers.0.mlp.down_proj.weight"], want)


# K-quant blocks: hand-made bytes whose values llama.cpp's own numpy dequantizer (gguf-py,
# gguf.quants.dequantize) gives as pinned here, and blocks whose quantization is worked out by
# hand (tests/format_test.cpp pins the same on the C++ converter).
Q4K_BYTES = bytes([0x00, 0x3c, 0x00, 0x38, 0x41, 0x82, 0xC3, 0x04, 0x85, 0x46, 0xC7, 0x08,
                   0x21, 0x43, 0x65, 0x87] + [(i * 37 + 11) % 256 for i in range(128)])
Q6K_BYTES = bytes([(i * 29 + 7) % 256 for i in range(128)] +
                  [(i * 53 + 3) % 256 for i in range(64)] +
                  [v % 256 for v in (-128, -3, 5, 127, 1, -1, 64, -64, 2, 3, -7, 11, -13, 17,
                                     100, -100)] + [0x00, 0x2e])
K_PICKS = [0, 31, 32, 63, 64, 100, 130, 160, 200, 224, 255]
Q4K_AT_PICKS = [8.5, 3.5, -3.0, 13.0, 29.5, 8.0, 68.0, 130.0, 132.0, 94.0, 38.0]
Q6K_AT_PICKS = [-276.0, -2.8125, -11.71875, 309.5625, -3.0, 102.0, -2.8125, 16.40625, 36.5625,
                131.25, 243.75]


def k_block(raw):
    return np.frombuffer(raw, np.uint8).reshape(1, 1, -1)


class KQuants(unittest.TestCase):
    def test_dequantize_as_ggml(self):
        # e.g. element 130 of q4k: sub-block 4, scale 17 and min 34 from the packed high bits,
        # low nibble 5 of byte 16 + 66: 1.0 * 17 * 5 - 0.5 * 34 = 68.
        self.assertEqual(quant.dequantize_k(k_block(Q4K_BYTES), "q4k")[0, K_PICKS].tolist(),
                         Q4K_AT_PICKS)
        self.assertEqual(quant.dequantize_k(k_block(Q6K_BYTES), "q6k")[0, K_PICKS].tolist(),
                         Q6K_AT_PICKS)

    def test_q4k_by_hand(self):
        # Every sub-block j holds x = L - 8 with L = (i + j) % 16: scale 1, min 8 fit exactly, so
        # d = f16(1/63) = 0x2410, dmin = f16(8/63) = 0x3010, every scale and min 63.
        i = np.arange(256)
        levels = (i % 32 + i // 32) % 16
        raw = quant.quantize_k((levels - 8).astype(np.float32)[None], "q4k").tobytes()
        self.assertEqual(raw[:16].hex(), "1024" "1030" + "ff" * 8 + "ff" * 4)
        # byte 16 + 32c + k: element 64c + k (low nibble) and 64c + 32 + k (high nibble)
        self.assertEqual(raw[16], 0x10)
        self.assertEqual(raw[16 + 32], 0x32)
        ds, dm = np.float32(0.015869140625 * 63), np.float32(0.126953125 * 63)
        want = ds * levels.astype(np.float32) - dm
        np.testing.assert_array_equal(quant.dequantize_k(k_block(raw), "q4k")[0], want)

    def test_q6k_by_hand(self):
        # Each group of 16 holds 0.5 * l with l = -32 first: scale 0.5 fits exactly, so
        # d = f16(0.5 / -128) = 0x9c00 and every scale -128 (0x80); q = l + 32.
        i = np.arange(256)
        lv = (i * 7) % 64 - 32
        lv[::16] = -32
        raw = quant.quantize_k((0.5 * lv).astype(np.float32)[None], "q6k").tobytes()
        self.assertEqual(raw[192:].hex(), "80" * 16 + "009c")
        q = lv + 32
        self.assertEqual(raw[0], (q[0] & 15) | (q[64] & 15) << 4)
        self.assertEqual(raw[32], (q[32] & 15) | (q[96] & 15) << 4)
        self.assertEqual(raw[128], q[0] >> 4 | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 |
                         (q[96] >> 4) << 6)
        np.testing.assert_array_equal(quant.dequantize_k(k_block(raw), "q6k")[0], 0.5 * lv)

    def test_zero_and_overflow(self):
        zero = np.zeros((1, 256), np.float32)
        self.assertEqual(quant.quantize_k(zero, "q6k").tobytes(), bytes(210))
        self.assertEqual(quant.dequantize_k(quant.quantize_k(zero, "q4k"), "q4k").tolist(),
                         zero.tolist())
        for dtype in ("q4k", "q6k"):
            with self.assertRaises(OverflowError):
                quant.quantize_k(np.full((1, 256), 1e9, np.float32), dtype)

    def test_error_is_small(self):
        rng = np.random.default_rng(3)
        rows = rng.normal(0, 0.05, (8, 512)).astype(np.float32)
        for dtype, bound in (("q4k", 0.09), ("q6k", 0.025)):
            back = quant.dequantize_k(quant.quantize_k(rows, dtype), dtype)
            rel = np.sqrt(((back - rows) ** 2).mean() / (rows ** 2).mean())
            self.assertLess(rel, bound, dtype)

    def test_conversion_policy(self):
        self.assertEqual(quant.stored_dtype("model.embed_tokens.weight", (4, 256), "q4k"), "q6k")
        self.assertEqual(quant.stored_dtype("lm_head.weight", (4, 256), "q6k"), "q6k")
        self.assertEqual(quant.stored_dtype("x.o_proj.weight", (4, 256), "q4k"), "q4k")
        self.assertEqual(quant.stored_dtype("x.o_proj.weight", (4, 96), "q4k"), "q8")
        self.assertEqual(quant.stored_dtype("x.o_proj.weight", (4, 24), "q6k"), "bf16")
        # q4k as llama.cpp's Q4_K_M: of 16 layers, 0, 1, 4, 7, 10, 13, 14 and 15 keep v_proj in
        # q6k (and not, unlike Q4_K_M, their down projection).
        more = [i for i in range(16)
                if quant.stored_dtype(f"model.layers.{i}.self_attn.v_proj.weight", (4, 256), "q4k",
                                      16) == "q6k"]
        self.assertEqual(more, [0, 1, 4, 7, 10, 13, 14, 15])
        self.assertEqual(quant.stored_dtype("model.layers.0.mlp.down_proj.weight", (4, 256), "q4k",
                                            16), "q4k")
        self.assertEqual(quant.stored_dtype("model.layers.1.self_attn.v_proj.weight", (4, 256),
                                            "q4k", 2), "q6k")
        self.assertEqual(quant.stored_dtype("model.layers.0.self_attn.v_proj.weight", (4, 256),
                                            "q4k", 2), "q4k")
        self.assertEqual(quant.stored_dtype("model.layers.1.mlp.up_proj.weight", (4, 256), "q4k",
                                            2), "q4k")
        self.assertEqual(quant.stored_dtype("model.layers.1.self_attn.v_proj.weight", (4, 256),
                                            "q4", 2), "q4")


class Activations(unittest.TestCase):
    def test_by_hand(self):
        x = block(127, -126.4, 0.5, 1.5, 2.5, -3.5, 0.49, -0.51)
        self.assertEqual(quant.quantize_activations(x)[0, :8].tolist(),
                         [127, -126, 0, 2, 2, -4, 0, -1])
        tiny = np.full((1, 32), 2.0 ** -100, np.float32)
        self.assertEqual(quant.quantize_activations(tiny).tolist(), [[0.0] * 32])
        bad = block(1, np.inf)
        self.assertTrue(np.isnan(quant.quantize_activations(bad)).all())


if __name__ == "__main__":
    unittest.main()
