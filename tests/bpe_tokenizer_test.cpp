// GPT-2 byte-level BPE (OPT's tokenizer) against the Python reference
// (tools/reference/gpt2_bpe_ref.py, fixture tests/data/golden/bpe_tokenizer.json) on the test
// vocabulary of tests/data/make_bpe.py, and the refusal of malformed vocabularies and merges.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "text/byte_level_bpe.h"
#include "zeroskip/error.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {
namespace {

using nlohmann::json;

std::string BpeFile(const std::string& name) {
  return testing::ReadFile(testing::SourceDir() + "/tests/data/bpe/" + name);
}

// OPT's special tokens: padding 1 and "</s>" 2 (its BOS and EOS).
const std::vector<int> kSpecial = {1, 2};

class BpeTokenizerTest : public ::testing::Test {
 protected:
  BpeTokenizerTest()
      : tok_(BpeFile("vocab.json"), BpeFile("merges.txt"), kSpecial, "test"),
        fixture_(json::parse(testing::ReadFile(testing::SourceDir() +
                                               "/tests/data/golden/bpe_tokenizer.json"))) {}
  Tokenizer tok_;
  json fixture_;
};

// Token for token the reference's ids (ASCII, contractions, accents, CJK, emoji with joiners,
// numbers, runs of spaces and newlines, full-width letters, Arabic-Indic digits), and decoding
// gives the text back.
TEST_F(BpeTokenizerTest, EncodeAndDecodeMatchReference) {
  EXPECT_EQ(tok_.vocab_size(), fixture_["vocab_size"].get<int>());
  ASSERT_GE(fixture_["cases"].size(), 15u);
  for (const auto& c : fixture_["cases"]) {
    const std::string text = c["text"];
    const auto ids = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(tok_.Encode(text), ids) << text;
    EXPECT_EQ(tok_.Decode(ids), c["decoded"].get<std::string>()) << text;
    EXPECT_EQ(c["decoded"].get<std::string>(), text);
    EXPECT_LE(tok_.MinTokens(text), static_cast<int64_t>(ids.size())) << text;
  }
}

// Pre-tokenization is linear in the text: PCRE2 validated the whole rest of the subject as
// UTF-8 on every word, so 1 MB took minutes. 8 MB of words here (a hang before the fix).
TEST_F(BpeTokenizerTest, LongTextPretokenizesWordByWord) {
  std::string text;
  for (int i = 0; i < (1 << 20); ++i) text += "ab c\xC3\xA9 ";  // 8 bytes, two words
  const ByteLevelBpe bpe(BpeFile("vocab.json"), BpeFile("merges.txt"), kSpecial, "test");
  const std::vector<std::string_view> words = bpe.Pretokenize(text);
  ASSERT_EQ(words.size(), (size_t{2} << 20) + 1);
  EXPECT_EQ(words[0], "ab");
  EXPECT_EQ(words[1], " c\xC3\xA9");
  EXPECT_EQ(words[2], " ab");
  EXPECT_EQ(words.back(), " ");  // the last space has no word after it
  const std::vector<int> one = tok_.Encode("ab c\xC3\xA9");
  EXPECT_GT(tok_.Encode(text).size(), one.size() << 20);
}

// Byte-level pieces are raw bytes: a multi-byte character split across pieces comes out of
// Utf8Stream whole, and the stream gives exactly the text.
TEST_F(BpeTokenizerTest, StreamingAssemblesValidUtf8) {
  for (const auto& c : fixture_["cases"]) {
    EXPECT_EQ(testing::StreamedText(tok_, c["ids"].get<std::vector<int>>()),
              c["text"].get<std::string>());
  }
}

TEST_F(BpeTokenizerTest, SpecialPiecesDecodeToNothing) {
  EXPECT_EQ(tok_.PieceBytes(2), "");
  EXPECT_EQ(tok_.PieceBytes(1), "");
  EXPECT_EQ(tok_.PieceBytes(0), "<s>");  // in the vocabulary, not special for OPT
  EXPECT_EQ(tok_.PieceBytes(-1), "");
  EXPECT_EQ(tok_.PieceBytes(tok_.vocab_size()), "");  // padding rows of a larger embedding
  EXPECT_EQ(tok_.Decode({2, 76, 2}), "H");
  EXPECT_TRUE(tok_.HasPiece("</s>"));
  EXPECT_TRUE(tok_.HasPiece("\xC4\xA0"));  // "Ġ", the space byte's symbol
  EXPECT_FALSE(tok_.HasPiece(" "));
}

// The pre-tokenizer's words are the reference regex's (the `regex` module's \p{L}, \p{N}, \s
// and the lookahead of `\s+(?!\S)`), Unicode whitespace included.
TEST(BpeTokenizer, PretokenizerMatchesReference) {
  const ByteLevelBpe bpe(BpeFile("vocab.json"), BpeFile("merges.txt"), kSpecial, "test");
  const json fixture =
      json::parse(testing::ReadFile(testing::SourceDir() + "/tests/data/golden/bpe_tokenizer.json"));
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"];
    std::vector<std::string> words;
    for (std::string_view w : bpe.Pretokenize(text)) words.emplace_back(w);
    EXPECT_EQ(words, c["pretokens"].get<std::vector<std::string>>()) << text;
  }
}

TEST_F(BpeTokenizerTest, InvalidUtf8IsRefused) { EXPECT_THROW(tok_.Encode("a\xFFz"), Error); }

// A vocabulary of the 256 byte symbols plus `extra` pieces, in GPT-2's alphabet.
std::string ByteVocab(const json& extra = json::object()) {
  json vocab = json::object();
  int id = 0, shifted = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : 256 + shifted++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = id++;
  }
  for (const auto& [piece, _] : extra.items()) vocab[piece] = id++;
  return vocab.dump();
}

// One clear error per malformed input, never a crash.
TEST(BpeTokenizer, MalformedFilesAreRefused) {
  const std::string good = ByteVocab({{"ab", 0}});
  EXPECT_NO_THROW(Tokenizer(good, "#version: 0.2\na b\n", {}, "v"));
  const struct {
    std::string vocab, merges, reason;
  } cases[] = {
      {"{", "", "vocab.json is not valid JSON"},
      {"[1, 2]", "", "non-empty object"},
      {"{}", "", "non-empty object"},
      {R"({"a": 1})", "", "is not an integer in [0, 1)"},
      {R"({"a": -1})", "", "is not an integer"},
      {R"({"a": "0"})", "", "is not an integer"},
      {R"({"a": 0, "b": 0})", "", "twice"},
      {R"({"": 0})", "", "empty piece"},
      {R"({" ": 0})", "", "outside GPT-2's byte alphabet"},
      {R"({"a": 0})", "", "no piece for byte 0"},
      {good, "a\n", "not two pieces separated by one space"},
      {good, " a b\n", "not two pieces"},
      {good, "a b c\n", "not two pieces"},
      {good, "a \n", "not two pieces"},
      {good, "a c\n", "or their merge is not in vocab.json"},
      {good, "x y\n", "or their merge is not in vocab.json"},
      {good, "a b\na b\n", "line 2 repeats an earlier merge"},
      {good, "#version: 0.2\n#version: 0.2\n", "line 2: '#version:', '0.2' or their merge"},
  };
  for (const auto& c : cases) {
    try {
      Tokenizer(c.vocab, c.merges, {}, "v");
      ADD_FAILURE() << "accepted: " << c.vocab.substr(0, 40) << " / " << c.merges;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(c.reason)) << c.merges;
    }
  }
}

// The .zsk tokenizer section of OPT: PackByteLevelBpe's blob reads back into the same tokenizer;
// anything but the two-key object is one clear error.
TEST(BpeTokenizer, PackedBlobRoundTripsAndHostileBlobsAreRefused) {
  const std::string packed = PackByteLevelBpe(BpeFile("vocab.json"), BpeFile("merges.txt"));
  const auto tok = Tokenizer::FromPackedBpe(packed, kSpecial, "m.zsk");
  const Tokenizer direct(BpeFile("vocab.json"), BpeFile("merges.txt"), kSpecial, "test");
  EXPECT_EQ(tok->vocab_size(), direct.vocab_size());
  EXPECT_EQ(tok->Encode("The ferryman's café 東京 🙂"), direct.Encode("The ferryman's café 東京 🙂"));
  const std::string vocab = json(BpeFile("vocab.json")).dump();
  const std::string merges = json(BpeFile("merges.txt")).dump();
  for (const std::string& blob :
       {std::string("not json"), std::string("[]"), std::string("{}"),
        R"({"vocab.json": )" + vocab + "}",
        R"({"vocab.json": )" + vocab + R"(, "merges.txt": 7})",
        R"({"vocab.json": )" + vocab + R"(, "merges.txt": )" + merges + R"(, "extra": ""})"}) {
    try {
      Tokenizer::FromPackedBpe(blob, kSpecial, "m.zsk");
      ADD_FAILURE() << "accepted " << blob.substr(0, 60);
    } catch (const Error& e) {
      EXPECT_EQ(e.path(), "m.zsk");
      EXPECT_THAT(e.what(), ::testing::HasSubstr("not a JSON object of vocab.json and merges.txt"));
    }
  }
  // A damaged vocabulary inside a well-formed blob: the vocabulary's own error.
  EXPECT_THROW(Tokenizer::FromPackedBpe(
                   PackByteLevelBpe(R"({"a": 0})", BpeFile("merges.txt")), kSpecial, "m.zsk"),
               Error);
}

}  // namespace
}  // namespace zeroskip
