// GPT-2 byte-level BPE (OPT, GPT-2): vocab.json + merges.txt as Hugging Face's GPT2Tokenizer
// reads them. Text is cut by GPT-2's pre-tokenization regex (PCRE2 with Unicode properties),
// each piece's bytes are spelled with GPT-2's byte-to-unicode alphabet and merged pair by pair in
// merge-rank order. Every byte has a piece, so any valid UTF-8 text encodes and every id decodes
// to raw bytes. It knows nothing about models: the Tokenizer wraps it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace zeroskip {

class ByteLevelBpe {
 public:
  // vocab_json: {"piece": id, ...} with ids 0..n-1 each once; merges_txt: an optional "#version"
  // line, then one "left right" pair per line. special_ids: pieces that decode to nothing (BOS,
  // EOS, padding). Throws Error(path, reason) on any malformed or inconsistent byte.
  ByteLevelBpe(std::string_view vocab_json, std::string_view merges_txt,
               const std::vector<int>& special_ids, const std::string& path);
  ~ByteLevelBpe();
  ByteLevelBpe(const ByteLevelBpe&) = delete;
  ByteLevelBpe& operator=(const ByteLevelBpe&) = delete;

  // Ids of valid UTF-8 `text` (the caller checks), no BOS.
  std::vector<int> Encode(std::string_view text) const;
  // GPT-2's pre-tokenization of valid UTF-8 `text`: the words BPE merges within.
  std::vector<std::string_view> Pretokenize(std::string_view text) const;
  // The raw bytes of piece `id`; special pieces and ids outside the vocabulary give "".
  std::string PieceBytes(int id) const;
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  // Whether `piece` (in the vocabulary's own spelling) is a piece.
  bool HasPiece(std::string_view piece) const { return ids_.contains(std::string(piece)); }
  // The most raw bytes one piece stands for.
  size_t longest_piece_bytes() const { return longest_piece_bytes_; }

 private:
  // Appends the ids of one pre-tokenized word (raw bytes) to `ids`.
  void EncodeWord(std::string_view word, std::vector<int>* ids) const;

  std::string path_;
  std::vector<std::string> pieces_;      // [vocab] as spelled in vocab.json
  std::vector<std::string> bytes_;       // [vocab] the raw bytes each stands for
  std::vector<bool> special_;            // [vocab]
  std::unordered_map<std::string, int> ids_;
  std::unordered_map<std::string, int> merge_rank_;  // "left right" -> line of merges.txt
  std::string byte_symbol_[256];         // GPT-2's byte-to-unicode alphabet, UTF-8
  size_t longest_piece_bytes_ = 1;
  void* regex_ = nullptr;                // pcre2_code_8 (kept out of this header)
};

}  // namespace zeroskip
