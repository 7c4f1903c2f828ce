#!/usr/bin/python3
"""Self-checks of tools/reference/quant.py, the numpy definition of q8/q4 (docs/FORMAT.md).

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
