#!/usr/bin/env python3
"""Unit tests of the metric functions of diversity.py (stdlib only):
  python3 -m unittest tools/diversity/test_diversity.py
"""
import math
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diversity import distinct_n, interp, self_bleu, sentence_bleu  # noqa: E402


class DistinctTest(unittest.TestCase):
    def test_identical_samples(self):
        s = [[1, 2, 3], [1, 2, 3]]
        self.assertAlmostEqual(distinct_n(s, 1), 3 / 6)
        self.assertAlmostEqual(distinct_n(s, 2), 2 / 4)
        self.assertAlmostEqual(distinct_n(s, 3), 1 / 2)

    def test_disjoint_samples(self):
        s = [[1, 2, 3], [4, 5, 6]]
        for n in (1, 2, 3):
            self.assertAlmostEqual(distinct_n(s, n), 1.0)

    def test_repeats_within_a_sample(self):
        # unigrams 1,1,1,2 -> 2 unique / 4; bigrams (1,1),(1,1),(1,2) -> 2 / 3
        self.assertAlmostEqual(distinct_n([[1, 1, 1, 2]], 1), 0.5)
        self.assertAlmostEqual(distinct_n([[1, 1, 1, 2]], 2), 2 / 3)

    def test_pooled_over_samples(self):
        # bigrams: (1,2),(2,3) | (1,2),(2,4) -> 3 unique / 4
        self.assertAlmostEqual(distinct_n([[1, 2, 3], [1, 2, 4]], 2), 0.75)

    def test_too_short(self):
        self.assertIsNone(distinct_n([[1, 2]], 3))


class BleuTest(unittest.TestCase):
    def test_identical(self):
        self.assertAlmostEqual(sentence_bleu([1, 2, 3, 4, 5], [[1, 2, 3, 4, 5]]), 1.0)
        self.assertAlmostEqual(self_bleu([[1, 2, 3], [1, 2, 3], [1, 2, 3]]), 1.0)

    def test_no_unigram_overlap(self):
        self.assertEqual(sentence_bleu([1, 2, 3, 4], [[5, 6, 7, 8]]), 0.0)
        self.assertEqual(self_bleu([[1, 2, 3, 4], [5, 6, 7, 8]]), 0.0)

    def test_partial_overlap_smoothed(self):
        # p1 = 3/4, p2 = (2+1)/(3+1), p3 = (1+1)/(2+1), p4 = (0+1)/(1+1)
        want = (3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
        self.assertAlmostEqual(sentence_bleu([1, 2, 3, 4], [[1, 2, 3, 5]]), want)
        # symmetric here, so self-BLEU is the same number
        self.assertAlmostEqual(self_bleu([[1, 2, 3, 4], [1, 2, 3, 5]]), want)

    def test_clipping(self):
        # four 7s, the reference has one: p1 = 1/4; no bigram matches: p2 = 1/4, p3 = 1/3, p4 = 1/2
        want = (1 / 4 * 1 / 4 * 1 / 3 * 1 / 2) ** 0.25
        self.assertAlmostEqual(sentence_bleu([7, 7, 7, 7], [[7, 1, 2, 3]]), want)

    def test_clipping_uses_max_over_references(self):
        # refs contain 7 once and twice: clip at 2 -> p1 = 2/3
        got = sentence_bleu([7, 7, 7], [[7, 1, 2], [7, 7, 3]])
        # bigrams (7,7)x2 vs max ref count 1 -> p2 = (1+1)/(2+1); trigram (7,7,7) none -> 1/2
        want = (2 / 3 * 2 / 3 * 1 / 2 * 1 / 1) ** 0.25
        self.assertAlmostEqual(got, want)

    def test_brevity_penalty(self):
        # hyp of 2 against a reference of 4: all precisions 1 (smoothed empty n-grams -> 1/1),
        # BP = exp(1 - 4/2)
        self.assertAlmostEqual(sentence_bleu([1, 2], [[1, 2, 3, 4]]), math.exp(-1))
        # longer hypothesis: no penalty
        self.assertAlmostEqual(sentence_bleu([1, 2, 3, 4], [[1, 2]]),
                               (2 / 4 * 2 / 4 * 1 / 3 * 1 / 2) ** 0.25)

    def test_self_bleu_averages(self):
        s = [[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8]]
        # first two: a perfect match among the references -> 1; the third: no overlap -> 0
        self.assertAlmostEqual(self_bleu(s), 2 / 3)
        self.assertIsNone(self_bleu([[1, 2, 3]]))


class InterpTest(unittest.TestCase):
    def test_interp(self):
        pts = [(0.0, 1.0), (1.0, 3.0), (0.5, 2.5)]
        self.assertAlmostEqual(interp(pts, 0.25), 1.75)
        self.assertAlmostEqual(interp(pts, 0.75), 2.75)
        self.assertIsNone(interp(pts, 1.5))


if __name__ == "__main__":
    unittest.main()
