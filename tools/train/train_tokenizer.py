#!/usr/bin/env python3
"""Trains the sentencepiece BPE tokenizer of the training recipe.

Llama-style options (byte fallback, unk=0, bos=1, eos=2, no pad, identity normalization, digits
split), trained on the first 90% of the corpus only: the last 10% is the validation split of
train.py and must not leak into the vocabulary.

  /usr/bin/python3 tools/train/train_tokenizer.py --corpus CORPUS.txt --vocab 4096 \
      --out /tmp/train_runs/tokenizer.model
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import spm_train  # noqa: E402

TRAIN_FRACTION = 0.9


def train_split(text):
    """The training part of a corpus: its first 90% of characters (train.py splits its tokens
    the same way)."""
    return text[: int(len(text) * TRAIN_FRACTION)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--out", required=True, help="path of the .model file to write")
    args = ap.parse_args(argv)

    import sentencepiece as spm

    with open(args.corpus, encoding="utf-8") as f:
        text = train_split(f.read())
    lines = [ln for ln in text.split("\n") if ln.strip()]

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(0)
    # Every sentence, in order: reproducible whatever the corpus size.
    model = spm_train.train_bpe(lines, args.vocab, input_sentence_size=0,
                                shuffle_input_sentence=False)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(model)
    sp = spm.SentencePieceProcessor(model_file=args.out)
    print(f"wrote {args.out}: vocab {sp.get_piece_size()}, trained on {len(lines)} lines "
          f"({len(text)} chars, first {TRAIN_FRACTION:.0%} of the corpus)", file=sys.stderr)


if __name__ == "__main__":
    main()
