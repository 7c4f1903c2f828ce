#!/usr/bin/env python3
"""Sparsity-promoting fine-tuning of a shipped ReLU checkpoint (ProSparse-style, at small scale):
resumes from an HF directory (models/relu-ft, the stocha_ft run) and trains a few hundred steps
with

  loss = CE + coef(step) * l1_penalty,   l1_penalty = mean over layers of mean |relu(gate(h))|

where coef ramps linearly from 0 to --l1 over --l1-warmup steps and then stays. The penalty acts
on the post-activation values, the ones whose exact zeros the engine skips. --threshold T > 0
trains with FATReLU (x > T -> x, else 0) instead of ReLU; the export and every evaluation use
plain ReLU, so a thresholded run is only for exploring (the engine does not run thresholds).

Optimizer: a fresh AdamW (the checkpoint carries no optimizer state; beta 0.9/0.95, wd 0.1 on
matrices, clip 1.0), lr warmup over --warmup steps then cosine to --min-lr-ratio * --lr. Training
windows are drawn like train.py's (first 90% of the tokens, numpy Generator seeded with --seed);
validation is train.py's: every non-overlapping window of the last 10%, with ReLU.

  /usr/bin/python3 tools/train/sparsify.py --init models/relu-ft \\
      --corpus ../shared/data/tinyshakespeare.txt --l1 0.1 --l1-warmup 100 --steps 300 \\
      --out /tmp/sparse_runs/l1_0.1 --log /tmp/sparse_runs/l1_0.1.json
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402
import stocha  # noqa: E402
import train  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", required=True, help="HF checkpoint directory to resume from")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", help="sentencepiece .model (default: INIT/tokenizer.model)")
    ap.add_argument("--out", help="HF checkpoint directory to write (omit: no export)")
    ap.add_argument("--log", help="JSON log to write")
    ap.add_argument("--l1", type=float, required=True, help="final L1 coefficient")
    ap.add_argument("--l1-warmup", type=int, default=100,
                    help="steps of the linear ramp of the L1 coefficient from 0 to --l1")
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="FATReLU threshold during training (0: plain ReLU); never exported")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=10, help="lr warmup steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--export-dtype", choices=("bf16", "f32"), default="bf16")
    return ap.parse_args(argv)


def evaluate(T, model, windows, batch=16):
    """(mean val loss, overall zero fraction, per-layer zero fractions) with plain ReLU."""
    torch = T.torch
    saved, was_training = model.act.mode, model.training
    model.act.mode = "relu"
    model.eval()
    counts = [[0, 0] for _ in model.layers]
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            probes = [[] for _ in model.layers]
            for layer, pr in zip(model.layers, probes):
                layer.mlp.probe = pr
            w = windows[i:i + batch]
            total += model.loss(w).item() * len(w)
            for c, pr in zip(counts, probes):
                c[0] += sum(int((a == 0).sum()) for a in pr)
                c[1] += sum(a.numel() for a in pr)
    for layer in model.layers:
        layer.mlp.probe = None
    model.act.mode = saved
    model.train(was_training)
    zeros = sum(c[0] for c in counts) / sum(c[1] for c in counts)
    return total / len(windows), zeros, [c[0] / c[1] for c in counts]


def main(argv=None):
    args = parse_args(argv)
    T = stocha.torch_impl()
    torch = T.torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = args.tokenizer or os.path.join(args.init, "tokenizer.model")

    config, tensors = hfio.read_hf_dir(args.init)
    if config["hidden_act"] != "relu":
        raise SystemExit(f"{args.init}: hidden_act {config['hidden_act']}, expected relu")
    ctx = config["max_position_embeddings"]
    vocab, train_ids, val_ids = train.load_tokens(args.corpus, tokenizer)
    vwin = train.val_windows(val_ids, ctx)
    pick = np.linspace(0, len(vwin) - 1, min(args.eval_windows, len(vwin))).round().astype(int)
    vwin_periodic = torch.from_numpy(vwin[pick])
    vwin_all = torch.from_numpy(vwin)

    model = T.model_from_hf(config, tensors)
    train_act = "fatrelu" if args.threshold > 0 else "relu"
    model.act.mode, model.act.threshold = train_act, args.threshold
    opt = train.adamw(torch, model, args.lr, args.weight_decay)
    data_rng = np.random.default_rng(args.seed)

    log = {"args": vars(args), "init": args.init, "train_act": train_act,
           "tokens": args.steps * args.batch * ctx, "val_windows": int(len(vwin)),
           "train": [], "val": []}

    def periodic_eval(step):
        loss, zeros, _ = evaluate(T, model, vwin_periodic)
        log["val"].append({"step": step, "val_loss": loss, "ffn_zero_fraction_torch": zeros})
        print(f"step {step:5d} val {loss:.4f} zeros {zeros:.4f}", flush=True)

    l1_terms = []
    for layer in model.layers:
        layer.mlp.l1_terms = l1_terms
    model.train()
    t0 = time.time()
    window = np.arange(ctx + 1)
    recent = []
    for step in range(args.steps):
        if step % args.eval_every == 0:
            periodic_eval(step)
            train.write_json_log(args.log, log)
        lr = stocha.lr_at(step, args.steps, args.lr, args.warmup, args.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = lr
        coef = stocha.l1_coef_at(step, args.l1, args.l1_warmup)
        starts = data_rng.integers(0, len(train_ids) - ctx - 1, size=args.batch)
        batch = torch.from_numpy(train_ids[starts[:, None] + window])
        l1_terms.clear()
        ce = model.loss(batch)
        l1 = T.l1_penalty(l1_terms)
        loss = ce + coef * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        recent.append((ce.item(), l1.item()))
        if (step + 1) % 10 == 0 or step + 1 == args.steps:
            ce_m, l1_m = np.mean(recent, axis=0)
            log["train"].append({"step": step + 1, "ce": float(ce_m), "l1": float(l1_m),
                                 "coef": coef, "lr": lr,
                                 "seconds": round(time.time() - t0, 2)})
            recent = []
            if (step + 1) % 50 == 0:
                el = time.time() - t0
                print(f"step {step + 1:5d} ce {ce_m:.4f} l1 {l1_m:.4f} coef {coef:.3g} "
                      f"lr {lr:.2e} {el:.0f}s ({(step + 1) * args.batch * ctx / el:.0f} tok/s)",
                      flush=True)
    for layer in model.layers:
        layer.mlp.l1_terms = None
    train_seconds = time.time() - t0
    periodic_eval(args.steps)

    loss, zeros, per_layer = evaluate(T, model, vwin_all)
    log.update({"val_loss": loss, "ffn_zero_fraction_torch": zeros,
                "ffn_zero_fraction_torch_per_layer": per_layer,
                "train_seconds": round(train_seconds, 1)})
    print(f"final val loss {loss:.4f} (relu, {len(vwin)} windows), ffn zeros {zeros:.4f} "
          f"({' / '.join(f'{z:.3f}' for z in per_layer)}), train {train_seconds:.0f}s",
          flush=True)

    if args.out:
        dtype = {"bf16": "BF16", "f32": "F32"}[args.export_dtype]
        config_out = {k: v for k, v in config.items() if k != "torch_dtype"}
        hfio.write_hf_dir(args.out, config_out, T.export_tensors(model), dtype=dtype,
                          tokenizer_model=tokenizer)
        cfg2, tensors2 = hfio.read_hf_dir(args.out)
        loss2, zeros2, per_layer2 = evaluate(T, T.model_from_hf(cfg2, tensors2), vwin_all)
        log.update({"val_loss_reloaded": loss2, "ffn_zero_fraction_torch_reloaded": zeros2,
                    "ffn_zero_fraction_torch_per_layer_reloaded": per_layer2,
                    "export_dtype": dtype})
        print(f"exported {args.out} ({dtype}); from the exported weights: val loss "
              f"{loss2:.4f}, ffn zeros {zeros2:.4f}", flush=True)
    log["total_seconds"] = round(time.time() - t0, 1)
    train.write_json_log(args.log, log)


if __name__ == "__main__":
    main()
