"""Reads the pieces of a sentencepiece tokenizer.model (a serialized ModelProto) with the standard
library alone, so test fixtures need no python3-sentencepiece (a user's test command installs
only what .ci/install-deps installs without flags).

Reads what a GGUF writer needs: each piece's text, score and type, and the special ids as
sentencepiece's processor reports them. Test and tool code: trusts its input.
"""
import struct

# sentencepiece_model.proto: SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


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
        spec = {}
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
        ids = {text: i for i, (text, _, _) in enumerate(self.pieces)}
        # The processor's unk is the piece of type UNKNOWN; bos and eos are the pieces named by
        # trainer_spec.bos_piece / eos_piece (fields 46 and 47), when they are control pieces.
        self.unk_id = next((i for i, p in enumerate(self.pieces) if p[2] == UNKNOWN), -1)
        self.bos_id = self._control(ids, spec.get(46, b"<s>").decode("utf-8"))
        self.eos_id = self._control(ids, spec.get(47, b"</s>").decode("utf-8"))

    def _control(self, ids, name):
        i = ids.get(name, -1)
        return i if i >= 0 and self.pieces[i][2] == CONTROL else -1


def load(path):
    with open(path, "rb") as f:
        return SpmModel(f.read())
