#!/usr/bin/env python3
"""Renders the markdown tables of docs/BENCHMARKS.md from the JSON in docs/bench/ (written by
benchmarks/run_all.sh). Standard library only. Usage: python3 benchmarks/report.py [docs/bench]"""
import json
import os
import sys


def ffn_table(path):
    r = json.load(open(path))
    rows = [f"`{os.path.basename(path)}`: {r['results'][0]['dtype']}, "
            f"{r['results'][0]['threads']} thread(s), isa {r['isa']}, read bandwidth "
            f"{r['read_bandwidth_gb_s']:.1f} GB/s", "",
            "| target zeros | measured | oneDNN dense ms | sparse ms | **speedup** | own dense ms "
            "| sparse vs own dense | GFLOP dense / sparse | GB/s dense / sparse | sparse share of BW |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        rows.append(f"| {x['sparsity']:.2f} | {x['zero_fraction']:.3f} | {x['dense_ms']:.2f} | "
                    f"{x['sparse_ms']:.2f} | **{x['speedup']:.2f}x** | {x['own_dense_ms']:.2f} | "
                    f"{x['own_dense_ms'] / x['sparse_ms']:.2f}x | {x['dense_gflop']:.3f} / "
                    f"{x['sparse_gflop']:.3f} | {x['dense_gb_s']:.1f} / {x['gb_s']:.1f} | "
                    f"{100 * x['bandwidth_share']:.0f}% |")
    return "\n".join(rows)


def decode_table(paths):
    rows = ["| threads | ffn zeros | sparse tok/s | dense tok/s | **speedup** | dense GB/s | "
            "read bandwidth | dense share |", "|---|---|---|---|---|---|---|---|"]
    for p in paths:
        r = json.load(open(p))
        rows.append(f"| {r['threads']} | {100 * r['ffn_zero_fraction']:.1f}% | "
                    f"{r['sparse_tok_s']:.2f} | {r['dense_tok_s']:.2f} | **{r['speedup']:.2f}x** | "
                    f"{r['dense_gb_s']:.1f} | {r['read_bandwidth_gb_s']:.1f} | "
                    f"{100 * r['dense_bandwidth_share']:.0f}% |")
    return "\n".join(rows)


def kernel_table(path):
    r = json.load(open(path))
    rows = ["| benchmark | median ms | GB/s | GFLOP/s |", "|---|---|---|---|"]
    for b in r["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].replace("/real_time", "")
        gbs = b.get("bytes_per_second", 0) / 1e9
        flops = b.get("FLOP/s", 0) / 1e9
        ms = b["real_time"] / 1e6 if b.get("time_unit") == "ns" else b["real_time"]
        rows.append(f"| `{name}` | {ms:.3f} | {gbs:.1f} | {flops:.1f} |" if gbs else
                    f"| `{name}` | {ms:.4f} | – | – |")
    return "\n".join(rows)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/bench"
    print("## FFN\n")
    for name in ["ffn_7b_f32_t2", "ffn_7b_f32_t1", "ffn_7b_bf16_t2", "ffn_7b_bf16_t1"]:
        print(ffn_table(os.path.join(d, name + ".json")) + "\n")
    print("## Decode\n")
    print(decode_table([os.path.join(d, f"decode_0.7b_t{t}.json") for t in (1, 2)]) + "\n")
    print("## Kernels\n")
    print(kernel_table(os.path.join(d, "kernels.json")))


if __name__ == "__main__":
    main()
