#!/bin/bash
# Shadow gate (docs/BENCHMARKS.md, "Shadow gate"): every A/B interleaved, one line per run.
#   shadow_gate.sh ffn      bench ffn --shadow (Llama-2-7B FFN shape, 90% zeros, 2 threads) at
#                           f32 and bf16, $REPS rounds. Prints: dtype onednn_ms sparse_ms
#                           shadow_ms own_dense_ms certified_fraction
#   shadow_gate.sh decode   bench decode on $MODEL (a .zsk with shadow gates), --gate shadow then
#                           --gate dense, $REPS rounds. Prints: gate sparse_tok_s dense_tok_s
#                           certified_fraction (dense_tok_s: the dense FFN, in the same run)
# Set LOCK to a lock file to run each command under flock.
set -euo pipefail
BIN=${BIN:-build/zeroskip}
REPS=${REPS:-5}
run() { if [ -n "${LOCK:-}" ]; then flock "$LOCK" "$@"; else "$@"; fi; }
field() { /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

case "${1:-}" in
  ffn)
    for _ in $(seq "$REPS"); do
      for dtype in f32 bf16; do
        run "$BIN" bench ffn --sparsity 0.9 --shadow --dtype "$dtype" -t 2 --json 2>/dev/null |
          field "'$dtype', *[round(j['results'][0][k], 4) for k in ('dense_ms', 'sparse_ms', 'shadow_ms', 'own_dense_ms', 'certified_fraction')]"
      done
    done
    ;;
  decode)
    for _ in $(seq "$REPS"); do
      for gate in shadow dense; do
        run "$BIN" bench decode -m "$MODEL" -n "${N:-64}" -t 2 --gate "$gate" --json 2>/dev/null |
          field "'$gate', round(j['sparse_tok_s'], 3), round(j['dense_tok_s'], 3), round(j['ctx_fill'][0]['gate_certified_fraction'], 4)"
      done
    done
    ;;
  *)
    echo "usage: $0 ffn|decode" >&2
    exit 2
    ;;
esac
