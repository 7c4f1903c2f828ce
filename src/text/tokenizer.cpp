#include "zeroskip/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "text/byte_level_bpe.h"
#include "text/tokenizer_check.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// Length of the UTF-8 sequence starting at s[i]: >0 complete, 0 incomplete (needs more bytes),
// -1 invalid.
int Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  int n;
  uint32_t min;
  if (b0 < 0x80) return 1;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, min = 0x10000;
  } else {
    return -1;
  }
  uint32_t cp = b0 & (0x7F >> n);
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return 0;
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  return n;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

// The code point of the valid n-byte UTF-8 sequence at s[i].
uint32_t CodePoint(std::string_view s, size_t i, int n) {
  uint32_t cp = static_cast<uint8_t>(s[i]) & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  return cp;
}

// Non-ASCII characters a builtin normalization may delete or turn into whitespace (which may
// then be folded away): C1 controls and no-break space, the Unicode spaces, zero-width and
// format characters, line and paragraph separators, the byte order mark, specials; and U+2581,
// sentencepiece's own whitespace mark. Generous on purpose: leaving one out only loosens the bound.
bool MayVanish(uint32_t cp) {
  return cp <= 0xA0 || cp == 0xAD || cp == 0x034F || cp == 0x061C || cp == 0x115F || cp == 0x1160 ||
         cp == 0x1680 || (cp >= 0x17B4 && cp <= 0x17B5) || (cp >= 0x180B && cp <= 0x180F) ||
         (cp >= 0x2000 && cp <= 0x206F) || cp == 0x2581 || cp == 0x3000 || cp == 0x3164 ||
         (cp >= 0xFE00 && cp <= 0xFE0F) || cp == 0xFEFF || cp == 0xFFA0 ||
         (cp >= 0xFFF0 && cp <= 0xFFFF) || (cp >= 0x1BCA0 && cp <= 0x1BCA3) ||
         (cp >= 0x1D173 && cp <= 0x1D17A) || (cp >= 0xE0000 && cp <= 0xE0FFF);
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const int n = Utf8SequenceLength(text, i);
    if (n <= 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

Tokenizer::Tokenizer(std::string_view serialized_model, const std::string& path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(path) {
  LoadSentencepieceModel(serialized_model, *sp_, path, "the embedded tokenizer");
  for (int id = 0; id < sp_->GetPieceSize(); ++id) {
    longest_piece_bytes_ = std::max(longest_piece_bytes_, sp_->IdToPiece(id).size());
    byte_fallback_ = byte_fallback_ || sp_->IsByte(id);
  }
}

Tokenizer::Tokenizer(std::string_view vocab_json, std::string_view merges_txt,
                     const std::vector<int>& special_ids, const std::string& path)
    : bpe_(std::make_unique<ByteLevelBpe>(vocab_json, merges_txt, special_ids, path)),
      path_(path) {}

std::unique_ptr<Tokenizer> Tokenizer::FromPackedBpe(std::string_view packed,
                                                     const std::vector<int>& special_ids,
                                                     const std::string& path) {
  const nlohmann::json j = nlohmann::json::parse(packed, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.size() != 2 || !j.contains("vocab.json") ||
      !j["vocab.json"].is_string() || !j.contains("merges.txt") || !j["merges.txt"].is_string()) {
    throw Error(path, "the embedded tokenizer is not a JSON object of vocab.json and merges.txt");
  }
  return std::make_unique<Tokenizer>(j["vocab.json"].get<std::string>(),
                                     j["merges.txt"].get<std::string>(), special_ids, path);
}

std::string PackByteLevelBpe(std::string_view vocab_json, std::string_view merges_txt) {
  // Invalid UTF-8 cannot go into JSON; it could not be a valid vocabulary either.
  return nlohmann::json{{"vocab.json", vocab_json}, {"merges.txt", merges_txt}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int64_t Tokenizer::MinTokens(std::string_view text) const {
  if (bpe_) {  // every byte of the text lands in one piece, of at most longest_piece_bytes
    const auto longest = static_cast<int64_t>(bpe_->longest_piece_bytes());
    return (static_cast<int64_t>(text.size()) + longest - 1) / longest;
  }
  // A lower bound on the normalized text's characters other than whitespace, each at least one
  // byte, and one piece spans at most longest_piece_bytes_ bytes. Every builtin normalization
  // (NFKC, case folding, whitespace folding) keeps an ASCII graphic character as one ASCII byte.
  // Other characters are never deleted (NFKC maps nothing to nothing; the nmt rules delete only
  // controls and fold whitespace, both left out of the count), but composition can merge up to 4
  // of them (a canonical decomposition is at most 4 long) into one, an ASCII letter at most once.
  // All of this needs byte fallback: without it a run of unknown characters, however long, is
  // one <unk> piece, so such a model only promises a token for text that has a character.
  int64_t ascii = 0, other = 0;
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<uint8_t>(text[i]);
    if (b < 0x80) {
      ascii += b > ' ' && b < 0x7f;
      ++i;
      continue;
    }
    const int n = Utf8SequenceLength(text, i);
    if (n <= 0) {  // not UTF-8: Encode refuses it; count nothing
      ++i;
      continue;
    }
    other += !MayVanish(CodePoint(text, i, n));
    i += static_cast<size_t>(n);
  }
  if (!byte_fallback_) return ascii + other > 0 ? 1 : 0;
  const int64_t characters = std::max(ascii, (ascii + other + 3) / 4);
  const auto longest = static_cast<int64_t>(std::max<size_t>(1, longest_piece_bytes_));
  return (characters + longest - 1) / longest;
}

Tokenizer::~Tokenizer() = default;

int Tokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : sp_->GetPieceSize(); }

bool Tokenizer::HasPiece(std::string_view piece) const {
  if (bpe_) return bpe_->HasPiece(piece);
  const int id = sp_->PieceToId(piece);
  return id >= 0 && id != sp_->unk_id() && sp_->IdToPiece(id) == piece;
}

std::vector<int> Tokenizer::Encode(std::string_view text) const {
  if (!IsValidUtf8(text)) throw Error(path_, "prompt is not valid UTF-8");
  if (bpe_) return bpe_->Encode(text);
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  if (!status.ok()) throw Error(path_, "cannot tokenize: " + status.ToString());
  return ids;
}

std::string Tokenizer::PieceBytes(int id) const {
  if (bpe_) return bpe_->PieceBytes(id);
  if (id < 0 || id >= sp_->GetPieceSize()) return {};  // padding rows of a larger embedding
  if (sp_->IsControl(id)) return {};
  if (sp_->IsUnknown(id)) return " \xE2\x81\x87 ";  // sentencepiece's own rendering of <unk>
  const std::string piece = sp_->IdToPiece(id);
  if (sp_->IsByte(id)) {  // "<0xAB>"
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  std::string out;
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {  // U+2581 marks a space
      out += ' ';
      i += 2;
    } else {
      out += piece[i];
    }
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  if (bpe_) {
    Utf8Stream text;
    std::string out;
    for (int id : ids) out += text.Push(bpe_->PieceBytes(id));
    return out + text.Flush();
  }
  std::vector<int> valid;
  for (int id : ids) {
    if (id >= 0 && id < sp_->GetPieceSize()) valid.push_back(id);
  }
  std::string text;
  sp_->Decode(valid, &text);
  return text;
}

std::string Utf8Stream::Push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const int n = Utf8SequenceLength(pending_, i);
    if (n == 0) break;  // wait for the rest of this character
    if (n < 0) {
      out += kReplacement;
      ++i;
    } else {
      out.append(pending_, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::Flush() {
  std::string out = pending_.empty() ? "" : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace zeroskip
