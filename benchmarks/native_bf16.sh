#!/bin/bash
# Native bf16 (docs/BENCHMARKS.md, "Native bf16"): every A/B interleaved, one line per run.
#   native_bf16.sh ffn      bench ffn (Llama-2-7B FFN shape, bf16), --isa avx512 vs avx512bf16,
#                           2 threads, then 1. Prints: isa threads sparsity sparse_ms
#                           own_dense_ms onednn_ms
#   native_bf16.sh decode   bench decode on $MODEL, --isa avx512 vs avx512bf16. Prints: isa
#                           sparse_tok_s dense_tok_s ffn_zero_fraction
#   native_bf16.sh prefill  time to first token and peak RSS on $MODEL: $BASE_BIN (a build of the
#                           commit before this work) vs $BIN vs $BIN --isa avx512, and the
#                           small-batch crossover (ZEROSKIP_SMALL_BATCH=64 vs 1). Prints: config
#                           prompt_tokens prefill_s max_rss_mib
# Needs a machine with AVX512_BF16. MODEL defaults to $SYNTH_DIR/mid-bf16.zsk, TOKENIZER to the
# tokenizer.model of its checkpoint (docs/BENCHMARKS.md, "Prefill", makes both). Set LOCK to a
# lock file to run each command under flock.
set -euo pipefail
BIN=${BIN:-build/zeroskip}
BASE_BIN=${BASE_BIN:-}
SYNTH_DIR=${SYNTH_DIR:-../synth}
MODEL=${MODEL:-$SYNTH_DIR/mid-bf16.zsk}
REPS=${REPS:-5}
NS=${NS:-4 6 8 16 64 256}  # prefill: prompt lengths in tokens (6 and 8: the crossover only)
run() { if [ -n "${LOCK:-}" ]; then flock "$LOCK" "$@"; else "$@"; fi; }

# A prompt of exactly $1 tokens (BOS included) for the checkpoint's tokenizer: words of one
# sentence, padded with " a" (sentencepiece from Debian's python3-sentencepiece).
prompt() {
  /usr/bin/python3 - "$1" "${TOKENIZER:-$SYNTH_DIR/mid-bf16/tokenizer.model}" <<'PY'
import sys
import sentencepiece as spm
n, sp = int(sys.argv[1]) - 1, spm.SentencePieceProcessor(model_file=sys.argv[2])
text = ""
for w in ("the king of rome and all his men came to the city " * 60).split():
    if len(sp.encode((text + " " + w).strip())) > n:
        break
    text = (text + " " + w).strip()
while len(sp.encode(text)) < n:
    text += " a"
print(text, end="")
PY
}

case ${1:-} in
  ffn)
    for threads in 2 1; do
      for rep in $(seq "$REPS"); do
        for isa in avx512 avx512bf16; do
          run "$BIN" bench ffn --dtype bf16 --isa $isa --sparsity 0,0.5,0.9,0.95 -t $threads --json \
              2>/dev/null | python3 -c "import json,sys; j=json.load(sys.stdin); [print('$isa', $threads, r['sparsity'], r['sparse_ms'], r['own_dense_ms'], r['dense_ms']) for r in j['results']]"
        done
      done
    done;;
  decode)
    for rep in $(seq "$REPS"); do
      for isa in avx512 avx512bf16; do
        run "$BIN" bench decode -m "$MODEL" -n 64 -t 2 --isa $isa --json 2>/dev/null |
          python3 -c "import json,sys; j=json.load(sys.stdin); print('$isa', j['sparse_tok_s'], j['dense_tok_s'], j['ffn_zero_fraction'])"
      done
    done;;
  prefill)
    [ -n "$BASE_BIN" ] || { echo "set BASE_BIN to the zeroskip binary to compare with" >&2; exit 2; }
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    for n in $NS; do prompt $n > "$dir/p$n.txt"; done
    for rep in $(seq "$REPS"); do
      for n in $NS; do
        case $n in 6|8) cfgs="sb64 sb1";; *) cfgs="base new new-avx512";; esac
        for cfg in $cfgs; do
          env=(); cmd=("$BIN" run)
          case $cfg in
            base) cmd=("$BASE_BIN" run);;
            new-avx512) cmd=("$BIN" run --isa avx512);;
            sb64) env=(ZEROSKIP_SMALL_BATCH=64);;
            sb1) env=(ZEROSKIP_SMALL_BATCH=1);;
          esac
          out=$(run env "${env[@]}" /usr/bin/time -v "${cmd[@]}" -m "$MODEL" -f "$dir/p$n.txt" -n 1 \
                --no-echo -t 2 --json 2>"$dir/time")
          rss=$(awk '/Maximum resident/ {print int($NF / 1024)}' "$dir/time")
          echo "$cfg $(echo "$out" | python3 -c "import json,sys; j=json.load(sys.stdin); n=len(j['prompt_tokens']); print(n, round(n / j['prefill_tok_s'], 4))") $rss"
        done
      done
    done;;
  *) sed -n '2,14p' "$0"; exit 2;;
esac
