#!/usr/bin/env python3
"""Collects the sparsify.py sweep: adds the runs to results.json (under "sparsify"), plots
engine-measured FFN zeros against validation loss, prints the Markdown table of models/README.md,
and with --ship RUN copies that run's checkpoint to MODELS/relu-ft.

Each run NAME needs RUNS/NAME.json (the sparsify.py log) and RUNS/NAME.ppl.json (the output of
`zeroskip perplexity -m RUNS/NAME.zsk -f HELDOUT.txt --json -t 1`).

  /usr/bin/python3 tools/train/frontier.py --runs /tmp/sparse_runs --models models \\
      --plot models/sparsity_frontier.png l1_0_s300 l1_1_s300 ...
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ship  # noqa: E402

BASELINE = "stocha_ft"  # the run the fine-tunes start from
BASELINE_PER_LAYER = "56.4 / 75.8 / 79.5 / 70.6"  # its torch zeros per layer (models/README.md)
LOSS_GATE = 1.01  # ship only within 1% of the baseline's val loss
ZEROS_GATE = 0.85  # ... and with at least this engine-measured zero fraction


def pct(fraction):
    """0.7055 -> '70.6': one decimal, halves up (as the tables of models/README.md round)."""
    return f"{int(fraction * 1000 + 0.5 + 1e-9) / 10:.1f}"


def load_run(runs, name):
    with open(os.path.join(runs, name + ".json")) as f:
        log = json.load(f)
    with open(os.path.join(runs, name + ".ppl.json")) as f:
        engine = json.load(f)
    a = log["args"]
    return {"name": name, "init": "models/relu-ft (stocha_ft)", "l1": a["l1"],
            "l1_warmup": a["l1_warmup"], "threshold": a["threshold"], "steps": a["steps"],
            "lr": a["lr"], "seed": a["seed"], "tokens": log["tokens"],
            "val_loss": round(log["val_loss_reloaded"], 4),
            "val_loss_f32": round(log["val_loss"], 4),
            "ffn_zero_fraction": round(engine["ffn_zero_fraction"], 4),
            "ffn_zero_fraction_torch": round(log["ffn_zero_fraction_torch_reloaded"], 4),
            "ffn_zero_fraction_torch_per_layer": [
                round(z, 4) for z in log["ffn_zero_fraction_torch_per_layer_reloaded"]],
            "engine_perplexity": round(engine["perplexity"], 3),
            "_perplexity_raw": engine["perplexity"],  # the table rounds once, from this
            "train_seconds": log["train_seconds"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--plot", help="PNG to write")
    ap.add_argument("--ship", help="run whose checkpoint becomes MODELS/relu-ft")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args(argv)

    path = os.path.join(args.models, "results.json")
    with open(path) as f:
        results = json.load(f)
    base = next(r for r in results["runs"] if r["variant"] == BASELINE)
    runs = [load_run(args.runs, n) for n in args.names]
    for r in runs:
        r["passes_ship_gate"] = (r["ffn_zero_fraction"] >= ZEROS_GATE
                                 and r["val_loss"] <= round(base["val_loss"] * LOSS_GATE, 4))
    results["sparsify"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    results["sparsify_command"] = (
        "/usr/bin/python3 tools/train/sparsify.py --init models/relu-ft (the stocha_ft checkpoint) "
        "--corpus ../shared/data/tinyshakespeare.txt --threads 1 --l1 L --l1-warmup STEPS/3 "
        "--steps STEPS [--seed 2] --out RUNS/NAME --log RUNS/NAME.json; zeroskip convert "
        "RUNS/NAME -o RUNS/NAME.zsk; zeroskip perplexity -m RUNS/NAME.zsk -f HELDOUT.txt --json "
        "-t 1 (models/README.md, 'Sparsity-promoting fine-tuning')")
    results["sparsify_gate"] = {"ffn_zero_fraction_min": ZEROS_GATE,
                                "val_loss_max": round(base["val_loss"] * LOSS_GATE, 4)}
    if args.ship:
        shipped = next(r for r in runs if r["name"] == args.ship)
        if not shipped["passes_ship_gate"]:
            raise SystemExit(f"{args.ship} does not pass the ship gate")
        ship.copy_checkpoint(os.path.join(args.runs, args.ship),
                             os.path.join(args.models, "relu-ft"))
        results["shipped"]["relu-ft"] = f"sparsify:{args.ship} (from {BASELINE})"
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    print("| run | L1 coef | warm-up | steps | seed | val loss | FFN zeros (zeroskip) "
          "| zeros per layer 0–3 (torch) | perplexity (zeroskip) | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| stocha_ft (start) | – | – | 0 | – | {base['val_loss']:.4f} | "
          f"{pct(base['ffn_zero_fraction'])}% | {BASELINE_PER_LAYER} | "
          f"{base['engine_perplexity']:.2f} | – |")
    for r in sorted(runs, key=lambda r: (r["steps"], r["seed"], r["l1"])):
        pl = " / ".join(pct(z) for z in r["ffn_zero_fraction_torch_per_layer"])
        name = f"**{r['name']}**" if r["name"] == args.ship else r["name"]
        print(f"| {name} | {r['l1']:g} | {r['l1_warmup']} | {r['steps']} | {r['seed']} "
              f"| {r['val_loss']:.4f} "
              f"| {pct(r['ffn_zero_fraction'])}% | {pl} | {r['_perplexity_raw']:.2f} "
              f"| {r['train_seconds']:.0f} |")

    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.axvline(base["val_loss"] * LOSS_GATE, color="0.5", ls="--", lw=1,
                   label=f"ship gate: zeros >= {100 * ZEROS_GATE:.0f}%, "
                         f"loss <= {base['val_loss'] * LOSS_GATE:.4f}")
        ax.axhline(100 * ZEROS_GATE, color="0.5", ls="--", lw=1)
        ax.plot(base["val_loss"], 100 * base["ffn_zero_fraction"], "ks", label="stocha_ft (start)")
        for steps, seed in sorted({(r["steps"], r["seed"]) for r in runs}):
            pts = sorted((r for r in runs if (r["steps"], r["seed"]) == (steps, seed)),
                         key=lambda r: r["l1"])
            ax.plot([r["val_loss"] for r in pts], [100 * r["ffn_zero_fraction"] for r in pts],
                    "o-" if len(pts) > 1 else "D", label=f"{steps} steps, seed {seed}")
            for r in pts:
                ax.annotate(f"{r['l1']:g}", (r["val_loss"], 100 * r["ffn_zero_fraction"]),
                            textcoords="offset points", xytext=(5, -10), fontsize=8)
        ax.set_xlabel("validation loss (nats/token, 149 windows, bf16 export)")
        ax.set_ylabel("FFN zeros measured by zeroskip (%)")
        ax.set_title("L1 fine-tuning from stocha_ft (labels: L1 coefficient)")
        ax.grid(alpha=0.3)
        if args.ship:
            ax.plot(shipped["val_loss"], 100 * shipped["ffn_zero_fraction"], "o", ms=13,
                    mfc="none", mec="k", label=f"shipped as relu-ft: {args.ship}")
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 0.1))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
