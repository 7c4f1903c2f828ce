#!/usr/bin/python3
"""Reference GPT-2 byte-level BPE tokenizer (OPT, GPT-2), written from openai/gpt-2's encoder.py.

    /usr/bin/python3 tools/reference/gpt2_bpe_ref.py VOCAB_JSON MERGES_TXT --text "Hello"
    /usr/bin/python3 tools/reference/gpt2_bpe_ref.py --fixture   # tests/data/golden/bpe_tokenizer.json

Text is cut by GPT-2's pre-tokenization regex (the `regex` module, Debian python3-regex, for
\\p{L} and \\p{N}); each piece's UTF-8 bytes are spelled with the byte-to-unicode alphabet and
merged pair by pair, always the adjacent pair that comes first in merges.txt, every occurrence
left to right. The C++ tokenizer (src/text/byte_level_bpe.cpp) must give the same ids.
"""
import argparse
import hashlib
import json
import os

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BPE_DIR = os.path.join(ROOT, "tests", "data", "bpe")
PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# The test corpus: ASCII, accents, CJK, emoji, numbers, contractions, runs of spaces and newlines.
FIXTURE_TEXTS = [
    "Hello world",
    "The ferryman's dog can't swim, they're sure we've seen it, I'm told you'll know, he'd say.",
    "  two leading spaces, three   inside and trailing   ",
    "line one\nline two\n\n\nafter three newlines\r\n\ttabbed",
    "Numbers 1234567 and 3.14159, 2026-11-27, 100%!",
    "Grüße aus Zürich: café, naïve, crème brûlée, Ångström",
    "東京の天気は晴れです。北京欢迎你",
    "Emoji 🙂👍🏽 and a family 👨‍👩‍👧 in a row🙂🙂",
    "Ελληνικά και русский текст",
    "MixedCASE words and CamelCaseIdentifiers_with_underscores",
    "symbols: <html> & \"quotes\" -- (parens) [brackets] {braces} @#$^*",
    "'s 't 're 've 'm 'll 'd 'S 'T",
    "",
    " ",
    "\n",
    "a",
    "ｆｕｌｌｗｉｄｔｈ ٣٤٥ ⅷ",
    # Unicode whitespace (\s with Unicode properties): no-break, ideographic and thin spaces.
    "no\u00a0break\u3000ideographic\u2009thin\u00a0\u00a0end",
    # One word of 2,240 letters (the first texts' letters, 20 times): many merges of many ranks
    # within one word, where the order of merges matters most.
    " " + "".join(regex.findall(r"[A-Za-z]+", "Hello world The ferryman's dog can't swim, they're "
                                "sure we've seen it, I'm told you'll know, he'd say. two leading "
                                "spaces, three inside and trailing")) * 20,
]


def bytes_to_unicode():
    """Byte b -> its one-character spelling: b itself when printable Latin-1, else 256 + n."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def pretokenize(text):
    return PATTERN.findall(text)


class Gpt2Bpe:
    def __init__(self, vocab, merges):
        """vocab: {piece: id}; merges: [(left, right)] in rank order."""
        self.vocab = vocab
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_char = bytes_to_unicode()

    @classmethod
    def from_files(cls, vocab_path, merges_path):
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(merges_path, encoding="utf-8") as f:
            for i, line in enumerate(f.read().split("\n")):
                if not line or (i == 0 and line.startswith("#version")):
                    continue
                left, right = line.split(" ")
                merges.append((left, right))
        return cls(vocab, merges)

    def bpe(self, word):
        symbols = list(word)
        while len(symbols) > 1:
            pairs = [(self.ranks.get(p, float("inf")), p) for p in zip(symbols, symbols[1:])]
            rank, (left, right) = min(pairs, key=lambda rp: rp[0])
            if rank == float("inf"):
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def pieces(self, text):
        out = []
        for word in pretokenize(text):
            out += self.bpe("".join(self.byte_char[b] for b in word.encode("utf-8")))
        return out

    def encode(self, text):
        return [self.vocab[p] for p in self.pieces(text)]

    def decode(self, ids, special=()):
        char_byte = {c: b for b, c in self.byte_char.items()}
        by_id = {i: p for p, i in self.vocab.items()}
        data = bytes(char_byte[c] for i in ids if i not in special for c in by_id[i])
        return data.decode("utf-8", errors="replace")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_fixture(path):
    vocab_path, merges_path = (os.path.join(BPE_DIR, f) for f in ("vocab.json", "merges.txt"))
    tok = Gpt2Bpe.from_files(vocab_path, merges_path)
    cases = []
    for text in FIXTURE_TEXTS:
        ids = tok.encode(text)
        cases.append({"text": text, "pretokens": pretokenize(text), "pieces": tok.pieces(text),
                      "ids": ids, "decoded": tok.decode(ids)})
    obj = {"vocab_json_sha256": sha256(vocab_path), "merges_txt_sha256": sha256(merges_path),
           "vocab_size": len(tok.vocab), "cases": cases}
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k in ("vocab_json_sha256", "merges_txt_sha256", "vocab_size"):
            f.write(f" {json.dumps(k)}: {json.dumps(obj[k])},\n")
        rows = [json.dumps(c, ensure_ascii=False) for c in cases]
        f.write(' "cases": [\n  ' + ",\n  ".join(rows) + "\n ]\n}\n")
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vocab", nargs="?")
    ap.add_argument("merges", nargs="?")
    ap.add_argument("--text", help="print the ids of this text")
    ap.add_argument("--fixture", action="store_true",
                    help="write tests/data/golden/bpe_tokenizer.json from tests/data/bpe")
    args = ap.parse_args()
    if args.fixture:
        write_fixture(os.path.join(ROOT, "tests", "data", "golden", "bpe_tokenizer.json"))
        return
    if not (args.vocab and args.merges and args.text is not None):
        ap.error("VOCAB_JSON MERGES_TXT --text TEXT, or --fixture")
    print(",".join(map(str, Gpt2Bpe.from_files(args.vocab, args.merges).encode(args.text))))


if __name__ == "__main__":
    main()
