// Fuzz target: the tokenizer model loader. The input is a serialized sentencepiece ModelProto
// (a tokenizer.model, or the tokenizer region of a .zsk), fed through both paths that hand such
// bytes to sentencepiece: CheckTokenizerModel (what `convert` runs) and the Tokenizer constructor
// (what Model::Load runs), then through Encode / Decode / PieceBytes on a few texts, since
// sentencepiece's normalizer only walks its charsmap when it encodes.
//
// Oracles beyond "only zeroskip::Error escapes, nothing crashes": both paths accept exactly the
// same models; SentencepieceBytesToLoad is idempotent (its output passes unchanged); encoded ids
// lie inside the vocabulary.
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
};

// Upper bound on the pieces walked per input, so one huge vocabulary cannot stall the fuzzer.
constexpr int kMaxPiecesWalked = 4096;

void Exercise(const zeroskip::Tokenizer& tok) {
  const int vocab = tok.vocab_size();
  FUZZ_CHECK(vocab > 0);
  for (const std::string_view text : kTexts) {
    try {
      const std::vector<int> ids = tok.Encode(text);
      for (const int id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
      tok.Decode(ids);
    } catch (const zeroskip::Error&) {
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
    Exercise(tok);
  } catch (const zeroskip::Error&) {
    FUZZ_CHECK(!loaded);  // Exercise catches its own Errors: only the constructor may throw here
  }
  FUZZ_CHECK(checked == loaded);
  return 0;
}
