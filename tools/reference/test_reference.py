#!/usr/bin/python3
"""Self-checks of the float64 oracle (tools/reference/llama_ref.py) and the golden fixtures.

    /usr/bin/python3 -m unittest discover -s tools/reference -p 'test_*.py' -v

1. ReferenceVsNumpy: llama_ref.py against an independent, deliberately different numpy float64
   forward written from the HF equations: token-by-token decoding with a KV cache, explicit
   loops over heads, rotary applied as 2-D rotations of the pairs (i, i + head_dim/2), and the
   kv head of query head j taken as j // (n_heads / n_kv). Tiny configs cover GQA, MQA, MHA,
   explicit head_dim != hidden/heads, relu/silu, tied/untied, bf16/f16/sharded storage.
2. GoldenFixtures: tests/data/make_checkpoints.py still produces byte-identical files
   (files_sha256), and the reference still reproduces the stored logits and greedy tokens.
3. ScoringFixture: the same for tests/data/golden/scoring.json (every position of a few
   sequences, for the CLI's score / perplexity / eval tests).
Tests needing torch are skipped when it is missing.
"""
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "pylib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
sys.path.insert(0, HERE)
import hfio  # noqa: E402
import make_checkpoints  # noqa: E402

try:
    import torch
    torch.set_num_threads(1)
    import llama_ref
    import make_golden
except ImportError:  # pragma: no cover
    torch = None

GOLDEN = os.path.join(ROOT, "tests", "data", "golden")


def numpy_forward(cfg, w, tokens):
    """Incremental (KV-cache) float64 forward; returns logits [T, vocab]."""
    h_dim = cfg["hidden_size"]
    n_h = cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h_dim // n_h
    eps = cfg["rms_norm_eps"]
    theta = cfg["rope_theta"]
    L = cfg["num_hidden_layers"]
    W = {k: v.astype(np.float64) for k, v in w.items()}
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]

    def norm(x, g):
        return g * (x / math.sqrt(float(np.dot(x, x)) / x.size + eps))

    def rotate(v, pos):
        out = v.copy()
        half = hd // 2
        for i in range(half):
            ang = pos * theta ** (-(2.0 * i) / hd)
            c, s = math.cos(ang), math.sin(ang)
            a, b = v[i], v[i + half]
            out[i] = a * c - b * s
            out[i + half] = b * c + a * s
        return out

    def act(x):
        if cfg["hidden_act"] == "relu":
            return np.maximum(x, 0.0)
        return x / (1.0 + np.exp(-x))

    cache_k = [[] for _ in range(L)]  # per layer: list over positions of [n_kv, hd]
    cache_v = [[] for _ in range(L)]
    logits = []
    for pos, tok in enumerate(tokens):
        x = W["model.embed_tokens.weight"][tok].copy()
        for l in range(L):
            p = f"model.layers.{l}."
            y = norm(x, W[p + "input_layernorm.weight"])
            q = W[p + "self_attn.q_proj.weight"].dot(y).reshape(n_h, hd)
            k = W[p + "self_attn.k_proj.weight"].dot(y).reshape(n_kv, hd)
            v = W[p + "self_attn.v_proj.weight"].dot(y).reshape(n_kv, hd)
            cache_k[l].append(np.stack([rotate(k[j], pos) for j in range(n_kv)]))
            cache_v[l].append(v)
            att = np.zeros(n_h * hd)
            for j in range(n_h):
                g = j // (n_h // n_kv)
                qj = rotate(q[j], pos)
                s = np.array([qj.dot(cache_k[l][t][g]) for t in range(pos + 1)]) / math.sqrt(hd)
                e = np.exp(s - s.max())
                pr = e / e.sum()
                att[j * hd:(j + 1) * hd] = sum(pr[t] * cache_v[l][t][g] for t in range(pos + 1))
            x = x + W[p + "self_attn.o_proj.weight"].dot(att)
            y = norm(x, W[p + "post_attention_layernorm.weight"])
            m = act(W[p + "mlp.gate_proj.weight"].dot(y)) * W[p + "mlp.up_proj.weight"].dot(y)
            x = x + W[p + "mlp.down_proj.weight"].dot(m)
        logits.append(head.dot(norm(x, W["model.norm.weight"])))
    return np.stack(logits)


TINY = {
    "gqa_relu_f32": dict(hidden=32, heads=4, kv=2, head_dim=None, ffn=40, act="relu",
                         tied=False, dtype="F32", theta=10000.0, eps=1e-5, layers=2,
                         shards=1, seed=7),
    "mqa_silu_tied_bf16": dict(hidden=32, heads=2, kv=1, head_dim=None, ffn=24, act="silu",
                               tied=True, dtype="BF16", theta=500000.0, eps=1e-6, layers=2,
                               shards=1, seed=8),
    "mha_headdim_relu_f16_sharded": dict(hidden=24, heads=3, kv=3, head_dim=16, ffn=20,
                                         act="relu", tied=False, dtype="F16", theta=10000.0,
                                         eps=1e-5, layers=3, shards=2, seed=9),
    "mistral_headdim_gqa": dict(hidden=24, heads=4, kv=2, head_dim=12, ffn=28, act="relu",
                                tied=False, dtype="F32", theta=10000.0, eps=1e-5, layers=1,
                                shards=1, seed=10, mistral=True),
}


def assert_files_match(test, folder, sha256_by_name):
    """Each named file in `folder` has the recorded SHA-256 (the generator is byte-identical)."""
    for fname, digest in sha256_by_name.items():
        with open(os.path.join(folder, fname), "rb") as f:
            test.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest, fname)


@unittest.skipIf(torch is None, "missing module: torch")
class ReferenceVsNumpy(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zeroskip_ref_")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def _write(self, name, spec):
        path = os.path.join(self.tmp, name)
        hfio.write_hf_dir(path, make_checkpoints.make_config(spec),
                          make_checkpoints.make_tensors(spec), dtype=spec["dtype"],
                          shards=spec["shards"])
        return path

    def test_tiny_configs(self):
        tokens = [1, 17, 300, 5, 17, 383, 42]
        for name, spec in TINY.items():
            with self.subTest(name):
                path = self._write(name, spec)
                cfg, w = hfio.read_hf_dir(path)
                ref = llama_ref.LlamaRef(path)
                with torch.no_grad():
                    got = ref.forward(tokens).numpy()
                want = numpy_forward(cfg, w, tokens)
                self.assertEqual(got.shape, (len(tokens), make_checkpoints.VOCAB))
                scale = np.abs(want).max()
                self.assertGreater(scale, 0.5)
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)
                # prefix property: logits of a prefix do not depend on later tokens (causal)
                with torch.no_grad():
                    got2 = ref.forward(tokens[:2]).numpy()
                np.testing.assert_allclose(got2, want[:2], rtol=0, atol=1e-12 * scale)

    def test_stored_weights_widen_exactly(self):
        spec = TINY["mqa_silu_tied_bf16"]
        path = self._write("bf16", spec)
        _, w = hfio.read_hf_dir(path)
        src = make_checkpoints.make_tensors(spec)["model.norm.weight"]
        got = w["model.norm.weight"]
        self.assertFalse(np.array_equal(src, got))  # bf16 rounding happened
        np.testing.assert_array_equal(got, hfio.bf16_bits_to_f32(hfio.f32_to_bf16_bits(src)))

    def test_greedy_matches_argmax(self):
        path = self._write("g", TINY["gqa_relu_f32"])
        cfg, w = hfio.read_hf_dir(path)
        ref = llama_ref.LlamaRef(path)
        with torch.no_grad():
            cont, margins, _ = ref.greedy([1, 9, 27], 4)
        seq = [1, 9, 27]
        for tok in cont:
            self.assertEqual(tok, int(np.argmax(numpy_forward(cfg, w, seq)[-1])))
            seq.append(tok)
        self.assertTrue(all(m >= 0 for m in margins))


class GoldenFixtures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="zeroskip_golden_check_")
        cls.fixtures = {}
        for name in make_checkpoints.CHECKPOINTS:
            path = os.path.join(GOLDEN, name + ".json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    cls.fixtures[name] = json.load(f)
        # Fixtures of the reference on quantized weights: (checkpoint, weights) -> fixture.
        cls.quant_fixtures = {}
        for weights, names in (make_golden.QUANT_FIXTURES if torch else {}).items():
            for name in names:
                with open(os.path.join(GOLDEN, f"{name}_{weights}.json"), encoding="utf-8") as f:
                    cls.quant_fixtures[name, weights] = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_every_checkpoint_has_a_fixture(self):
        self.assertEqual(sorted(self.fixtures), sorted(make_checkpoints.CHECKPOINTS))

    def test_fixture_shape(self):
        for name, fx in self.fixtures.items():
            with self.subTest(name):
                opt = make_checkpoints.arch_of(make_checkpoints.CHECKPOINTS[name]) == "opt"
                self.assertEqual(fx["checkpoint"], name)
                self.assertEqual(fx["prompt_ids"][0], 2 if opt else 1)  # OPT's BOS is </s>
                self.assertEqual(len(fx["logits"]), 3)
                self.assertEqual(fx["logits"][-1]["pos"], len(fx["prompt_ids"]) - 1)
                vocab = make_checkpoints.OPT_VOCAB if opt else make_checkpoints.VOCAB
                for row in fx["logits"]:
                    self.assertEqual(len(row["values"]), vocab)
                self.assertEqual(len(fx["greedy"]["continuation"]), 32)
                self.assertGreater(fx["min_greedy_margin_rel"], 1e-3)

    def test_generator_is_byte_identical(self):
        for name, fx in self.fixtures.items():
            with self.subTest(name):
                path = make_checkpoints.write_checkpoint(self.tmp, name)
                assert_files_match(self, path, fx["files_sha256"])

    @unittest.skipIf(torch is None, "missing module: torch")
    def test_reference_reproduces_fixtures(self):
        for name, fx in self.fixtures.items():
            with self.subTest(name):
                path = make_checkpoints.write_checkpoint(self.tmp, name)
                self.assert_reproduces(llama_ref.reference_class(path)(path), fx)

    def assert_reproduces(self, ref, fx):
        """The fixture's logits (to 1e-6 of the largest) and greedy continuation from `ref`."""
        with torch.no_grad():
            logits = ref.forward(fx["prompt_ids"]).numpy()
            cont, _, _ = ref.greedy(fx["greedy"]["prompt_ids"], 32)
        scale = np.abs(logits).max()
        for row in fx["logits"]:
            np.testing.assert_allclose(row["values"], logits[row["pos"]], rtol=0,
                                       atol=1e-6 * scale)
        self.assertEqual(cont, fx["greedy"]["continuation"])

    @unittest.skipIf(torch is None, "missing module: torch")
    def test_reference_on_quantized_weights_reproduces_fixtures(self):
        for (name, weights), fx in self.quant_fixtures.items():
            with self.subTest(f"{name}_{weights}"):
                self.assertEqual((fx["checkpoint"], fx["weights"]), (name, weights))
                path = make_checkpoints.write_checkpoint(self.tmp, name)
                assert_files_match(self, path, fx["files_sha256"])
                self.assert_reproduces(llama_ref.reference_class(path)(path, weights), fx)


class BpeTokenizer(unittest.TestCase):
    """tests/data/bpe is what make_bpe.py trains, and the reference still gives the fixture that
    tests/bpe_tokenizer_test.cpp holds the C++ tokenizer to."""

    def setUp(self):
        try:
            import gpt2_bpe_ref
        except ImportError as e:  # python3-regex
            self.skipTest(f"missing module: {e.name}")
        self.ref = gpt2_bpe_ref
        with open(os.path.join(GOLDEN, "bpe_tokenizer.json"), encoding="utf-8") as f:
            self.fx = json.load(f)

    def test_training_reproduces_the_files(self):
        import make_bpe
        tmp = tempfile.mkdtemp(prefix="zeroskip_bpe_check_")
        try:
            vocab, merges = make_bpe.train(make_bpe.corpus(), make_bpe.N_MERGES)
            files = os.path.join(ROOT, "tests", "data", "bpe")
            with open(os.path.join(files, "vocab.json"), encoding="utf-8") as f:
                self.assertEqual(json.load(f), vocab)
            with open(os.path.join(files, "merges.txt"), encoding="utf-8") as f:
                self.assertEqual(f.read(), "#version: 0.2\n" + "".join(f"{a} {b}\n"
                                                                       for a, b in merges))
        finally:
            shutil.rmtree(tmp)

    def test_reference_reproduces_fixture(self):
        files = os.path.join(ROOT, "tests", "data", "bpe")
        tok = self.ref.Gpt2Bpe.from_files(os.path.join(files, "vocab.json"),
                                          os.path.join(files, "merges.txt"))
        self.assertEqual(len(tok.vocab), self.fx["vocab_size"])
        for c in self.fx["cases"]:
            with self.subTest(c["text"]):
                self.assertEqual(self.ref.pretokenize(c["text"]), c["pretokens"])
                self.assertEqual(tok.encode(c["text"]), c["ids"])
                self.assertEqual(tok.decode(c["ids"]), c["text"])

    def test_pretokenizer_splits_like_gpt2(self):
        # Hand-checked against GPT-2's published regex: contractions split off, a run of spaces
        # leaves its last space to the next word, digits and letters apart.
        self.assertEqual(self.ref.pretokenize("I'm  here 42x"),
                         ["I", "'m", " ", " here", " 42", "x"])
        # `\s+(?!\S)` gives back the whitespace before a word: the last newline splits off.
        self.assertEqual(self.ref.pretokenize("a\n\nb"), ["a", "\n", "\n", "b"])


class ScoringFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(GOLDEN, "scoring.json"), encoding="utf-8") as f:
            cls.fx = json.load(f)
        cls.tmp = tempfile.mkdtemp(prefix="zeroskip_scoring_check_")
        cls.path = make_checkpoints.write_checkpoint(cls.tmp, cls.fx["checkpoint"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_generator_is_byte_identical(self):
        assert_files_match(self, self.path, self.fx["files_sha256"])

    def test_windows_cover_the_text(self):
        chunk = self.fx["window_ctx"] - 1
        ids = self.fx["text_ids"]
        seqs = [s["ids"] for s in self.fx["sequences"]]
        self.assertEqual(seqs[0], [1] + ids)
        self.assertEqual(seqs[1:], [[1] + ids[i:i + chunk] for i in range(chunk, len(ids), chunk)])
        for s in self.fx["sequences"]:
            self.assertEqual(len(s["logits"]), len(s["ids"]))

    @unittest.skipIf(torch is None, "missing module: torch")
    def test_reference_reproduces_fixture(self):
        ref = llama_ref.LlamaRef(self.path)
        for s in self.fx["sequences"]:
            with torch.no_grad():
                logits = ref.forward(s["ids"]).numpy()
            np.testing.assert_allclose(s["logits"], logits, rtol=0,
                                       atol=1e-6 * np.abs(logits).max())


if __name__ == "__main__":
    unittest.main()
