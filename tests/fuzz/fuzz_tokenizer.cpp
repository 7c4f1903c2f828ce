// Fuzz target: the tokenizer model loader. The input is a serialized sentencepiece ModelProto
// (a tokenizer.model, or the tokenizer region of a .zsk), fed through both paths that hand such
// bytes to sentencepiece: CheckTokenizerModel (what `convert` runs) and the Tokenizer constructor
// (what Model::Load runs), then through Encode / Decode / PieceBytes on a few texts, since
// sentencepiece's normalizer only walks its charsmap when it encodes.
//
// An input that is a packed GPT-2 byte-level BPE (the JSON object of vocab.json and merges.txt
// a .zsk of OPT embeds) goes through Tokenizer::FromPackedBpe and the same texts instead.
//
// Oracles beyond "only zeroskip::Error escapes, nothing crashes": both paths accept exactly the
// same models; SentencepieceBytesToLoad is idempotent (its output passes unchanged); encoded ids
// lie inside the vocabulary; MinTokens (the bound the CLI and server refuse long prompts by
// before tokenizing) never exceeds what Encode gives. Once per process, MinTokens of a 4 MB
// non-ASCII text and the Encode of a 1 MB text (BPE: the pre-tokenizer) run under libFuzzer's
// -timeout, so a length bound or a pre-tokenizer that goes quadratic again is a timeout.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "text/tokenizer_check.h"
#include "zeroskip/error.h"
#include "zeroskip/tokenizer.h"

namespace {

// Texts that reach the normalizer's trie with ASCII, multi-byte UTF-8, NFKC-foldable and
// whitespace-only input.
constexpr std::string_view kTexts[] = {
    "Anna reads a long letter at the caf\xC3\xA9.",
    "  two  spaces\tand a tab\n",
    "\xEF\xBC\xA1\xEF\xBD\xB6 \xE2\x91\xA0 Gr\xC3\xBC\xC3\x9F"
    "e \xE6\x97\xA5\xE6\x9C\xAC "
    "\xF0\x9F\x99\x82",  // full-width A, half-width katakana, circled 1, Grüße 日本 🙂
    "   ",
    "x",
    // composed by NFKC (e + U+0301, A + U+030A + U+0301, Hangul L V T), zero-width and format
    // characters, a no-break space: what the length bound must not overcount
    "e\xCC\x81"
    "e\xCC\x81"
    " A\xCC\x8A\xCC\x81 \xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"
    "\xE2\x80\x8B\xE2\x80\x8D\xEF\xBB\xBF\xC2\xA0"
    "x",
};

// The long texts of the once-per-process checks.
std::string Repeated(std::string_view unit, size_t bytes) {
  std::string text;
  while (text.size() < bytes) text += unit;
  return text;
}

// Upper bound on the pieces walked per input, so one huge vocabulary cannot stall the fuzzer.
constexpr int kMaxPiecesWalked = 4096;

void Exercise(const zeroskip::Tokenizer& tok, bool bpe) {
  const int vocab = tok.vocab_size();
  FUZZ_CHECK(vocab > 0);
  for (const std::string_view text : kTexts) {
    try {
      const std::vector<int> ids = tok.Encode(text);
      for (const int id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
      FUZZ_CHECK(tok.MinTokens(text) <= static_cast<int64_t>(ids.size()));
      tok.Decode(ids);
    } catch (const zeroskip::Error&) {
    }
  }
  // Once per process and kind: MinTokens must stay one cheap pass; the BPE pre-tokenizer must
  // stay linear (sentencepiece's own Encode is not ours to time).
  static bool long_texts_done[2] = {false, false};
  if (!long_texts_done[bpe]) {
    long_texts_done[bpe] = true;
    static const std::string huge = Repeated(
        "\xC3\xA9\xE6\x97\xA5 Gr\xC3\xBC\xC3\x9F"
        "e ",
        4 << 20);
    FUZZ_CHECK(tok.MinTokens(huge) >= 0);
    if (bpe) {
      static const std::string long_text = Repeated(
          "The quick brown fox, 12 jumps; \xC3\xBC"
          "ber caf\xC3\xA9.  ",
          1 << 20);
      FUZZ_CHECK(tok.MinTokens(long_text) <= static_cast<int64_t>(tok.Encode(long_text).size()));
    }
  }
  std::vector<int> ids;
  for (int id = -1; id <= vocab && id < kMaxPiecesWalked; ++id) {
    tok.PieceBytes(id);
    ids.push_back(id);
  }
  tok.Decode(ids);  // out-of-range ids included: they are dropped
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view model(reinterpret_cast<const char*>(data), size);

  if (!model.empty() && model[0] == '{') {  // a packed byte-level BPE
    try {
      const auto bpe = zeroskip::Tokenizer::FromPackedBpe(model, {1, 2}, "model.zsk");
      Exercise(*bpe, true);
    } catch (const zeroskip::Error&) {
    }
    return 0;
  }

  try {
    const std::string kept = zeroskip::SentencepieceBytesToLoad(model, "fuzz");
    FUZZ_CHECK(kept.size() <= model.size());
    FUZZ_CHECK(zeroskip::SentencepieceBytesToLoad(kept, "fuzz") == kept);
  } catch (const zeroskip::Error&) {
  }

  bool checked = false;
  try {
    zeroskip::CheckTokenizerModel(model, INT64_MAX, "tokenizer.model");
    checked = true;
  } catch (const zeroskip::Error&) {
  }

  bool loaded = false;
  try {
    const zeroskip::Tokenizer tok(model, "model.zsk");
    loaded = true;
    Exercise(tok, false);
  } catch (const zeroskip::Error&) {
    FUZZ_CHECK(!loaded);  // Exercise catches its own Errors: only the constructor may throw here
  }
  FUZZ_CHECK(checked == loaded);
  return 0;
}
