#include "text/byte_level_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <queue>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// GPT-2's pre-tokenizer (openai/gpt-2 encoder.py): contractions, letters, digits, other symbols,
// each with one optional leading space; runs of whitespace keep their last space for the next
// word (`\s+(?!\S)`).
constexpr char kPretokenizePattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The same limits as a sentencepiece vocabulary's (docs/FORMAT.md).
constexpr size_t kMaxVocab = 4194304;
constexpr size_t kMaxMerges = 4194304;

std::string Utf8Of(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Byte b is spelled U+00b when that is a printable Latin-1 character, else U+0100 + the count of
// non-printable bytes before it: every byte becomes one visible, non-space character.
void ByteAlphabet(std::string (&symbol)[256]) {
  uint32_t shifted = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    symbol[b] = Utf8Of(printable ? b : 256 + shifted++);
  }
}

// Length of the UTF-8 character at s[i] (s is valid UTF-8: nlohmann checks JSON strings).
size_t CharLength(std::string_view s, size_t i) {
  const auto b = static_cast<uint8_t>(s[i]);
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

pcre2_code* CompiledPattern(const std::string& path) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPretokenizePattern), PCRE2_ZERO_TERMINATED,
                    PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (code == nullptr) throw Error(path, "cannot compile the GPT-2 pre-tokenizer pattern");
  return code;
}

}  // namespace

ByteLevelBpe::ByteLevelBpe(std::string_view vocab_json, std::string_view merges_txt,
                           const std::vector<int>& special_ids, const std::string& path)
    : path_(path) {
  ByteAlphabet(byte_symbol_);
  std::unordered_map<std::string, uint8_t> byte_of;
  for (int b = 0; b < 256; ++b) byte_of[byte_symbol_[b]] = static_cast<uint8_t>(b);

  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(vocab_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("vocab.json is not valid JSON: ") + e.what());
  }
  if (!vocab.is_object() || vocab.empty()) {
    throw Error(path, "vocab.json must be a non-empty object of piece: id");
  }
  if (vocab.size() > kMaxVocab) throw Error(path, "vocab.json has more than 4194304 pieces");
  pieces_.resize(vocab.size());
  bytes_.resize(vocab.size());
  for (const auto& [piece, id_value] : vocab.items()) {
    if (!id_value.is_number_integer() || id_value.get<int64_t>() < 0 ||
        id_value.get<uint64_t>() >= vocab.size()) {
      throw Error(path, "vocab.json: the id of '" + piece + "' is not an integer in [0, " +
                            std::to_string(vocab.size()) + ")");
    }
    const auto id = id_value.get<size_t>();
    if (piece.empty()) throw Error(path, "vocab.json: empty piece");
    if (!bytes_[id].empty()) throw Error(path, "vocab.json: id " + std::to_string(id) + " twice");
    for (size_t i = 0; i < piece.size();) {
      const size_t n = CharLength(piece, i);
      const auto it = byte_of.find(piece.substr(i, n));
      if (it == byte_of.end()) {
        throw Error(path, "vocab.json: piece '" + piece +
                              "' has a character outside GPT-2's byte alphabet");
      }
      bytes_[id] += static_cast<char>(it->second);
      i += n;
    }
    pieces_[id] = piece;
    ids_.emplace(piece, static_cast<int>(id));
    longest_piece_bytes_ = std::max(longest_piece_bytes_, bytes_[id].size());
  }
  for (int b = 0; b < 256; ++b) {
    if (!ids_.contains(byte_symbol_[b])) {
      throw Error(path, "vocab.json has no piece for byte " + std::to_string(b));
    }
  }

  size_t line_no = 0;
  for (size_t start = 0; start < merges_txt.size();) {
    size_t end = merges_txt.find('\n', start);
    if (end == std::string_view::npos) end = merges_txt.size();
    std::string_view line = merges_txt.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const std::string where = "merges.txt line " + std::to_string(line_no);
    const size_t space = line.find(' ');
    if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      throw Error(path, where + " is not two pieces separated by one space");
    }
    const std::string left(line.substr(0, space)), right(line.substr(space + 1));
    if (!ids_.contains(left) || !ids_.contains(right) || !ids_.contains(left + right)) {
      throw Error(path, where + ": '" + left + "', '" + right +
                            "' or their merge is not in vocab.json");
    }
    if (merge_rank_.size() == kMaxMerges) throw Error(path, "merges.txt has too many merges");
    if (!merge_rank_.emplace(std::string(line), static_cast<int>(merge_rank_.size())).second) {
      throw Error(path, where + " repeats an earlier merge");
    }
  }

  special_.assign(pieces_.size(), false);
  for (int id : special_ids) {
    if (id >= 0 && static_cast<size_t>(id) < special_.size()) special_[id] = true;
  }
  regex_ = CompiledPattern(path);
}

ByteLevelBpe::~ByteLevelBpe() { pcre2_code_free(static_cast<pcre2_code*>(regex_)); }

std::vector<std::string_view> ByteLevelBpe::Pretokenize(std::string_view text) const {
  auto* code = static_cast<pcre2_code*>(regex_);
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
  if (!match) throw std::bad_alloc();
  std::vector<std::string_view> words;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (size_t offset = 0; offset < text.size();) {
    // PCRE2_NO_UTF_CHECK: the caller checked the text is UTF-8. Without it every call validates
    // the whole rest of the subject, which made pre-tokenization quadratic (1 MB: minutes).
    const int rc =
        pcre2_match(code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;  // every character matches some branch: unreachable
    if (rc < 0) throw Error(path_, "cannot pre-tokenize the text (PCRE2 error " +
                                       std::to_string(rc) + ")");
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
    words.push_back(text.substr(span[0], span[1] - span[0]));
    // Every branch matches at least one character; were one empty, step a whole character (a
    // start inside one is undefined without the UTF check).
    offset = span[1] > offset ? span[1] : offset + CharLength(text, offset);
  }
  return words;
}

std::vector<int> ByteLevelBpe::Encode(std::string_view text) const {
  std::vector<int> ids;
  for (std::string_view word : Pretokenize(text)) EncodeWord(word, &ids);
  return ids;
}

void ByteLevelBpe::EncodeWord(std::string_view word, std::vector<int>* ids) const {
  // GPT-2's bpe() merges the adjacent pair of lowest rank, every occurrence left to right, until
  // no adjacent pair is a merge; rescanning the word after each merge is quadratic in its length,
  // and a word has no length limit (a prompt of 100k letters is one word). Here the symbols are a
  // linked list and candidate merges wait in a heap ordered by (rank, position): the same merges
  // in the same order (a merge's result never forms the pair it came from, so the occurrences of
  // one rank are exactly those present when it comes up, taken left to right), in O(n log n).
  struct Symbol {
    std::string text;
    int64_t prev, next;  // neighbours, -1 at the ends (int64: a word through the library API has
                         // no length limit; the CLI and server cap theirs)
    uint32_t version;    // bumped when the symbol changes, so stale candidates are recognised
  };
  struct Candidate {
    int rank;
    int64_t left;
    uint32_t left_version, right_version;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const auto n = static_cast<int64_t>(word.size());
  std::vector<Symbol> symbols(n);
  for (int64_t i = 0; i < n; ++i) {
    symbols[i] = {byte_symbol_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, 0};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int64_t left) {
    if (left < 0 || symbols[left].next < 0) return;
    const Symbol &a = symbols[left], &b = symbols[a.next];
    const auto it = merge_rank_.find(a.text + ' ' + b.text);
    if (it != merge_rank_.end()) heap.push({it->second, left, a.version, b.version});
  };
  for (int64_t i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& a = symbols[c.left];
    // Stale: the left symbol was merged away or changed, or its right neighbour did.
    if (a.version != c.left_version || a.next < 0) continue;
    Symbol& b = symbols[a.next];
    if (b.version != c.right_version) continue;
    a.text += b.text;
    ++a.version;
    b.version = UINT32_MAX;  // dead: no candidate names it any more
    a.next = b.next;
    if (b.next >= 0) symbols[b.next].prev = c.left;
    consider(a.prev);
    consider(c.left);
  }
  // The constructor checked that every byte and every merge result is a piece.
  for (int64_t i = n > 0 ? 0 : -1; i >= 0; i = symbols[i].next) {
    ids->push_back(ids_.at(symbols[i].text));
  }
}

std::string ByteLevelBpe::PieceBytes(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= bytes_.size() || special_[id]) return {};
  return bytes_[id];
}

}  // namespace zeroskip
