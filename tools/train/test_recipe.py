#!/usr/bin/env python3
"""Tests of the training recipe: /usr/bin/python3 tools/train/test_recipe.py

The torch tests skip when torch is not importable, the tokenizer test when sentencepiece is not:
a numpy-only run still checks the checkpoint writer, the config and the schedules.
"""
import importlib.util
import math
import os
import random
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))
import hfio  # noqa: E402
import stocha  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_SPM = importlib.util.find_spec("sentencepiece") is not None


def bf16_reference(x):
    """Independent float32 -> bf16 round-to-nearest-even, one value at a time in float64: the
    two bf16 neighbours of x, the nearer one, ties to the even mantissa."""
    x = np.float32(x)
    bits = int(np.array([x]).view(np.uint32)[0])
    lo_bits = bits & 0xFFFF0000
    lo = float(np.array([lo_bits], dtype=np.uint32).view(np.float32)[0])
    hi_bits = lo_bits + 0x10000
    hi = float(np.array([hi_bits], dtype=np.uint32).view(np.float32)[0])
    d_lo, d_hi = abs(float(x) - lo), abs(hi - float(x))
    if d_lo < d_hi or (d_lo == d_hi and ((lo_bits >> 16) & 1) == 0):
        return lo_bits >> 16
    return (hi_bits >> 16) & 0xFFFF


def tiny_config(variant="stocha_ft"):
    return stocha.hf_config(variant, vocab=64, hidden=32, layers=2, heads=4, kv_heads=2, ffn=48,
                            ctx=16)


def numpy_llama_logits(config, t, tokens):
    """Hugging Face LlamaForCausalLM forward written out in float64 numpy, one head at a time,
    from the checkpoint tensors: the reference the torch model must match."""
    H, KV = config["num_attention_heads"], config["num_key_value_heads"]
    hd, eps = config["head_dim"], config["rms_norm_eps"]
    act = {"relu": lambda z: np.maximum(z, 0.0),
           "silu": lambda z: z / (1.0 + np.exp(-z))}[config["hidden_act"]]
    w = {k: v.astype(np.float64) for k, v in t.items()}

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    T = len(tokens)
    inv = 1.0 / config["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(T), inv)
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(v):  # rotate-half: pairs (i, i + hd/2)
        a, b = v[:, : hd // 2], v[:, hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=1)

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q, k, v = (h @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        heads = []
        for j in range(H):
            kvj = j // (H // KV)  # the kv head a query head shares
            qj = rope(q[:, j * hd:(j + 1) * hd])
            kj = rope(k[:, kvj * hd:(kvj + 1) * hd])
            s = qj @ kj.T / math.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
            s = np.exp(s - s.max(-1, keepdims=True))
            heads.append((s / s.sum(-1, keepdims=True)) @ v[:, kvj * hd:(kvj + 1) * hd])
        x = x + np.concatenate(heads, axis=1) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = act(h @ w[p + "mlp.gate_proj.weight"].T)
        x = x + (g * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return rms(x, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T


class TestCheckpointWriter(unittest.TestCase):
    def tensors(self, rng):
        names = hfio.llama_tensor_names(2, tied=True)
        cfg = tiny_config()
        shapes = {"embed_tokens": (64, 32), "norm": (32,), "layernorm": (32,),
                  "q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32),
                  "gate_proj": (48, 32), "up_proj": (48, 32), "down_proj": (32, 48)}
        out = {}
        for n in names:
            shape = next(s for k, s in shapes.items() if k in n)
            out[n] = rng.standard_normal(shape).astype(np.float32)
        return cfg, out

    def test_f32_round_trip_is_exact(self):
        cfg, t = self.tensors(np.random.default_rng(0))
        with tempfile.TemporaryDirectory() as d:
            hfio.write_hf_dir(d, cfg, t, dtype="F32")
            cfg2, t2 = hfio.read_hf_dir(d)
        self.assertEqual(cfg2["hidden_act"], "relu")
        self.assertEqual(cfg2["torch_dtype"], "float32")
        self.assertEqual(list(t2), list(t))
        for n in t:
            self.assertEqual(t2[n].shape, t[n].shape)
            np.testing.assert_array_equal(t2[n], t[n])

    def test_bf16_round_trip_is_round_to_nearest_even(self):
        cfg, t = self.tensors(np.random.default_rng(1))
        name = "model.layers.0.mlp.gate_proj.weight"
        # ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1 (even); 1 + 3 * 2^-8 is halfway
        # between 1 + 2^-7 (odd) and 1 + 2^-6 -> 1 + 2^-6 (even); and the negative mirrors
        special = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), -(1 + 3 * 2 ** -8),
                            0.0, -0.0, 3.0e38, 1e-40], dtype=np.float32)
        t[name].reshape(-1)[: len(special)] = special
        with tempfile.TemporaryDirectory() as d:
            hfio.write_hf_dir(d, cfg, t, dtype="BF16")
            _, t2 = hfio.read_hf_dir(d)
            header, _ = hfio.read_safetensors_header(os.path.join(d, "model.safetensors"))
        self.assertEqual(header[name]["dtype"], "BF16")
        self.assertEqual(header[name]["shape"], [48, 32])
        got = t2[name].reshape(-1)
        self.assertEqual(got[0], 1.0)
        self.assertEqual(got[1], 1 + 2 ** -6)
        self.assertEqual(got[2], -1.0)
        self.assertEqual(got[3], -(1 + 2 ** -6))
        for n in t:
            src = t[n].reshape(-1)
            ref = np.array([bf16_reference(v) for v in src], dtype=np.uint16)
            np.testing.assert_array_equal(
                t2[n].reshape(-1).view(np.uint32) >> 16, ref.astype(np.uint32), err_msg=n)


class TestRecipeConfig(unittest.TestCase):
    def test_config_fields(self):
        for variant, act in [("silu", "silu"), ("relu_scratch", "relu"), ("swi_ft", "relu"),
                             ("stocha_ft", "relu")]:
            c = stocha.hf_config(variant, 4096, 256, 4, 8, 4, 704, 256)
            self.assertEqual(c["hidden_act"], act)
            self.assertEqual(c["architectures"], ["LlamaForCausalLM"])
            self.assertEqual(c["head_dim"], 32)
            self.assertEqual(c["num_key_value_heads"], 4)
            self.assertTrue(c["tie_word_embeddings"])
            self.assertEqual((c["bos_token_id"], c["eos_token_id"]), (1, 2))
            self.assertIsNone(c["rope_scaling"])
            self.assertEqual(c["max_position_embeddings"], 256)

    def test_activation_schedule(self):
        steps, alpha = 500, 0.1
        self.assertEqual(stocha.switch_step(steps, alpha), 450)
        for v, first, last in [("silu", "silu", "silu"), ("relu_scratch", "relu", "relu"),
                               ("swi_ft", "silu", "relu"), ("stocha_ft", "stocha", "relu")]:
            acts = [stocha.activation_for_step(v, s, steps, alpha) for s in range(steps)]
            self.assertEqual(acts[0], first)
            self.assertEqual(acts[-1], last)
            if first != last:
                self.assertEqual(acts.index("relu"), 450)
                self.assertEqual(acts.count("relu"), 50)

    def test_l1_coefficient_warmup(self):
        coefs = [stocha.l1_coef_at(s, 0.5, 4) for s in range(7)]
        self.assertEqual(coefs, [0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5])
        self.assertEqual(stocha.l1_coef_at(0, 0.5, 0), 0.5)

    def test_lr_schedule(self):
        lrs = [stocha.lr_at(s, 100, 1e-3, 10, 0.1) for s in range(100)]
        self.assertAlmostEqual(lrs[0], 1e-4)
        self.assertAlmostEqual(lrs[9], 1e-3)
        self.assertAlmostEqual(lrs[-1], 1e-4)
        self.assertTrue(all(a >= b for a, b in zip(lrs[9:], lrs[10:])))


@unittest.skipUnless(HAS_SPM, "missing module: sentencepiece")
class TestTokenizer(unittest.TestCase):
    def test_special_ids_and_byte_fallback(self):
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 6)))
                 for _ in range(300)]
        text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000))
        with tempfile.TemporaryDirectory() as d:
            corpus, model = os.path.join(d, "c.txt"), os.path.join(d, "t.model")
            with open(corpus, "w") as f:
                f.write(text + "\nZZZ only in the validation tail\n")
            subprocess.run([sys.executable, os.path.join(HERE, "train_tokenizer.py"),
                            "--corpus", corpus, "--vocab", "400", "--out", model],
                           check=True, capture_output=True)
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=model)
        self.assertEqual(sp.get_piece_size(), 400)
        self.assertEqual((sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()), (0, 1, 2, -1))
        self.assertEqual(sp.id_to_piece(3), "<0x00>")
        # 'Z' only occurs in the last 10%: not in the vocabulary, encoded by bytes, round-trips
        self.assertEqual(sp.piece_to_id("Z"), 0)
        s = "abc ZZ\nj"
        ids = sp.encode(s)
        self.assertIn(sp.piece_to_id("<0x5A>"), ids)
        self.assertNotIn(0, ids)
        self.assertEqual(sp.decode(ids), s)


@unittest.skipUnless(HAS_TORCH, "missing module: torch")
class TestStochaActivation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.T = stocha.torch_impl()
        cls.torch = cls.T.torch
        cls.torch.manual_seed(0)

    def test_fraction_of_negatives_taking_silu(self):
        torch, T = self.torch, self.T
        n = 200_000
        x = -(torch.rand(n) * 6 + 1e-3)  # strictly negative: SiLU(x) != 0 there
        silu = torch.nn.functional.silu(x)
        for p in (0.1, 0.5, 0.7, 0.9):
            y = T.stocha_act(x, p, np.random.default_rng(int(p * 100)))
            took_silu = y != 0
            # every output is either SiLU(x) or exactly 0
            self.assertTrue(torch.allclose(y[took_silu], silu[took_silu], rtol=1e-6, atol=0))
            frac = took_silu.double().mean().item()
            # The count of SiLU picks among n independent Bernoulli(p) draws is Binomial(n, p):
            # the fraction has mean p and standard deviation sqrt(p(1-p)/n). A 5-sigma band
            # fails a correct implementation with probability ~6e-7 (normal approximation,
            # excellent at n = 2e5), yet catches any bias larger than ~5e-3 (e.g. a p / 1-p
            # swap, or a quantized threshold off by one bit of 8).
            self.assertLess(abs(frac - p), 5 * math.sqrt(p * (1 - p) / n), f"p={p}")

    def test_positives_untouched_and_fresh_draws(self):
        torch, T = self.torch, self.T
        x = torch.randn(4096)
        rng = np.random.default_rng(3)
        y1, y2 = T.stocha_act(x, 0.5, rng), T.stocha_act(x, 0.5, rng)
        pos = x >= 0
        self.assertTrue(torch.equal(y1[pos], x[pos]))
        self.assertFalse(torch.equal(y1[~pos], y2[~pos]))  # a new mask at every call

    def test_p0_is_relu_and_p1_is_silu(self):
        torch, T = self.torch, self.T
        x = torch.randn(10_000) * 4
        rng = np.random.default_rng(4)
        self.assertTrue(torch.equal(T.stocha_act(x, 0.0, rng), torch.relu(x)))
        s1 = T.stocha_act(x, 1.0, rng)
        silu = torch.nn.functional.silu(x)
        neg = x < 0
        self.assertTrue(torch.allclose(s1, torch.where(neg, silu, x), rtol=1e-6, atol=1e-7))
        self.assertTrue(torch.allclose(s1[neg], silu[neg], rtol=1e-6, atol=1e-7))

    def test_gradient(self):
        torch, T = self.torch, self.T
        x = torch.randn(300, dtype=torch.float64, requires_grad=True)
        keep = T.bernoulli_mask(x.shape, 0.7, np.random.default_rng(5)).double()
        self.assertTrue(torch.autograd.gradcheck(lambda t: T.StochaFn.apply(t, keep), (x,)))

    def test_act_module_modes(self):
        torch, T = self.torch, self.T
        x = torch.randn(1000)
        a = T.Act("stocha", 0.7)
        a.eval()  # at eval time stocha is the final activation, ReLU
        self.assertTrue(torch.equal(a(x), torch.relu(x)))
        a.train()
        y = a(x)
        neg = x < 0
        self.assertTrue(((y[neg] == 0) | (y[neg] < 0)).all())
        self.assertTrue((y[neg] != 0).any() and (y[neg] == 0).any())


@unittest.skipUnless(HAS_TORCH, "missing module: torch")
class TestSparsityPenalty(unittest.TestCase):
    """The L1 term of tools/train/sparsify.py: mean over layers of mean |act(gate(h))|."""

    @classmethod
    def setUpClass(cls):
        cls.T = stocha.torch_impl()
        cls.torch = cls.T.torch

    def test_value_and_gradient_by_hand(self):
        torch, T = self.torch, self.T
        m = T.LlamaModel(8, 2, 2, 1, 1, 2, "relu")
        terms = []
        with torch.no_grad():
            for layer in m.layers:  # gate = identity: the pre-activations are h itself
                layer.mlp.gate_proj.weight.copy_(torch.eye(2))
                layer.mlp.l1_terms = terms
        # layer 0: pre-acts [[-1, 2], [3, -4]] -> relu [[0, 2], [3, 0]], mean 5/4
        # layer 1: pre-acts [[0.5, -0.5]]      -> relu [[0.5, 0]],       mean 1/4
        h0 = torch.tensor([[-1.0, 2.0], [3.0, -4.0]], dtype=torch.float64, requires_grad=True)
        h1 = torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)
        m.double()
        m.layers[0].mlp(h0)
        m.layers[1].mlp(h1)
        self.assertEqual(len(terms), 2)
        pen = T.l1_penalty(terms)
        self.assertAlmostEqual(pen.item(), (5 / 4 + 1 / 4) / 2, places=12)  # 0.75
        pen.backward()
        # d pen / d pre-act = (1 / layers) * (1 / elements of the layer) where the pre-act is
        # positive, 0 where relu zeroed it: 1/2 * 1/4 in layer 0, 1/2 * 1/2 in layer 1
        np.testing.assert_array_equal(h0.grad.numpy(), [[0.0, 0.125], [0.125, 0.0]])
        np.testing.assert_array_equal(h1.grad.numpy(), [[0.25, 0.0]])
        # the gate weights get it too: d pen / d W[i, j] = sum over rows of g_i * h_j
        np.testing.assert_array_equal(m.layers[1].mlp.gate_proj.weight.grad.numpy(),
                                      [[0.125, -0.125], [0.0, 0.0]])
        # the up and down projections do not appear in the penalty
        self.assertIsNone(m.layers[0].mlp.up_proj.weight.grad)

    def test_fatrelu(self):
        torch, T = self.torch, self.T
        act = T.Act("fatrelu", threshold=0.5)
        x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 0.75, 2.0], requires_grad=True)
        y = act(x)
        self.assertEqual(y.tolist(), [0.0, 0.0, 0.0, 0.0, 0.75, 2.0])
        y.sum().backward()
        self.assertEqual(x.grad.tolist(), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0])


@unittest.skipUnless(HAS_TORCH, "missing module: torch")
class TestModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.T = stocha.torch_impl()
        cls.torch = cls.T.torch

    def model(self, act):
        T = self.T
        m = T.LlamaModel(64, 32, 2, 4, 2, 48, act)
        m.init_weights(7)
        with self.torch.no_grad():  # non-trivial norms, larger weights: a sharper comparison
            for n, prm in m.named_parameters():
                prm.mul_(10.0) if prm.dim() == 2 else prm.uniform_(0.5, 1.5)
        return m.eval()

    def test_matches_hf_reference_forward(self):
        torch = self.torch
        tokens = np.random.default_rng(0).integers(0, 64, size=16)
        for variant in ("silu", "relu_scratch"):
            cfg = tiny_config(variant)
            m = self.model(cfg["hidden_act"])
            tensors = self.T.export_tensors(m)
            self.assertEqual(list(tensors), hfio.llama_tensor_names(2, tied=True))
            self.assertEqual(tensors["model.layers.0.self_attn.k_proj.weight"].shape, (16, 32))
            self.assertEqual(tensors["model.layers.1.mlp.down_proj.weight"].shape, (32, 48))
            ref = numpy_llama_logits(cfg, tensors, tokens)
            with torch.no_grad():
                got = m(torch.from_numpy(tokens)[None])[0].double().numpy()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())

    def test_export_reload(self):
        torch, T = self.torch, self.T
        cfg = tiny_config("stocha_ft")
        m = self.model("relu")
        tokens = torch.from_numpy(np.random.default_rng(1).integers(0, 64, size=(2, 16)))
        with torch.no_grad():
            ref = m(tokens)
        with tempfile.TemporaryDirectory() as d:
            for dtype in ("F32", "BF16"):
                hfio.write_hf_dir(os.path.join(d, dtype), cfg, T.export_tensors(m), dtype=dtype)
                cfg2, t2 = hfio.read_hf_dir(os.path.join(d, dtype))
                m2 = T.model_from_hf(cfg2, t2).eval()
                self.assertEqual(m2.act.mode, "relu")
                with torch.no_grad():
                    got = m2(tokens)
                if dtype == "F32":
                    self.assertTrue(torch.equal(got, ref))
                else:  # bf16 keeps 8 significant bits
                    self.assertLess((got - ref).abs().max().item(),
                                    0.05 * ref.abs().max().item())


if __name__ == "__main__":
    unittest.main()
