#!/usr/bin/python3
"""Writes tests/data/golden/scoring.json: reference logits at every position, for the CLI's
score / perplexity / eval tests.

    /usr/bin/python3 tools/reference/make_scoring_golden.py [--out PATH]

The per-checkpoint fixtures (make_golden.py) keep logits at three positions only; scoring sums
log-probabilities over consecutive positions and perplexity restarts from BOS at every window, so
these tests need every row of a few sequences. For one checkpoint and one short text, the fixture
holds the text's sentencepiece ids (no BOS) and the float64 logits of:
  - [BOS] + all text ids (one window at the model's context; also what score and eval run), and
  - [BOS] + each later window of the text at --ctx WINDOW_CTX (windows of WINDOW_CTX - 1 text
    tokens, non-overlapping; the first window is a prefix of the full sequence).
The C++ tests compute log-softmax, sums and exp(mean NLL) from these logits themselves.

Fixture: {"checkpoint", "files_sha256", "text", "text_ids", "window_ctx",
          "sequences": [{"ids": [...], "logits": [[vocab floats] per position]}]}
(floats rounded to 7 significant digits).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden  # noqa: E402
import llama_ref  # noqa: E402
import make_checkpoints  # noqa: E402  (on the path through make_golden)

CHECKPOINT = "llama_gqa_hd64_relu_f32"
# 21 tokens with a non-ASCII character; at WINDOW_CTX 9 the windows hold 8, 8 and 5 text tokens,
# so the last window is a partial one.
TEXT = "Anna reads a long letter at the café."
WINDOW_CTX = 9
BOS = 1


def sequences(text_ids):
    chunk = WINDOW_CTX - 1
    seqs = [[BOS] + text_ids]
    for start in range(chunk, len(text_ids), chunk):
        seqs.append([BOS] + text_ids[start:start + chunk])
    return seqs


def make_fixture(hf_dir):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(hf_dir, "tokenizer.model"))
    text_ids = sp.encode(TEXT)
    model = llama_ref.LlamaRef(hf_dir)
    files = sorted(f for f in os.listdir(hf_dir)
                   if f.endswith((".safetensors", ".json", ".model")))
    seqs = []
    for ids in sequences(text_ids):
        logits = model.forward(ids)
        seqs.append({"ids": ids,
                     "logits": [[make_golden.r7(v) for v in row.tolist()] for row in logits]})
    return {
        "checkpoint": CHECKPOINT,
        "files_sha256": {f: make_golden.sha256(os.path.join(hf_dir, f)) for f in files},
        "text": TEXT,
        "text_ids": text_ids,
        "window_ctx": WINDOW_CTX,
        "sequences": seqs,
    }


def dump(obj, path):
    """One logits row per line: diff-friendly."""
    lines = []
    for k, v in obj.items():
        if k == "sequences":
            parts = []
            for s in v:
                rows = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in s["logits"])
                parts.append('  {"ids": ' + json.dumps(s["ids"], separators=(",", ":")) +
                             ',\n   "logits": [\n    ' + rows + "]}")
            lines.append(' "sequences": [\n' + ",\n".join(parts) + "\n ]")
        else:
            lines.append(f" {json.dumps(k)}: "
                         f"{json.dumps(v, separators=(',', ':'), ensure_ascii=False)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(make_golden.GOLDEN_DIR, "scoring.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="zeroskip_scoring_")
    try:
        hf_dir = make_checkpoints.write_checkpoint(tmp, CHECKPOINT)
        with torch.no_grad():
            dump(make_fixture(hf_dir), args.out)
    finally:
        shutil.rmtree(tmp)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
