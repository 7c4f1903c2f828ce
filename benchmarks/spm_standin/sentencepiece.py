"""Stands in for python3-sentencepiece's SentencePieceProcessor where that module is missing, for
benchmarks/peer_llamacpp.sh: llama.cpp's converters import it for the vocabulary (pieces, scores,
types), peer_llamacpp.py to cut prompts to a token count. Backed by tools/pylib/spm_model.py (the
same pieces, scores and types as sentencepiece; encode for BPE models, pinned against
sentencepiece's ids). Only on PYTHONPATH when `import sentencepiece` fails."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                                "pylib"))
import spm_model  # noqa: E402


class SentencePieceProcessor:
    def __init__(self, model_file=None):
        if model_file is not None:
            self.LoadFromFile(model_file)

    def LoadFromFile(self, path):
        self._m = spm_model.load(path)
        return True

    def vocab_size(self):
        return len(self._m.pieces)

    def IdToPiece(self, i):
        return self._m.pieces[i][0]

    def GetScore(self, i):
        return self._m.pieces[i][1]

    def IsUnknown(self, i):
        return self._m.pieces[i][2] == spm_model.UNKNOWN

    def IsControl(self, i):
        return self._m.pieces[i][2] == spm_model.CONTROL

    def IsUnused(self, i):
        return self._m.pieces[i][2] == spm_model.UNUSED

    def IsByte(self, i):
        return self._m.pieces[i][2] == spm_model.BYTE

    def encode(self, text):
        return self._m.encode(text)
