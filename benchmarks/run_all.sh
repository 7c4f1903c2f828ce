#!/usr/bin/env bash
# Reproduces every number in docs/BENCHMARKS.md. Run on an otherwise idle machine from the
# repository root after building (cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build).
# Needs the synthetic 0.7 B checkpoint (about 3 GB, one minute), in SYNTH (default: ../synth/
# 0.7b-f32-s85, beside the checkout):
#   /usr/bin/python3 tools/synth/synth.py ../synth/0.7b-f32-s85 --shape 0.7b --dtype F32 --sparsity 0.85
# Writes JSON and PNG into docs/bench/. The llama.cpp comparison at the end runs only with
# LLAMA_CPP_DIR set (see benchmarks/peer_llamacpp.sh).
set -euo pipefail
Z=build/zeroskip
SYNTH=${SYNTH:-../synth/0.7b-f32-s85}
OUT=docs/bench
mkdir -p "$OUT"

for t in 1 2; do $Z bench bandwidth -t $t; done | tee "$OUT/bandwidth.txt"

# FFN decode step, Llama-2-7B shape, sparse vs oneDNN dense in the same run.
for dtype in f32 bf16; do
  for t in 2 1; do
    $Z bench ffn --d 4096 --f 11008 --dtype $dtype -t $t --json \
      --plot "$OUT/ffn_7b_${dtype}_t${t}.png" > "$OUT/ffn_7b_${dtype}_t${t}.json"
  done
done

# Convert peak memory on a >= 1 GB checkpoint (2.9 GB, 22 layers, sharded or not).
/usr/bin/time -v $Z convert "$SYNTH" -o /tmp/zeroskip-bench.zsk 2> "$OUT/convert_time.txt"
grep -E "Maximum resident|Elapsed" "$OUT/convert_time.txt"

# End-to-end decode, sparse and dense FFN in the same run, 2 threads.
$Z bench decode -m /tmp/zeroskip-bench.zsk -n 64 --ctx 256 -t 2 --json | tee "$OUT/decode_0.7b_t2.json"
$Z bench decode -m /tmp/zeroskip-bench.zsk -n 64 --ctx 256 -t 1 --json | tee "$OUT/decode_0.7b_t1.json"
rm -f /tmp/zeroskip-bench.zsk

# Threads on shared cores: -t 2 against -t 1 beside two busy processes (about 3 minutes). Needs
# tiny-shakespeare (its last 10% is held out), in TINYSHAKESPEARE (default: ../shared/data/).
TINYSHAKESPEARE=${TINYSHAKESPEARE:-../shared/data/tinyshakespeare.txt}
/usr/bin/python3 benchmarks/contention.py --zeroskip $Z --text "$TINYSHAKESPEARE" | tee "$OUT/contention.txt"

# Kernel suite (Google Benchmark): every kernel vs oneDNN and Eigen dense baselines.
build/zeroskip_kernel_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out="$OUT/kernels.json" --benchmark_out_format=json

# Peer: llama.cpp at f32, bf16, q8_0, q4_0, Q4_K_M against zeroskip (docs/BENCHMARKS.md, "Peer:
# llama.cpp"). Optional: runs only when LLAMA_CPP_DIR names a llama.cpp source tree you fetched
# (not a dependency; the script prints "skipped" otherwise). PEER_HF is the checkpoint it converts
# (default: the 0.74 B one that section makes with tools/synth, beside the checkout).
PEER_HF=${PEER_HF:-../synth/peer-0.74b-bf16-s90}
OUT="$OUT/peer_llamacpp.json" benchmarks/peer_llamacpp.sh "$PEER_HF"
