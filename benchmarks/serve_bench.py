#!/usr/bin/python3
"""Aggregate decode throughput and time to first token of `zeroskip serve` under concurrency.

    /usr/bin/python3 benchmarks/serve_bench.py ZEROSKIP_BIN MODEL.zsk [--streams 1,2,4,8]
        [--tokens 64] [--rounds 3] [--threads 2] [--json OUT.json]

For each stream count S: a server with --parallel S, then `rounds` times S streaming clients
started together, each asking for `tokens` tokens (ignore_eos) after a short prompt. Both
numbers come from the server's own `timings` (a synthetic model's tokens mostly decode to no text,
so the client cannot see every token arrive): aggregate decode tok/s = the sum of the streams'
`predicted_per_second` (they start together and run the same length, so they decode side by
side), TTFT = `ttft_ms` (request received to first token: queueing, and the prefill of the
requests admitted before it, included). Reports the median round, and p50/p99 TTFT over every
client of every round. Prints a table and writes JSON.

With --busy N, N busy processes (each bounded by `timeout`, killed at the end) share the cores
with the server for the whole run: the latency figures of a server on a shared machine
(issue 29).
"""
import argparse
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import threading


def start(binary, model, parallel, threads):
    proc = subprocess.Popen([binary, "serve", "-m", model, "--port", "0", "--parallel",
                             str(parallel), "--queue", "64", "-t", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r":(\d+) \(", line)
    if not found:  # the server did not start (a missing model, say): show its own error line
        proc.wait()
        sys.exit(line.strip() or f"serve_bench: {binary} serve exited with status {proc.returncode}")
    return proc, int(found.group(1))


def client(port, prompt, tokens, out, i):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", json.dumps({
        "prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}}))
    res = conn.getresponse()
    usage = timings = None
    buffer = b""
    while True:
        chunk = res.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = event[6:]
            if data == b"[DONE]":
                continue
            j = json.loads(data)
            if j.get("usage"):
                usage, timings = j["usage"], j["timings"]
    assert usage["completion_tokens"] == tokens, usage
    out[i] = dict(rate=timings["predicted_per_second"], ttft_ms=timings["ttft_ms"])


def round_once(port, streams, tokens, prompt):
    out = [None] * streams
    threads = [threading.Thread(target=client, args=(port, prompt, tokens, out, i))
               for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(o["rate"] for o in out), [o["ttft_ms"] for o in out]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("model")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="The quick brown fox jumps over the lazy dog.")
    ap.add_argument("--json")
    ap.add_argument("--busy", type=int, default=0, help="busy processes beside the server")
    ap.add_argument("--busy-seconds", type=int, default=1800, help="bound on each busy process")
    args = ap.parse_args()
    busy = [subprocess.Popen(["timeout", str(args.busy_seconds), "sh", "-c", "while :; do :; done"])
            for _ in range(args.busy)]
    try:
        rows = measure(args)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    one = rows[0]["aggregate_tok_s"]
    for r in rows:
        r["vs_one_stream"] = r["aggregate_tok_s"] / one
    print(f"{args.busy} busy processes beside the server")
    print("| streams | aggregate decode tok/s | vs 1 stream | TTFT p50 ms | TTFT p99 ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['aggregate_tok_s']:.1f} | {r['vs_one_stream']:.2f}x | "
              f"{r['ttft_ms_p50']:.0f} | {r['ttft_ms_p99']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=args.model, tokens=args.tokens, threads=args.threads,
                           rounds=args.rounds, busy=args.busy, rows=rows), f, indent=1)


def measure(args):
    rows = []
    for streams in [int(s) for s in args.streams.split(",")]:
        proc, port = start(args.binary, args.model, streams, args.threads)
        try:
            round_once(port, 1, 4, args.prompt)  # warm-up: pages, oneDNN primitives
            rates, ttfts = [], []
            for _ in range(args.rounds):
                rate, ttft = round_once(port, streams, args.tokens, args.prompt)
                rates.append(rate)
                ttfts += ttft
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        ttfts.sort()
        row = dict(streams=streams, aggregate_tok_s=statistics.median(rates),
                   rounds_tok_s=rates, ttft_ms_p50=statistics.median(ttfts),
                   ttft_ms_p99=ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
                   ttft_ms=ttfts)
        rows.append(row)
        print(f"{streams} streams: {row['aggregate_tok_s']:.1f} tok/s aggregate "
              f"(rounds {', '.join(f'{r:.1f}' for r in rates)}), TTFT p50 "
              f"{row['ttft_ms_p50']:.0f} ms, p99 {row['ttft_ms_p99']:.0f} ms", flush=True)
    return rows


if __name__ == "__main__":
    main()
