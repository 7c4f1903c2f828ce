#!/usr/bin/python3
"""Trains tests/data/bpe/{vocab.json,merges.txt}: a tiny GPT-2 byte-level BPE vocabulary.

Laid out like OPT's: "<s>" 0, "<pad>" 1, "</s>" 2, "<unk>" 3, then the 256 byte symbols of GPT-2's
alphabet, then one piece per merge. Training is plain BPE over the words of GPT-2's
pre-tokenizer (tools/reference/gpt2_bpe_ref.py): repeatedly merge the most frequent adjacent
pair (ties: the smaller pair), N_MERGES times. The text is generated here from sentences written
for this file, deterministically. The committed files are what the tests use; rerun only to
change them:
    /usr/bin/python3 tests/data/make_bpe.py [--out-dir tests/data/bpe]
"""
import argparse
import collections
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "reference"))
import gpt2_bpe_ref  # noqa: E402

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
N_MERGES = 360
SENTENCES = [
    "The lighthouse keeper's cat watches the boats come home.",
    "We've packed three sandwiches, two apples and 12 biscuits.",
    "They're painting the kitchen walls a pale shade of green.",
    "It isn't raining now, but the forecast says it'll pour by 6 pm.",
    "Our train leaves platform 4 at 09:45 and arrives at noon.",
    "She'd rather read a novel than watch the late film.",
    "I'm counting 1, 2, 3, 4, 5 steps up to the attic.",
    "The café on the corner serves crème brûlée and espresso.",
    "Müller and Çelik met in Zürich to discuss the naïve plan.",
    "東京から大阪まで新幹線で行きます。",
    "我们明天在图书馆见面。",
    "Good morning 🙂 the coffee is ready ☕ and the sun is out 🌞",
    "Numbers like 3.14159 and 2.71828 show up in every textbook.",
    "The    spaces   in this line   are deliberate.",
    "First line\nSecond line\n\nFourth line after a blank one.",
    "You'll see that the engine skips the zeros of each layer.",
    "Ελληνικά γράμματα και русские буквы рядом.",
    "A tokenizer turns text into pieces, and pieces into ids.",
]


def corpus():
    rng = random.Random(14)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.sample(SENTENCES, 3)))
    return "\n".join(lines)


def train(text, n_merges):
    byte_char = gpt2_bpe_ref.bytes_to_unicode()
    words = collections.Counter(
        tuple(byte_char[b] for b in w.encode("utf-8")) for w in gpt2_bpe_ref.pretokenize(text))
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged_words = collections.Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged_words[tuple(out)] += count
        words = merged_words
    vocab = {p: i for i, p in enumerate(SPECIALS)}
    for b in range(256):
        vocab[byte_char[b]] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return vocab, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(HERE, "bpe"))
    args = ap.parse_args()
    vocab, merges = train(corpus(), N_MERGES)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(args.out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    print(f"{len(vocab)} pieces, {len(merges)} merges -> {args.out_dir}")


if __name__ == "__main__":
    main()
