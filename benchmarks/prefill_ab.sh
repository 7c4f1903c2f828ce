#!/bin/bash
# Time to first token, A/B: oneDNN for every batch (ZEROSKIP_SMALL_BATCH=1) vs the small-batch path, interleaved.
# Needs $SYNTH_DIR/mid-f32.zsk and mid-bf16.zsk (docs/BENCHMARKS.md, "Prefill"); prints one line
# per run: model, prompt, path, prompt tokens, prefill seconds.
SYNTH_DIR=${SYNTH_DIR:-../synth}
P3="the king"
P16="the king of rome and all his men came to the city"
P64=$(python3 -c "print(' '.join(['the king of rome and']*5))")
for m in mid-f32 mid-bf16; do
  for name in P3 P16 P64; do
    p=${!name}
    for rep in 1 2 3 4 5; do
      for sb in 1 16; do
        line=$(ZEROSKIP_SMALL_BATCH=$sb build/zeroskip run -m "$SYNTH_DIR/$m.zsk" -p "$p" -n 1 --no-echo -t 2 --json 2>/dev/null)
        echo "$m $name sb=$sb $(echo "$line" | python3 -c "import json,sys; j=json.load(sys.stdin); print(len(j['prompt_tokens']), round(len(j['prompt_tokens'])/j['prefill_tok_s'],3))")"
      done
    done
  done
done
