#!/usr/bin/python3
"""Threads on shared cores (issue 29): -t 2 against -t 1 while other processes keep cores busy.

Starts N busy processes (each bounded by `timeout`, and killed at the end), then runs, for
--ffn sparse and dense, at -t 1 and -t 2 alternately: decode (`zeroskip run`, a short prompt and
-n tokens), the prefill of a prompt of 64 tokens, and `zeroskip perplexity` over a piece of
held-out text. Prints the median time of each case and the t2/t1 ratio. Decode and prefill times
are the engine's own (tokens over the tok/s it reports: no process start-up); perplexity is the
whole command's wall time.

  /usr/bin/python3 benchmarks/contention.py --text ../shared/data/tinyshakespeare.txt

With --baseline OTHER_ZEROSKIP, both binaries run each case, interleaved run by run, and the
table adds the ratio of --zeroskip to the baseline at each thread count: with --busy 0 on an
idle machine, that is the quiet-machine A/B.

The held-out text is the last 10% of --text (held out from the demo model's training), of which
the first --ppl-bytes go to perplexity; only a temporary copy is written.

With --llama-bin DIR (a llama.cpp build: llama-cli, llama-perplexity) and --gguf FILE (the same
model as GGUF, e.g. `tests/data/make_gguf.py models/relu-ft OUT.gguf --dtype bf16`), llama.cpp
runs the same three cases beside the same busy processes after zeroskip's: decode and prefill
times are llama-cli's own ("eval time", "prompt eval time"), perplexity is llama-perplexity's
wall time over the same text at the model's context. llama.cpp's llama architecture computes
SiLU where the demo model has ReLU: its outputs differ, its work per token does not.
"""
import re
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zeroskip", default="build/zeroskip")
    ap.add_argument("--baseline", help="another zeroskip binary to A/B against")
    ap.add_argument("--model", default="/tmp/relu-ft.zsk",
                    help="made from models/relu-ft by `zeroskip convert` when missing")
    ap.add_argument("--text", required=True, help="tiny-shakespeare: its last 10%% is held out")
    ap.add_argument("--busy", type=int, default=2, help="busy processes beside zeroskip")
    ap.add_argument("--rounds", type=int, default=5, help="runs of each case (medians)")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=64)
    ap.add_argument("--ppl-bytes", type=int, default=12000)
    ap.add_argument("--busy-seconds", type=int, default=1800,
                    help="upper bound on each busy process's life")
    ap.add_argument("--llama-bin", help="a llama.cpp build directory (llama-cli, llama-perplexity)")
    ap.add_argument("--gguf", help="the model as GGUF, for --llama-bin")
    args = ap.parse_args()
    if bool(args.llama_bin) != bool(args.gguf):
        ap.error("--llama-bin and --gguf go together")
    zs = args.zeroskip
    if not os.path.exists(args.model):
        subprocess.run([zs, "convert", "models/relu-ft", "-o", args.model], check=True)

    with open(args.text, "rb") as f:
        data = f.read()
    held = data[len(data) - len(data) // 10:]
    tmp = tempfile.mkdtemp(prefix="zs-contention-")
    ppl_file = os.path.join(tmp, "ppl.txt")
    with open(ppl_file, "wb") as f:
        f.write(held[:args.ppl_bytes])
    # The shortest head of the held-out text that encodes to at least --prefill-tokens tokens.
    prompt = None
    for size in range(args.prefill_tokens, 8 * args.prefill_tokens):
        p = held[:size].decode("utf-8", "ignore")
        r = run_json([zs, "run", "-m", args.model, "-p", p, "-n", "0", "-t", "1", "--json"])
        if len(r["prompt_tokens"]) >= args.prefill_tokens:
            prompt, prompt_tokens = p, len(r["prompt_tokens"])
            break
    decode_prompt = held[:32].decode("utf-8", "ignore")

    def decode(zs, t, ffn):
        r = run_json([zs, "run", "-m", args.model, "-p", decode_prompt, "-n",
                      str(args.decode_tokens), "--ignore-eos", "-t", str(t), "--ffn", ffn,
                      "--json"])
        return len(r["tokens"]) / r["decode_tok_s"]

    def prefill(zs, t, ffn):
        r = run_json([zs, "run", "-m", args.model, "-p", prompt, "-n", "1", "-t", str(t),
                      "--ffn", ffn, "--json"])
        return len(r["prompt_tokens"]) / r["prefill_tok_s"]

    def perplexity(zs, t, ffn):
        t0 = time.monotonic()
        subprocess.run([zs, "perplexity", "-m", args.model, "-f", ppl_file, "-t", str(t),
                        "--ffn", ffn, "--json"], check=True, capture_output=True)
        return time.monotonic() - t0

    def llama_cli(t, text, n):
        p = subprocess.run([os.path.join(args.llama_bin, "llama-cli"), "-m", args.gguf, "-p", text,
                            "-n", str(n), "-t", str(t), "--temp", "0", "--ignore-eos", "-no-cnv",
                            "--no-display-prompt"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, errors="replace", check=True)
        return p.stderr

    def llama_decode(t):
        m = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs",
                      llama_cli(t, decode_prompt, args.decode_tokens))
        return float(m.group(1)) / 1e3 * args.decode_tokens / int(m.group(2))

    def llama_prefill(t):
        m = re.search(r"prompt eval time =\s*([\d.]+) ms", llama_cli(t, prompt, 1))
        return float(m.group(1)) / 1e3

    def llama_perplexity(t):
        t0 = time.monotonic()
        subprocess.run([os.path.join(args.llama_bin, "llama-perplexity"), "-m", args.gguf, "-f",
                        ppl_file, "-t", str(t)], check=True, capture_output=True)
        return time.monotonic() - t0

    busy = [subprocess.Popen(["timeout", str(args.busy_seconds), "sh", "-c",
                              "while :; do :; done"]) for _ in range(args.busy)]
    try:
        time.sleep(0.5)
        bins = [args.baseline, zs] if args.baseline else [zs]
        print(f"{args.busy} busy processes, load {os.getloadavg()[0]:.2f}; {' vs '.join(bins)}; "
              f"decode {args.decode_tokens} tokens, prefill {prompt_tokens} tokens, perplexity "
              f"over {args.ppl_bytes} bytes; medians of {args.rounds} rounds (interleaved)",
              flush=True)
        if args.baseline:
            print("| case | ffn | base -t 1 s | new -t 1 s | new / base | base -t 2 s | "
                  "new -t 2 s | new / base | base t2 / t1 | new t2 / t1 |")
            print("|---|---|---|---|---|---|---|---|---|---|")
        else:
            print("| case | ffn | -t 1 s | -t 2 s | t2 / t1 |")
            print("|---|---|---|---|---|")
        for name, fn in (("decode", decode), ("prefill", prefill), ("perplexity", perplexity)):
            for ffn in ("sparse", "dense"):
                times = {(b, t): [] for b in bins for t in (1, 2)}
                for _ in range(args.rounds):
                    for t in (1, 2):
                        for b in bins:
                            times[b, t].append(fn(b, t, ffn))
                m = {k: statistics.median(v) for k, v in times.items()}
                if args.baseline:
                    base = args.baseline
                    print(f"| {name} | {ffn} | {m[base, 1]:.4f} | {m[zs, 1]:.4f} | "
                          f"{m[zs, 1] / m[base, 1]:.2f} | {m[base, 2]:.4f} | {m[zs, 2]:.4f} | "
                          f"{m[zs, 2] / m[base, 2]:.2f} | {m[base, 2] / m[base, 1]:.2f}x | "
                          f"**{m[zs, 2] / m[zs, 1]:.2f}x** |", flush=True)
                else:
                    t1, t2 = m[zs, 1], m[zs, 2]
                    print(f"| {name} | {ffn} | {t1:.4f} | {t2:.4f} | **{t2 / t1:.2f}x** |",
                          flush=True)
        if args.llama_bin:
            print(f"\nllama.cpp ({args.gguf}), same busy processes")
            print("| case | -t 1 s | -t 2 s | t2 / t1 |")
            print("|---|---|---|---|")
            for name, fn in (("decode", llama_decode), ("prefill", llama_prefill),
                             ("perplexity", llama_perplexity)):
                times = {1: [], 2: []}
                for _ in range(args.rounds):
                    for t in (1, 2):
                        times[t].append(fn(t))
                t1, t2 = statistics.median(times[1]), statistics.median(times[2])
                print(f"| {name} | {t1:.4f} | {t2:.4f} | **{t2 / t1:.2f}x** |", flush=True)
        print(f"load at the end {os.getloadavg()[0]:.2f}")
    finally:
        for p in busy:
            p.terminate()  # timeout passes it on to its busy loop
            p.wait()
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
