// Text <-> token ids through the tokenizer embedded in a .zsk: a sentencepiece model, or GPT-2's
// byte-level BPE (OPT) from vocab.json and merges.txt (src/text/byte_level_bpe.h).
//
// Also turns a stream of generated ids into printable UTF-8: byte-fallback pieces arrive one byte
// at a time, so Utf8Stream holds back an incomplete character until its last byte arrives.
// It does not know about models or sampling.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace zeroskip {

class ByteLevelBpe;

class Tokenizer {
 public:
  // The byte-level BPE of a .zsk whose architecture uses one: `packed` as PackByteLevelBpe
  // writes it. Throws Error on a malformed blob, vocabulary or merge list.
  static std::unique_ptr<Tokenizer> FromPackedBpe(std::string_view packed,
                                                  const std::vector<int>& special_ids,
                                                  const std::string& path);
  // A serialized sentencepiece ModelProto.
  Tokenizer(std::string_view serialized_model, const std::string& path);
  // GPT-2 byte-level BPE; special_ids (BOS, EOS, padding) decode to nothing. Throws Error on a
  // malformed vocabulary or merge list.
  Tokenizer(std::string_view vocab_json, std::string_view merges_txt,
            const std::vector<int>& special_ids, const std::string& path);
  ~Tokenizer();

  // Ids of `text` without BOS/EOS. Throws Error if text is not valid UTF-8.
  std::vector<int> Encode(std::string_view text) const;
  // A lower bound on Encode(text).size() computed in one cheap pass over the bytes (UTF-8
  // aware), so an input far too long for a context is refused before tokenizing megabytes. For a
  // sentencepiece model without byte fallback it is at most 1 (a run of unknown characters of
  // any length is one <unk>).
  int64_t MinTokens(std::string_view text) const;
  // The bytes piece `id` stands for: byte pieces as raw bytes, "▁" as a space, control pieces
  // (BOS/EOS) as nothing; for byte-level BPE the piece's raw bytes (special pieces: nothing).
  std::string PieceBytes(int id) const;
  // Text of a whole id sequence, like sentencepiece's own decoder (byte-level BPE: the pieces'
  // bytes, invalid UTF-8 replaced by U+FFFD as Hugging Face decodes).
  std::string Decode(const std::vector<int>& ids) const;
  int vocab_size() const;
  // Whether the vocabulary holds this exact piece (a chat template's special markers).
  bool HasPiece(std::string_view piece) const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;  // null for byte-level BPE
  std::unique_ptr<ByteLevelBpe> bpe_;                          // null for sentencepiece
  std::string path_;
  size_t longest_piece_bytes_ = 0;  // in the model's own spelling ("▁" is 3 bytes)
  bool byte_fallback_ = false;      // has byte pieces: no character is ever unknown
};

// Buffers bytes and releases the longest prefix that is complete UTF-8. Invalid sequences are
// released as U+FFFD so a broken model cannot stall the stream.
class Utf8Stream {
 public:
  std::string Push(std::string_view bytes);
  std::string Flush();  // whatever is pending, incomplete tails as U+FFFD

 private:
  std::string pending_;
};

// vocab.json and merges.txt as one blob, a .zsk's tokenizer section for byte-level BPE: the JSON
// object {"vocab.json": text, "merges.txt": text} (docs/FORMAT.md).
std::string PackByteLevelBpe(std::string_view vocab_json, std::string_view merges_txt);

// True when `text` is well-formed UTF-8.
bool IsValidUtf8(std::string_view text);

}  // namespace zeroskip
