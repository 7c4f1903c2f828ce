// The sentencepiece wrapper against fixtures from the Python sentencepiece library, and the
// streaming UTF-8 assembly of byte-fallback pieces.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "zeroskip/error.h"
#include "zeroskip/tokenizer.h"

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

// Streaming piece by piece yields the same text as decoding the whole sequence, once the one
// leading space sentencepiece adds as a dummy prefix is dropped.
TEST_F(TokenizerTest, StreamingAssemblesValidUtf8) {
  for (const auto& c : fixture_["cases"]) {
    Utf8Stream stream;
    std::string streamed;
    for (int id : c["ids"].get<std::vector<int>>()) {
      const std::string out = stream.Push(tok_.PieceBytes(id));
      EXPECT_TRUE(IsValidUtf8(out));
      streamed += out;
    }
    streamed += stream.Flush();
    if (!streamed.empty() && streamed[0] == ' ') streamed.erase(0, 1);
    EXPECT_EQ(streamed, c["decoded"].get<std::string>());
  }
}

TEST(Utf8Stream, HoldsBackIncompleteCharacters) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("a\xE6"), "a");    // first byte of 日 (E6 97 A5)
  EXPECT_EQ(s.Push("\x97"), "");
  EXPECT_EQ(s.Push("\xA5!"), "\xE6\x97\xA5!");
  EXPECT_EQ(s.Push("\xFF"), "\xEF\xBF\xBD");  // invalid byte -> U+FFFD, stream continues
  EXPECT_EQ(s.Push("\xC3"), "");
  EXPECT_EQ(s.Flush(), "\xEF\xBF\xBD");       // truncated tail
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

}  // namespace
}  // namespace zeroskip
