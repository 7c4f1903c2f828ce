"""spm_model reads tokenizer.model as sentencepiece does: pinned values of the test tokenizer
(no module needed), and every tokenizer.model in the repository against sentencepiece itself
when python3-sentencepiece is installed."""
import glob
import json
import os
import unittest

import spm_model

try:
    import sentencepiece as spm
except ImportError:
    spm = None

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


class PinnedTest(unittest.TestCase):
    def test_test_tokenizer(self):
        m = spm_model.load(os.path.join(ROOT, "tests", "data", "tokenizer.model"))
        self.assertEqual(len(m.pieces), 384)
        self.assertEqual(m.pieces[:4], [("<unk>", 0.0, spm_model.UNKNOWN),
                                        ("<s>", 0.0, spm_model.CONTROL),
                                        ("</s>", 0.0, spm_model.CONTROL),
                                        ("<0x00>", 0.0, spm_model.BYTE)])
        # The first merges after the 256 byte pieces: scores count down from 0.
        self.assertEqual(m.pieces[259:262], [("he", 0.0, spm_model.NORMAL),
                                             ("\u2581t", -1.0, spm_model.NORMAL),
                                             ("\u2581the", -2.0, spm_model.NORMAL)])
        self.assertEqual(m.pieces[-1], ("0", -124.0, spm_model.NORMAL))
        self.assertEqual(sum(p[2] == spm_model.BYTE for p in m.pieces), 256)
        self.assertEqual((m.unk_id, m.bos_id, m.eos_id), (0, 1, 2))

    def test_special_ids_follow_the_trainer_spec(self):
        # A hand-made ModelProto: pieces [unk, "[B]" control, "x"], trainer_spec.bos_piece "[B]",
        # no "</s>": bos is 1, eos is absent.
        def field(number, payload):
            return bytes([number << 3 | 2, len(payload)]) + payload
        def piece(text, kind):
            return field(1, field(1, text.encode()) + bytes([3 << 3, kind]))
        spec = bytes([0xF2, 0x02, 3]) + b"[B]"  # field 46, wire type 2
        data = piece("<unk>", 2) + piece("[B]", 3) + piece("x", 1) + field(2, spec)
        m = spm_model.SpmModel(data)
        self.assertEqual([p[0] for p in m.pieces], ["<unk>", "[B]", "x"])
        self.assertEqual((m.unk_id, m.bos_id, m.eos_id), (0, 1, -1))

    def test_encode_matches_sentencepiece_golden(self):
        # tests/data/golden/tokenizer.json: python sentencepiece's ids for the test tokenizer
        # (ASCII, double and leading spaces, newline and tab by byte fallback, digits, accents).
        root = os.path.join(ROOT, "tests", "data")
        golden = json.load(open(os.path.join(root, "golden", "tokenizer.json")))
        m = spm_model.load(os.path.join(root, "tokenizer.model"))
        for case in golden["cases"]:
            self.assertEqual(m.encode(case["text"]), case["ids"], case["text"])
        # Word by word (the cached path) is the same as merging over the whole text.
        whole = spm_model.load(os.path.join(root, "tokenizer.model"))
        whole._by_word = False
        for case in golden["cases"]:
            self.assertEqual(whole.encode(case["text"]), case["ids"], case["text"])


@unittest.skipIf(spm is None, "missing module: sentencepiece (the pinned test above still ran)")
class AgainstSentencepieceTest(unittest.TestCase):
    def test_every_tokenizer_in_the_repository(self):
        paths = sorted(glob.glob(os.path.join(ROOT, "**", "tokenizer.model"), recursive=True))
        compared = 0
        for path in paths:
            try:
                sp = spm.SentencePieceProcessor(model_file=path)
            except (RuntimeError, OSError):
                continue  # the hostile corpus's broken tokenizers
            m = spm_model.load(path)
            ref = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
            self.assertEqual([p[:2] for p in m.pieces], ref, path)
            self.assertEqual((m.unk_id, m.bos_id, m.eos_id),
                             (sp.unk_id(), sp.bos_id(), sp.eos_id()), path)
            for i, (_, _, kind) in enumerate(m.pieces):
                self.assertEqual(kind == spm_model.BYTE, sp.is_byte(i), path)
                self.assertEqual(kind == spm_model.CONTROL, sp.is_control(i), path)
                self.assertEqual(kind == spm_model.UNUSED, sp.is_unused(i), path)
            compared += 1
        self.assertGreater(compared, 2)


if __name__ == "__main__":
    unittest.main()
