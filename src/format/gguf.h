// GGUF input (llama.cpp's model file): a llama-architecture GGUF read as if it were a Hugging
// Face checkpoint, so the converter treats both alike.
//
// Reading validates the whole header (every length, count, type, shape and offset checked against
// the file before use: the file is hostile) and never reads tensor data until asked. What comes
// out: a config.json text built from the `llama.*` metadata (then parsed by ParseHfConfig like any
// other), a sentencepiece ModelProto rebuilt from `tokenizer.ggml.*`, and the tensors under their
// Hugging Face names, shapes and row order (llama.cpp's converter permutes the rows of q and k for
// its rotary layout; they are permuted back). ggml's q8_0, q4_0, q4_K and q6_K blocks are our q8,
// q4, q4k and q6k byte for byte and pass untouched; Q5_0, IQ4_NL and Q3_K are rewritten as q8, q8
// and q6k blocks of the same values; Q4_1, Q5_1, Q2_K and Q5_K (values with an offset) are read as
// exact f32 for the converter to quantize into q8, q8, q4k and q6k (docs/FORMAT.md, "GGUF input").
// Knows nothing of the .zsk format.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "format/checkpoint_reader.h"

namespace zeroskip {

// One metadata value: integers widened (the sign kept apart), arrays of one scalar type kept
// compact (a vocabulary is hundreds of thousands of them).
struct GgufValue {
  enum class Type { kUInt, kInt, kFloat, kBool, kString, kArray } type = Type::kUInt;
  uint64_t u = 0;  // kUInt, kBool (0/1)
  int64_t i = 0;   // kInt
  double f = 0;    // kFloat
  std::string s;   // kString
  Type element = Type::kUInt;        // kArray: its elements' type (never kArray)
  std::vector<std::string> strings;  // kArray of kString
  std::vector<double> numbers;       // kArray of numbers or bools
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the fastest (columns)
  uint64_t offset = 0;         // absolute, in the file
  uint64_t nbytes = 0;         // in the file
  DType dtype = DType::kF32;   // the native type its ggml type maps to
  bool read_f32 = false;       // dtype cannot hold its values exactly: read as f32
};

struct GgufHeader {
  uint32_t version = 0;
  std::map<std::string, GgufValue, std::less<>> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
};

// Reads bytes of the GGUF: a file, or memory (the fuzz target).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Exactly n bytes at offset; the caller has checked offset + n <= size().
  virtual void Read(uint64_t offset, void* out, uint64_t n) const = 0;
};

// Parses and validates the header (versions 2 and 3). Throws Error(path, reason).
GgufHeader ParseGgufHeader(const ByteSource& source, const std::string& path);

// The config.json text of a llama-architecture header: architecture, sizes, rope, norm eps,
// vocabulary size and special ids, tied embeddings when there is no output.weight, and the
// activation from `llama.hidden_act` (+ `llama.hidden_act_param` for fatrelu) or, absent those,
// `act` (--act). Throws Error when neither says it, they disagree, or a key is missing or bad.
std::string GgufConfigJson(const GgufHeader& header, const std::string& path,
                           const std::string& act);

// A sentencepiece ModelProto (serialized) from tokenizer.ggml.{model = "llama", tokens, scores,
// token_type, unknown/bos/eos/padding_token_id, add_space_prefix}: a BPE model with identity
// normalization, as llama.cpp's SPM tokenizer runs it. Throws Error on anything else.
std::string GgufTokenizerModel(const GgufHeader& header, const std::string& path);

// The checkpoint view of a GGUF file: tensors under Hugging Face names (unknown names kept as
// they are, so the converter refuses them by name). `header` must come from this file.
std::unique_ptr<CheckpointReader> OpenGgufCheckpoint(const std::string& path, GgufHeader header);

// `blocks` blocks of ggml type `ggml_type` (any type ParseGgufHeader accepts) at `in`, as the
// checkpoint view reads them into `out`: unchanged when they are a native type's, rewritten
// into the native blocks of the same values (Q5_0, IQ4_NL: q8; Q3_K: q6k), or as the f32 values
// ggml's dequantizer gives (Q4_1, Q5_1, Q2_K, Q5_K).
void ReadGgmlBlocks(const uint8_t* in, uint32_t ggml_type, uint64_t blocks, uint8_t* out);

// ParseGgufHeader on the file at `path`.
GgufHeader ReadGgufHeader(const std::string& path);

// Whether the file at `path` starts with the GGUF magic.
bool IsGgufFile(const std::string& path);

}  // namespace zeroskip
