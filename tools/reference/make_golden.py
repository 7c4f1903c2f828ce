#!/usr/bin/python3
"""Writes the golden fixtures tests/data/golden/<name>.json from the float64 reference.

    /usr/bin/python3 tools/reference/make_golden.py [--only NAME ...] [--out-dir DIR]
    /usr/bin/python3 tools/reference/make_golden.py --hf-dir DIR --name NAME
    /usr/bin/python3 tools/reference/make_golden.py --weights q8|q4|bf16 [--only NAME ...]

Without --hf-dir: generates every test checkpoint of tests/data/make_checkpoints.py into a temp
dir and writes one fixture per checkpoint, plus tests/data/golden/tokenizer.json (encode/decode
cases of tests/data/tokenizer.model). With --hf-dir: one fixture for that Hugging Face directory.
With --weights q8|q4|bf16: the reference runs on the values `zeroskip convert --dtype` stores
(tools/reference/quant.py), and each fixture is named <name>_<weights>, with "weights" recorded
(the checkpoints of QUANT_FIXTURES unless --only names others).

Fixture (floats rounded to 7 significant digits):
  {"checkpoint", "files_sha256": {file: sha256 of the HF dir's weight/config files},
   "prompt_ids": [1, ...], "prompt_text": str (only when prompt_ids == [BOS] + encode(text)),
   "logits": [{"pos": p, "values": [vocab floats]}] for 3 positions incl. the last,
   "greedy": {"prompt_ids", "continuation": [32 ids]},
   "min_greedy_margin": min over steps of top1 - top2 (absolute),
   "min_greedy_margin_rel": min over steps of (top1 - top2) / max|logit|}
The prompt is the first candidate (fixed list of sentences, then seeded random ids) for which
every greedy step has top1 - top2 > 1e-3 * max|logit|, so a float32 engine cannot flip an argmax.
FATReLU fixtures also keep every gate of the greedy sequence more than THRESHOLD_GAP from the
threshold. On quantized weights the margin is 5e-3 * max|logit| (QUANT_REL_MARGIN): the engine quantizes
activations in f32 and the reference in f64, and one activation rounded to the other side of a
level moves the logits far more than f32 rounding does.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
import llama_ref  # noqa: E402
import make_checkpoints  # noqa: E402

GOLDEN_DIR = os.path.join(ROOT, "tests", "data", "golden")
BOS = 1
PROMPT_LEN = 12          # including BOS
GREEDY_STEPS = 32
REL_MARGIN = 1e-3
# Quantized weights: the trained relu-ft of issue 15 flipped a greedy pick at a 1.4e-3 margin on
# q8 (engine and reference activations on either side of a quantization level); 5e-3 holds.
QUANT_REL_MARGIN = 5e-3
# FATReLU jumps from 0 to t at its threshold t: a gate within f32 rounding of t is kept by one
# path (decode kernels, oneDNN prefill) and dropped by another, moving the logits by O(t), so
# the greedy sequence must keep every gate this far from t (ProSparseRef.min_threshold_gap).
THRESHOLD_GAP = 2e-5
N_RANDOM_CANDIDATES = 64
# Checkpoints with fixtures on quantized weights (plus models/relu-ft, through --hf-dir).
# bf16: f32 checkpoints converted with --dtype bf16 (the Llama family has bf16 checkpoints).
QUANT_FIXTURES = {"q8": ["llama_gqa_hd64_relu_f32", "llama_mqa_hd128_silu_tied_f32",
                         "prosparse_gqa_hd56_fatrelu_f32", "bamboo_gqa_drelu_f32"],
                  "q4": ["llama_gqa_hd64_relu_f32", "prosparse_gqa_hd56_fatrelu_f32",
                         "bamboo_gqa_drelu_f32"],
                  "bf16": ["prosparse_gqa_hd56_fatrelu_f32", "bamboo_gqa_drelu_f32"]}

CANDIDATE_TEXTS = [
    "The cat sees the red apple",
    "Anna reads a long letter",
    "A dog finds two small boxes",
    "Where is the green door?",
    "The king counts 42 coins.",
    "Peter opens the window",
    "My sister paints the sky",
    "The baker keeps warm bread",
    "Our teacher answers slowly",
    "The river is quiet today",
]

TOKENIZER_CASES = [
    "The cat sees the red apple.",
    "Hello world",
    " leading space",
    "two  spaces and trailing ",
    "line\nbreak\ttab",
    "Numbers 1234567 and 3.14",
    "Grüße aus Zürich, café naïve 日本!",
    "crème brûlée — €5",
    "Ελλάδα 東京 🙂",
    "",
    "a",
    "The",
    "theThe thethe",
]


def r7(x):
    return float(f"{x:.7g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_sp(hf_dir):
    path = os.path.join(hf_dir, "tokenizer.model")
    if not os.path.exists(path):
        return None
    try:
        import sentencepiece as spm
    except ImportError:
        return None
    return spm.SentencePieceProcessor(model_file=path)


def load_encoder(hf_dir):
    """The checkpoint's tokenizer as text -> ids (no BOS), or None: sentencepiece, or GPT-2
    byte-level BPE (OPT: vocab.json + merges.txt, tools/reference/gpt2_bpe_ref.py)."""
    vocab, merges = (os.path.join(hf_dir, f) for f in ("vocab.json", "merges.txt"))
    if os.path.exists(vocab) and os.path.exists(merges):
        import gpt2_bpe_ref
        return gpt2_bpe_ref.Gpt2Bpe.from_files(vocab, merges).encode
    sp = load_sp(hf_dir)
    return sp.encode if sp is not None else None


def candidate_prompts(vocab, encode, bos):
    """Deterministic candidate list: (ids, text-or-None)."""
    if encode is not None:
        for text in CANDIDATE_TEXTS:
            ids = [bos] + encode(text)
            if len(ids) <= PROMPT_LEN + 3 and max(ids) < vocab:
                yield ids, text
            elif max(ids[:PROMPT_LEN]) < vocab:
                yield ids[:PROMPT_LEN], None
    for k in range(N_RANDOM_CANDIDATES):
        rng = np.random.default_rng(1000 + k)
        yield [bos] + [int(t) for t in rng.integers(3, vocab, PROMPT_LEN - 1)], None


def check_greedy(model, prompt, rel_margin=REL_MARGIN):
    """-> (continuation, min abs margin, min rel margin, ok)."""
    seq, cont, min_abs, min_rel = list(prompt), [], float("inf"), float("inf")
    ok = True
    model.min_threshold_gap = float("inf")
    for _ in range(GREEDY_STEPS):
        logits = model.forward(seq)[-1]
        top = torch.topk(logits, 2).values
        margin = float(top[0] - top[1])
        rel = margin / float(logits.abs().max())
        min_abs, min_rel = min(min_abs, margin), min(min_rel, rel)
        if rel <= rel_margin:
            ok = False
        nxt = int(torch.argmax(logits))
        cont.append(nxt)
        seq.append(nxt)
    if model.min_threshold_gap <= THRESHOLD_GAP:
        ok = False
    return cont, min_abs, min_rel, ok


def make_fixture(hf_dir, name, weights=None):
    model = llama_ref.reference_class(hf_dir)(hf_dir, weights)
    rel_margin = REL_MARGIN if weights in (None, "bf16") else QUANT_REL_MARGIN
    max_pos = model.cfg.max_pos or 1 << 30
    # OPT's BOS is "</s>" (2); Llama's 1.
    bos = model.raw_cfg.get("bos_token_id", BOS)
    best = None
    tried = 0
    for ids, text in candidate_prompts(model.cfg.vocab, load_encoder(hf_dir), bos):
        if len(ids) + GREEDY_STEPS > max_pos:
            continue
        tried += 1
        cont, min_abs, min_rel, ok = check_greedy(model, ids, rel_margin)
        if ok or best is None or min_rel > best[4]:
            best = (ids, text, cont, min_abs, min_rel)
        if ok:
            break
    ids, text, cont, min_abs, min_rel = best
    if not ok:
        print(f"WARNING {name}: no candidate prompt has every greedy margin > {rel_margin} "
              f"* max|logit| and every gate {THRESHOLD_GAP} from a threshold "
              f"(best margin {min_rel:.3g})", file=sys.stderr)
    logits = model.forward(ids)
    L = len(ids)
    positions = sorted({0, L // 2, L - 1})
    files = sorted(f for f in os.listdir(hf_dir)
                   if f.endswith((".safetensors", ".json", ".model", ".txt")))
    fixture = {"checkpoint": name}
    if weights is not None:
        fixture["weights"] = weights
    fixture.update({
        "files_sha256": {f: sha256(os.path.join(hf_dir, f)) for f in files},
        "prompt_ids": ids,
    })
    if text is not None:
        fixture["prompt_text"] = text
    fixture.update({
        "logits": [{"pos": p, "values": [r7(v) for v in logits[p].tolist()]} for p in positions],
        "greedy": {"prompt_ids": ids, "continuation": cont},
        "min_greedy_margin": r7(min_abs),
        "min_greedy_margin_rel": r7(min_rel),
    })
    print(f"{name}: prompt #{tried} len {L}, max|logit| {float(logits.abs().max()):.3f}, "
          f"min greedy margin {min_abs:.4g} (rel {min_rel:.3g})")
    return fixture


def dump(obj, path):
    """One top-level key per line (and one logits row per line): diff-friendly, compact."""
    lines = []
    for k, v in obj.items():
        if k == "logits":
            rows = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in v]
            lines.append(f' "logits": [\n  ' + ",\n  ".join(rows) + "\n ]")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, separators=(',', ':'), ensure_ascii=False)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def make_tokenizer_fixture(path):
    import sentencepiece as spm
    model = os.path.join(ROOT, "tests", "data", "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    cases = []
    for text in TOKENIZER_CASES:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "pieces": sp.id_to_piece(ids),
                      "decoded": sp.decode(ids)})
    obj = {
        "tokenizer": "tests/data/tokenizer.model",
        "tokenizer_sha256": sha256(model),
        "note": "ids exclude BOS; prepend bos_id 1 for prompts (add_bos_token true)",
        "vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(), "pad_id": sp.pad_id(),
        "cases": cases,
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        items = list(obj.items())
        for i, (k, v) in enumerate(items):
            if k == "cases":
                rows = [json.dumps(c, ensure_ascii=False) for c in v]
                f.write(f' "cases": [\n  ' + ",\n  ".join(rows) + "\n ]")
            else:
                f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
            f.write(",\n" if i + 1 < len(items) else "\n")
        f.write("}\n")
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=GOLDEN_DIR)
    ap.add_argument("--only", action="append", choices=sorted(make_checkpoints.CHECKPOINTS))
    ap.add_argument("--hf-dir", help="an existing Hugging Face directory (needs --name)")
    ap.add_argument("--name", help="fixture name for --hf-dir")
    ap.add_argument("--weights", choices=sorted(QUANT_FIXTURES),
                    help="run the reference on the weights as converted to this type")
    args = ap.parse_args()
    suffix = f"_{args.weights}" if args.weights else ""
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    with torch.no_grad():
        if args.hf_dir:
            if not args.name:
                ap.error("--hf-dir needs --name")
            out = os.path.join(args.out_dir, args.name + suffix + ".json")
            dump(make_fixture(args.hf_dir, args.name, args.weights), out)
            print(f"wrote {out}")
            return
        tmp = tempfile.mkdtemp(prefix="zeroskip_golden_")
        try:
            default = QUANT_FIXTURES[args.weights] if args.weights else make_checkpoints.CHECKPOINTS
            for name in args.only or default:
                hf_dir = make_checkpoints.write_checkpoint(tmp, name)
                dump(make_fixture(hf_dir, name, args.weights),
                     os.path.join(args.out_dir, name + suffix + ".json"))
        finally:
            shutil.rmtree(tmp)
        if not args.only and not args.weights:
            make_tokenizer_fixture(os.path.join(args.out_dir, "tokenizer.json"))


if __name__ == "__main__":
    main()
