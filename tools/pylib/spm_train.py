"""Trains a Llama-style sentencepiece BPE tokenizer in memory: byte fallback, unk/bos/eos =
0/1/2, no pad, no text normalization, a dummy-prefix space, digits split. Shared by the training
recipe and the test-tokenizer generator so both produce the same kind of model; single-threaded,
so the output bytes are reproducible."""
import io

import sentencepiece as spm


def train_bpe(sentences, vocab_size, **overrides):
    """-> serialized ModelProto bytes. `overrides` replace any default option below."""
    options = dict(
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        num_threads=1,
        minloglevel=2,
    )
    options.update(overrides)
    model = io.BytesIO()  # in memory: no temporary path is recorded in the model
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, **options)
    return model.getvalue()
