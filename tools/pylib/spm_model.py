"""Reads the pieces of a sentencepiece tokenizer.model (a serialized ModelProto) with the standard
library alone, so test fixtures need no python3-sentencepiece (a user's test command installs
only what .ci/install-deps installs without flags).

Reads what a GGUF writer needs: each piece's text, score and type, and the special ids as
sentencepiece's processor reports them; encodes text with a BPE model (benchmarks that cut
prompts to a token count). Test and tool code: trusts its input.
"""
import functools
import struct

# sentencepiece_model.proto: SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE = 2  # TrainerSpec.ModelType
SPACE = "\u2581"


def _varint(buf, pos):
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf):
    """Yields (field number, wire type, value) of one message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"tokenizer.model: wire type {wire} is not supported")
        yield number, wire, value


class SpmModel:
    """pieces: [(text, score, type)]; unk_id/bos_id/eos_id as SentencePieceProcessor gives them
    (-1 when the model has none)."""

    def __init__(self, data):
        self.pieces = []
        spec, normalizer = {}, {}
        for number, _, value in _fields(data):
            if number == 1:  # ModelProto.pieces
                text, score, kind = "", 0.0, NORMAL
                for n, _, v in _fields(value):
                    if n == 1:
                        text = v.decode("utf-8")
                    elif n == 2:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        kind = v
                self.pieces.append((text, score, kind))
            elif number == 2:  # ModelProto.trainer_spec
                spec = {n: v for n, _, v in _fields(value)}
            elif number == 3:  # ModelProto.normalizer_spec
                normalizer = {n: v for n, _, v in _fields(value)}
        ids = {text: i for i, (text, _, _) in enumerate(self.pieces)}
        # The processor's unk is the piece of type UNKNOWN; bos and eos are the pieces named by
        # trainer_spec.bos_piece / eos_piece (fields 46 and 47), when they are control pieces.
        self.unk_id = next((i for i, p in enumerate(self.pieces) if p[2] == UNKNOWN), -1)
        self.bos_id = self._control(ids, spec.get(46, b"<s>").decode("utf-8"))
        self.eos_id = self._control(ids, spec.get(47, b"</s>").decode("utf-8"))
        # For encode: trainer_spec model_type (3) and byte_fallback (35); normalizer_spec
        # add_dummy_prefix (3) and remove_extra_whitespaces (4), proto defaults when absent.
        self.model_type, self.byte_fallback = spec.get(3, 1), bool(spec.get(35, 0))
        self.add_dummy_prefix = bool(normalizer.get(3, 1))
        self.remove_extra_whitespaces = bool(normalizer.get(4, 1))
        self._merge_ids = {p[0]: i for i, p in enumerate(self.pieces)
                           if p[2] in (NORMAL, USER_DEFINED)}
        # A word's pieces never reach into the next word when no piece has U+2581 after another
        # character (ignoring runs of it): then encode works word by word, each one cached.
        self._by_word = not any(SPACE in p[0].lstrip(SPACE) for p in self.pieces)
        self._byte_ids = {p[0]: i for i, p in enumerate(self.pieces) if p[2] == BYTE}

    def _control(self, ids, name):
        i = ids.get(name, -1)
        return i if i >= 0 and self.pieces[i][2] == CONTROL else -1

    def encode(self, text):
        """Ids of `text` (no BOS) as sentencepiece's BPE model gives them: the normalizer's
        whitespace options and dummy prefix, spaces as U+2581, then the merge whose piece scores
        highest first (leftmost on a tie), byte pieces (or unk) for characters with no piece.
        The normalizer's character rules (nmt_nfkc) are not applied, so ids are exact for text
        they leave unchanged (plain ASCII is); user-defined pieces are merged like any other."""
        if self.model_type != BPE:
            raise ValueError("spm_model.encode: only BPE tokenizer models are supported")
        if self.remove_extra_whitespaces:
            text = " ".join(w for w in text.split(" ") if w)
        if self.add_dummy_prefix and text:
            text = " " + text
        text = text.replace(" ", SPACE)
        if not self._by_word:
            return list(self._encode_word(text))
        words, start = [], 0
        for i in range(1, len(text)):
            if text[i] == SPACE and text[i - 1] != SPACE:
                words.append(text[start:i])
                start = i
        words.append(text[start:])
        return [i for w in words if w for i in self._encode_word(w)]

    @functools.lru_cache(maxsize=None)
    def _encode_word(self, word):
        symbols = list(word)
        while len(symbols) > 1:
            best = None  # (score, -position) of the best merge
            for k in range(len(symbols) - 1):
                i = self._merge_ids.get(symbols[k] + symbols[k + 1])
                if i is not None and (best is None or self.pieces[i][1] > best[0]):
                    best = (self.pieces[i][1], k)
            if best is None:
                break
            k = best[1]
            symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
        ids = []
        for sym in symbols:
            if sym in self._merge_ids:
                ids.append(self._merge_ids[sym])
            elif self.byte_fallback:
                ids += [self._byte_ids[f"<0x{b:02X}>"] for b in sym.encode("utf-8")]
            else:
                ids.append(self.unk_id)
        return tuple(ids)


def load(path):
    with open(path, "rb") as f:
        return SpmModel(f.read())
