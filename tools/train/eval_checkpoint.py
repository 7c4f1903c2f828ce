#!/usr/bin/env python3
"""Re-loads an exported HF checkpoint (hfio.read_hf_dir) into the PyTorch model and measures
its validation loss and FFN zero fraction on the last 10% of the corpus, with the checkpoint's
own tokenizer and hidden_act: the check that the shipped weights reproduce the training result.

  /usr/bin/python3 tools/train/eval_checkpoint.py --hf models/relu-ft --corpus CORPUS.txt
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import hfio  # noqa: E402
import stocha  # noqa: E402
import train  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--ctx", type=int, default=None, help="default: max_position_embeddings")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    T = stocha.torch_impl()
    torch = T.torch
    torch.set_num_threads(args.threads)
    config, tensors = hfio.read_hf_dir(args.hf)
    ctx = args.ctx or config["max_position_embeddings"]
    _, _, val = train.load_tokens(args.corpus, os.path.join(args.hf, "tokenizer.model"))
    windows = torch.from_numpy(train.val_windows(val, ctx))
    model = T.model_from_hf(config, tensors).eval()
    probes = [[] for _ in model.layers]
    for layer, pr in zip(model.layers, probes):
        layer.mlp.probe = pr
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(windows), 16):
            w = windows[i:i + 16]
            total += model.loss(w).item() * len(w)
    zeros = sum(int((a == 0).sum()) for pr in probes for a in pr)
    count = sum(a.numel() for pr in probes for a in pr)
    print(json.dumps({"hf": args.hf, "hidden_act": config["hidden_act"],
                      "val_windows": len(windows), "ctx": ctx,
                      "val_loss": round(total / len(windows), 4),
                      "ffn_zero_fraction_torch": round(zeros / count, 4)}))


if __name__ == "__main__":
    main()
