// Builds sentencepiece model bytes (ModelProto wire format) for the tokenizer tests: takes a real
// tokenizer.model and swaps in normalizer charsmaps or self-test samples, including the hostile
// charsmap that crashes an unguarded sentencepiece. Test code: trusts its input model.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace zeroskip::testing {

constexpr uint32_t kNormalizerSpecField = 3;
constexpr uint32_t kDenormalizerSpecField = 5;

// A precompiled_charsmap whose one-unit double-array trie has a root offset of ~2^30 units:
// sentencepiece's normalizer indexes ~4 GB past the blob for the first input byte (SIGSEGV).
std::string OutOfRangeTrieCharsmap();

// `model` with the NormalizerSpec in `spec_field` (3 normalizer, 5 denormalizer) holding
// `charsmap` as its precompiled_charsmap; the other spec fields are kept (a missing spec is
// added).
std::string WithCharsmap(std::string_view model, std::string_view charsmap,
                         uint32_t spec_field = kNormalizerSpecField);

// `model` with one more self_test_data record holding the sample (input, expected).
std::string WithSelfTestSample(std::string_view model, std::string_view input,
                               std::string_view expected);

// `model` with one more piece (appended, so its id is the current piece count); `type` is the
// SentencePiece.Type code (1 normal, 4 user-defined, ...).
std::string WithPiece(std::string_view model, std::string_view text, int type);

// One length-delimited protobuf record.
std::string ProtoBytesField(uint32_t field, std::string_view payload);

}  // namespace zeroskip::testing
