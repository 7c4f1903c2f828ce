#!/usr/bin/env python3
"""Draws the train / validation loss curves of the training runs (train.py JSON logs).

  /usr/bin/python3 tools/train/plot_curves.py --out models/curves.png \
      /tmp/train_runs/silu.json /tmp/train_runs/relu_scratch.json \
      /tmp/train_runs/swi_ft.json /tmp/train_runs/stocha_ft.json
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"silu": "tab:blue", "relu_scratch": "tab:red", "swi_ft": "tab:green",
          "stocha_ft": "tab:purple"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(12, 4.5))
    val_min, train_min = [], []
    for path in args.logs:
        with open(path) as f:
            log = json.load(f)
        v, c = log["variant"], COLORS.get(log["variant"])
        tr = log["train"]
        ax_t.plot([e["step"] for e in tr], [e["loss"] for e in tr], color=c, lw=1, label=v)
        val = log["val"]
        val_min.append(min(e["val_loss"] for e in val))
        train_min.append(min(e["loss"] for e in tr))
        final = "silu" if v == "silu" else "relu"
        ax_v.plot([e["step"] for e in val], [e["val_loss"] for e in val], "o-", color=c, ms=3,
                  label=f"{v} (eval with {final})")
        cur = [e for e in val if e.get("val_loss_train_act") is not None]
        if cur:
            ax_v.plot([e["step"] for e in cur], [e["val_loss_train_act"] for e in cur], "x:",
                      color=c, ms=4, label=f"{v} (eval with {cur[0]['train_act']})")
        if log.get("switch_step") is not None:
            for ax in (ax_t, ax_v):
                ax.axvline(log["switch_step"], color=c, ls="--", lw=0.7, alpha=0.6)
    ax_t.set_title("train loss (mean of 10 steps, training activation)")
    ax_v.set_title("validation loss (fixed windows); dashed: switch to ReLU")
    for ax in (ax_t, ax_v):
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # the first steps dwarf the interesting range
    ax_v.set_ylim(min(val_min) - 0.05, min(val_min) + 1.5)
    ax_t.set_ylim(min(train_min) - 0.05, min(val_min) + 1.5)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
