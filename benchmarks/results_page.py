#!/usr/bin/python3
"""Writes the tables of docs/RESULTS.md and its plots (docs/results/*.png) from docs/bench/.

    /usr/bin/python3 benchmarks/results_page.py [all]      # the tables, then the plots
    /usr/bin/python3 benchmarks/results_page.py tables     # rewrite the page's tables only
    /usr/bin/python3 benchmarks/results_page.py plots [--only NAME,...]  # redraw plots only
    /usr/bin/python3 benchmarks/results_page.py check      # exit 1 if the page is out of date
    /usr/bin/python3 benchmarks/results_page.py show NAME  # print one table's block

Every table of the page sits between `<!-- results: NAME -->` and `<!-- end results: NAME -->`;
`tables` rewrites what lies between them (the prose around them is the page's own) from the JSON
the benchmarks wrote (benchmarks/peer_llamacpp.py, serve_bench.py, `zeroskip bench ffn --json`)
and from docs/bench/transcribed.json (numbers BENCHMARKS.md has and no JSON does, copied by hand).
A table whose JSON is absent says "not measured yet" and gives the command that measures it.
Each table's command is copied from docs/BENCHMARKS.md (the tests check it is there verbatim).
Numbers are printed as BENCHMARKS.md prints them (tok/s to 0.1, seconds to 0.001, ratios to
0.01). Plots need matplotlib (python3-matplotlib: `.ci/install-deps --python-ml`); they are drawn
without timestamps or version strings, so the same JSON gives the same bytes. The page links a
plot only when its PNG exists. Standard library only for the tables.
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PLOT_COMMAND = "/usr/bin/python3 benchmarks/results_page.py plots --only {name}"

# The machines, as docs/BENCHMARKS.md describes them (the JSON records only the CPU's name).
AMD = ("2-core AMD EPYC (family 25 model 17) under KVM, AVX-512 with AVX512_BF16 and VNNI, "
       "32 MiB L3, 24 GiB RAM, a VM shared with other jobs")
INTEL = ("2-core Intel Xeon (Cascade Lake) at 2.5 GHz under KVM, AVX-512 with VNNI (no "
         "AVX512_BF16), 24 GiB RAM: the machine named at the top of docs/BENCHMARKS.md")
PEER_0_74B = ("synthetic 0.74 B Llama (hidden 2048, 16 layers, GQA 16/4, FFN 5632, vocab 4096, "
              "gates calibrated to 90% FFN zeros; `tools/synth`)")

# Weight types: llama.cpp's name, ours (as benchmarks/peer_llamacpp.py pairs them).
TYPES = [("f32", "f32"), ("bf16", "bf16"), ("q8_0", "q8"), ("q4_0", "q4"), ("Q4_K_M", "q4k")]

# Commands, verbatim from docs/BENCHMARKS.md.
SYNTH_PEER = """SYNTH_DIR=../synth
/usr/bin/python3 tools/synth/synth.py $SYNTH_DIR/peer-0.74b-bf16-s90 --shape custom --hidden 2048 \\
    --ffn 5632 --layers 16 --heads 16 --kv-heads 4 --vocab 4096 --ctx 1024 --dtype BF16 --sparsity 0.9
LLAMA_CPP_DIR=../llama.cpp   # any folder outside the checkout; we used c392e50
git clone https://github.com/ggerganov/llama.cpp $LLAMA_CPP_DIR"""
CMD_TTFT_RUN = """REPEATS=3 PREFILL_PROMPT=3,16,64 OUT=docs/bench/peer_llamacpp_ttft.json BENCH_LOCK=/tmp/zeroskip-build.lock \\
    benchmarks/peer_llamacpp.sh $SYNTH_DIR/peer-0.74b-bf16-s90 $LLAMA_CPP_DIR"""
CMD_PREFILL_RUN = """REPEATS=3 BENCH_LOCK=/tmp/zeroskip-build.lock \\
    benchmarks/peer_llamacpp.sh $SYNTH_DIR/peer-0.74b-bf16-s90 $LLAMA_CPP_DIR   # PREFILL_PROMPT=3,16,64,256"""
CMD_LONG_RUN = """SYNTH_DIR=../synth
/usr/bin/python3 tools/synth/synth.py $SYNTH_DIR/l16-ctx4k --shape custom --hidden 2048 --ffn 5632 \\
    --layers 16 --heads 16 --kv-heads 4 --vocab 4096 --ctx 4096 --sparsity 0.9"""
CMD_LONG = """REPEATS=3 PREFILL_PROMPT=64 LONG_PROMPT=2048 N_DECODE=48 BENCH_LOCK=/tmp/zeroskip-build.lock \\
    OUT=docs/bench/peer_llamacpp_long.json \\
    benchmarks/peer_llamacpp.sh $SYNTH_DIR/l16-ctx4k $LLAMA_CPP_DIR"""
CMD_7B = """LLAMA_CPP_DIR=../llama.cpp   # c392e50, as above
SHAPE=7b REPEATS=3 PREFILL_PROMPT=16,64 LONG_PROMPT=0 BENCH_LOCK=/tmp/zeroskip-build.lock \\
    SYNTH_ARGS="--calib-seqs 2 --calib-len 64 --no-check" WORK_DIR=${WORK_DIR:-/tmp/zeroskip-peer} \\
    OUT=docs/bench/peer_llamacpp_7b.json benchmarks/peer_llamacpp.sh"""
CMD_SERVE = """M=${WORK_DIR:-/tmp/zeroskip-peer}/models/peer-0.74b-bf16-s90   # the peer script's zeroskip-*.zsk
for t in f32 bf16 q8; do
  /usr/bin/python3 benchmarks/serve_bench.py build/zeroskip $M/zeroskip-$t.zsk \\
      --streams 1,2,4,8 --tokens 48 --rounds 3 --json docs/bench/serve_$t.json
done"""
CMD_FFN = """build/zeroskip bench ffn --d 4096 --f 11008 --dtype f32 -t 1 --json --plot docs/bench/ffn_7b_f32_t1.png
build/zeroskip bench ffn --d 4096 --f 11008 --dtype f32 -t 2 --json --plot docs/bench/ffn_7b_f32_t2.png
build/zeroskip bench ffn --d 4096 --f 11008 --dtype bf16 -t 1 --json --plot docs/bench/ffn_7b_bf16_t1.png
build/zeroskip bench ffn --d 4096 --f 11008 --dtype bf16 -t 2 --json --plot docs/bench/ffn_7b_bf16_t2.png"""
CMD_PPL_FULL = """# the last 10% of tiny-shakespeare (held out from the tokenizer and the training of relu-ft)
/usr/bin/python3 -c "t=open('../shared/data/tinyshakespeare.txt').read(); open('/tmp/heldout.txt','w').write(t[int(len(t)*0.9):])"
for d in f32 bf16 q8 q4; do
  build/zeroskip convert models/relu-ft -o /tmp/relu-$d.zsk --dtype $d
  build/zeroskip perplexity -m /tmp/relu-$d.zsk -f /tmp/heldout.txt --json -t 2
  ZEROSKIP_SMALL_BATCH=256 build/zeroskip perplexity -m /tmp/relu-$d.zsk -f /tmp/heldout.txt --json -t 2
done"""
CMD_PPL_KQUANT = """M=models/relu-ft; T=${TEXT:-/tmp/held12k.txt}; L=${LLAMA:-/tmp/llama/src/build/bin}
for d in q4 q4k q6k; do
  build/zeroskip convert $M -o /tmp/relu-$d.zsk --dtype $d
  build/zeroskip perplexity -m /tmp/relu-$d.zsk -f $T --json -t 1
done
build/zeroskip perplexity -m /tmp/relu-ft.zsk -f $T --json -t 1       # bf16, as shipped"""
CMD_KLD = """M=models/relu-ft; T=${TEXT:-/tmp/held12k.txt}; W=${WORK:-/tmp/kld}; L=${LLAMA:-/tmp/llama/src/build/bin}
mkdir -p $W
for d in f32 bf16 q8 q6k q4k q4; do build/zeroskip convert $M -o $W/relu-$d.zsk --dtype $d; done
build/zeroskip perplexity -m $W/relu-f32.zsk -f $T --kl-base $W/relu-f32.klb     # 72 MB
for d in f32 bf16 q8 q6k q4k q4; do
  build/zeroskip perplexity -m $W/relu-$d.zsk -f $T --kl-divergence $W/relu-f32.klb --json
done
# llama.cpp's own blocks, from a bf16 GGUF of the same checkpoint, run by zeroskip (ReLU)
for t in Q4_0 Q6_K; do $L/llama-quantize relu-ft-bf16.gguf $W/llama-$t.gguf $t; done
build/zeroskip convert $W/llama-Q4_0.gguf -o $W/llama-Q4_0.zsk     # blocks copied unchanged
build/zeroskip convert $W/llama-Q6_K.gguf -o $W/llama-Q6_K.zsk --dtype q6k   # see below
for t in Q4_0 Q6_K; do
  build/zeroskip perplexity -m $W/llama-$t.zsk -f $T --kl-divergence $W/relu-f32.klb --json
done"""
CMD_KLD_AS_MADE = """for t in Q6_K Q4_K_M; do $L/llama-quantize relu-ft-bf16.gguf $W/llama-$t.gguf $t
  build/zeroskip convert $W/llama-$t.gguf -o $W/llama-$t.zsk
  build/zeroskip perplexity -m $W/llama-$t.zsk -f $T --kl-divergence $W/relu-f32.klb --json; done
build/zeroskip convert $M -o $W/relu-q4k.zsk --dtype q4k
build/zeroskip perplexity -m $W/relu-q4k.zsk -f $T --kl-divergence $W/relu-f32.klb --json"""
CMD_KLD_SYNTH = """H=${SYNTH_DIR:-/tmp/synth}/0.7b-bf16-s90; W=${WORK:-/tmp/kld}; T=${TEXT:-/tmp/held12k.txt}
L=${LLAMA:-/tmp/llama/src/build/bin}; LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-/tmp/llama/src}
# fewer calibration tokens and no held-out check than peer_llamacpp.sh: 13 minutes, not 50
/usr/bin/python3 tools/synth/synth.py $H --shape 0.7b --dtype BF16 --sparsity 0.9 \\
    --calib-seqs 2 --calib-len 64 --no-check
head -c 600 $T > $W/text600.txt
for d in f32 bf16 q8 q6k q4k q4; do build/zeroskip convert $H -o $W/s07-$d.zsk --dtype $d; done
build/zeroskip perplexity -m $W/s07-f32.zsk -f $W/text600.txt --ctx 256 --kl-base $W/s07-f32.klb
# llama.cpp's converter at f16 (as peer_llamacpp.sh without torch), then its quantizer
PYTHONPATH=$LLAMA_CPP_DIR/gguf-py:benchmarks/spm_standin /usr/bin/python3 \\
    $LLAMA_CPP_DIR/examples/convert_legacy_llama.py $H --outtype f16 --pad-vocab --outfile $W/llama-f16.gguf
for t in Q4_0 Q6_K; do
  $L/llama-quantize $W/llama-f16.gguf $W/llama-$t.gguf $t
  build/zeroskip convert $W/llama-$t.gguf -o $W/s07-llama-$t.zsk --act relu   # no hidden_act in it
done
for m in f32 bf16 q8 q6k q4k q4 llama-Q4_0 llama-Q6_K; do
  build/zeroskip perplexity -m $W/s07-$m.zsk -f $W/text600.txt --ctx 256 \\
      --kl-divergence $W/s07-f32.klb --json
done"""


def load(bench, name):
    """The JSON document docs/bench/NAME, or None when that run has not been made."""
    path = os.path.join(bench, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sh(*commands):
    return ["```sh", *commands, "```"]


def by_engine(doc):
    return {(r["engine"], r["weight_type"]): r for r in doc["results"]}


def measured(r):
    return r is not None and r.get("available", True)


def ratio(mine, theirs):
    return f"{mine / theirs:.2f}x"


def type_label(theirs, ours):
    return ours if theirs == ours else f"{ours} ({theirs})"


def machine(doc):
    """BENCHMARKS.md's description of the machine a peer run names, else the run's own words."""
    if doc.get("cpu") == "AMD EPYC" and doc.get("cpu_count") == 2:
        return AMD
    return f"{doc.get('cpu_count', '?')}-core {doc.get('cpu', 'unknown CPU')} (from the JSON)"


def peer_source(name, doc):
    """What a peer run records about itself: file, date, commits, repeats."""
    commit = doc.get("llama_cpp_commit", "unknown")
    peer = f"llama.cpp {commit[:7]}" if commit != "unknown" else "llama.cpp commit not recorded"
    return (f"`docs/bench/{name}`: {doc['date_utc']} UTC, zeroskip {doc['zeroskip_commit'][:7]}, "
            f"{peer}, checkpoint `{doc['checkpoint']}`, {doc['threads']} threads, "
            f"{doc['repeats']} interleaved repeats, medians. Machine: {machine(doc)}.")


def not_available(doc, ours):
    reason = doc.get("not_available", {}).get(ours)
    return "not available" + (f" (`{reason}`)" if reason else "")


# Tables: each returns the lines of the table and the plot's data (None: nothing to plot).
# A plot is bars: {"title", "ylabel", "groups": [x labels], "series": [(label, [values])],
# "line": y of a reference line or None}; values may be None (nothing measured).

def decode_table(doc, others=()):
    """Decode tok/s after a 25-token prompt, per weight type, against llama.cpp; `others`: (name,
    doc) of other runs, whose sparse-vs-llama.cpp ratios go in the last column."""
    by = by_engine(doc)
    lines = ["| weights | llama.cpp tok/s | zeroskip sparse tok/s | **sparse vs llama.cpp** | "
             "zeroskip dense tok/s | dense vs llama.cpp | sparse vs llama.cpp in other runs |",
             "|---|---|---|---|---|---|---|"]
    series = {"llama.cpp": [], "zeroskip sparse": [], "zeroskip dense": []}
    for theirs, ours in TYPES:
        peer, sparse, dense = (by.get(k) for k in [("llama.cpp", theirs), ("zeroskip sparse", ours),
                                                   ("zeroskip dense", ours)])
        label = type_label(theirs, ours)
        if peer is None and sparse is None:
            lines.append(f"| {label} | not measured in this run | | | | | |")
            continue
        cells = [f"{peer['decode_tok_s']:.1f}" if measured(peer) else "not measured"]
        for r in (sparse, dense):
            if not measured(r):
                cells += [not_available(doc, ours), "–"]
                continue
            vs = ratio(r["decode_tok_s"], peer["decode_tok_s"]) if measured(peer) else "–"
            cells += [f"{r['decode_tok_s']:.1f}", f"**{vs}**" if r is sparse else vs]
        runs = []
        for name, other in others:
            o = by_engine(other)
            p, s = o.get(("llama.cpp", theirs)), o.get(("zeroskip sparse", ours))
            if measured(p) and measured(s):
                runs.append(f"{ratio(s['decode_tok_s'], p['decode_tok_s'])} ({name})")
        lines.append(f"| {label} | " + " | ".join(cells + ["; ".join(runs) or "–"]) + " |")
        for key, r in zip(series, (peer, sparse, dense)):
            series[key].append(r["decode_tok_s"] if measured(r) else None)
    groups = [type_label(t, o) for t, o in TYPES if by.get(("llama.cpp", t)) or
              by.get(("zeroskip sparse", o))]
    plot = {"title": "Decode after a 25-token prompt", "ylabel": "tok/s", "groups": groups,
            "series": list(series.items()), "line": None}
    return lines, plot


def ttft_table(doc, lengths=(16, 64, 256)):
    """Time to first token (s) per prompt length: llama.cpp, zeroskip sparse, and llama.cpp's time
    over ours (above 1: we are faster)."""
    by = by_engine(doc)
    lengths = [str(n) for n in lengths if str(n) in map(str, doc.get("prefill_lengths", []))]
    lines = ["| weights | " + " | ".join(f"{n} tokens: llama.cpp s / zeroskip sparse s (**ratio**)"
                                         for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    series = {n: [] for n in lengths}
    groups = []
    for theirs, ours in TYPES:
        peer, sparse = by.get(("llama.cpp", theirs)), by.get(("zeroskip sparse", ours))
        label = type_label(theirs, ours)
        if not (measured(peer) and measured(sparse)):
            why = "not measured in this run" if sparse is None else not_available(doc, ours)
            lines.append(f"| {label} | {why} |" + " |" * (len(lengths) - 1))
            continue
        cells = []
        groups.append(label)
        for n in lengths:
            p, s = peer["ttft_s"][n], sparse["ttft_s"][n]
            cells.append(f"{p:.3f} / {s:.3f} (**{p / s:.2f}x**)")
            series[n].append(p / s)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    plot = {"title": "Time to first token: llama.cpp's time over zeroskip's (above 1: faster)",
            "ylabel": "llama.cpp s / zeroskip s", "groups": groups,
            "series": [(f"{n}-token prompt", v) for n, v in series.items()], "line": 1.0}
    return lines, plot


def long_table(doc):
    """Decode tok/s after the long prompt (f16 KV cache in both engines)."""
    by = by_engine(doc)
    n = doc.get("long_prompt", 0)
    lines = [f"| weights | llama.cpp tok/s after {n} tokens | zeroskip sparse tok/s | **sparse vs "
             "llama.cpp** | sparse: after the long prompt / after the short one | zeroskip dense "
             "tok/s |", "|---|---|---|---|---|---|"]
    series = {"llama.cpp": [], "zeroskip sparse": [], "zeroskip dense": []}
    groups = []
    for theirs, ours in TYPES:
        peer, sparse, dense = (by.get(k) for k in [("llama.cpp", theirs), ("zeroskip sparse", ours),
                                                   ("zeroskip dense", ours)])
        label = type_label(theirs, ours)
        if not (measured(peer) and measured(sparse)) or "long_decode_tok_s" not in sparse:
            why = "not measured in this run" if sparse is None else not_available(doc, ours)
            lines.append(f"| {label} | {why} | | | | |")
            continue
        groups.append(label)
        lines.append(f"| {label} | {peer['long_decode_tok_s']:.1f} | "
                     f"{sparse['long_decode_tok_s']:.1f} | "
                     f"**{ratio(sparse['long_decode_tok_s'], peer['long_decode_tok_s'])}** | "
                     f"{sparse['long_decode_tok_s'] / sparse['decode_tok_s']:.2f} | "
                     + (f"{dense['long_decode_tok_s']:.1f}" if measured(dense) else "–") + " |")
        for key, r in zip(series, (peer, sparse, dense)):
            series[key].append(r["long_decode_tok_s"] if measured(r) else None)
    plot = {"title": f"Decode after a {n}-token prompt (f16 KV cache)", "ylabel": "tok/s",
            "groups": groups, "series": list(series.items()), "line": None}
    return lines, plot


def memory_table(doc, transcribed):
    """File sizes (the run's JSON) and peak resident memory: the run's own where it recorded it
    (peer_llamacpp.py's max_rss_mb, the largest over runs), else BENCHMARKS.md's measurement."""
    by = by_engine(doc)
    files = doc.get("files_bytes", {})
    rss_md = {r["weights"]: r for r in (transcribed or {}).get("peak_rss", {}).get("rows", [])}
    lines = ["| weights | llama.cpp file MB | zeroskip file MB | llama.cpp peak RSS MB | zeroskip "
             "peak RSS MB |", "|---|---|---|---|---|"]
    series = {"llama.cpp file": [], "zeroskip file": []}
    groups = []
    for theirs, ours in TYPES:
        llama_file, our_file = files.get(f"llama-{theirs}.gguf"), files.get(f"zeroskip-{ours}.zsk")
        if llama_file is None and our_file is None:
            continue
        peer, sparse = by.get(("llama.cpp", theirs)), by.get(("zeroskip sparse", ours))
        rss = [f"{r['max_rss_mb']:.0f}" if measured(r) and "max_rss_mb" in r else "not recorded"
               for r in (peer, sparse)]
        if rss[1] == "not recorded" and ours in rss_md:
            rss[1] = (f"not recorded; {rss_md[ours]['isa_avx512bf16']} MiB in another run "
                      "(BENCHMARKS.md, \"Native bf16\")")
        mb = lambda b: f"{b / 1e6:.0f}" if b is not None else "–"  # noqa: E731
        groups.append(type_label(theirs, ours))
        series["llama.cpp file"].append(llama_file / 1e6 if llama_file else None)
        series["zeroskip file"].append(our_file / 1e6 if our_file else None)
        lines.append(f"| {type_label(theirs, ours)} | {mb(llama_file)} | {mb(our_file)} | "
                     f"{rss[0]} | {rss[1]} |")
    plot = {"title": "Model file size", "ylabel": "MB", "groups": groups,
            "series": list(series.items()), "line": None}
    return lines, plot


def server_table(docs):
    """`zeroskip serve`: aggregate decode tok/s and TTFT per number of concurrent streams; docs:
    {weight type: serve_bench.py's JSON}."""
    present = {t: d for t, d in docs.items() if d is not None}
    streams = sorted({r["streams"] for d in present.values() for r in d["rows"]})
    lines = ["| streams | " + " | ".join(f"{t}: aggregate tok/s (vs 1 stream) | {t}: TTFT p50 / "
                                         "p99 ms" for t in present) + " |",
             "|---|" + "---|---|" * len(present)]
    series = {t: [] for t in present}
    for s in streams:
        cells = []
        for t, d in present.items():
            r = next((r for r in d["rows"] if r["streams"] == s), None)
            series[t].append(r["aggregate_tok_s"] if r else None)
            cells += ([f"{r['aggregate_tok_s']:.1f} ({r['vs_one_stream']:.2f}x)",
                       f"{r['ttft_ms_p50']:.0f} / {r['ttft_ms_p99']:.0f}"] if r else ["–", "–"])
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    plot = {"title": "zeroskip serve: aggregate decode of concurrent streams", "ylabel": "tok/s",
            "groups": [str(s) for s in streams], "series": list(series.items()), "line": None,
            "xlabel": "concurrent streams"}
    return lines, plot


def ffn_table(docs):
    """The FFN decode step at the Llama-2-7B shape: oneDNN dense ms over sparse ms per sparsity;
    docs: {(dtype, threads): `bench ffn --json`}."""
    present = {k: d for k, d in docs.items() if d is not None}
    targets = sorted({x["sparsity"] for d in present.values() for x in d["results"]})
    lines = ["| target zeros | " + " | ".join(f"{t}, {n} thread{'s' * (n > 1)}" for t, n in present)
             + " |", "|---|" + "---|" * len(present)]
    series = {f"{t}, {n} thread{'s' * (n > 1)}": [] for t, n in present}
    for z in targets:
        cells = []
        for key, d in present.items():
            x = next((x for x in d["results"] if x["sparsity"] == z), None)
            cells.append(f"**{x['speedup']:.2f}x**" if x else "–")
            series[f"{key[0]}, {key[1]} thread{'s' * (key[1] > 1)}"].append(
                x["speedup"] if x else None)
        lines.append(f"| {z:.2f} | " + " | ".join(cells) + " |")
    plot = {"title": "FFN step, Llama-2-7B shape: oneDNN dense time over sparse time",
            "ylabel": "speedup", "groups": [f"{z:.2f}" for z in targets],
            "series": list(series.items()), "line": 1.0, "xlabel": "fraction of zero activations"}
    return lines, plot


def delta_value(text):
    """'+0.12%' -> 0.12; '—' (the reference) -> 0.0."""
    return 0.0 if text == "—" else float(text.rstrip("%"))


def quality_table(transcribed):
    p = transcribed["perplexity"]
    lines = ["| weights | file bytes | perplexity, 41,735 tokens | Δ vs f32 | perplexity, 4,401 "
             "tokens | Δ vs bf16 |", "|---|---:|---:|---:|---:|---:|"]
    groups, full, short = [], [], []
    for r in p["rows"]:
        full_delta = r.get("full_delta", "same as f32" if "full" in r else "–")
        lines.append(f"| {r['weights']} | {r['file_bytes']} | {r.get('full', '–')} | "
                     f"{full_delta} | {r.get('short', '–')} | {r.get('short_delta', '–')} |")
        groups.append(r["weights"])
        full.append(delta_value(r["full_delta"]) if "full_delta" in r else
                    (0.0 if "full" in r else None))
        short.append(delta_value(r["short_delta"]) if "short_delta" in r else None)
    plot = {"title": "Perplexity cost of each weight type (demo model)",
            "ylabel": "Δ perplexity %", "groups": groups,
            "series": [("41,735 tokens, vs f32", full), ("4,401 tokens, vs bf16", short)],
            "line": None}
    return lines, plot


def kl_label(r):
    """A KL row's weights: ours by name, llama.cpp's file by its type; what it stores besides."""
    name = r["weights"] if r["engine"] == "zeroskip" else f"llama.cpp {r['weights']}"
    return f"{name} ({r['stores']})" if "stores" in r else name


def kl_table(section, title):
    """KL divergence from the f32 model, as zeroskip measures it (`perplexity --kl-divergence`):
    one row per file; the plot pairs each of our types with llama.cpp's file of that class."""
    lines = ["| weights | file bytes | perplexity | mean KLD ± SE | 99% KLD | same top % ± SE |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in section["rows"]:
        lines.append(f"| {kl_label(r)} | {r['file_bytes']} | {r['perplexity']} | "
                     f"{r['mean_kld']} ± {r['kld_se']} | {r['kld_99']} | "
                     f"{r['same_top']} ± {r['same_top_se']} |")
    for name in section.get("not_measured", []):
        lines.append(f"| {name} | not measured on this checkpoint | | | | |")
    ours = [r for r in section["rows"] if r["engine"] == "zeroskip" and r["weights"] != "f32"]
    peers = {r["ours"]: r for r in section["rows"] if r["engine"] == "llama.cpp"}
    plot = {"title": title, "ylabel": "mean KL divergence from f32",
            "groups": [r["weights"] + (f" / {peers[r['weights']]['weights']}"
                                       if r["weights"] in peers else "") for r in ours],
            "series": [("zeroskip", [float(r["mean_kld"]) for r in ours]),
                       ("llama.cpp's file, run by zeroskip",
                        [float(peers[r["weights"]]["mean_kld"]) if r["weights"] in peers else None
                         for r in ours])],
            "line": None}
    return lines, plot


def kl_row(section, engine, weights):
    return next(r for r in section["rows"] if (r["engine"], r["weights"]) == (engine, weights))


def q4k_against_q4km(section):
    """q4k's KL divergence and file size against llama.cpp's Q4_K_M, in words: ("10% lower",
    "10% smaller", q4k's row, Q4_K_M's row)."""
    ours, theirs = kl_row(section, "zeroskip", "q4k"), kl_row(section, "llama.cpp", "Q4_K_M")
    kld = 1 - float(ours["mean_kld"]) / float(theirs["mean_kld"])
    size = 1 - int(ours["file_bytes"].replace(",", "")) / int(theirs["file_bytes"].replace(",", ""))
    return (f"{abs(kld):.0%} {'lower' if kld > 0 else 'higher'}",
            f"{abs(size):.0%} {'smaller' if size > 0 else 'larger'}", ours, theirs)


# The page's blocks: name -> function(bench dir) -> (lines, plot or None).

def block_decode(bench):
    doc = load(bench, "peer_llamacpp_ttft.json")
    if doc is None:
        return pending("peer_llamacpp_ttft.json", [CMD_TTFT_RUN]), None
    others = [(n, d) for n in ("peer_llamacpp_prefill.json", "peer_llamacpp_long.json")
              if (d := load(bench, n)) is not None]
    lines, plot = decode_table(doc, others)
    return ([peer_source("peer_llamacpp_ttft.json", doc), "", *lines, "",
             f"Decode: {doc['n_decode']} tokens after a {doc['decode_prompt_tokens']}-token "
             "prompt, greedy; tok/s over the forward passes after the first. The last column: "
             "the same ratio in the runs of the next sections (`peer_llamacpp_long.json` decoded "
             "48 tokens). The checkpoint, llama.cpp, and the run:", "",
             *sh(SYNTH_PEER, CMD_TTFT_RUN)], plot)


def block_ttft(bench):
    doc = load(bench, "peer_llamacpp_prefill.json")
    if doc is None:
        return pending("peer_llamacpp_prefill.json", [CMD_PREFILL_RUN]), None
    lines, plot = ttft_table(doc)
    return ([peer_source("peer_llamacpp_prefill.json", doc), "", *lines, "",
             "The prompt's forward pass, to the first token's logits (llama-cli's \"prompt eval "
             "time\"); docs/BENCHMARKS.md names the llama.cpp build: the same as the other runs "
             "(c392e50). The run (it writes `docs/bench/peer_llamacpp.json` unless `OUT` says "
             "otherwise; this one was saved as `peer_llamacpp_prefill.json`):", "",
             *sh(CMD_PREFILL_RUN)], plot)


def block_long(bench):
    doc = load(bench, "peer_llamacpp_long.json")
    if doc is None:
        return pending("peer_llamacpp_long.json", [CMD_LONG_RUN, CMD_LONG]), None
    lines, plot = long_table(doc)
    return ([peer_source("peer_llamacpp_long.json", doc).replace(
                f"`{doc['checkpoint']}`", f"`{doc['checkpoint']}` (the same shape with context "
                "4096, f32 weights converted to each type)"), "", *lines, "",
             f"{doc['n_decode']} tokens decoded after a {doc['long_prompt']}-token prompt, f16 KV "
             "cache in both engines (llama.cpp's default). The checkpoint and the run:", "",
             *sh(CMD_LONG_RUN, CMD_LONG)], plot)


def block_memory(bench):
    doc = load(bench, "peer_llamacpp_ttft.json")
    if doc is None:
        return pending("peer_llamacpp_ttft.json", [CMD_TTFT_RUN]), None
    lines, plot = memory_table(doc, load(bench, "transcribed.json"))
    return ([f"File sizes: `docs/bench/peer_llamacpp_ttft.json` (the decode run above). Peak "
             "RSS: no run of this checkpoint recorded it (the peer script records every run's "
             "since; the 7B run will have it); the bf16 figure is `/usr/bin/time -v` of "
             "`zeroskip run` in another run (`docs/bench/transcribed.json`). Machine: "
             f"{machine(doc)}.", "", *lines], plot)


def block_server(bench):
    docs = {t: load(bench, f"serve_{t}.json") for t in ("f32", "bf16", "q8")}
    if not any(docs.values()):
        return pending("serve_f32.json", [CMD_SERVE]), None
    lines, plot = server_table(docs)
    some = next(d for d in docs.values() if d)
    return ([f"`docs/bench/serve_{{f32,bf16,q8}}.json`: the {PEER_0_74B} of the sections above, "
             f"`--parallel` = streams, {some['threads']} threads, each stream {some['tokens']} "
             f"tokens after an 11-token prompt, median of {some['rounds']} rounds; the clients "
             f"run on the same cores. Date and commit: not recorded. Machine: {AMD}.", "",
             *lines, "", *sh(CMD_SERVE)], plot)


def block_ffn(bench):
    docs = {(t, n): load(bench, f"ffn_7b_{t}_t{n}.json") for t in ("f32", "bf16") for n in (2, 1)}
    if not any(docs.values()):
        return pending("ffn_7b_f32_t2.json", [CMD_FFN]), None
    lines, plot = ffn_table(docs)
    return (["`docs/bench/ffn_7b_{f32,bf16}_t{1,2}.json`: one decode FFN step, hidden 4096, FFN "
             "11008 (Llama-2-7B), 3 layers cycled so the weights stream from memory; oneDNN's "
             "dense step over zeroskip's sparse step, measured in the same run. Date and commit: "
             f"not recorded. Machine: {INTEL}.", "", *lines, "", *sh(CMD_FFN)], plot)


def block_7b(bench):
    doc = load(bench, "peer_llamacpp_7b.json")
    if doc is None:
        return pending("peer_llamacpp_7b.json", [CMD_7B]), None
    decode, plot = decode_table(doc)
    tables = [decode, ttft_table(doc)[0], memory_table(doc, None)[0]]
    if doc.get("long_prompt"):  # a run without the long prompt has no long-context table
        tables.insert(2, long_table(doc)[0])
    out = [peer_source("peer_llamacpp_7b.json", doc), ""]
    for lines in tables:
        out += [*lines, ""]
    plot["title"] = "Llama-2-7B shape: decode after a 25-token prompt"
    return out + sh(CMD_7B), plot


def block_quality(bench):
    t = load(bench, "transcribed.json")
    if t is None:
        return pending("transcribed.json", [CMD_PPL_FULL, CMD_PPL_KQUANT]), None
    lines, plot = quality_table(t)
    p = t["perplexity"]
    return ([f"`{p['model']}` (4 M parameters, 95.2% FFN zeros), `zeroskip perplexity` over "
             f"{p['full_text']}; and over {p['short_text']}. From {p['source']}, copied into "
             f"`docs/bench/transcribed.json`. Machine: {AMD}.", "",
             *lines, "", "q4k's row is the KL divergence table's (its run above); the commands "
             "below convert with today's recipe too:", "",
             *sh(CMD_PPL_FULL, CMD_PPL_KQUANT)], plot)


def block_kld(bench):
    t = load(bench, "transcribed.json")
    if t is None:
        return pending("transcribed.json", [CMD_KLD, CMD_KLD_AS_MADE]), None
    k = t["kl_divergence"]
    lines, plot = kl_table(k, "KL divergence from f32, demo model under ReLU")
    kld, size, ours, theirs = q4k_against_q4km(k)
    return ([f"`{k['model']}` (4 M parameters) under ReLU, the activation it was trained with: "
             "`zeroskip perplexity --kl-divergence` against the f32 model's next-token "
             f"distributions (`--kl-base`), over {k['text']}. From {k['source']}; copied into "
             "`docs/bench/transcribed.json`. KLD: KL(f32 ‖ model) per position, in nats; 99%: its "
             "99th percentile; same top: both models' most likely token agree. llama.cpp's rows "
             "are llama-quantize's files of the bf16 GGUF, converted by zeroskip with their "
             "blocks kept and run by it; file bytes are the .zsk's. llama.cpp's Q6_K and Q4_K_M "
             "and q4k were measured on main 3fb8488 or later, whose quantized dot products sum "
             "in another order than the other rows' build (it moved a q4k perplexity in the "
             "fourth decimal). The numbers are deterministic: the machine's load does not move "
             f"them. Machine: {AMD}.", "", *lines, "",
             f"**q4k has {kld} KL divergence than llama.cpp's Q4_K_M ({ours['mean_kld']} ± "
             f"{ours['kld_se']} against {theirs['mean_kld']} ± {theirs['kld_se']}) in a {size} "
             f"file ({ours['file_bytes']} bytes against "
             f"{theirs['file_bytes']})**, on this model. Q4_K_M's file is the larger here because "
             "llama.cpp cannot give `ffn_down` a K-quant (its rows of 704 are not whole blocks "
             "of 256) and falls back to Q5_0, which zeroskip stores exactly as q8 (llama.cpp's "
             f"own Q4_K_M GGUF is {theirs['gguf_bytes']} bytes). q4k's recipe (q6k `attn_v` and "
             "`ffn_down` in the first eighth of the layers, q6k `attn_v` in llama.cpp's more-bits "
             "layers) was chosen by this measure on this model and this text "
             "(docs/BENCHMARKS.md, \"q4k's recipe\"): one small model decided it. The first "
             "run below measures our types and llama.cpp's Q4_0 (the `--dtype q6k` conversion of "
             "llama.cpp's Q6_K it also runs is not on this page); the second, llama.cpp's Q6_K "
             "and Q4_K_M as made and today's q4k:",
             "", *sh(CMD_KLD), "", *sh(CMD_KLD_AS_MADE)], plot)


def block_kld_synth(bench):
    t = load(bench, "transcribed.json")
    if t is None:
        return pending("transcribed.json", [CMD_KLD_SYNTH]), None
    k = t["kl_divergence_synth"]
    lines, plot = kl_table(k, "KL divergence from f32, synthetic 0.7b shape (q4k: earlier recipe)")
    return ([f"{k['model']}; not the checkpoint of the speed tables above. Over {k['text']}. From "
             f"{k['source']}; copied into `docs/bench/transcribed.json`. A random model's "
             "distributions are nearly flat (its perplexity is above its vocabulary), so the "
             "absolute numbers say little about a trained model: the ranking and the ratios "
             "between types are what carry over. **Its q4k row is an earlier recipe**, measured "
             "before q4k gave any layer's tensors q6k; today's `--dtype q4k` (the demo model's "
             "row above) was not measured on this checkpoint, and neither was llama.cpp's "
             "Q4_K_M. llama.cpp's files: its converter at f16, then llama-quantize, converted by "
             f"zeroskip with `--act relu` and run by it. Machine: {AMD}.", "", *lines, "",
             *sh(CMD_KLD_SYNTH)], plot)


def pending(name, commands):
    return [f"**Not measured yet** (no `docs/bench/{name}`). The command that measures it:", "",
            *sh(*commands)]


BLOCKS = {"decode": block_decode, "ttft": block_ttft, "long": block_long, "memory": block_memory,
          "server": block_server, "7b": block_7b, "ffn_7b": block_ffn, "kld": block_kld,
          "kld_synth": block_kld_synth, "quality": block_quality}


def render_block(name, bench, plots_dir, page_dir):
    """The block's markdown: its table and command, the plot's command, and the plot when drawn."""
    lines, plot = BLOCKS[name](bench)
    if plot is not None:
        png = os.path.join(plots_dir, name + ".png")
        lines += ["", f"Redraw the plot: `{PLOT_COMMAND.format(name=name)}`"]
        if os.path.exists(png):
            lines += ["", f"![{plot['title']}]({os.path.relpath(png, page_dir)})"]
        else:
            lines += ["(not drawn yet: it needs python3-matplotlib, "
                      "`.ci/install-deps --python-ml`)"]
    return "\n".join(lines)


def sparse_ratios(doc, key):
    """(our type, sparse vs llama.cpp) for every type the run measured `key` of."""
    by = by_engine(doc)
    return [(o, ratio(by[("zeroskip sparse", o)][key], by[("llama.cpp", t)][key]))
            for t, o in TYPES if measured(by.get(("zeroskip sparse", o))) and
            key in by[("zeroskip sparse", o)] and measured(by.get(("llama.cpp", t)))]


def summary(bench):
    """The page's opening lines, every number from the same sources as the tables."""
    out = []
    doc, long, pre = (load(bench, n) for n in ("peer_llamacpp_ttft.json",
                                               "peer_llamacpp_long.json",
                                               "peer_llamacpp_prefill.json"))
    listed = lambda pairs: ", ".join(f"{x} ({o})" for o, x in pairs)  # noqa: E731
    if doc:
        r = sparse_ratios(doc, "decode_tok_s")
        best = max(r, key=lambda x: float(x[1][:-1]))
        line = (f"- **Decode**: on a 0.74 B Llama with 90% FFN zeros, sparse decode runs at "
                f"{listed(r)} of llama.cpp's speed at the same weight type; the largest gain is "
                f"{best[0]} ({best[1]}).")
        if long:
            line += (f" After a {long['long_prompt']:,}-token prompt: "
                     f"{listed(sparse_ratios(long, 'long_decode_tok_s'))}.")
        out.append(line)
    if pre:
        by = by_engine(pre)
        cells = [(o, n, by[("llama.cpp", t)]["ttft_s"][n] / by[("zeroskip sparse", o)]["ttft_s"][n])
                 for t, o in TYPES if measured(by.get(("zeroskip sparse", o)))
                 for n in ("16", "64", "256")]
        slower = [f"{o} at {n} tokens ({x:.2f}x)" for o, n, x in cells if round(x, 2) < 1]
        out.append("- **Time to first token** (16, 64, 256-token prompts): "
                   f"{len(cells) - len(slower)} of {len(cells)} at or below llama.cpp's time" +
                   (f"; behind: {', '.join(slower)}." if slower else "."))
    t = load(bench, "transcribed.json")
    if t:
        rows = {r["weights"]: r for r in t["perplexity"]["rows"]}
        kld, size, ours, theirs = q4k_against_q4km(t["kl_divergence"])
        out.append(f"- **What quantizing costs** (perplexity of the 4 M-parameter demo model; "
                   f"expect more on real models): q8 {rows['q8']['full_delta']}, q4 "
                   f"{rows['q4']['full_delta']} against f32; on another text q4k "
                   f"{rows['q4k']['short_delta']}, q4 {rows['q4']['short_delta']} against bf16. "
                   f"On that text, under ReLU, q4k's KL divergence from f32 is {kld} than "
                   f"llama.cpp's Q4_K_M's in a {size} file ({ours['mean_kld']} against "
                   f"{theirs['mean_kld']}; {ours['file_bytes']} against {theirs['file_bytes']} "
                   "bytes).")
    big = load(bench, "peer_llamacpp_7b.json")
    if big:
        by = by_engine(big)
        ttft = [by[("llama.cpp", t)]["ttft_s"][n] / by[("zeroskip sparse", o)]["ttft_s"][n]
                for t, o in TYPES if measured(by.get(("zeroskip sparse", o)))
                and measured(by.get(("llama.cpp", t))) for n in by[("llama.cpp", t)]["ttft_s"]]
        out.append(f"- **At Llama-2-7B's shape** (6.74 B parameters, 90% FFN zeros): sparse decode "
                   f"at {listed(sparse_ratios(big, 'decode_tok_s'))} of llama.cpp's speed; the "
                   f"4-bit kernels, not memory, bound q4 and q4k there. Time to first token "
                   f"({' and '.join(str(n) for n in big['prefill_lengths'])}-token prompts): "
                   f"{sum(round(x, 2) >= 1 for x in ttft)} of {len(ttft)} at or below llama.cpp's "
                   f"time ({min(ttft):.2f}x–{max(ttft):.2f}x its speed).")
    ffn = load(bench, "ffn_7b_f32_t2.json")
    ffn_bf16 = load(bench, "ffn_7b_bf16_t2.json")
    if ffn and ffn_bf16:
        at = lambda d: next(x["speedup"] for x in d["results"] if x["sparsity"] == 0.9)  # noqa
        out.append(("- **The FFN step alone at 7B shape**" if big else
                    "- **At 7B shape** only the FFN step is measured") +
                   f" (on the Intel Cascade Lake VM): {at(ffn):.2f}x oneDNN's dense step in f32, "
                   f"{at(ffn_bf16):.2f}x in bf16, at 90% zeros (2 threads).")
    missing = (["decode after a long prompt and 256-token prompts at 7B",
                "quality (KL divergence) at 7B"] if big else
               ["the Llama-2-7B side by side with llama.cpp (its command is below)",
                "q4k against Q4_K_M for speed (their quality is measured: below)",
                "peak memory of both engines in one run"])
    out.append("- **Not measured yet**: " + "; ".join(missing) + ".")
    return "\n".join(out)


BEGIN = "<!-- results: {} -->"
END = "<!-- end results: {} -->"


def update_page(text, bench, plots_dir, page_dir):
    """The page with every block between its markers rewritten; the rest is kept as it is."""
    def fill(m):
        name = m.group(1)
        body = summary(bench) if name == "summary" else render_block(name, bench, plots_dir,
                                                                        page_dir)
        return f"{BEGIN.format(name)}\n{body}\n{END.format(name)}"
    pattern = re.compile(r"<!-- results: (\S+) -->\n.*?<!-- end results: \1 -->", re.S)
    names = [m.group(1) for m in pattern.finditer(text)]
    unknown = sorted(set(names) - set(BLOCKS) - {"summary"})
    if unknown:
        raise ValueError(f"unknown block(s) in the page: {', '.join(unknown)}")
    return pattern.sub(fill, text)


def plots(bench, names):
    """name -> the plot's data, for every block that has a plot."""
    out = {}
    for name in names:
        _, plot = BLOCKS[name](bench)
        if plot is not None and plot["groups"]:
            out[name] = plot
    return out


def draw(plot, path):
    """One bar chart as a small PNG; no timestamp or version in its metadata, so the same data
    gives the same bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups, series = plot["groups"], plot["series"]
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for i, (label, values) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar([x for x, v in zip(xs, values) if v is not None],
               [v for v in values if v is not None], width, label=label)
    if plot.get("line") is not None:
        ax.axhline(plot["line"], color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(plot["ylabel"])
    if plot.get("xlabel"):
        ax.set_xlabel(plot["xlabel"])
    ax.set_title(plot["title"], fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", nargs="?", default="all",
                    choices=["all", "tables", "plots", "check", "show"])
    ap.add_argument("name", nargs="?", help="show: the block to print")
    ap.add_argument("--bench", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--page", default=os.path.join(ROOT, "docs", "RESULTS.md"))
    ap.add_argument("--plots", default=os.path.join(ROOT, "docs", "results"))
    ap.add_argument("--only", default="", help="plots: comma-separated block names")
    args = ap.parse_args(argv)
    page_dir = os.path.dirname(os.path.abspath(args.page))
    if args.command == "show":
        if args.name not in BLOCKS and args.name != "summary":
            ap.error(f"show: NAME must be one of summary, {', '.join(BLOCKS)}")
        print(summary(args.bench) if args.name == "summary" else
              render_block(args.name, args.bench, args.plots, page_dir))
        return 0
    status = 0
    if args.command in ("all", "plots"):  # before the tables: the page links the plots drawn
        names = [n for n in args.only.split(",") if n] or list(BLOCKS)
        unknown = sorted(set(names) - set(BLOCKS))
        if unknown:
            ap.error(f"--only: {', '.join(unknown)} not in {{{','.join(BLOCKS)}}}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("results_page.py: error: plots need matplotlib (python3-matplotlib: "
                  ".ci/install-deps --python-ml); none drawn", file=sys.stderr)
            if args.command == "plots":
                return 1
            status = 1
        else:
            os.makedirs(args.plots, exist_ok=True)
            for name, plot in plots(args.bench, names).items():
                draw(plot, os.path.join(args.plots, name + ".png"))
                print(f"wrote {os.path.relpath(os.path.join(args.plots, name + '.png'))}")
    if args.command in ("all", "tables", "check"):
        with open(args.page, encoding="utf-8") as f:
            old = f.read()
        new = update_page(old, args.bench, args.plots, page_dir)
        if args.command == "check":
            if new != old:
                print(f"{os.path.relpath(args.page)} is out of date: run "
                      "benchmarks/results_page.py tables")
                return 1
            print(f"{os.path.relpath(args.page)} is up to date")
            return 0
        if new != old:
            with open(args.page + ".tmp", "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(args.page + ".tmp", args.page)
        print(f"wrote {os.path.relpath(args.page)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
