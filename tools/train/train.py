#!/usr/bin/env python3
"""Trains one variant of the "Stochastic activations" recipe (arXiv 2509.22358) at small scale
and exports it as a Hugging Face Llama checkpoint.

Variants (same token budget, AdamW, linear warmup + cosine decay):
  silu          SiLU throughout
  relu_scratch  ReLU throughout
  swi_ft        SiLU, then ReLU for the last --alpha of the steps
  stocha_ft     stocha(p), then ReLU for the last --alpha of the steps
stocha(p): x >= 0 -> x; x < 0 -> SiLU(x) with probability p, else 0 (per element, per forward).

Data: the corpus is tokenized whole; training samples random windows of the first 90% of the
tokens, validation uses fixed non-overlapping windows of the last 10%.

  /usr/bin/python3 tools/train/train.py --corpus CORPUS.txt --tokenizer tokenizer.model \
      --variant stocha_ft --out /tmp/train_runs/stocha_ft --log /tmp/train_runs/stocha_ft.json
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402
import stocha  # noqa: E402

TRAIN_FRACTION = 0.9


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True, help="sentencepiece .model")
    ap.add_argument("--variant", required=True, choices=stocha.VARIANTS)
    ap.add_argument("--out", help="HF checkpoint directory to write (omit: no export)")
    ap.add_argument("--log", help="JSON log to write")
    ap.add_argument("--p", type=float, default=0.7, help="stocha: P(SiLU) for negative inputs")
    ap.add_argument("--alpha", type=float, default=0.1,
                    help="FT variants: fraction of the steps trained with ReLU at the end")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=704)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1,
                    help="cosine decays to this fraction of --lr")
    ap.add_argument("--warmup", type=int, default=None, help="default: 5%% of --steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-windows", type=int, default=32,
                    help="validation windows for the periodic evaluation (the final one uses "
                         "every validation window)")
    ap.add_argument("--export-dtype", choices=("bf16", "f32"), default="bf16")
    return ap.parse_args(argv)


def load_tokens(corpus, tokenizer):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    with open(corpus, encoding="utf-8") as f:
        ids = np.asarray(sp.encode(f.read()), dtype=np.int64)
    split = int(len(ids) * TRAIN_FRACTION)
    return sp.get_piece_size(), ids[:split], ids[split:]


def val_windows(val, ctx):
    """Non-overlapping windows of ctx+1 tokens (ctx predictions each) covering the val split."""
    n = (len(val) - 1) // ctx
    return np.stack([val[i * ctx: i * ctx + ctx + 1] for i in range(n)])


def adamw(torch, model, lr, weight_decay):
    """AdamW as every run here uses it: beta 0.9/0.95, weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8)


def write_json_log(path, log):
    """Writes the JSON log atomically (a reader never sees half of it); nothing when no path."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(log, f, indent=1)
    os.replace(path + ".tmp", path)


def main(argv=None):
    args = parse_args(argv)
    T = stocha.torch_impl()
    torch = T.torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)

    vocab, train_ids, val_ids = load_tokens(args.corpus, args.tokenizer)
    vwin = val_windows(val_ids, args.ctx)
    pick = np.linspace(0, len(vwin) - 1, min(args.eval_windows, len(vwin))).round().astype(int)
    vwin_periodic = torch.from_numpy(vwin[pick])
    vwin_all = torch.from_numpy(vwin)

    model = T.LlamaModel(vocab, args.hidden, args.layers, args.heads, args.kv_heads, args.ffn,
                         stocha.activation_for_step(args.variant, 0, args.steps, args.alpha),
                         args.p, args.seed)
    model.init_weights(args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    opt = adamw(torch, model, args.lr, args.weight_decay)
    data_rng = np.random.default_rng(args.seed)  # own stream: same windows for every variant
    final_act = stocha.final_activation(args.variant)

    def evaluate(m, windows, act, batch=16):
        """Mean val loss of model m with FFN activation `act` (every window has the same number
        of targets). act 'stocha' samples its Bernoulli masks, as in training."""
        saved, was_training = m.act.mode, m.training
        m.act.mode = act
        m.eval()
        m.act.train(act == "stocha")
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(windows), batch):
                w = windows[i:i + batch]
                total += m.loss(w).item() * len(w)
        m.act.mode = saved
        m.train(was_training)
        return total / len(windows)

    log = {"args": vars(args), "variant": args.variant, "params": n_params, "vocab": vocab,
           "train_tokens_available": int(len(train_ids)), "val_tokens": int(len(val_ids)),
           "val_windows": int(len(vwin)), "tokens": args.steps * args.batch * args.ctx,
           "switch_step": (stocha.switch_step(args.steps, args.alpha)
                           if args.variant in ("swi_ft", "stocha_ft") else None),
           "train": [], "val": []}

    def periodic_eval(step):
        entry = {"step": step, "val_loss": evaluate(model, vwin_periodic, final_act)}
        cur = model.act.mode
        if cur != final_act:  # also the loss with the activation currently trained
            entry["val_loss_train_act"] = evaluate(model, vwin_periodic, cur)
            entry["train_act"] = cur
        log["val"].append(entry)
        print(f"step {step:5d} val {entry['val_loss']:.4f} ({final_act})"
              + (f" / {entry['val_loss_train_act']:.4f} ({cur})" if cur != final_act else ""),
              flush=True)

    model.train()
    t0 = time.time()
    window = np.arange(args.ctx + 1)
    recent = []
    for step in range(args.steps):
        act = stocha.activation_for_step(args.variant, step, args.steps, args.alpha)
        if act != model.act.mode:
            print(f"step {step}: activation {model.act.mode} -> {act}", flush=True)
            model.act.mode = act
        if step % args.eval_every == 0:
            periodic_eval(step)
            write_json_log(args.log, log)
        lr = stocha.lr_at(step, args.steps, args.lr, warmup, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = data_rng.integers(0, len(train_ids) - args.ctx - 1, size=args.batch)
        batch = torch.from_numpy(train_ids[starts[:, None] + window])
        loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == args.steps:
            log["train"].append({"step": step + 1, "loss": float(np.mean(recent)), "lr": lr,
                                 "act": act, "seconds": round(time.time() - t0, 2)})
            recent = []
            if (step + 1) % 50 == 0:
                el = time.time() - t0
                print(f"step {step + 1:5d} loss {log['train'][-1]['loss']:.4f} lr {lr:.2e} "
                      f"{act} {el:.0f}s ({(step + 1) * args.batch * args.ctx / el:.0f} tok/s)",
                      flush=True)
    train_seconds = time.time() - t0
    periodic_eval(args.steps)

    # final evaluation on every validation window, with the activation the model ships with
    model.eval()
    model.act.mode = final_act
    log["val_loss"] = evaluate(model, vwin_all, final_act)
    probes = [[] for _ in model.layers]
    for layer, pr in zip(model.layers, probes):
        layer.mlp.probe = pr
    with torch.no_grad():
        for i in range(0, len(vwin_all), 16):
            model(vwin_all[i:i + 16, :-1])
    per_layer = []
    zeros = total = 0
    for layer, pr in zip(model.layers, probes):
        layer.mlp.probe = None
        z = sum(int((a == 0).sum()) for a in pr)
        n = sum(a.numel() for a in pr)
        per_layer.append(z / n)
        zeros, total = zeros + z, total + n
    log["ffn_zero_fraction_torch"] = zeros / total
    log["ffn_zero_fraction_torch_per_layer"] = per_layer
    log["train_seconds"] = round(train_seconds, 1)
    print(f"final val loss {log['val_loss']:.4f} ({final_act}, {len(vwin)} windows), "
          f"ffn zeros {log['ffn_zero_fraction_torch']:.4f}, train {train_seconds:.0f}s",
          flush=True)

    if args.out:
        config = stocha.hf_config(args.variant, vocab, args.hidden, args.layers, args.heads,
                                  args.kv_heads, args.ffn, args.ctx)
        dtype = {"bf16": "BF16", "f32": "F32"}[args.export_dtype]
        hfio.write_hf_dir(args.out, config, T.export_tensors(model), dtype=dtype,
                          tokenizer_model=args.tokenizer)
        # the exported (rounded) weights must reproduce the val loss
        cfg2, tensors2 = hfio.read_hf_dir(args.out)
        m2 = T.model_from_hf(cfg2, tensors2)
        log["val_loss_reloaded"] = evaluate(m2, vwin_all, final_act)
        log["export_dtype"] = dtype
        print(f"exported {args.out} ({dtype}); val loss from the exported weights "
              f"{log['val_loss_reloaded']:.4f}", flush=True)
    log["total_seconds"] = round(time.time() - t0, 1)
    write_json_log(args.log, log)


if __name__ == "__main__":
    main()
