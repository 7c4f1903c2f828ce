#!/usr/bin/python3
"""Self-checks of tools/reference/ggml_quants.py (ggml's Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K,
Q5_K).

    /usr/bin/python3 -m unittest discover -s tools/reference -p 'test_ggml_quants.py' -v

The hand-made blocks of tests/gguf_test.cpp (HandBlocks) with the values llama.cpp's own numpy
dequantizer (gguf-py, gguf.quants.dequantize) gives for them, and the fixture quantizer's blocks
against their inputs.
"""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_quants  # noqa: E402


def pattern(n, a, b):
    return [(i * a + b) % 256 for i in range(n)]


HAND = {
    "q4_1": ([0x00, 0x38, 0x80, 0xC2, 0x0F, 0xF0, 0xFF, 0x00] + pattern(12, 37, 11),
             {0: 4.25, 1: -3.25, 2: 4.25, 15: -2.25, 16: -3.25, 17: 4.25, 31: 1.75}, 105.5),
    "q5_0": ([0x00, 0xB4, 0x01, 0x80, 0xFF, 0x5A, 0x0F, 0xF0, 0xFF, 0x00] + pattern(12, 29, 7),
             {0: -3.75, 1: 4.0, 2: 0.25, 15: -1.5, 16: 0.0, 17: -3.75, 31: 3.0}, 40.25),
    "q5_1": ([0x00, 0x30, 0x00, 0xBE, 0xFF, 0x00, 0xA5, 0x81, 0xFF, 0x00, 0xF0, 0x0F] +
             pattern(12, 53, 3),
             {0: 2.375, 1: 0.5, 2: 0.5, 15: -0.25, 16: 2.375, 17: -1.5, 31: 1.0}, -20.625),
    "iq4_nl": ([0x00, 0xB8, 0x0F, 0xF0, 0xFF, 0x00] + pattern(12, 37, 11),
               {0: -56.5, 1: 63.5, 2: -56.5, 15: 41.5, 16: 63.5, 17: -56.5, 31: -12.5}, 3934.0),
    "q2_k": ([0xFF, 0x0F, 0xF0, 0x00] + pattern(12, 37, 11) + [0xFF, 0x00, 0xE4, 0x1B] +
             pattern(60, 29, 7) + [0x00, 0x38, 0x00, 0xB4],
             {0: 26.25, 15: 18.75, 16: 22.5, 31: 15.0, 32: 3.75, 63: 0.0, 64: 16.5, 100: 1.25,
              130: 9.75, 160: 3.5, 200: 2.25, 224: 1.75, 255: 4.5}, 246255.0),
    "q3_k": ([0xFF, 0x00] + pattern(30, 53, 3) + [0xFF, 0x00, 0xE4, 0x1B] + pattern(60, 37, 11) +
             [0xFF, 0x00, 0x3F, 0xF0, 0x12, 0x34, 0x56, 0x78, 0xFF, 0x00, 0x9A, 0xBC, 0x00, 0xAC],
             {0: -5.8125, 15: 3.875, 16: 6.0, 31: -4.0, 32: -2.8125, 63: -8.0, 64: -3.375,
              100: 0.0, 130: 5.8125, 160: 0.8125, 200: -3.1875, 224: 0.0, 255: 0.875}, 5086.0),
    "q5_k": ([0x00, 0x3C, 0x00, 0xB8, 0xFF, 0x82, 0xC3, 0x04, 0xFF, 0x46, 0xC7, 0x08, 0x21, 0x43,
              0x65, 0xF7, 0xFF, 0x00] + pattern(30, 29, 7) + [0xFF, 0x00] + pattern(126, 37, 11),
             {0: 1984.5, 15: 787.5, 16: 1102.5, 31: 787.5, 32: 65.0, 63: 9.0, 64: 54.5,
              100: 64.0, 130: 564.0, 160: 570.0, 200: 504.0, 224: 189.5, 255: 14.5}, 13939876.0),
}


class Dequantize(unittest.TestCase):
    def test_hand_blocks_as_ggml(self):
        for kind, (raw, picks, weighted) in HAND.items():
            self.assertEqual(len(raw), ggml_quants.BLOCK[kind][1], kind)
            v = ggml_quants.dequantize(bytes(raw), kind)
            for i, want in picks.items():
                self.assertEqual(float(v[i]), want, f"{kind} at {i}")
            self.assertEqual(sum((i + 1) * float(x) for i, x in enumerate(v)), weighted, kind)


class Quantize(unittest.TestCase):
    def test_blocks_hold_their_inputs_within_a_step(self):
        rng = np.random.default_rng(5)
        rows = rng.normal(0, 0.05, (4, 512)).astype(np.float32)
        # RMS error over RMS value: the plain quantizer's, per type (5-bit types ~3-4%).
        for kind, bound in (("q4_1", 0.09), ("q5_0", 0.05), ("q5_1", 0.05), ("iq4_nl", 0.1),
                            ("q2_k", 0.4),
                            ("q3_k", 0.2), ("q5_k", 0.05)):
            raw = ggml_quants.quantize(rows, kind)
            n, size = ggml_quants.BLOCK[kind]
            self.assertEqual(len(raw), rows.size // n * size, kind)
            back = ggml_quants.dequantize(raw, kind).reshape(rows.shape)
            rel = np.sqrt(((back - rows) ** 2).mean() / (rows ** 2).mean())
            self.assertLess(rel, bound, kind)


if __name__ == "__main__":
    unittest.main()
