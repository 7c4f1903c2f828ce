#!/usr/bin/python3
"""Timed half of benchmarks/peer_llamacpp.sh: zeroskip against llama.cpp, interleaved, medians.

    peer_llamacpp.py run --hf HF_DIR --models MODELS_DIR --llama-bin DIR --zeroskip BIN
                         --out RESULTS.json [--repeats 3 --threads 2 --n-decode 96
                         --decode-prompt 25 --prefill-prompt 3,16,64,256 --long-prompt 2048
                         --types bf16,q8_0 --lock FILE --meta JSON]
    peer_llamacpp.py merge RESULTS.json PART.json...  # one file of runs made type by type
    peer_llamacpp.py table RESULTS.json          # print the Markdown tables again

MODELS_DIR holds what the shell script converted: llama-<type>.gguf for type in f32 bf16 q8_0
q4_0 Q4_K_M and zeroskip-<type>.zsk for f32 bf16 q8 q4 q4k (a missing file is reported "not
available"); --types limits the run to some of llama.cpp's types (and ours beside them).
Each repeat runs, for each weight type, llama.cpp then zeroskip --ffn sparse then --ffn dense:
first the decode runs (a ~25-token prompt, then exactly n_decode tokens, EOS ignored, greedy),
then the prefill runs (one per prompt length of --prefill-prompt, one token generated). Decode
tok/s counts the n_decode-1 forward passes after the prompt in both engines (llama-cli's "eval
time ... runs", zeroskip's decode_tok_s); prefill tok/s is prompt tokens / time of the prompt's
forward pass (llama-cli's "prompt eval time", zeroskip's prefill_tok_s), and the time to first
token is that forward pass's time. The main table gives prefill tok/s at the longest length up to
64 tokens; a second table the time to first token at every length. With --long-prompt N, each
engine also decodes n_decode tokens after an N-token prompt, both with an f16 KV cache
(llama.cpp's default; zeroskip's --kv-type f16), for a third table: decode at long context.
Both prompts are made from one fixed text with the checkpoint's own tokenizer.model, so the two
engines get the same token ids (checked: both report the prompt length they ran).
Before every run its own model file is read into the page cache and the other engines' files are
dropped from it (posix_fadvise DONTNEED), so no run reads weights from disk and none pays for
another's pages. Every run's peak resident memory (the child's ru_maxrss from wait4, which counts the mapped
weights it touched) goes into the JSON; the largest per engine and type fills a memory table.
Needs python3; sentencepiece cuts the prompts (without it, benchmarks/spm_standin's BPE encoder,
exact for this ASCII text); standard library otherwise.
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
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_TYPES = ["f32", "bf16", "q8_0", "q4_0", "Q4_K_M"]
ZEROSKIP_TYPE = {"f32": "f32", "bf16": "bf16", "q8_0": "q8", "q4_0": "q4",
                 "Q4_K_M": "q4k"}  # ours by theirs
ZEROSKIP_LABELS = ("zeroskip sparse", "zeroskip dense")
TEXT = ("the king of rome and all his men came to the city and the queen of the north sat by the "
        "river while the old man told the children a story about the sea the ships and the long "
        "road home through the hills where the winter wind blows over the fields of grain and the "
        "people of the valley wait for the spring to come again")


def make_prompt(tokenizer_model, n_tokens):
    """The longest prefix of TEXT, repeated as often as needed (whole words, then characters),
    whose ids, BOS included, number at most n_tokens; returns (text, token count)."""
    try:
        import sentencepiece
    except ImportError:
        sys.path.insert(0, os.path.join(HERE, "spm_standin"))
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
    return max(256, max(args.prefill_lengths + [args.long_prompt]) + args.n_decode + 8)


def run_measured(cmd):
    """Runs cmd (stdin closed) -> (exit status, stdout, stderr, peak RSS in MB). The peak is the
    child's own ru_maxrss (os.wait4), so measuring it costs the child nothing."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        text = lambda f: f.read().decode("utf-8", "replace")  # noqa: E731
        return p.returncode, text(out), text(err), usage.ru_maxrss / 1024  # Linux: KiB


def run_llama(args, gguf, prompt, n_predict, extra=(), prefix=()):
    """`prefix`: a command the run goes through (mem_limit.py's cgroup entry)."""
    cmd = [*prefix, os.path.join(args.llama_bin, "llama-cli"), *extra, "-m", gguf, "-p", prompt, "-n",
           str(n_predict), "-t", str(args.threads), "-c", str(context(args)), "--temp", "0",
           "--ignore-eos",
           "-no-cnv", "--no-display-prompt"]
    status, _, stderr, rss_mb = run_measured(cmd)
    if status != 0:
        raise RuntimeError(f"llama-cli failed ({status}): {stderr[-2000:]}")
    prompt_m = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", stderr)
    eval_m = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", stderr)
    if not prompt_m:
        raise RuntimeError("llama-cli printed no 'prompt eval time' line:\n" + stderr[-2000:])
    prompt_ms, prompt_tokens = float(prompt_m.group(1)), int(prompt_m.group(2))
    out = {"prompt_tokens": prompt_tokens, "prefill_tok_s": prompt_tokens / (prompt_ms / 1e3),
           "max_rss_mb": rss_mb}
    if eval_m and int(eval_m.group(2)) > 0 and float(eval_m.group(1)) > 0:
        out["decode_steps"] = int(eval_m.group(2))
        out["decode_tok_s"] = int(eval_m.group(2)) / (float(eval_m.group(1)) / 1e3)
    return out


def run_zeroskip(args, zsk, ffn, prompt, n_predict, extra=(), prefix=()):
    cmd = [*prefix, args.zeroskip, "run", *extra, "-m", zsk, "-p", prompt, "-n", str(n_predict), "-t",
           str(args.threads), "--ctx", str(context(args)), "--temp", "0", "--ignore-eos", "--ffn",
           ffn,
           "--no-echo", "--json"]
    status, stdout, stderr, rss_mb = run_measured(cmd)
    if status != 0:
        raise RuntimeError(f"zeroskip run failed ({status}): {stderr[-2000:]}")
    j = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    r = {"prompt_tokens": len(j["prompt_tokens"]), "prefill_tok_s": j["prefill_tok_s"],
         "decode_steps": len(j["tokens"]) - 1, "decode_tok_s": j["decode_tok_s"],
         "ffn_zero_fraction": j["ffn_zero_fraction"], "ffn_path": j["ffn_path"],
         "isa": j["isa"], "max_rss_mb": rss_mb, "tokens": j["tokens"]}
    # With a memory budget the model is smaller than: how its FFN rows were read.
    r.update({k: j[k] for k in ("neuron_io", "neuron_fetches", "neuron_reads",
                                "neuron_bytes_read") if k in j})
    return r


def warm_page_cache(paths):
    """Reads every model file, untimed, so no run reads from disk (cheap when cached)."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def own_page_cache(path, files):
    """Each run starts with its own model file in the page cache and the other engines' `files` out
    of it. At 7B bf16 two 13.5 GB files do not fit in 24 GB together: pages the other engine used
    last then push this run's out while it loads, and a fresh zeroskip process reads its weights
    from disk again during its prompt (llama-cli's untimed warm-up pass hides the same effect), so
    the time to first token measured the page cache, not the engine."""
    for other in files:
        if other == path:
            continue
        fd = os.open(other, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    warm_page_cache([path])


def engines(args):
    """(label, weight type, kind, path, ffn) for every file present, in run order per type."""
    rows, missing = [], []
    for t in args.types:
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


def one_repeat(args, rows, rep, decode_prompt, prefill_prompts, long_prompt, samples):
    """Per weight type: the decode runs of every engine, then their prefill runs per length."""
    files = sorted({r[3] for r in rows})
    for t in args.types:
        mine = [r for r in rows if r[1] in (t, ZEROSKIP_TYPE[t])]
        decode = {}
        for label, wtype, kind, path, ffn in mine:
            own_page_cache(path, files)
            if kind == "llama":
                decode[label] = run_llama(args, path, decode_prompt, args.n_decode)
            else:
                decode[label] = run_zeroskip(args, path, ffn, decode_prompt, args.n_decode)
        for label, wtype, kind, path, ffn in mine:
            prefill = {}
            for length, prompt in prefill_prompts.items():
                own_page_cache(path, files)
                if kind == "llama":
                    prefill[length] = run_llama(args, path, prompt, 1)
                else:
                    prefill[length] = run_zeroskip(args, path, ffn, prompt, 1)
            p = prefill[main_length(args)]
            d = decode[label]
            long = None
            if long_prompt:
                own_page_cache(path, files)
                if kind == "llama":
                    long = run_llama(args, path, long_prompt, args.n_decode, ("-ctk", "f16", "-ctv", "f16"))
                else:
                    long = run_zeroskip(args, path, ffn, long_prompt, args.n_decode, ("--kv-type", "f16"))
            sample = {"decode_tok_s": d["decode_tok_s"], "decode_steps": d["decode_steps"],
                      "decode_prompt_tokens": d["prompt_tokens"],
                      "prefill_tok_s": p["prefill_tok_s"],
                      "prefill_prompt_tokens": p["prompt_tokens"],
                      "prefill": {str(n): {"prompt_tokens": q["prompt_tokens"],
                                           "prefill_tok_s": q["prefill_tok_s"],
                                           "ttft_s": q["prompt_tokens"] / q["prefill_tok_s"]}
                                  for n, q in prefill.items()},
                      "max_rss_mb": max(q["max_rss_mb"] for q in [d, *prefill.values()])}
            if long:
                sample.update(long_prompt_tokens=long["prompt_tokens"],
                              long_decode_tok_s=long["decode_tok_s"],
                              long_max_rss_mb=long["max_rss_mb"])
            if "ffn_zero_fraction" in d:
                sample.update(ffn_zero_fraction=d["ffn_zero_fraction"], ffn_path=d["ffn_path"],
                              isa=d["isa"])
            samples[(label, wtype)].append(sample)
            print(f"repeat {rep + 1}/{args.repeats} {label:16s} {wtype:5s} decode "
                  f"{d['decode_tok_s']:7.2f} tok/s ({d['prompt_tokens']}-token prompt, "
                  f"{d['decode_steps']} steps)  prefill {p['prefill_tok_s']:7.1f} tok/s "
                  f"({p['prompt_tokens']} tokens)", file=sys.stderr, flush=True)


def write_results(doc, out):
    """Writes the results file atomically (a .tmp renamed over it) and prints its tables."""
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(out + ".tmp", out)
    print(table(doc))


def cmd_run(args):
    tok = os.path.join(args.hf, "tokenizer.model")
    decode_prompt, decode_len = make_prompt(tok, args.decode_prompt)
    prefill_prompts = {n: make_prompt(tok, n)[0] for n in args.prefill_lengths}
    prefill_prompt, prefill_len = make_prompt(tok, main_length(args))
    long_prompt = make_prompt(tok, args.long_prompt)[0] if args.long_prompt else ""
    rows, missing = engines(args)
    samples = {(r[0], r[1]): [] for r in rows}
    for rep in range(args.repeats):
        with held(args.lock):
            one_repeat(args, rows, rep, decode_prompt, prefill_prompts, long_prompt, samples)

    results = []
    for (label, wtype), s in samples.items():
        r = {"engine": label, "weight_type": wtype, "runs": s,
             "decode_tok_s": statistics.median(x["decode_tok_s"] for x in s),
             "prefill_tok_s": statistics.median(x["prefill_tok_s"] for x in s),
             "ttft_s": {n: statistics.median(x["prefill"][n]["ttft_s"] for x in s)
                        for n in s[0]["prefill"]},
             "max_rss_mb": max(x["max_rss_mb"] for x in s)}
        if "long_decode_tok_s" in s[0]:
            r["long_decode_tok_s"] = statistics.median(x["long_decode_tok_s"] for x in s)
            r["long_prompt_tokens"] = s[0]["long_prompt_tokens"]
            r["long_max_rss_mb"] = max(x["long_max_rss_mb"] for x in s)
        if "ffn_zero_fraction" in s[0]:
            r["ffn_zero_fraction"] = statistics.median(x["ffn_zero_fraction"] for x in s)
        results.append(r)
    for label, wtype in missing:
        results.append({"engine": label, "weight_type": wtype, "available": False})
    # Both engines, and the tokenizer that cut the prompts, must count the same tokens.
    counts = {(x["decode_prompt_tokens"], x["prefill_prompt_tokens"])
              for s in samples.values() for x in s} | {(decode_len, prefill_len)}
    if len(counts) > 1:
        print(f"warning: the prompts ran at different lengths: {sorted(counts)}", file=sys.stderr)
    meta = json.loads(args.meta) if args.meta else {}
    doc = {"benchmark": "peer_llamacpp", "date_utc": datetime.datetime.utcnow().strftime(
               "%Y-%m-%d %H:%M"), "threads": args.threads, "repeats": args.repeats,
           "n_decode": args.n_decode, "decode_prompt": decode_prompt,
           "decode_prompt_tokens": decode_len, "prefill_prompt": prefill_prompt,
           "prefill_prompt_tokens": prefill_len, "prompt_lengths_match": len(counts) == 1,
           "prefill_lengths": args.prefill_lengths, "long_prompt": args.long_prompt,
           **meta, "results": results}
    write_results(doc, args.out)


def cmd_merge(args):
    """One results file from runs made type by type (the shell script's per-type stages): the
    first part's settings, every part's results, file sizes and "not available" reasons."""
    parts = [json.load(open(p)) for p in args.parts]
    doc = dict(parts[0])
    doc["results"] = [r for p in parts for r in p["results"]]
    for key in ("files_bytes", "not_available"):
        if any(key in p for p in parts):
            doc[key] = {k: v for p in parts for k, v in p.get(key, {}).items()}
    doc["prompt_lengths_match"] = all(p.get("prompt_lengths_match", True) for p in parts)
    doc["date_utc"] = parts[-1]["date_utc"]
    write_results(doc, args.out)


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
    return "\n".join(lines) + ttft_table(doc, by) + long_table(doc, by) + memory_table(doc, by)


def long_table(doc, by):
    """Decode tok/s after the long prompt (f16 KV), against the short prompt's and llama.cpp's."""
    if not doc.get("long_prompt"):
        return ""
    lines = ["", "", f"| engine | weights | decode tok/s after ~{doc['long_prompt']} tokens "
             "(f16 KV) | vs after the short prompt | vs llama.cpp |", "|---|---|---|---|---|"]
    for t in LLAMA_TYPES:
        ours = ZEROSKIP_TYPE[t]
        peer = by.get(("llama.cpp", t))
        for label, wtype in [("llama.cpp", t), ("zeroskip sparse", ours), ("zeroskip dense", ours)]:
            r = by.get((label, wtype))
            if not r or "long_decode_tok_s" not in r:
                continue
            vs_peer = (f"{r['long_decode_tok_s'] / peer['long_decode_tok_s']:.2f}x"
                       if peer and "long_decode_tok_s" in peer else "–")
            lines.append(f"| {label} | {wtype} | {r['long_decode_tok_s']:.1f} "
                         f"({r['long_prompt_tokens']} tokens) | "
                         f"{r['long_decode_tok_s'] / r['decode_tok_s']:.2f} | {vs_peer} |")
    return "\n".join(lines)


def memory_table(doc, by):
    """Each engine's file and peak resident memory (the largest over its runs, in MB)."""
    rows = [by.get(key) for t in LLAMA_TYPES for key in [
        ("llama.cpp", t), *((label, ZEROSKIP_TYPE[t]) for label in ZEROSKIP_LABELS)]]
    rows = [r for r in rows if r and "max_rss_mb" in r]
    if not rows:
        return ""
    files = doc.get("files_bytes", {})
    long = any("long_max_rss_mb" in r for r in rows)
    lines = ["", "", "| engine | weights | file MB | peak RSS MB" + (
        f" | peak RSS MB after ~{doc['long_prompt']} tokens" if long else "") + " |",
        "|---|---|---|---|" + ("---|" if long else "")]
    for r in rows:
        name = (f"llama-{r['weight_type']}.gguf" if r["engine"] == "llama.cpp"
                else f"zeroskip-{r['weight_type']}.zsk")
        size = f"{files[name] / 1e6:.0f}" if name in files else "–"
        cells = [r["engine"], r["weight_type"], size, f"{r['max_rss_mb']:.0f}"]
        if long:
            cells.append(f"{r['long_max_rss_mb']:.0f}" if "long_max_rss_mb" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    r.add_argument("--long-prompt", type=int, default=0,
                   help="also decode after a prompt of this many tokens (0: skip)")
    r.add_argument("--types", default=",".join(LLAMA_TYPES),
                   help="llama.cpp weight types to run (with ours beside each), comma-separated")
    r.add_argument("--lock", default="", help="hold flock FILE during each repeat")
    r.add_argument("--meta", default="", help="JSON object merged into the results file")
    m = sub.add_parser("merge")
    m.add_argument("out")
    m.add_argument("parts", nargs="+")
    t = sub.add_parser("table")
    t.add_argument("results")
    args = ap.parse_args()
    if args.cmd == "run":
        args.prefill_lengths = [int(n) for n in args.prefill_prompt.split(",")]
        args.types = args.types.split(",")
        unknown = sorted(set(args.types) - set(LLAMA_TYPES))
        if unknown:
            ap.error(f"--types: {', '.join(unknown)} not in {{{','.join(LLAMA_TYPES)}}}")
        cmd_run(args)
    elif args.cmd == "merge":
        cmd_merge(args)
    else:
        print(table(json.load(open(args.results))))


if __name__ == "__main__":
    main()
