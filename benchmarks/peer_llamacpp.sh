#!/usr/bin/env bash
# zeroskip against llama.cpp on one checkpoint, at every weight type both have (docs/BENCHMARKS.md,
# "Peer: llama.cpp"). Run from the repository root after building zeroskip (Release):
#
#   LLAMA_CPP_DIR=path/to/llama.cpp benchmarks/peer_llamacpp.sh HF_DIR [LLAMA_CPP_DIR]
#
# HF_DIR: a Hugging Face Llama-layout checkpoint (config.json, model.safetensors, tokenizer.model),
# e.g. one made by tools/synth. LLAMA_CPP_DIR: a llama.cpp source tree you fetched yourself; it is
# not a dependency of zeroskip, and without it this script says so and exits 0.
#
# 1. Builds llama.cpp once (Release, CPU only, -DGGML_NATIVE=ON, no CURL) into LLAMA_BUILD_DIR.
# 2. Converts HF_DIR with llama.cpp's convert_hf_to_gguf.py at f32 and bf16; if that converter
#    cannot run here (it needs torch >= 2.1 and the safetensors package), with llama.cpp's
#    examples/convert_legacy_llama.py (numpy + sentencepiece) at f32 and llama-quantize to bf16.
#    llama-quantize makes q8_0 and q4_0 from the f32 file (its default mixes: q4_0 keeps
#    output.weight in q6_K).
# 3. Converts HF_DIR with zeroskip at f32, bf16, q8 and q4; a dtype `zeroskip convert` refuses is
#    reported "not available".
# 4. Runs benchmarks/peer_llamacpp.py: per repeat and weight type, llama.cpp, zeroskip sparse and
#    zeroskip dense alternate; decode tok/s after a ~25-token prompt (96 tokens generated) and
#    prefill tok/s and time to first token of each PREFILL_PROMPT length, THREADS threads;
#    medians over REPEATS.
# 5. Writes OUT (JSON) and prints the Markdown table.
#
# Environment (defaults in brackets):
#   LLAMA_CPP_DIR     llama.cpp source tree (or the second argument)            [none: skip]
#   LLAMA_BUILD_DIR   where llama.cpp is built; reused when its binaries exist  [$WORK_DIR/llama-build]
#   LLAMA_CPP_COMMIT  the commit to record when the tree is not a git checkout  [git rev-parse]
#   WORK_DIR          converted models (about 6x the bf16 checkpoint's size)    [/tmp/zeroskip-peer]
#   ZEROSKIP          the zeroskip binary                                       [build/zeroskip]
#   OUT               results JSON                                              [docs/bench/peer_llamacpp.json]
#   REPEATS [3]  THREADS [2]  N_DECODE [96]  DECODE_PROMPT [25]
#   PREFILL_PROMPT    comma-separated prefill prompt lengths                  [3,16,64,256]
#   BENCH_LOCK        if set, the build and every convert run under `flock $BENCH_LOCK`, and the
#                     timed runs hold it one repeat at a time (for machines shared with other jobs
#                     that take the same lock: they run between repeats, never inside one)
#   PYTHON            [/usr/bin/python3]
set -euo pipefail

HF_DIR=${1:-}
LLAMA_CPP_DIR=${2:-${LLAMA_CPP_DIR:-}}
if [[ -z "$LLAMA_CPP_DIR" || ! -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]]; then
  echo "peer_llamacpp: skipped: no llama.cpp source tree (give its path as the second argument" \
       "or in LLAMA_CPP_DIR; llama.cpp is not a dependency of zeroskip)"
  exit 0
fi
if [[ -z "$HF_DIR" || ! -f "$HF_DIR/config.json" || ! -f "$HF_DIR/tokenizer.model" ]]; then
  echo "usage: benchmarks/peer_llamacpp.sh HF_DIR [LLAMA_CPP_DIR]  (HF_DIR needs config.json," \
       "*.safetensors and tokenizer.model)" >&2
  exit 2
fi

WORK_DIR=${WORK_DIR:-/tmp/zeroskip-peer}
LLAMA_BUILD_DIR=${LLAMA_BUILD_DIR:-$WORK_DIR/llama-build}
ZEROSKIP=${ZEROSKIP:-build/zeroskip}
OUT=${OUT:-docs/bench/peer_llamacpp.json}
REPEATS=${REPEATS:-3}
THREADS=${THREADS:-2}
N_DECODE=${N_DECODE:-96}
DECODE_PROMPT=${DECODE_PROMPT:-25}
PREFILL_PROMPT=${PREFILL_PROMPT:-3,16,64,256}
PYTHON=${PYTHON:-/usr/bin/python3}
BENCH_LOCK=${BENCH_LOCK:-}
HERE=$(cd "$(dirname "$0")" && pwd)
LLAMA_CPP_DIR=$(cd "$LLAMA_CPP_DIR" && pwd)
HF_DIR=$(cd "$HF_DIR" && pwd)
MODELS=$WORK_DIR/models/$(basename "$HF_DIR")
BIN=$LLAMA_BUILD_DIR/bin
mkdir -p "$MODELS" "$(dirname "$OUT")"

locked() { if [[ -n "$BENCH_LOCK" ]]; then flock "$BENCH_LOCK" "$@"; else "$@"; fi; }
say() { echo "peer_llamacpp: $*" >&2; }

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
export PYTHONPATH="$LLAMA_CPP_DIR/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
gguf() { echo "$MODELS/llama-$1.gguf"; }
hf_convert() {  # $1 = outtype
  locked "$PYTHON" "$LLAMA_CPP_DIR/convert_hf_to_gguf.py" "$HF_DIR" --outtype "$1" \
      --outfile "$(gguf "$1").tmp" > "$MODELS/convert-$1.log" 2>&1 \
    && mv "$(gguf "$1").tmp" "$(gguf "$1")" || { rm -f "$(gguf "$1").tmp"; false; }
}
if [[ ! -f "$(gguf f32)" ]]; then
  if hf_convert f32; then
    printf 'convert_hf_to_gguf.py\n\n' > "$MODELS/llama-converter.txt"
  else
    why="convert_hf_to_gguf.py does not run here: $(grep -E 'Error|error' "$MODELS/convert-f32.log" | tail -1)"
    say "$why"
    say "falling back to llama.cpp's examples/convert_legacy_llama.py (f32; bf16 by llama-quantize)"
    locked "$PYTHON" "$LLAMA_CPP_DIR/examples/convert_legacy_llama.py" "$HF_DIR" --outtype f32 \
        --pad-vocab --outfile "$(gguf f32).tmp" > "$MODELS/convert-f32-legacy.log" 2>&1 \
      || { rm -f "$(gguf f32).tmp"; say "convert_legacy_llama.py failed too: $MODELS/convert-f32-legacy.log"; exit 1; }
    mv "$(gguf f32).tmp" "$(gguf f32)"
    printf 'examples/convert_legacy_llama.py\n%s\n' "$why" > "$MODELS/llama-converter.txt"
  fi
fi
CONVERTER=$(sed -n 1p "$MODELS/llama-converter.txt" 2>/dev/null || echo unknown)
CONVERTER_NOTE=$(sed -n 2p "$MODELS/llama-converter.txt" 2>/dev/null || true)
quantize() {  # $1 = type
  locked "$BIN/llama-quantize" "$(gguf f32)" "$(gguf "$1").tmp" "$1" > "$MODELS/quantize-$1.log" 2>&1 \
    && mv "$(gguf "$1").tmp" "$(gguf "$1")" || { rm -f "$(gguf "$1").tmp"; false; }
}
if [[ ! -f "$(gguf bf16)" ]]; then
  if [[ "$CONVERTER" == convert_hf_to_gguf.py ]]; then hf_convert bf16; else quantize bf16; fi \
    || { say "llama.cpp bf16 conversion failed (logs in $MODELS)"; exit 1; }
fi
for t in q8_0 q4_0; do
  [[ -f "$(gguf $t)" ]] || quantize $t || { say "llama-quantize $t failed: $MODELS/quantize-$t.log"; exit 1; }
done

# 3. zeroskip's conversion (convert writes atomically); a dtype convert refuses is left out and
# reported "not available" with convert's reason. A refusal is retried on the next run (a newer
# zeroskip may have the dtype).
for t in f32 bf16 q8 q4; do
  zsk=$MODELS/zeroskip-$t.zsk
  [[ -f "$zsk" ]] && continue
  if ! locked "$ZEROSKIP" convert "$HF_DIR" -o "$zsk" --dtype $t > "$MODELS/zeroskip-convert-$t.log" 2>&1; then
    say "zeroskip convert --dtype $t: not available ($(tail -1 "$MODELS/zeroskip-convert-$t.log"))"
  fi
done

META=$("$PYTHON" - "$LLAMA_COMMIT" "$CONVERTER" "$CONVERTER_NOTE" "$HF_DIR" "$MODELS" "$ZEROSKIP" <<'EOF'
import json, os, platform, subprocess, sys
commit, converter, note, hf, models, zeroskip = sys.argv[1:]
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
                      .splitlines()[-1] for t in ("f32", "bf16", "q8", "q4")
                      if not os.path.exists(os.path.join(models, f"zeroskip-{t}.zsk"))}}))
EOF
)

# 4-5. The timed runs (BENCH_LOCK held per repeat when set), JSON and table.
"$PYTHON" "$HERE/peer_llamacpp.py" run --hf "$HF_DIR" --models "$MODELS" --llama-bin "$BIN" \
  --zeroskip "$ZEROSKIP" --out "$OUT" --repeats "$REPEATS" --threads "$THREADS" \
  --n-decode "$N_DECODE" --decode-prompt "$DECODE_PROMPT" --prefill-prompt "$PREFILL_PROMPT" \
  --lock "$BENCH_LOCK" --meta "$META"
echo
echo "llama.cpp $LLAMA_COMMIT (converted by $CONVERTER); results in $OUT"
