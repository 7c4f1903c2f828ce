#!/usr/bin/python3
"""Trains tests/data/tokenizer.model: a tiny Llama-style sentencepiece BPE model.

vocab_size 384, byte_fallback, unk 0 / bos 1 / eos 2, no pad; the normalizer and pre-tokenizer
settings copy Llama's tokenizer.model (identity normalization, dummy prefix, no whitespace
squeezing, digits split). The training text is generated here, deterministically, from a small
word list. "at the café" is common, so "é" becomes a (two-byte UTF-8) vocabulary piece; a few other
non-ASCII words ("naïve", "Grüße", "日本", ...) are rare enough that their characters stay out of the
vocabulary, so encoding them exercises byte fallback.

The committed tokenizer.model is what the tests use (CI needs no python sentencepiece). Rerun
only to change the tokenizer:
    /usr/bin/python3 tests/data/make_tokenizer.py [--out tests/data/tokenizer.model]
"""
import argparse
import os
import random
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "pylib"))
import spm_train  # noqa: E402

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "our teacher", "the small bird",
            "a farmer", "the king", "his friend", "the children", "a sailor", "the baker",
            "Anna", "Peter", "the engine", "this model", "the river", "a quiet student"]
VERBS = ["sees", "finds", "likes", "carries", "watches", "builds", "reads", "paints",
         "follows", "remembers", "opens", "counts", "writes", "answers", "brings", "keeps"]
OBJECTS = ["the red apple", "a long letter", "the green door", "two small boxes",
           "the morning train", "a warm bread", "the open window", "three old books",
           "the blue sky", "a heavy stone", "the last question", "seven white horses",
           "the bright lamp", "a simple story", "the empty room", "many tokens"]
PLACES = ["in the garden", "near the river", "at the market", "under the bridge",
          "before dinner", "after the rain", "on the hill", "by the sea", "in the city",
          "during the night", "at school", "in the kitchen", "at the café"]
ADVERBS = ["slowly", "quickly", "again", "today", "carefully", "happily", "often", "never"]
QUESTIONS = ["Where is", "Why does", "When will", "Who saw", "What is"]
# Rare on purpose (see the module docstring).
RARE = ["café", "naïve", "Grüße", "日本", "façade", "señor", "Zürich", "über", "résumé",
        "東京", "Ελλάδα", "crème brûlée", "smörgåsbord", "€5", "—"]


def sentence(rng):
    kind = rng.random()
    if kind < 0.55:
        s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        if rng.random() < 0.5:
            s += f" {rng.choice(PLACES)}"
        if rng.random() < 0.3:
            s += f" {rng.choice(ADVERBS)}"
        s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "!"])
    elif kind < 0.7:
        s = f"{rng.choice(QUESTIONS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}?"
    elif kind < 0.85:
        n = rng.randrange(0, 2000)
        s = f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {n} {rng.choice(['coins', 'words', 'steps', 'days'])}."
    else:
        a, b = rng.choice(SUBJECTS), rng.choice(SUBJECTS)
        s = f"{a.capitalize()} and {b} {rng.choice(VERBS)[:-1]} {rng.choice(OBJECTS)}, {rng.choice(ADVERBS)}."
    if rng.random() < 0.01:
        s += f" {rng.choice(RARE)}"
    return s


def corpus(n_lines=6000, seed=1234):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        k = rng.randrange(1, 4)
        lines.append(" ".join(sentence(rng) for _ in range(k)))
    return lines


def train(out_path):
    # Options as first used for the committed model (the golden fixtures hash it).
    model = spm_train.train_bpe(corpus(), 384, character_coverage=0.9995,
                                max_sentencepiece_length=16)
    with open(out_path, "wb") as f:
        f.write(model)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "tokenizer.model"))
    args = ap.parse_args()
    train(args.out)
    sp = spm.SentencePieceProcessor(model_file=args.out)
    print(f"wrote {args.out}: vocab {sp.get_piece_size()}")
    for text in ["The cat sees the red apple.", "Grüße aus Zürich, café naïve 日本!"]:
        ids = sp.encode(text)
        print(f"  {text!r} -> {ids} -> {sp.decode(ids)!r}")


if __name__ == "__main__":
    main()
