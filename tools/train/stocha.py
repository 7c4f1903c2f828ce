"""Model and activation code of the training recipe ("Stochastic activations", Meta FAIR 2025,
arXiv 2509.22358) at small scale.

The module imports without torch: the configuration / schedule / export helpers are plain
Python + numpy, and the torch classes are built on first use by `torch_impl()`, so a numpy-only
test run can still import it.

The model is a Llama decoder that matches the Hugging Face LlamaForCausalLM forward:
  x = embed(tokens)
  per layer: x += o_proj(attn(rmsnorm(x)));  h = rmsnorm(x);  x += down(act(gate(h)) * up(h))
  logits = rmsnorm(x) @ embed.T (tied head)
RMSNorm in float32, rotate-half RoPE, grouped-query attention, no biases.
"""
import functools
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402

VARIANTS = ("silu", "relu_scratch", "swi_ft", "stocha_ft")
RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0


def activation_for_step(variant, step, steps, alpha):
    """The FFN activation used at training step `step` (0-based) of `steps`:
    'silu', 'relu' or 'stocha'. The FT variants switch to ReLU for the last `alpha` of the
    steps."""
    if variant == "silu":
        return "silu"
    if variant == "relu_scratch":
        return "relu"
    switch = switch_step(steps, alpha)
    if step >= switch:
        return "relu"
    return {"swi_ft": "silu", "stocha_ft": "stocha"}[variant]


def switch_step(steps, alpha):
    """First step of the ReLU fine-tuning phase of the FT variants."""
    return steps - int(round(alpha * steps))


def final_activation(variant):
    """The activation the shipped model is evaluated and served with."""
    return "silu" if variant == "silu" else "relu"


def lr_at(step, steps, lr, warmup, min_ratio):
    """Linear warmup over `warmup` steps, then cosine decay to min_ratio * lr at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - 1 - warmup)
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t))))


def l1_coef_at(step, l1, warmup):
    """Coefficient of the activation L1 penalty at fine-tuning step `step` (0-based): a linear
    ramp from l1 / warmup at step 0 to l1 at step warmup - 1, then constant (the progressive
    increase of ProSparse, in one stage). warmup <= 0: l1 from the first step."""
    if warmup <= 0 or step >= warmup:
        return l1
    return l1 * (step + 1) / warmup


def hf_config(variant, vocab, hidden, layers, heads, kv_heads, ffn, ctx):
    """config.json of the exported checkpoint."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "vocab_size": vocab,
        "hidden_act": final_activation(variant),
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": ctx,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rope_scaling": None,
        "attention_bias": False,
    }


@functools.lru_cache(maxsize=None)
def torch_impl():
    """Builds the torch classes on first use. Returns a namespace with: stocha_act, Act,
    LlamaModel, model_from_hf, export_tensors."""
    import types

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    import numpy as np

    def bernoulli_mask(shape, p, rng):
        """float32 tensor of independent Bernoulli(p) draws (1.0 / 0.0). 16 random bits per
        element from a numpy Generator: P(1) = round(p * 65536) / 65536, within 1e-5 of p, and
        several times faster than torch.rand on one CPU thread."""
        n = int(np.prod(shape))
        bits = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)
        keep = (bits < int(round(p * 65536))).astype(np.float32)
        return torch.from_numpy(keep).view(shape)

    class _StochaFn(torch.autograd.Function):
        """y = x * a, a = 1 (x >= 0), sigmoid(x) (x < 0, kept), 0 (x < 0, dropped). Float masks
        and one saved gradient factor: faster than torch.where chains on one thread."""

        @staticmethod
        def forward(ctx, x, keep):
            pos = (x >= 0).to(x.dtype)
            nk = (1.0 - pos) * keep  # 1 where the negative input takes SiLU
            s = torch.sigmoid(x)
            a = pos + nk * s
            y = x * a
            # d/dx: 1 for x >= 0; silu'(x) = s + x s (1 - s) where kept; 0 where dropped
            ctx.save_for_backward(a + nk * (x * s) * (1.0 - s))
            return y

        @staticmethod
        def backward(ctx, grad):
            (g,) = ctx.saved_tensors
            return grad * g, None

    _default_rng = []

    def stocha_act(x, p, rng=None):
        """x >= 0 -> x; x < 0 -> SiLU(x) with probability p, else 0 (ReLU). One Bernoulli per
        element, drawn anew at every call from the numpy Generator `rng`."""
        if rng is None:
            if not _default_rng:
                _default_rng.append(np.random.default_rng(torch.initial_seed()))
            rng = _default_rng[0]
        return _StochaFn.apply(x, bernoulli_mask(x.shape, p, rng).to(x.dtype))

    class Act(nn.Module):
        """Switchable FFN activation: mode in {'silu', 'relu', 'stocha'}. 'stocha' samples only
        in training mode; in eval mode it is ReLU (the activation the FT variants end with)."""

        def __init__(self, mode="silu", p=0.7, seed=0, threshold=0.0):
            super().__init__()
            self.mode, self.p = mode, p
            self.threshold = threshold  # 'fatrelu': x > threshold -> x, else 0 (training only)
            self.rng = np.random.default_rng(seed + 0x5EED)  # independent of the data stream

        def forward(self, x):
            if self.mode == "silu":
                return F.silu(x)
            if self.mode == "relu":
                return F.relu(x)
            if self.mode == "fatrelu":  # FATReLU: x where x > threshold, else 0
                return x * (x > self.threshold).to(x.dtype)
            if self.mode == "stocha":
                return stocha_act(x, self.p, self.rng) if self.training else F.relu(x)
            raise ValueError(self.mode)

    class RMSNorm(nn.Module):
        def __init__(self, dim, eps=RMS_NORM_EPS):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.eps = eps

        def forward(self, x):
            dtype = x.dtype
            x = x.float()
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            return self.weight * x.to(dtype)

    def rotate_half(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def rope_cos_sin(seq, head_dim, theta=ROPE_THETA):
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    class Attention(nn.Module):
        def __init__(self, hidden, heads, kv_heads):
            super().__init__()
            assert hidden % heads == 0 and heads % kv_heads == 0
            self.heads, self.kv_heads, self.hd = heads, kv_heads, hidden // heads
            self.q_proj = nn.Linear(hidden, heads * self.hd, bias=False)
            self.k_proj = nn.Linear(hidden, kv_heads * self.hd, bias=False)
            self.v_proj = nn.Linear(hidden, kv_heads * self.hd, bias=False)
            self.o_proj = nn.Linear(heads * self.hd, hidden, bias=False)

        def forward(self, x, cos, sin, mask):
            B, T, _ = x.shape
            q = self.q_proj(x).view(B, T, self.heads, self.hd).transpose(1, 2)
            k = self.k_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
            v = self.v_proj(x).view(B, T, self.kv_heads, self.hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            rep = self.heads // self.kv_heads
            if rep > 1:  # HF repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
            # mask + (q k^T) / sqrt(hd), fused; softmax in float32 as HF does
            att = torch.baddbmm(mask.expand(B * self.heads, T, T),
                                q.reshape(B * self.heads, T, self.hd),
                                k.reshape(B * self.heads, T, self.hd).transpose(1, 2),
                                alpha=1.0 / math.sqrt(self.hd))
            att = torch.softmax(att.float(), dim=-1).to(q.dtype)
            y = torch.bmm(att, v.reshape(B * self.heads, T, self.hd))
            y = y.view(B, self.heads, T, self.hd).transpose(1, 2).reshape(B, T, -1)
            return self.o_proj(y)

    class MLP(nn.Module):
        def __init__(self, hidden, ffn, act):
            super().__init__()
            self.gate_proj = nn.Linear(hidden, ffn, bias=False)
            self.up_proj = nn.Linear(hidden, ffn, bias=False)
            self.down_proj = nn.Linear(ffn, hidden, bias=False)
            self.act = act
            self.probe = None  # when a list: receives act(gate(h)) of every forward
            self.l1_terms = None  # when a list: receives l1_penalty's term of every forward

        def forward(self, h):
            a = self.act(self.gate_proj(h))
            if self.probe is not None:
                self.probe.append(a.detach())
            if self.l1_terms is not None:  # keeps the graph: the penalty's gradient flows
                self.l1_terms.append(a.abs().mean())
            return self.down_proj(a * self.up_proj(h))

    class Layer(nn.Module):
        def __init__(self, hidden, heads, kv_heads, ffn, act):
            super().__init__()
            self.input_layernorm = RMSNorm(hidden)
            self.self_attn = Attention(hidden, heads, kv_heads)
            self.post_attention_layernorm = RMSNorm(hidden)
            self.mlp = MLP(hidden, ffn, act)

        def forward(self, x, cos, sin, mask):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
            return x + self.mlp(self.post_attention_layernorm(x))

    class LlamaModel(nn.Module):
        def __init__(self, vocab, hidden, layers, heads, kv_heads, ffn, act="silu", p=0.7,
                     seed=0):
            super().__init__()
            self.act = Act(act, p, seed)  # one module shared by every layer: switch it in one place
            self.embed_tokens = nn.Embedding(vocab, hidden)
            self.layers = nn.ModuleList(
                [Layer(hidden, heads, kv_heads, ffn, self.act) for _ in range(layers)])
            self.norm = RMSNorm(hidden)
            self.head_dim = hidden // heads
            self.n_layers = layers

        def init_weights(self, seed):
            g = torch.Generator().manual_seed(seed)
            std = 0.02
            with torch.no_grad():
                for name, prm in self.named_parameters():
                    if prm.dim() == 1:
                        prm.fill_(1.0)  # RMSNorm weights
                    elif name.endswith(("o_proj.weight", "down_proj.weight")):
                        # residual-branch outputs scaled down with depth (GPT-2 style)
                        prm.normal_(0.0, std / math.sqrt(2 * self.n_layers), generator=g)
                    else:
                        prm.normal_(0.0, std, generator=g)

        def forward(self, tokens):
            T = tokens.shape[1]
            cos, sin = rope_cos_sin(T, self.head_dim)
            mask = torch.full((T, T), float("-inf")).triu(1)
            x = self.embed_tokens(tokens)
            for layer in self.layers:
                x = layer(x, cos, sin, mask)
            return self.norm(x) @ self.embed_tokens.weight.t()

        def loss(self, tokens):
            """Mean next-token cross-entropy over a batch of windows [B, T]."""
            logits = self(tokens[:, :-1])
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                   tokens[:, 1:].reshape(-1))

    def l1_penalty(terms):
        """The sparsity penalty of the fine-tuning: the mean over layers of each layer's mean
        |act(gate(h))| over every token and neuron (MLP.l1_terms). Post-activation values: the
        ones whose zeros the engine skips. The training loss is CE + coef * l1_penalty."""
        return torch.stack(list(terms)).mean()

    def hf_names_to_params(model):
        """HF tensor name -> parameter (nn.Linear weights are [out, in], as HF stores them)."""
        params = dict(model.named_parameters())
        out = {}
        for name in hfio.llama_tensor_names(model.n_layers, tied=True):
            key = name[len("model."):] if name.startswith("model.") else name
            out[name] = params[key]
        assert len(out) == len(params), "every parameter must have an HF name"
        return out

    def export_tensors(model):
        """-> dict HF name -> float32 numpy array, in llama_tensor_names order."""
        return {n: p.detach().float().cpu().numpy().copy()
                for n, p in hf_names_to_params(model).items()}

    def model_from_hf(config, tensors, act=None, p=0.7):
        """Builds a LlamaModel from an HF config + tensors (as read by hfio.read_hf_dir)."""
        m = LlamaModel(config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                       config["num_attention_heads"], config["num_key_value_heads"],
                       config["intermediate_size"], act or config["hidden_act"], p)
        with torch.no_grad():
            for name, prm in hf_names_to_params(m).items():
                prm.copy_(torch.from_numpy(tensors[name]))
        return m

    return types.SimpleNamespace(
        torch=torch, stocha_act=stocha_act, bernoulli_mask=bernoulli_mask, StochaFn=_StochaFn, Act=Act, RMSNorm=RMSNorm, rotate_half=rotate_half,
        rope_cos_sin=rope_cos_sin, LlamaModel=LlamaModel, export_tensors=export_tensors,
        l1_penalty=l1_penalty,
        model_from_hf=model_from_hf)
