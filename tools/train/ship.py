#!/usr/bin/env python3
"""Collects the training runs into models/: results.json, the SiLU baseline checkpoint and the
best ReLU-finetuned checkpoint (lowest val loss among swi_ft and stocha_ft).

  /usr/bin/python3 tools/train/ship.py --runs /tmp/train_runs --models models
(expects RUNS/VARIANT.json logs and RUNS/VARIANT/ checkpoint directories written by train.py)
"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402

VARIANTS = ("silu", "relu_scratch", "swi_ft", "stocha_ft")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json")


def copy_checkpoint(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))
    hfio.read_hf_dir(dst)  # must re-load


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--models", required=True)
    args = ap.parse_args(argv)

    runs, logs = [], {}
    for v in VARIANTS:
        with open(os.path.join(args.runs, v + ".json")) as f:
            log = logs[v] = json.load(f)
        a = log["args"]
        runs.append({"variant": v, "val_loss": round(log["val_loss"], 4),
                     "ffn_zero_fraction": None,
                     "ffn_zero_fraction_torch": round(log["ffn_zero_fraction_torch"], 4),
                     "p": a["p"] if v == "stocha_ft" else None,
                     "alpha": a["alpha"] if v in ("swi_ft", "stocha_ft") else None,
                     "tokens": log["tokens"], "params": log["params"],
                     "train_seconds": log["train_seconds"]})
    best = min(("swi_ft", "stocha_ft"), key=lambda v: logs[v]["val_loss"])
    os.makedirs(args.models, exist_ok=True)
    with open(os.path.join(args.models, "results.json"), "w") as f:
        json.dump({"runs": runs, "shipped": {"relu-ft": best, "silu": "silu"}}, f, indent=2)
        f.write("\n")
    copy_checkpoint(os.path.join(args.runs, best), os.path.join(args.models, "relu-ft"))
    copy_checkpoint(os.path.join(args.runs, "silu"), os.path.join(args.models, "silu"))
    print(f"shipped relu-ft = {best}, silu; wrote {args.models}/results.json")


if __name__ == "__main__":
    main()
