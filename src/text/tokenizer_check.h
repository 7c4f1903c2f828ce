// Validates a serialized sentencepiece model (ModelProto) before sentencepiece sees it.
//
// sentencepiece trusts the model file: a normalizer's `precompiled_charsmap` is a darts-clone
// double-array trie that it walks without bounds checks, so a crafted one crashes every Encode
// (and the load itself, through the model's self-test samples). Tokenizer bytes come from
// tokenizer.model at convert time and from hostile .zsk files at load time, so every path that
// hands bytes to sentencepiece goes through SentencepieceBytesToLoad first. This module reads
// the protobuf wire format itself (bounds-checked) and does not interpret pieces or scores:
// those sentencepiece checks on load.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace zeroskip {

// The bytes to give sentencepiece for `model`: `model` with its self_test_data removed (the
// self-test runs sample text through the tokenizer at every load; it checks the trainer, not the
// file, and is hostile input too). Throws Error(path, reason) when the model is over 64 MiB, the
// protobuf wire format is broken at the top level or inside a normalizer spec, or the normalizer
// or denormalizer has a precompiled_charsmap that is not byte-identical to one of
// sentencepiece's builtin tables (nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf; empty = identity):
// custom normalization rules are refused. Also refused: a piece with a NUL byte, and more than 64
// user-defined pieces each a prefix of the next (both crash sentencepiece). `what` names the
// tokenizer in reasons ("the embedded tokenizer"); empty when `path` is the tokenizer.model itself.
std::string SentencepieceBytesToLoad(std::string_view model, const std::string& path,
                                     const std::string& what = "");

// Loads `model` into `sp` through SentencepieceBytesToLoad; throws Error(path, reason) when it is
// refused or sentencepiece fails (by status or by exception).
void LoadSentencepieceModel(std::string_view model, sentencepiece::SentencePieceProcessor& sp,
                            const std::string& path, const std::string& what = "");

// Throws Error(path, reason) unless `model` passes SentencepieceBytesToLoad and then loads as a
// sentencepiece model whose pieces all have ids below `vocab` (the model's embedding rows).
void CheckTokenizerModel(std::string_view model, int64_t vocab, const std::string& path,
                         const std::string& what = "");

// The precompiled_charsmap sentencepiece uses for builtin rule `rule` ("nmt_nfkc", "nfkc",
// "nmt_nfkc_cf", "nfkc_cf"; "identity" is empty); throws Error for other names.
std::string SentencepieceBuiltinCharsmap(std::string_view rule);

}  // namespace zeroskip
