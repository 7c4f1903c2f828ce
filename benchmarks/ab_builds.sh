#!/usr/bin/env bash
# A/B of two zeroskip builds in one run: `bench ffn` (7B-shaped FFN step at 90% zeros, f32 and
# bf16) and `bench decode` on a model, the two binaries alternating run by run; prints the median
# of each metric per binary and the ratio B/A. Use it to show a change is within noise of the
# commit before it:
#   git worktree add ../zeroskip-base HEAD~1 && (cd ../zeroskip-base && cmake -B build
#     -DCMAKE_BUILD_TYPE=Release -DZEROSKIP_TESTS=OFF && cmake --build build --target zeroskip_cli)
#   benchmarks/ab_builds.sh ../zeroskip-base/build/zeroskip build/zeroskip MODEL.zsk [REPEATS]
set -euo pipefail
A=$1
B=$2
MODEL=$3
REPEATS=${4:-5}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for rep in $(seq "$REPEATS"); do
  for side in A B; do
    bin=${!side}
    for dtype in f32 bf16; do
      "$bin" bench ffn --d 4096 --f 11008 --sparsity 0.9 --dtype "$dtype" -t 2 --steps 40 --json \
        2>/dev/null > "$OUT/ffn_${dtype}_${side}_${rep}.json"
    done
    "$bin" bench decode -m "$MODEL" -n 48 --ctx 256 -t 2 --json 2>/dev/null \
      > "$OUT/decode_${side}_${rep}.json"
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
def med(pattern, get):
    return statistics.median(get(json.load(open(f))) for f in glob.glob(f"{out}/{pattern}"))
rows = []
for dtype in ("f32", "bf16"):
    for key in ("sparse_ms", "own_dense_ms", "dense_ms"):
        rows.append((f"ffn {dtype} {key}", lambda s, d=dtype, k=key: med(f"ffn_{d}_{s}_*.json", lambda j: j["results"][0][k])))
for key in ("sparse_tok_s", "dense_tok_s"):
    rows.append((f"decode {key}", lambda s, k=key: med(f"decode_{s}_*.json", lambda j: j[k])))
print(f"{'metric':28} {'A':>10} {'B':>10} {'B/A':>7}")
for name, get in rows:
    a, b = get("A"), get("B")
    print(f"{name:28} {a:10.3f} {b:10.3f} {b / a:7.3f}")
PY
