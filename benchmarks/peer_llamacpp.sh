#!/usr/bin/env bash
# zeroskip against llama.cpp on one checkpoint, at every weight type both have (docs/BENCHMARKS.md,
# "Peer: llama.cpp"). Run from the repository root after building zeroskip (Release):
#
#   LLAMA_CPP_DIR=path/to/llama.cpp benchmarks/peer_llamacpp.sh HF_DIR [LLAMA_CPP_DIR]
#   SHAPE=7b LLAMA_CPP_DIR=path/to/llama.cpp benchmarks/peer_llamacpp.sh [HF_DIR]
#
# HF_DIR: a Hugging Face Llama-layout checkpoint (config.json, model.safetensors, tokenizer.model),
# e.g. one made by tools/synth. LLAMA_CPP_DIR: a llama.cpp source tree you fetched yourself; it is
# not a dependency of zeroskip, and without it this script says so and exits 0.
#
# 1. Builds llama.cpp once (Release, CPU only, -DGGML_NATIVE=ON, no CURL) into LLAMA_BUILD_DIR.
# 2. Converts HF_DIR with llama.cpp's convert_hf_to_gguf.py at f32 and bf16; if that converter
#    cannot run here (it needs torch >= 2.1 and the safetensors package), with llama.cpp's
#    examples/convert_legacy_llama.py (numpy + sentencepiece) at f32 and llama-quantize to bf16.
#    Both import sentencepiece only to read tokenizer.model: without python3-sentencepiece,
#    benchmarks/spm_standin (tools/pylib/spm_model.py) stands in, and the JSON says so.
#    llama-quantize makes q8_0, q4_0 and Q4_K_M from the f32 file (its default mixes: q4_0 keeps
#    output.weight in q6_K; Q4_K_M is its own mix of q4_K and q6_K).
# 3. Converts HF_DIR with zeroskip at f32, bf16, q8, q4 and q4k; a dtype `zeroskip convert`
#    refuses is reported "not available" (its row fills in once convert has the dtype).
# 4. Runs benchmarks/peer_llamacpp.py: per repeat and weight type, llama.cpp, zeroskip sparse and
#    zeroskip dense alternate; decode tok/s after a ~25-token prompt (96 tokens generated),
#    prefill tok/s and time to first token of each PREFILL_PROMPT length, decode after LONG_PROMPT
#    tokens, and each process's peak RSS (its own rusage), THREADS threads; medians over REPEATS.
# 5. Writes OUT (JSON) and prints the Markdown tables (speed, time to first token, long context,
#    memory).
#
# SHAPE=tiny|0.7b|7b: the checkpoint is tools/synth/synth.py's shape, bf16, 90% zeros, made in
# HF_DIR (default $WORK_DIR/synth/SHAPE-bf16-s90) unless it is already there (reused). It runs
# without f32 (at 7B an f32 file is 27 GB): llama.cpp's bf16 GGUF straight from
# convert_hf_to_gguf.py, or from the legacy converter at f16 (exact for bf16 values within f16's
# range) and llama-quantize; types bf16, q8_0/q8, q4_0/q4 and Q4_K_M/q4k. One type at a time:
# convert both engines' files, run REPEATS interleaved repeats, delete that type's files (the bf16
# GGUF, which llama-quantize reads, last), print the disk use; the parts are merged into OUT.
# PREFILL_PROMPT defaults to 16,64,256 and LONG_PROMPT to 2048 here. Disk at 7B: the 13.5 GB
# checkpoint plus at most ~28 GB of converted files at once (docs/BENCHMARKS.md).
#
# Environment (defaults in brackets):
#   LLAMA_CPP_DIR     llama.cpp source tree (or the second argument)            [none: skip]
#   LLAMA_BUILD_DIR   where llama.cpp is built; reused when its binaries exist  [$WORK_DIR/llama-build]
#   LLAMA_CPP_COMMIT  the commit to record when the tree is not a git checkout  [git rev-parse]
#   WORK_DIR          converted models (about 6x the bf16 checkpoint's size)    [/tmp/zeroskip-peer]
#   SHAPE             tiny|0.7b|7b: synthesize (or reuse) that checkpoint, see above  [none]
#   TYPES             llama.cpp types to run        [f32 bf16 q8_0 q4_0 Q4_K_M; SHAPE: no f32]
#   KEEP_MODELS       with SHAPE: 1 keeps each type's converted files (for a rerun)   [0]
#   SYNTH_ARGS        with SHAPE: more synth.py options, e.g. its calibration's
#                     "--calib-seqs 2 --calib-len 64 --no-check" (7b: ~20 min, not ~80)  [none]
#   ZEROSKIP          the zeroskip binary                                       [build/zeroskip]
#   OUT               results JSON                                              [docs/bench/peer_llamacpp.json]
#   REPEATS [3]  THREADS [2]  N_DECODE [96]  DECODE_PROMPT [25]
#   PREFILL_PROMPT    comma-separated prefill prompt lengths  [3,16,64,256; SHAPE: 16,64,256]
#   LONG_PROMPT       also decode after a prompt this long, f16 KV cache (0: skip)
#                                                                           [0; SHAPE: 2048]
#   BENCH_LOCK        if set, the build and every convert run under `flock $BENCH_LOCK`, and the
#                     timed runs hold it one repeat at a time (for machines shared with other jobs
#                     that take the same lock: they run between repeats, never inside one)
#   PYTHON            [/usr/bin/python3]
set -euo pipefail

HF_DIR=${1:-}
LLAMA_CPP_DIR=${2:-${LLAMA_CPP_DIR:-}}
SHAPE=${SHAPE:-}
SYNTH_ARGS=${SYNTH_ARGS:-}
WORK_DIR=${WORK_DIR:-/tmp/zeroskip-peer}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
if [[ -z "$LLAMA_CPP_DIR" || ! -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]]; then
  echo "peer_llamacpp: skipped: no llama.cpp source tree (give its path as the second argument" \
       "or in LLAMA_CPP_DIR; llama.cpp is not a dependency of zeroskip)"
  exit 0
fi
say() { echo "peer_llamacpp: $*" >&2; }
disk() {
  say "disk: $(du -sh "$WORK_DIR" | cut -f1) in $WORK_DIR," \
      "$(df -h --output=avail "$WORK_DIR" | tail -1 | tr -d ' ') free"
}

# SHAPE: the synthetic checkpoint, made once (synth_info.json is written last: its presence means
# a complete checkpoint) and reused.
if [[ -n "$SHAPE" ]]; then
  HF_DIR=${HF_DIR:-$WORK_DIR/synth/$SHAPE-bf16-s90}
  mkdir -p "$WORK_DIR"
  if [[ -f "$HF_DIR/synth_info.json" ]]; then
    made=$("$PYTHON" -c 'import json, sys; i = json.load(open(sys.argv[1]))
print(i["shape"], i["dtype"], i["sparsity_target"])' "$HF_DIR/synth_info.json")
    [[ "$made" == "$SHAPE BF16 0.9" ]] \
      || { say "$HF_DIR holds another checkpoint ($made), not $SHAPE BF16 0.9"; exit 2; }
    say "reusing the $SHAPE checkpoint in $HF_DIR"
  else
    say "synthesizing the $SHAPE checkpoint (bf16, 90% zeros) into $HF_DIR (log: $HF_DIR.log)"
    mkdir -p "$(dirname "$HF_DIR")"
    # shellcheck disable=SC2086  # SYNTH_ARGS is a list of options
    "$PYTHON" "$HERE/../tools/synth/synth.py" "$HF_DIR" --shape "$SHAPE" --dtype BF16 \
        --sparsity 0.9 $SYNTH_ARGS > "$HF_DIR.log" 2>&1 \
      || { say "synth.py failed: $HF_DIR.log"; exit 1; }
  fi
  disk
fi
if [[ -z "$HF_DIR" || ! -f "$HF_DIR/config.json" || ! -f "$HF_DIR/tokenizer.model" ]]; then
  echo "usage: benchmarks/peer_llamacpp.sh HF_DIR [LLAMA_CPP_DIR]  (HF_DIR needs config.json," \
       "*.safetensors and tokenizer.model; or SHAPE=tiny|0.7b|7b)" >&2
  exit 2
fi

LLAMA_BUILD_DIR=${LLAMA_BUILD_DIR:-$WORK_DIR/llama-build}
ZEROSKIP=${ZEROSKIP:-build/zeroskip}
OUT=${OUT:-docs/bench/peer_llamacpp.json}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-2}
N_DECODE=${N_DECODE:-96}
DECODE_PROMPT=${DECODE_PROMPT:-25}
if [[ -n "$SHAPE" ]]; then
  TYPES=${TYPES:-bf16 q8_0 q4_0 Q4_K_M}
  PREFILL_PROMPT=${PREFILL_PROMPT:-16,64,256}
  LONG_PROMPT=${LONG_PROMPT:-2048}
else
  TYPES=${TYPES:-f32 bf16 q8_0 q4_0 Q4_K_M}
  PREFILL_PROMPT=${PREFILL_PROMPT:-3,16,64,256}
  LONG_PROMPT=${LONG_PROMPT:-0}
fi
KEEP_MODELS=${KEEP_MODELS:-0}
BENCH_LOCK=${BENCH_LOCK:-}
LLAMA_CPP_DIR=$(cd "$LLAMA_CPP_DIR" && pwd)
HF_DIR=$(cd "$HF_DIR" && pwd)
MODELS=$WORK_DIR/models/$(basename "$HF_DIR")
BIN=$LLAMA_BUILD_DIR/bin
mkdir -p "$MODELS" "$(dirname "$OUT")"

locked() { if [[ -n "$BENCH_LOCK" ]]; then flock "$BENCH_LOCK" "$@"; else "$@"; fi; }
ours() { case $1 in q8_0) echo q8 ;; q4_0) echo q4 ;; Q4_K_M) echo q4k ;; *) echo "$1" ;; esac; }

[[ -x "$ZEROSKIP" ]] || { say "no zeroskip binary at $ZEROSKIP (build it first, Release)"; exit 2; }

# 1. llama.cpp, built once.
if [[ -x "$BIN/llama-cli" && -x "$BIN/llama-quantize" ]]; then
  say "reusing the llama.cpp build in $LLAMA_BUILD_DIR"
else
  say "building llama.cpp into $LLAMA_BUILD_DIR (log: $LLAMA_BUILD_DIR.log)"
  locked sh -c "cmake -S '$LLAMA_CPP_DIR' -B '$LLAMA_BUILD_DIR' -DCMAKE_BUILD_TYPE=Release \
      -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF && \
      cmake --build '$LLAMA_BUILD_DIR' -j '$THREADS' --target llama-cli llama-quantize" \
      > "$LLAMA_BUILD_DIR.log" 2>&1 || { say "llama.cpp build failed: $LLAMA_BUILD_DIR.log"; exit 1; }
fi
LLAMA_COMMIT=${LLAMA_CPP_COMMIT:-$(git -C "$LLAMA_CPP_DIR" rev-parse HEAD 2>/dev/null || echo unknown)}

# 2. llama.cpp's own conversion. Each output is written as .tmp and renamed; existing files reused.
# Without python3-sentencepiece (both converters import it for the vocabulary),
# benchmarks/spm_standin stands in for it: the same pieces, scores and types.
export PYTHONPATH="$LLAMA_CPP_DIR/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
STANDIN=""
if ! "$PYTHON" -c 'import sentencepiece' 2>/dev/null; then
  PYTHONPATH="$HERE/spm_standin:$PYTHONPATH"
  STANDIN="no python3-sentencepiece: benchmarks/spm_standin read tokenizer.model"
fi
gguf() { echo "$MODELS/llama-$1.gguf"; }
hf_convert() {  # $1 = outtype
  locked "$PYTHON" "$LLAMA_CPP_DIR/convert_hf_to_gguf.py" "$HF_DIR" --outtype "$1" \
      --outfile "$(gguf "$1").tmp" > "$MODELS/convert-$1.log" 2>&1 \
    && mv "$(gguf "$1").tmp" "$(gguf "$1")" || { rm -f "$(gguf "$1").tmp"; false; }
}
legacy_convert() {  # $1 = outtype (f32 or f16)
  locked "$PYTHON" "$LLAMA_CPP_DIR/examples/convert_legacy_llama.py" "$HF_DIR" --outtype "$1" \
      --pad-vocab --outfile "$(gguf "$1").tmp" > "$MODELS/convert-$1-legacy.log" 2>&1 \
    && mv "$(gguf "$1").tmp" "$(gguf "$1")" || {
      rm -f "$(gguf "$1").tmp"
      say "convert_legacy_llama.py failed too: $MODELS/convert-$1-legacy.log"
      exit 1
    }
}
quantize() {  # $1 = type, $2 = the type of the file it is made from
  locked "$BIN/llama-quantize" "$(gguf "$2")" "$(gguf "$1").tmp" "$1" > "$MODELS/quantize-$1.log" 2>&1 \
    && mv "$(gguf "$1").tmp" "$(gguf "$1")" || { rm -f "$(gguf "$1").tmp"; false; }
}
# The source of every other llama.cpp type ($1: f32, or bf16 with SHAPE) by the first converter
# that runs here; llama-converter.txt records which, and why the other did not.
first_convert() {
  [[ -f "$(gguf "$1")" ]] && return
  if hf_convert "$1"; then
    printf 'convert_hf_to_gguf.py\n%s\n' "$STANDIN" > "$MODELS/llama-converter.txt"
    return
  fi
  local why
  why="convert_hf_to_gguf.py does not run here: $(grep -E 'Error|error' "$MODELS/convert-$1.log" | tail -1 || true)"
  say "$why"
  if [[ "$1" == f32 ]]; then
    say "falling back to llama.cpp's examples/convert_legacy_llama.py (f32; bf16 by llama-quantize)"
    legacy_convert f32
  else  # the legacy converter has no bf16: f16 (half the disk of f32), then llama-quantize
    say "falling back to llama.cpp's examples/convert_legacy_llama.py (f16; bf16 by llama-quantize)"
    legacy_convert f16
    quantize bf16 f16 || { say "llama-quantize bf16 failed: $MODELS/quantize-bf16.log"; exit 1; }
    rm -f "$(gguf f16)"
  fi
  printf 'examples/convert_legacy_llama.py\n%s%s\n' "$why" "${STANDIN:+ ($STANDIN)}" \
    > "$MODELS/llama-converter.txt"
}
llama_file() {  # $1 = type, made from $SOURCE (bf16 by the HF converter when that one runs)
  [[ -f "$(gguf "$1")" ]] && return
  if [[ "$1" == bf16 && "$(sed -n 1p "$MODELS/llama-converter.txt")" == convert_hf_to_gguf.py ]]; then
    hf_convert bf16 || { say "llama.cpp bf16 conversion failed (logs in $MODELS)"; exit 1; }
  else
    quantize "$1" "$SOURCE" || { say "llama-quantize $1 failed: $MODELS/quantize-$1.log"; exit 1; }
  fi
}

# 3. zeroskip's conversion (convert writes atomically); a dtype convert refuses is left out and
# reported "not available" with convert's reason. A refusal is retried on the next run (a newer
# zeroskip may have the dtype).
zeroskip_file() {  # $1 = our type
  local zsk=$MODELS/zeroskip-$1.zsk
  [[ -f "$zsk" ]] && return
  if ! locked "$ZEROSKIP" convert "$HF_DIR" -o "$zsk" --dtype "$1" > "$MODELS/zeroskip-convert-$1.log" 2>&1; then
    say "zeroskip convert --dtype $1: not available ($(tail -1 "$MODELS/zeroskip-convert-$1.log"))"
  fi
}

meta() {  # $@ = our types of this run
  "$PYTHON" - "$LLAMA_COMMIT" "$CONVERTER" "$CONVERTER_NOTE" "$HF_DIR" "$MODELS" "$ZEROSKIP" "$@" <<'EOF'
import json, os, platform, subprocess, sys
commit, converter, note, hf, models, zeroskip, *types = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
cfg = json.load(open(os.path.join(hf, "config.json")))
print(json.dumps({
    "llama_cpp_commit": commit, "llama_cpp_converter": converter, "llama_cpp_converter_note": note,
    "zeroskip_commit": git, "checkpoint": os.path.basename(hf),
    "checkpoint_config": {k: cfg.get(k) for k in ("hidden_size", "intermediate_size",
        "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
        "hidden_act", "torch_dtype")},
    "files_bytes": {f: os.path.getsize(os.path.join(models, f)) for f in sorted(os.listdir(models))
                    if f.endswith((".gguf", ".zsk"))},
    "cpu": cpu, "cpu_count": os.cpu_count(),
    "cpu_flags": [f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")],
    "kernel": platform.release(),
    "not_available": {t: open(os.path.join(models, f"zeroskip-convert-{t}.log")).read().strip()
                      .splitlines()[-1] for t in types
                      if not os.path.exists(os.path.join(models, f"zeroskip-{t}.zsk"))}}))
EOF
}

# 4-5. The timed runs (BENCH_LOCK held per repeat when set), JSON and tables.
run() {  # $1 = results file, $2 = comma-separated llama.cpp types, $3 = meta JSON
  "$PYTHON" "$HERE/peer_llamacpp.py" run --hf "$HF_DIR" --models "$MODELS" --llama-bin "$BIN" \
    --zeroskip "$ZEROSKIP" --out "$1" --repeats "$REPEATS" --threads "$THREADS" \
    --n-decode "$N_DECODE" --decode-prompt "$DECODE_PROMPT" --prefill-prompt "$PREFILL_PROMPT" \
    --long-prompt "$LONG_PROMPT" --types "$2" --lock "$BENCH_LOCK" --meta "$3"
}
zeroskip_types() { for t in "$@"; do ours "$t"; done; }

if [[ -z "$SHAPE" ]]; then
  SOURCE=f32
  first_convert f32
else
  SOURCE=bf16
  first_convert bf16
fi
CONVERTER=$(sed -n 1p "$MODELS/llama-converter.txt" 2>/dev/null || echo unknown)
CONVERTER_NOTE=$(sed -n 2p "$MODELS/llama-converter.txt" 2>/dev/null || true)
if [[ -z "$SHAPE" ]]; then
  for t in $TYPES; do llama_file "$t"; done
  for t in $TYPES; do zeroskip_file "$(ours "$t")"; done
  # shellcheck disable=SC2046  # TYPES is a list
  run "$OUT" "$(tr ' ' , <<< "$TYPES")" "$(meta $(zeroskip_types $TYPES))"
else
  # One type at a time: both engines' files, the runs, then the files go (the bf16 GGUF, which
  # llama-quantize reads, after the last type).
  disk
  parts=()
  for t in $TYPES; do
    z=$(ours "$t")
    llama_file "$t"
    zeroskip_file "$z"
    disk
    run "$MODELS/part-$t.json" "$t" "$(meta "$z")" > /dev/null
    parts+=("$MODELS/part-$t.json")
    if [[ "$KEEP_MODELS" != 1 ]]; then
      rm -f "$MODELS/zeroskip-$z.zsk"
      [[ "$t" == "$SOURCE" ]] || rm -f "$(gguf "$t")"
    fi
  done
  [[ "$KEEP_MODELS" == 1 ]] || rm -f "$(gguf "$SOURCE")"
  disk
  "$PYTHON" "$HERE/peer_llamacpp.py" merge "$OUT" "${parts[@]}"
  rm -f "${parts[@]}"
fi
echo
echo "llama.cpp $LLAMA_COMMIT (converted by $CONVERTER); results in $OUT"
