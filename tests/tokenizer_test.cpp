// The sentencepiece wrapper against fixtures from the Python sentencepiece library, the
// streaming UTF-8 assembly of byte-fallback pieces, and the model validation that runs before
// sentencepiece sees tokenizer bytes (hostile normalizer charsmaps, self-test samples).
#include "zeroskip/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "sentencepiece_bytes.h"
#include "test_util.h"
#include "text/tokenizer_check.h"
#include "zeroskip/error.h"
#include "zeroskip/format.h"

namespace zeroskip {
namespace {

using nlohmann::json;

class TokenizerTest : public ::testing::Test {
 protected:
  TokenizerTest()
      : tok_(testing::ReadFile(testing::SourceDir() + "/tests/data/tokenizer.model"), "test"),
        fixture_(json::parse(
            testing::ReadFile(testing::SourceDir() + "/tests/data/golden/tokenizer.json"))) {}
  Tokenizer tok_;
  json fixture_;
};

TEST_F(TokenizerTest, EncodeAndDecodeMatchSentencepiece) {
  EXPECT_EQ(tok_.vocab_size(), fixture_["vocab_size"].get<int>());
  for (const auto& c : fixture_["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok_.Encode(text), c["ids"].get<std::vector<int>>()) << text;
    EXPECT_EQ(tok_.Decode(c["ids"].get<std::vector<int>>()), c["decoded"].get<std::string>());
  }
}

// MinTokens is a lower bound on what Encode gives, for ASCII and for text that NFKC composes
// (decomposed accents, Hangul jamo) or deletes (zero-width and format characters).
TEST_F(TokenizerTest, MinTokensIsALowerBound) {
  std::vector<std::string> texts;
  for (const auto& c : fixture_["cases"]) texts.push_back(c["text"]);
  // e + U+0301 three times, A + U+030A + U+0301
  texts.push_back(
      "e\xCC\x81"
      "e\xCC\x81"
      "e\xCC\x81"
      " A\xCC\x8A\xCC\x81");
  texts.push_back("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8");  // Hangul L V T: one syllable
  texts.push_back(
      "\xE2\x80\x8B\xE2\x80\x8D\xEF\xBB\xBF\xC2\xA0"
      "x");  // ZWSP, ZWJ, BOM, NBSP
  std::string many;
  for (int i = 0; i < 500; ++i) many += "\xC3\xA9\xE6\x97\xA5\xF0\x9F\x99\x82 ";
  texts.push_back(many);
  for (const std::string& text : texts) {
    EXPECT_LE(tok_.MinTokens(text), static_cast<int64_t>(tok_.Encode(text).size())) << text;
  }
}

// Non-ASCII text counts towards the bound (it used to count ASCII only, so 10 MB of "é" was
// tokenized in full, 26 s and 2 GB, before being refused): 1 MB of it bounds at 2^19 / 4
// characters over the longest piece.
TEST_F(TokenizerTest, MinTokensCountsNonAsciiText) {
  std::string text;
  for (int i = 0; i < (1 << 19); ++i) text += "\xC3\xA9";
  const int64_t longest = 8;  // tests/data/tokenizer.model's longest piece, in bytes
  EXPECT_EQ(tok_.MinTokens(text), ((1 << 19) / 4 + longest - 1) / longest);
}

// Streaming piece by piece yields the same text as decoding the whole sequence, once the one
// leading space sentencepiece adds as a dummy prefix is dropped.
TEST_F(TokenizerTest, StreamingAssemblesValidUtf8) {
  for (const auto& c : fixture_["cases"]) {
    std::string streamed = testing::StreamedText(tok_, c["ids"].get<std::vector<int>>());
    if (!streamed.empty() && streamed[0] == ' ') streamed.erase(0, 1);
    EXPECT_EQ(streamed, c["decoded"].get<std::string>());
  }
}

TEST(Utf8Stream, HoldsBackIncompleteCharacters) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("a\xE6"), "a");  // first byte of 日 (E6 97 A5)
  EXPECT_EQ(s.Push("\x97"), "");
  EXPECT_EQ(s.Push("\xA5!"), "\xE6\x97\xA5!");
  EXPECT_EQ(s.Push("\xFF"), "\xEF\xBF\xBD");  // invalid byte -> U+FFFD, stream continues
  EXPECT_EQ(s.Push("\xC3"), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");  // truncated tail
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(IsValidUtf8("Grüße 日本 🙂"));
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong, three bytes for U+002F
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong, three bytes for U+07FF
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // overlong, four bytes for U+FFFF
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));       // U+0800, the smallest three-byte one
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));   // U+10000, the smallest four-byte one
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("abc\xE6\x97"));       // truncated
}

TEST_F(TokenizerTest, InvalidUtf8IsRefused) { EXPECT_THROW(tok_.Encode("a\xFFz"), Error); }

TEST(Tokenizer, GarbageModelIsRefused) { EXPECT_THROW(Tokenizer("not a model", "x"), Error); }

// ---------------------------------------------------------------- model validation

using ::testing::HasSubstr;
using testing::OutOfRangeTrieCharsmap;
using testing::WithCharsmap;
using testing::WithSelfTestSample;

std::string TestModel() {
  return testing::ReadFile(testing::SourceDir() + "/tests/data/tokenizer.model");
}

using testing::ErrorText;

std::string LoadError(const std::string& model) {
  return ErrorText([&] { Tokenizer(model, "m.zsk"); });
}
std::string CheckError(const std::string& model) {
  return ErrorText([&] { CheckTokenizerModel(model, 384, "tokenizer.model"); });
}

// The crash from the review: sentencepiece accepts this model and then segfaults in its
// normalizer on the first Encode (and on load when self-test samples are present).
TEST(TokenizerModelCheck, OutOfRangeTrieIsRefusedBeforeSentencepieceSeesIt) {
  const std::string hostile = WithCharsmap(TestModel(), OutOfRangeTrieCharsmap());
  EXPECT_EQ(LoadError(hostile),
            "m.zsk: the embedded tokenizer's normalizer_spec has a custom precompiled_charsmap (9 "
            "bytes); only sentencepiece's builtin normalization rules (nmt_nfkc, nfkc, "
            "nmt_nfkc_cf, nfkc_cf, identity) are supported");
  EXPECT_EQ(CheckError(hostile),
            "tokenizer.model: normalizer_spec has a custom precompiled_charsmap (9 bytes); only "
            "sentencepiece's builtin normalization rules (nmt_nfkc, nfkc, nmt_nfkc_cf, nfkc_cf, "
            "identity) are supported");
  const std::string with_self_test = WithSelfTestSample(hostile, "hello", "\xE2\x96\x81hello");
  EXPECT_THAT(LoadError(with_self_test), HasSubstr("custom precompiled_charsmap"));
  EXPECT_THAT(CheckError(with_self_test), HasSubstr("custom precompiled_charsmap"));
}

TEST(TokenizerModelCheck, DenormalizerAndRepeatedSpecsAreChecked) {
  const std::string model = TestModel();
  EXPECT_THAT(
      LoadError(WithCharsmap(model, OutOfRangeTrieCharsmap(), testing::kDenormalizerSpecField)),
      HasSubstr("denormalizer_spec has a custom precompiled_charsmap"));
  // Protobuf merges a repeated spec and keeps the last charsmap: every occurrence counts.
  const std::string second_spec = testing::ProtoBytesField(
      testing::kNormalizerSpecField, testing::ProtoBytesField(2, OutOfRangeTrieCharsmap()));
  EXPECT_THAT(LoadError(model + second_spec), HasSubstr("custom precompiled_charsmap"));
  const std::string nfkc = SentencepieceBuiltinCharsmap("nfkc");
  const std::string hostile_then_builtin =
      model + testing::ProtoBytesField(testing::kNormalizerSpecField,
                                       testing::ProtoBytesField(2, OutOfRangeTrieCharsmap()) +
                                           testing::ProtoBytesField(2, nfkc));
  EXPECT_THAT(LoadError(hostile_then_builtin), HasSubstr("custom precompiled_charsmap"));
}

TEST(TokenizerModelCheck, BuiltinRulesAreAccepted) {
  for (const char* rule : {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"}) {
    const std::string model = WithCharsmap(TestModel(), SentencepieceBuiltinCharsmap(rule));
    EXPECT_EQ(CheckError(model), "(accepted)") << rule;
    EXPECT_EQ(LoadError(model), "(accepted)") << rule;
  }
  // The table is really in use: NFKC folds full-width letters to ASCII.
  const Tokenizer nfkc(WithCharsmap(TestModel(), SentencepieceBuiltinCharsmap("nmt_nfkc")), "x");
  const Tokenizer identity(TestModel(), "x");
  EXPECT_EQ(nfkc.Encode("\xEF\xBC\xA1nna"), identity.Encode("Anna"));  // U+FF21 FULLWIDTH A
  EXPECT_NE(identity.Encode("\xEF\xBC\xA1nna"), identity.Encode("Anna"));
}

TEST(TokenizerModelCheck, AlteredBuiltinTableIsRefused) {
  std::string table = SentencepieceBuiltinCharsmap("nmt_nfkc");
  table[table.size() / 2] ^= 1;
  EXPECT_THAT(LoadError(WithCharsmap(TestModel(), table)),
              HasSubstr("custom precompiled_charsmap"));
  EXPECT_THROW(SentencepieceBuiltinCharsmap("nfkd"), Error);
}

// sentencepiece would refuse this model ("Self-test failures"); the samples are dropped before it
// loads, since running them only re-checks the trainer and feeds it more hostile text.
TEST(TokenizerModelCheck, SelfTestSamplesAreNotRun) {
  const std::string model = WithSelfTestSample(TestModel(), "hello", "not what it encodes to");
  EXPECT_EQ(LoadError(model), "(accepted)");
  EXPECT_EQ(SentencepieceBytesToLoad(model, "x"), TestModel());
}

TEST(TokenizerModelCheck, BrokenWireFormatIsRefused) {
  const std::string model = TestModel();
  EXPECT_THAT(LoadError(model.substr(0, model.size() - 1)),
              HasSubstr("m.zsk: the embedded tokenizer is not a valid sentencepiece model (broken "
                        "protobuf at byte"));
  EXPECT_THAT(CheckError(model + "\x1b"), HasSubstr("not a valid sentencepiece model (broken "));
  // Field 3 as a varint instead of a message; a group (wire type 3); a spec cut short inside.
  EXPECT_THAT(CheckError(model + "\x18\x01"), HasSubstr("normalizer_spec is not a message"));
  EXPECT_THAT(CheckError(model + "\x0b"), HasSubstr("(broken protobuf at byte"));
  EXPECT_THAT(CheckError(model + testing::ProtoBytesField(3,
                                                          "\x12\x05"
                                                          "ab")),
              HasSubstr("normalizer_spec is broken at byte"));
  EXPECT_THAT(CheckError(model + testing::ProtoBytesField(3, "\x10\x01")),
              HasSubstr("precompiled_charsmap is not a byte string"));
  EXPECT_THAT(CheckError(std::string((64u << 20) + 1, '\0')), HasSubstr("larger than 64 MiB"));
  EXPECT_THAT(CheckError("not a model"), HasSubstr("not a valid sentencepiece model"));
}

// Two more ways a model crashed sentencepiece, found by fuzzing and by reading its code: a NUL
// inside a piece (darts-clone throws from the model constructor) and user-defined pieces nested
// more than 64 deep (PrefixMatcher reads past its 64-entry result array on Encode).
TEST(TokenizerModelCheck, PiecesThatCrashSentencepieceAreRefused) {
  const std::string model = TestModel();
  EXPECT_EQ(LoadError(testing::WithPiece(model, std::string("\0abc", 4), 1)),
            "m.zsk: the embedded tokenizer's piece 384 contains a NUL byte");
  EXPECT_EQ(CheckError(testing::WithPiece(model, std::string("ab\0", 3), 4)),
            "tokenizer.model: piece 384 contains a NUL byte");

  auto nested = [&](int depth) {
    std::string m = model;
    for (int i = 1; i <= depth; ++i) m = testing::WithPiece(m, "@@@" + std::string(i, 'q'), 4);
    return m;
  };
  EXPECT_EQ(CheckError(nested(65)),
            "tokenizer.model: user-defined pieces nest 65 deep (each a prefix of the next); "
            "sentencepiece handles at most 64");
  const Tokenizer deepest(nested(64), "x");
  // The longest user-defined symbol wins: "@@@" + 64 q's is one piece.
  const std::vector<int> ids = deepest.Encode("@@@" + std::string(64, 'q'));
  EXPECT_NE(std::find(ids.begin(), ids.end(), 384 + 63), ids.end());
}

// The load path of a hostile .zsk: opening it (info, verify, run, Model::Load) refuses it with one
// clear line instead of crashing later in Encode.
TEST(TokenizerModelCheck, ZskWithHostileTokenizerIsRefused) {
  testing::TempDir dir;
  ModelConfig c;
  c.hf_architecture = "LlamaForCausalLM";
  c.hidden = 8, c.ffn = 12, c.layers = 1, c.heads = 2, c.kv_heads = 1, c.head_dim = 4;
  c.vocab = 384, c.context = 16;
  const std::string path = dir / "m.zsk";
  {
    ZskWriter w(path, c, "{}", WithCharsmap(TestModel(), OutOfRangeTrieCharsmap()), {});
    w.Finish();
  }
  EXPECT_THAT(ErrorText([&] { ZskFile::Open(path); }),
              HasSubstr("m.zsk: the embedded tokenizer's normalizer_spec has a custom "
                        "precompiled_charsmap"));
  for (const char* command : {"verify", "info"}) {
    const auto r = testing::RunCli({command, path});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_THAT(r.err, HasSubstr("the embedded tokenizer's normalizer_spec has a custom"));
  }
  const auto r = testing::RunCli({"run", "-m", path, "-p", "hello", "-n", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("the embedded tokenizer's normalizer_spec has a custom"));
}

}  // namespace
}  // namespace zeroskip
