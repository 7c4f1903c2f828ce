#!/usr/bin/python3
"""Tests of the synthetic checkpoint generator (numpy only, a few seconds):

    /usr/bin/python3 tools/synth/test_synth.py
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))
import hfio  # noqa: E402
import stream_writer  # noqa: E402
import synth  # noqa: E402


def tensors_for(specs, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in specs}


class StreamWriterTest(unittest.TestCase):
    SPECS = [("a", (7, 5)), ("b", (3,)), ("c", (300, 11)), ("d", (2, 2, 3)), ("e", (1,))]

    def test_single_file_is_byte_identical_to_hfio(self):
        for dtype in ("F32", "BF16", "F16"):
            t = tensors_for(self.SPECS)
            with tempfile.TemporaryDirectory() as d:
                hfio.write_safetensors(os.path.join(d, "ref.safetensors"), t, dtype)
                out = os.path.join(d, "out")
                os.makedirs(out)
                with stream_writer.StreamWriter(out, self.SPECS, dtype) as w:
                    for n, s in self.SPECS:
                        step = 13 if len(s) > 1 else s[0]
                        for r in range(0, s[0], step):  # uneven row chunks
                            w.write(n, t[n][r:r + step])
                with open(os.path.join(d, "ref.safetensors"), "rb") as f:
                    ref = f.read()
                with open(os.path.join(out, "model.safetensors"), "rb") as f:
                    self.assertEqual(f.read(), ref, dtype)

    def test_sharded_reads_back(self):
        t = tensors_for(self.SPECS)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({}, f)
            with stream_writer.StreamWriter(d, self.SPECS, "F32", shards=3) as w:
                for n, _ in self.SPECS:
                    w.write(n, t[n])
            with open(os.path.join(d, "model.safetensors.index.json")) as f:
                index = json.load(f)
            self.assertEqual(index["metadata"]["total_size"],
                             sum(a.size * 4 for a in t.values()))
            self.assertEqual(len(set(index["weight_map"].values())), 3)
            _, back = hfio.read_hf_dir(d)
            for n in t:
                np.testing.assert_array_equal(back[n], t[n])
            self.assertFalse([x for x in os.listdir(d) if x.endswith(".tmp")])

    def test_misuse_is_caught_and_partial_files_removed(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(RuntimeError):
                with stream_writer.StreamWriter(d, self.SPECS, "F32") as w:
                    w.write("b", np.zeros(3, np.float32))  # "a" comes first
            self.assertEqual(os.listdir(d), [])
            with self.assertRaises(RuntimeError):
                with stream_writer.StreamWriter(d, self.SPECS, "F32") as w:
                    w.write("a", np.zeros((8, 5), np.float32))  # one row too many
            with self.assertRaises(RuntimeError):
                with stream_writer.StreamWriter(d, self.SPECS, "F32") as w:
                    w.write("a", np.zeros((7, 5), np.float32))  # close() with b..e missing
            self.assertEqual(os.listdir(d), [])

    def test_shard_groups(self):
        for sizes, shards in (([5, 1, 1, 1, 1], 2), ([1] * 10, 3), ([100, 1, 1], 3),
                              ([1, 1, 100], 3), ([3, 3], 5)):
            g = stream_writer.shard_groups(sizes, shards)
            self.assertEqual([i for grp in g for i in grp], list(range(len(sizes))))
            self.assertTrue(all(g), g)
            self.assertEqual(len(g), min(shards, len(sizes)))


def forward_zero_fractions(hf_dir, seqs):
    """Independent numpy forward of the written checkpoint -> zero fraction per layer and each
    neuron's firing rate per layer."""
    cfg, w = hfio.read_hf_dir(hf_dir)
    c = {"hidden": cfg["hidden_size"], "heads": cfg["num_attention_heads"],
         "kv_heads": cfg["num_key_value_heads"]}
    acts = synth.Acts("t", seqs, c)
    x = w["model.embed_tokens.weight"][acts.ids]
    cos, sin = synth.rope_tables(max(acts.lens), c["hidden"] // c["heads"])
    out, rates = [], []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        xn = synth.rmsnorm(x, w[p + "input_layernorm.weight"])
        q, k, v = (xn @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        x = x + acts.attention(q, k, v, cos, sin) @ w[p + "self_attn.o_proj.weight"].T
        xn = synth.rmsnorm(x, w[p + "post_attention_layernorm.weight"])
        g = xn @ w[p + "mlp.gate_proj.weight"].T
        out.append(float(np.mean(g <= 0)))
        rates.append(np.mean(g > 0, axis=0))
        u = xn @ w[p + "mlp.up_proj.weight"].T
        x = x + (np.maximum(g, 0) * u) @ w[p + "mlp.down_proj.weight"].T
    return cfg, w, out, rates


class GeneratorTest(unittest.TestCase):
    def run_synth(self, d, *extra):
        # Later flags win: callers may override the shape.
        cmd = [sys.executable, os.path.join(HERE, "synth.py"), d, "--shape", "custom",
               "--hidden", "128", "--ffn", "344", "--layers", "3", "--heads", "4",
               "--kv-heads", "2", "--vocab", "600", "--ctx", "256", *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def test_calibrated_sparsity_and_structure(self):
        for dtype, shards, s in (("F32", 1, 0.85), ("BF16", 2, 0.6)):
            with tempfile.TemporaryDirectory() as d:
                self.run_synth(d, "--dtype", dtype, "--shards", str(shards),
                               "--sparsity", str(s), "--seed", "3")
                rng = np.random.default_rng(99)  # tokens the generator never saw
                seqs = [[1] + list(rng.integers(3, 600, size=n)) for n in (5, 60, 200)]
                cfg, w, fr, _ = forward_zero_fractions(d, seqs)
                self.assertEqual(cfg["hidden_act"], "relu")
                self.assertEqual(cfg["vocab_size"], 600)
                for f in fr:
                    self.assertAlmostEqual(f, s, delta=0.02)
                # Channels 0..31: constant in, never written, ignored by everything but the gate,
                # whose threshold they share equally.
                k = synth.CONST_CHANNELS
                self.assertTrue(np.all(w["model.embed_tokens.weight"][:, :k] == 1.0))
                for i in range(3):
                    p = f"model.layers.{i}."
                    self.assertFalse(w[p + "self_attn.o_proj.weight"][:k].any())
                    self.assertFalse(w[p + "mlp.down_proj.weight"][:k].any())
                    for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                              "mlp.up_proj"):
                        self.assertFalse(w[p + n + ".weight"][:, :k].any())
                    cols = w[p + "mlp.gate_proj.weight"][:, :k]
                    self.assertTrue(np.all(cols == cols[0, 0]) and cols[0, 0] < 0)
                self.assertFalse(w["lm_head.weight"][2].any())  # EOS logit is always 0
                with open(os.path.join(d, "synth_info.json")) as f:
                    info = json.load(f)
                self.assertEqual(len(info["layers"]), 3)
                self.assertTrue(os.path.isfile(os.path.join(d, "tokenizer.model")))

    def test_certified_fraction_is_a_parameter(self):
        """--certified lowers what an int8 shadow gate certifies to the target; without it the
        Gaussian gate certifies more (as the generator's calibration measures it)."""
        shape = ["--hidden", "1024", "--ffn", "512", "--layers", "1", "--heads", "8",
                 "--kv-heads", "8", "--no-check", "--sparsity", "0.9"]
        reached = {}
        for target in (None, 0.92):
            with tempfile.TemporaryDirectory() as d:
                self.run_synth(d, *shape, *(["--certified", str(target)] if target else []))
                with open(os.path.join(d, "synth_info.json")) as f:
                    reached[target] = json.load(f)["layers"][0]["shadow_certified"]
        self.assertGreater(reached[None], 0.93)
        self.assertAlmostEqual(reached[0.92], 0.92, delta=0.005)

    def test_skew_makes_some_neurons_fire_far_more_often(self):
        """--skew 1 gives neurons firing rates as spread as the trained demo model's (its hottest
        20% account for 52-58% of the firings), at the same overall sparsity, on tokens the
        generator never saw; without it every neuron fires about equally often."""
        rng = np.random.default_rng(5)
        seqs = [[1] + list(rng.integers(3, 600, size=n)) for n in (200, 200, 200)]
        share = {}
        for skew in ("0", "1.0"):
            with tempfile.TemporaryDirectory() as d:
                self.run_synth(d, "--ffn", "1024", "--sparsity", "0.9", "--skew", skew,
                               "--no-check")
                _, _, fr, rates = forward_zero_fractions(d, seqs)
                for f in fr:
                    self.assertAlmostEqual(f, 0.9, delta=0.01)
                share[skew] = [synth.top_share(r, 0.2) for r in rates]
                with open(os.path.join(d, "synth_info.json")) as f:
                    self.assertEqual(json.load(f)["skew"], float(skew))
        # Independent rates: the top 20% hold ~20% of the firings plus sampling noise (~60 per
        # neuron here); log-normal with sigma 1: ~56%.
        for s in share["0"]:
            self.assertLess(s, 0.30)
        for s in share["1.0"]:
            self.assertGreater(s, 0.48)
            self.assertLess(s, 0.66)
        self.assertAlmostEqual(synth.top_share(np.array([4.0, 1.0, 0.0, 0.0, 0.0]), 0.2), 0.8)

    def test_deterministic(self):
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            self.run_synth(d1, "--no-check")
            self.run_synth(d2, "--no-check")
            with open(os.path.join(d1, "model.safetensors"), "rb") as a, \
                    open(os.path.join(d2, "model.safetensors"), "rb") as b:
                self.assertEqual(a.read(), b.read())


if __name__ == "__main__":
    unittest.main()
