#!/usr/bin/python3
"""Aggregate decode throughput and time to first token of `zeroskip serve` under concurrency.

    /usr/bin/python3 benchmarks/serve_bench.py ZEROSKIP_BIN MODEL.zsk [--streams 1,2,4,8]
        [--tokens 64] [--rounds 3] [--threads 2] [--json OUT.json]
    /usr/bin/python3 benchmarks/serve_bench.py ZEROSKIP_BIN MODEL.zsk --load 64x8
        [--parallel 4] [--queue 64] [--tokens 64] [--threads 2] [--json OUT.json]

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

--load CxR: one server (--parallel, --queue), C clients started together, each sending R requests
one after another on one kept-alive connection (alternately streamed and not; `tokens` each,
ignore_eos, sampled), while a monitor asks /health every 20 ms on a fresh connection. Reports
generated tokens per second of wall time, client-side latency p50/p95 (request sent to answer
complete), TTFT p50/p95 (the server's `ttft_ms`: received to first token, queueing included),
/health p50/p99, and every request not answered whole (a 503 is retried after its Retry-After
and counted).
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
import time


def start(binary, model, parallel, threads, queue=64):
    proc = subprocess.Popen([binary, "serve", "-m", model, "--port", "0", "--parallel",
                             str(parallel), "--queue", str(queue), "-t", str(threads)],
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


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def load_client(port, i, requests, tokens, prompt, out, lost, retried):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for r in range(requests):
        stream = (i + r) % 2 == 1
        body = json.dumps({"prompt": prompt, "max_tokens": tokens, "ignore_eos": True,
                           "temperature": 0.8, "seed": i * requests + r, "stream": stream,
                           "stream_options": {"include_usage": True}})
        while True:
            sent = time.monotonic()
            try:
                conn.request("POST", "/v1/completions", body,
                             {"Content-Type": "application/json"})
                res = conn.getresponse()
                raw = res.read()
            except (OSError, http.client.HTTPException) as e:
                lost.append(f"client {i} request {r}: {e!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                break
            if res.status == 503:
                retried.append(1)
                time.sleep(float(res.getheader("Retry-After", "1")))
                continue
            if res.status != 200:
                lost.append(f"client {i} request {r}: HTTP {res.status} {raw[:200]!r}")
                break
            if stream:
                events = [json.loads(b[6:]) for b in raw.decode().split("\n\n")
                          if b.startswith("data: {")]
                final = events[-1]
            else:
                final = json.loads(raw)
            if final["usage"]["completion_tokens"] != tokens:
                lost.append(f"client {i} request {r}: {final['usage']}")
                break
            out.append(dict(latency_ms=1000 * (time.monotonic() - sent),
                            ttft_ms=final["timings"]["ttft_ms"], tokens=tokens))
            break
    conn.close()


def load(args):
    clients, requests = (int(x) for x in args.load.split("x"))
    proc, port = start(args.binary, args.model, args.parallel, args.threads, args.queue)
    out, lost, retried, health_ms = [], [], [], []
    done = threading.Event()

    def monitor():
        while not done.is_set():
            sent = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    health_ms.append(1000 * (time.monotonic() - sent))
                else:
                    lost.append("/health not 200")
            except (OSError, http.client.HTTPException) as e:
                lost.append(f"/health: {e!r}")
            conn.close()
            done.wait(0.02)

    try:
        load_client(port, 0, 1, 4, args.prompt, [], lost, [])  # warm-up
        watcher = threading.Thread(target=monitor)
        watcher.start()
        threads = [threading.Thread(target=load_client,
                                    args=(port, i, requests, args.tokens, args.prompt, out, lost,
                                          retried))
                   for i in range(clients)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - began
        done.set()
        watcher.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    latency = [o["latency_ms"] for o in out]
    ttft = [o["ttft_ms"] for o in out]
    row = dict(clients=clients, requests_per_client=requests, parallel=args.parallel,
               queue=args.queue, tokens=args.tokens, threads=args.threads, wall_s=wall,
               answered=len(out), lost=len(lost), lost_detail=lost[:20], retried_503=len(retried),
               tok_s=sum(o["tokens"] for o in out) / wall,
               latency_ms_p50=percentile(latency, 0.5), latency_ms_p95=percentile(latency, 0.95),
               ttft_ms_p50=percentile(ttft, 0.5), ttft_ms_p95=percentile(ttft, 0.95),
               health_n=len(health_ms), health_ms_p50=percentile(health_ms, 0.5),
               health_ms_p99=percentile(health_ms, 0.99), health_ms_max=max(health_ms))
    print("| clients x requests | answered | lost | 503 retried | tok/s | latency p50 / p95 ms "
          "| TTFT p50 / p95 ms | /health p50 / p99 / max ms (n) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {clients} x {requests} | {row['answered']} | {row['lost']} | {row['retried_503']} | "
          f"{row['tok_s']:.1f} | {row['latency_ms_p50']:.0f} / {row['latency_ms_p95']:.0f} | "
          f"{row['ttft_ms_p50']:.0f} / {row['ttft_ms_p95']:.0f} | {row['health_ms_p50']:.1f} / "
          f"{row['health_ms_p99']:.1f} / {row['health_ms_max']:.1f} ({row['health_n']}) |")
    for line in lost[:20]:
        print("lost:", line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=args.model, **row, latency_ms=latency, ttft_ms=ttft,
                           health_ms=health_ms), f, indent=1)
    return 1 if lost else 0


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
    ap.add_argument("--load", help="CxR: C clients sending R requests each")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--queue", type=int, default=64)
    ap.add_argument("--busy", type=int, default=0, help="busy processes beside the server")
    ap.add_argument("--busy-seconds", type=int, default=1800, help="bound on each busy process")
    args = ap.parse_args()
    busy = [subprocess.Popen(["timeout", str(args.busy_seconds), "sh", "-c", "while :; do :; done"])
            for _ in range(args.busy)]
    try:
        if args.load:
            return load(args)
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
    return 0


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
    sys.exit(main())
