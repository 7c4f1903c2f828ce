#!/usr/bin/python3
"""Timed half of benchmarks/peer_llamacpp.sh: zeroskip against llama.cpp, interleaved, medians.

    peer_llamacpp.py run --hf HF_DIR --models MODELS_DIR --llama-bin DIR --zeroskip BIN
                         --out RESULTS.json [--repeats 3 --threads 2 --n-decode 96
                         --decode-prompt 25 --prefill-prompt 3,16,64,256 --lock FILE
                         --meta JSON]
    peer_llamacpp.py table RESULTS.json          # print the Markdown table again

MODELS_DIR holds what the shell script converted: llama-<type>.gguf for type in f32 bf16 q8_0
q4_0 and zeroskip-<type>.zsk for f32 bf16 q8 q4 (a missing file is reported "not available").
Each repeat runs, for each weight type, llama.cpp then zeroskip --ffn sparse then --ffn dense:
first the decode runs (a ~25-token prompt, then exactly n_decode tokens, EOS ignored, greedy),
then the prefill runs (one per prompt length of --prefill-prompt, one token generated). Decode
tok/s counts the n_decode-1 forward passes after the prompt in both engines (llama-cli's "eval
time ... runs", zeroskip's decode_tok_s); prefill tok/s is prompt tokens / time of the prompt's
forward pass (llama-cli's "prompt eval time", zeroskip's prefill_tok_s), and the time to first
token is that forward pass's time. The main table gives prefill tok/s at the longest length up to
64 tokens; a second table the time to first token at every length.
Both prompts are made from one fixed text with the checkpoint's own tokenizer.model, so the two
engines get the same token ids (checked: both report the prompt length they ran).
Needs python3 and sentencepiece (prompt lengths); standard library otherwise.
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import statistics
import subprocess
import sys

LLAMA_TYPES = ["f32", "bf16", "q8_0", "q4_0"]
ZEROSKIP_TYPE = {"f32": "f32", "bf16": "bf16", "q8_0": "q8", "q4_0": "q4"}  # ours by theirs
TEXT = ("the king of rome and all his men came to the city and the queen of the north sat by the "
        "river while the old man told the children a story about the sea the ships and the long "
        "road home through the hills where the winter wind blows over the fields of grain and the "
        "people of the valley wait for the spring to come again")


def make_prompt(tokenizer_model, n_tokens):
    """The longest prefix of TEXT, repeated as often as needed (whole words, then characters),
    whose ids, BOS included, number at most n_tokens; returns (text, token count)."""
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=tokenizer_model)
    count = lambda s: 1 + len(sp.encode(s))  # noqa: E731  (BOS + pieces, as both engines add BOS)
    words, text = (TEXT.split() * (1 + n_tokens // 32)), ""
    for w in words:
        candidate = (text + " " + w).strip()
        if count(candidate) > n_tokens:
            for i in range(len(w), 0, -1):  # fill the rest with a prefix of the word
                part = (text + " " + w[:i]).strip()
                if count(part) <= n_tokens:
                    text = part
                    break
            break
        text = candidate
    return text, count(text)


@contextlib.contextmanager
def held(lock):
    """flock(2) on the lock file for one repeat (the same lock `flock FILE cmd` takes), so jobs that
    share the machine and the lock run between repeats, never during one."""
    if not lock:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def context(args):
    """The context both engines get: room for the longest prompt and the decode."""
    return max(256, max(args.prefill_lengths) + args.n_decode + 8)


def run_llama(args, gguf, prompt, n_predict):
    cmd = [os.path.join(args.llama_bin, "llama-cli"), "-m", gguf, "-p", prompt, "-n",
           str(n_predict), "-t", str(args.threads), "-c", str(context(args)), "--temp", "0",
           "--ignore-eos",
           "-no-cnv", "--no-display-prompt"]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"llama-cli failed ({p.returncode}): {p.stderr[-2000:]}")
    prompt_m = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", p.stderr)
    eval_m = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", p.stderr)
    if not prompt_m:
        raise RuntimeError("llama-cli printed no 'prompt eval time' line:\n" + p.stderr[-2000:])
    prompt_ms, prompt_tokens = float(prompt_m.group(1)), int(prompt_m.group(2))
    out = {"prompt_tokens": prompt_tokens, "prefill_tok_s": prompt_tokens / (prompt_ms / 1e3)}
    if eval_m and int(eval_m.group(2)) > 0 and float(eval_m.group(1)) > 0:
        out["decode_steps"] = int(eval_m.group(2))
        out["decode_tok_s"] = int(eval_m.group(2)) / (float(eval_m.group(1)) / 1e3)
    return out


def run_zeroskip(args, zsk, ffn, prompt, n_predict):
    cmd = [args.zeroskip, "run", "-m", zsk, "-p", prompt, "-n", str(n_predict), "-t",
           str(args.threads), "--ctx", str(context(args)), "--temp", "0", "--ignore-eos", "--ffn",
           ffn,
           "--no-echo", "--json"]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"zeroskip run failed ({p.returncode}): {p.stderr[-2000:]}")
    j = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    return {"prompt_tokens": len(j["prompt_tokens"]), "prefill_tok_s": j["prefill_tok_s"],
            "decode_steps": len(j["tokens"]) - 1, "decode_tok_s": j["decode_tok_s"],
            "ffn_zero_fraction": j["ffn_zero_fraction"], "ffn_path": j["ffn_path"],
            "isa": j["isa"]}


def warm_page_cache(paths):
    """Reads every model file, untimed, so no run reads from disk (cheap when cached)."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def engines(args):
    """(label, weight type, kind, path, ffn) for every file present, in run order per type."""
    rows, missing = [], []
    for t in LLAMA_TYPES:
        ours = ZEROSKIP_TYPE[t]
        gguf = os.path.join(args.models, f"llama-{t}.gguf")
        zsk = os.path.join(args.models, f"zeroskip-{ours}.zsk")
        if os.path.exists(gguf):
            rows.append(("llama.cpp", t, "llama", gguf, None))
        else:
            missing.append(("llama.cpp", t))
        if os.path.exists(zsk):
            rows += [("zeroskip sparse", ours, "zeroskip", zsk, "sparse"),
                     ("zeroskip dense", ours, "zeroskip", zsk, "dense")]
        else:
            missing += [("zeroskip sparse", ours), ("zeroskip dense", ours)]
    return rows, missing


def main_length(args):
    """The prefill length of the main table: the longest up to 64 tokens (else the shortest)."""
    short = [n for n in args.prefill_lengths if n <= 64]
    return max(short) if short else min(args.prefill_lengths)


def one_repeat(args, rows, rep, decode_prompt, prefill_prompts, samples):
    """Per weight type: the decode runs of every engine, then their prefill runs per length."""
    warm_page_cache([r[3] for r in rows])
    for t in LLAMA_TYPES:
        mine = [r for r in rows if r[1] in (t, ZEROSKIP_TYPE[t])]
        decode = {}
        for label, wtype, kind, path, ffn in mine:
            if kind == "llama":
                decode[label] = run_llama(args, path, decode_prompt, args.n_decode)
            else:
                decode[label] = run_zeroskip(args, path, ffn, decode_prompt, args.n_decode)
        for label, wtype, kind, path, ffn in mine:
            prefill = {}
            for length, prompt in prefill_prompts.items():
                if kind == "llama":
                    prefill[length] = run_llama(args, path, prompt, 1)
                else:
                    prefill[length] = run_zeroskip(args, path, ffn, prompt, 1)
            p = prefill[main_length(args)]
            d = decode[label]
            sample = {"decode_tok_s": d["decode_tok_s"], "decode_steps": d["decode_steps"],
                      "decode_prompt_tokens": d["prompt_tokens"],
                      "prefill_tok_s": p["prefill_tok_s"],
                      "prefill_prompt_tokens": p["prompt_tokens"],
                      "prefill": {str(n): {"prompt_tokens": q["prompt_tokens"],
                                           "prefill_tok_s": q["prefill_tok_s"],
                                           "ttft_s": q["prompt_tokens"] / q["prefill_tok_s"]}
                                  for n, q in prefill.items()}}
            if "ffn_zero_fraction" in d:
                sample.update(ffn_zero_fraction=d["ffn_zero_fraction"], ffn_path=d["ffn_path"],
                              isa=d["isa"])
            samples[(label, wtype)].append(sample)
            print(f"repeat {rep + 1}/{args.repeats} {label:16s} {wtype:5s} decode "
                  f"{d['decode_tok_s']:7.2f} tok/s ({d['prompt_tokens']}-token prompt, "
                  f"{d['decode_steps']} steps)  prefill {p['prefill_tok_s']:7.1f} tok/s "
                  f"({p['prompt_tokens']} tokens)", file=sys.stderr, flush=True)


def cmd_run(args):
    tok = os.path.join(args.hf, "tokenizer.model")
    decode_prompt, decode_len = make_prompt(tok, args.decode_prompt)
    prefill_prompts = {n: make_prompt(tok, n)[0] for n in args.prefill_lengths}
    prefill_prompt, prefill_len = make_prompt(tok, main_length(args))
    rows, missing = engines(args)
    samples = {(r[0], r[1]): [] for r in rows}
    for rep in range(args.repeats):
        with held(args.lock):
            one_repeat(args, rows, rep, decode_prompt, prefill_prompts, samples)

    results = []
    for (label, wtype), s in samples.items():
        r = {"engine": label, "weight_type": wtype, "runs": s,
             "decode_tok_s": statistics.median(x["decode_tok_s"] for x in s),
             "prefill_tok_s": statistics.median(x["prefill_tok_s"] for x in s),
             "ttft_s": {n: statistics.median(x["prefill"][n]["ttft_s"] for x in s)
                        for n in s[0]["prefill"]}}
        if "ffn_zero_fraction" in s[0]:
            r["ffn_zero_fraction"] = statistics.median(x["ffn_zero_fraction"] for x in s)
        results.append(r)
    for label, wtype in missing:
        results.append({"engine": label, "weight_type": wtype, "available": False})
    counts = {(x["decode_prompt_tokens"], x["prefill_prompt_tokens"])
              for s in samples.values() for x in s}
    if len(counts) > 1:
        print(f"warning: the engines ran prompts of different lengths: {sorted(counts)}",
              file=sys.stderr)
    meta = json.loads(args.meta) if args.meta else {}
    doc = {"benchmark": "peer_llamacpp", "date_utc": datetime.datetime.utcnow().strftime(
               "%Y-%m-%d %H:%M"), "threads": args.threads, "repeats": args.repeats,
           "n_decode": args.n_decode, "decode_prompt": decode_prompt,
           "decode_prompt_tokens": decode_len, "prefill_prompt": prefill_prompt,
           "prefill_prompt_tokens": prefill_len, "prompt_lengths_match": len(counts) == 1,
           "prefill_lengths": args.prefill_lengths,
           **meta, "results": results}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    print(table(doc))


def table(doc):
    by = {(r["engine"], r["weight_type"]): r for r in doc["results"]}
    lines = ["| engine | weights | decode tok/s, median (range) | prefill tok/s, median (range) | "
             "decode vs llama.cpp | prefill vs llama.cpp |", "|---|---|---|---|---|---|"]
    for t in LLAMA_TYPES:
        ours = ZEROSKIP_TYPE[t]
        peer = by.get(("llama.cpp", t))
        peer_ok = peer and peer.get("available", True)
        for label, wtype in [("llama.cpp", t), ("zeroskip sparse", ours), ("zeroskip dense", ours)]:
            r = by.get((label, wtype))
            if not r:
                continue
            if not r.get("available", True):
                lines.append(f"| {label} | {wtype} | not available | | | |")
                continue
            ratio = lambda k: (f"{r[k] / peer[k]:.2f}x" if peer_ok else "–")  # noqa: E731

            def value(k):  # the median, and the range over the repeats when there are several
                runs = [x[k] for x in r["runs"]]
                spread = f" ({min(runs):.1f}–{max(runs):.1f})" if len(runs) > 1 else ""
                return f"**{r[k]:.1f}**{spread}"
            lines.append(f"| {label} | {wtype} | {value('decode_tok_s')} | "
                         f"{value('prefill_tok_s')} | {ratio('decode_tok_s')} | "
                         f"{ratio('prefill_tok_s')} |")
    return "\n".join(lines) + ttft_table(doc, by)


def ttft_table(doc, by):
    """Time to first token (s, medians) per prompt length, and against llama.cpp's."""
    lengths = [str(n) for n in doc.get("prefill_lengths", [])]
    if not lengths:
        return ""
    lines = ["", "", "| engine | weights | " + " | ".join(
        f"{n}-token prompt: TTFT s (vs llama.cpp)" for n in lengths) + " |",
        "|---|---|" + "---|" * len(lengths)]
    for t in LLAMA_TYPES:
        ours = ZEROSKIP_TYPE[t]
        peer = by.get(("llama.cpp", t))
        for label, wtype in [("llama.cpp", t), ("zeroskip sparse", ours), ("zeroskip dense", ours)]:
            r = by.get((label, wtype))
            if not r or not r.get("available", True):
                continue
            cells = []
            for n in lengths:
                mine = r["ttft_s"][n]
                theirs = peer["ttft_s"][n] if peer and peer.get("available", True) else None
                # A ratio above 1 means faster than llama.cpp (its time over ours).
                cells.append(f"{mine:.3f}" + (f" ({theirs / mine:.2f}x)" if theirs else ""))
            lines.append(f"| {label} | {wtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--hf", required=True, help="the checkpoint directory (its tokenizer.model)")
    r.add_argument("--models", required=True, help="directory with llama-*.gguf, zeroskip-*.zsk")
    r.add_argument("--llama-bin", required=True, help="llama.cpp build's bin directory")
    r.add_argument("--zeroskip", required=True, help="the zeroskip binary")
    r.add_argument("--out", required=True, help="results JSON")
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--n-decode", type=int, default=96)
    r.add_argument("--decode-prompt", type=int, default=25, help="prompt tokens, BOS included")
    r.add_argument("--prefill-prompt", default="64",
                   help="comma-separated prompt lengths in tokens, BOS included")
    r.add_argument("--lock", default="", help="hold flock FILE during each repeat")
    r.add_argument("--meta", default="", help="JSON object merged into the results file")
    t = sub.add_parser("table")
    t.add_argument("results")
    args = ap.parse_args()
    if args.cmd == "run":
        args.prefill_lengths = [int(n) for n in args.prefill_prompt.split(",")]
        cmd_run(args)
    else:
        print(table(json.load(open(args.results))))


if __name__ == "__main__":
    main()
