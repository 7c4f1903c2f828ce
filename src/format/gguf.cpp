#include "format/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <set>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "format/dtype.h"
#include "format/file_io.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using nlohmann::json;

// Far beyond any real file, small enough that nothing sized from them exhausts memory.
constexpr uint64_t kMaxMetadata = 1 << 16;
constexpr uint64_t kMaxTensors = 1 << 20;
constexpr uint64_t kMaxKeyBytes = 1 << 16;
constexpr uint64_t kMaxStringBytes = 1 << 24;
constexpr uint64_t kMaxArray = 1 << 23;
constexpr uint64_t kMaxNameBytes = 1024;
constexpr uint64_t kMaxDim = uint64_t{1} << 40;
constexpr uint32_t kDefaultAlignment = 32;

enum : uint32_t {
  kU8 = 0, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64
};

const char* GgmlTypeName(uint32_t t) {
  static const char* const kNames[] = {
      "F32",     "F16",     "Q4_0",  "Q4_1",   "Q4_2",   "Q4_3",  "Q5_0", "Q5_1",
      "Q8_0",    "Q8_1",    "Q2_K",  "Q3_K",   "Q4_K",   "Q5_K",  "Q6_K", "Q8_K",
      "IQ2_XXS", "IQ2_XS",  "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
      "I8",      "I16",     "I32",   "I64",    "F64",    "IQ1_M", "BF16"};
  return t < std::size(kNames) ? kNames[t] : "unknown";
}

// What zeroskip reads of ggml's block types: each one's block, and the native type it maps to
// (docs/FORMAT.md, "GGUF input"). `rewrite`: blocks rewritten into the native type's with the same
// values; `exact` false: the native type cannot hold the values (they carry an offset), which
// are read as f32 and quantized once by the converter.
struct GgmlType {
  uint32_t code;
  uint64_t block_elements, block_bytes;
  DType native;
  bool rewrite, exact;
};

constexpr uint32_t kGgmlQ4_1 = 3, kGgmlQ5_0 = 6, kGgmlQ5_1 = 7, kGgmlQ2K = 10, kGgmlQ3K = 11,
                   kGgmlQ5K = 13, kGgmlIQ4NL = 20;

// IQ4_NL's 16 levels (int8, so q8 holds them).
constexpr int8_t kIQ4NLLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

std::optional<GgmlType> GgmlTypeOf(uint32_t t) {
  const auto same = [t](DType d) {
    return GgmlType{t, DTypeBlockElements(d), DTypeBlockBytes(d), d, false, true};
  };
  switch (t) {
    case 0:
      return same(DType::kF32);
    case 1:
      return same(DType::kF16);
    case 2:
      return same(DType::kQ4);
    case 8:
      return same(DType::kQ8);
    case 12:
      return same(DType::kQ4K);
    case 14:
      return same(DType::kQ6K);
    case 30:
      return same(DType::kBF16);
    // {f16 d, f16 m, 16 bytes of 4-bit q}: d·q + m
    case kGgmlQ4_1:
      return GgmlType{t, kQuantBlock, 20, DType::kQ8, false, false};
    // {f16 d, 32 high bits, 16 bytes of low nibbles}: d·(q − 16), q8 with the same d
    case kGgmlQ5_0:
      return GgmlType{t, kQuantBlock, 22, DType::kQ8, true, true};
    // {f16 d, f16 m, 32 high bits, 16 bytes of low nibbles}: d·q + m
    case kGgmlQ5_1:
      return GgmlType{t, kQuantBlock, 24, DType::kQ8, false, false};
    // {16 bytes of 4-bit scale and min, 64 bytes of 2-bit q, f16 d, f16 dmin}
    case kGgmlQ2K:
      return GgmlType{t, kSuperBlock, 84, DType::kQ4K, false, false};
    // {32 bytes of high bits, 64 bytes of 2-bit q, 12 bytes of 6-bit scales, f16 d}: q6k's
    // groups of 16 with int8 scales sc − 32 and levels q + 32
    case kGgmlQ3K:
      return GgmlType{t, kSuperBlock, 110, DType::kQ6K, true, true};
    // {f16 d, 16 bytes of nibbles as q4's}: d·level[q] of a fixed table of int8 levels, q8
    // with the same d (llama.cpp's fallback for Q2_K and Q3_K rows that are not whole 256-blocks)
    case kGgmlIQ4NL:
      return GgmlType{t, kQuantBlock, 18, DType::kQ8, true, true};
    // {f16 d, f16 dmin, q4k's 12 bytes of scales and mins, 32 bytes of high bits, 128 of nibbles}
    case kGgmlQ5K:
      return GgmlType{t, kSuperBlock, 176, DType::kQ6K, false, false};
    default:
      return std::nullopt;
  }
}

float Half(const uint8_t* p) { return HalfToFloat(LoadLe16(p)); }

// Sub-block j's (0..15) 6-bit Q3_K scale from its 12 packed bytes: the low 4 bits in byte j
// (j < 8) or the high nibble of byte j − 8, the top 2 bits in byte 8 + j % 4 at bit 2·(j / 4).
int Q3KScale(const uint8_t* packed, int j) {
  const int low = j < 8 ? packed[j] & 15 : packed[j - 8] >> 4;
  return low | (packed[8 + j % 4] >> 2 * (j / 4) & 3) << 4;
}

// Element i of a 256-block's 2-bit levels (Q2_K, Q3_K): each half of 128 values reads 32 bytes,
// value 32·s + r of a half from bits 2s..2s+1 of byte r.
int TwoBitLevel(const uint8_t* qs, int i) {
  return qs[32 * (i / 128) + i % 32] >> 2 * (i % 128 / 32) & 3;
}

// The 32 levels of a Q5_0/Q5_1 block: the low nibbles as q4's (element i < 16 low, i + 16 high
// nibble of byte i), bit i of the little-endian 32-bit word its fifth bit.
void FiveBitLevels(const uint8_t* qh, const uint8_t* qs, int* q) {
  const uint32_t high = LoadLe32(qh);
  for (int i = 0; i < 16; ++i) {
    q[i] = (qs[i] & 15) | (high >> i & 1) << 4;
    q[i + 16] = (qs[i] >> 4) | (high >> (i + 16) & 1) << 4;
  }
}

// One block of an inexact type (Q4_1, Q5_1, Q2_K, Q5_K) to f32, as ggml dequantizes it (each
// scale product exact, one rounding for the offset).
void DequantizeOne(const uint8_t* in, uint32_t type, float* v) {
  int q[32];
  switch (type) {
    case kGgmlQ4_1:
    case kGgmlQ5_1: {
      const float d = Half(in), m = Half(in + 2);
      if (type == kGgmlQ4_1) {
        for (int i = 0; i < 16; ++i) {
          q[i] = in[4 + i] & 15;
          q[i + 16] = in[4 + i] >> 4;
        }
      } else {
        FiveBitLevels(in + 4, in + 8, q);
      }
      for (int i = 0; i < 32; ++i) v[i] = d * static_cast<float>(q[i]) + m;
      return;
    }
    case kGgmlQ2K: {
      const float d = Half(in + 80), dmin = Half(in + 82);
      for (int i = 0; i < 256; ++i) {
        const uint8_t sm = in[i / 16];
        const float ds = d * static_cast<float>(sm & 15), dm = dmin * static_cast<float>(sm >> 4);
        v[i] = ds * static_cast<float>(TwoBitLevel(in + 16, i)) - dm;
      }
      return;
    }
    case kGgmlQ5K: {
      const float d = Half(in), dmin = Half(in + 2);
      for (int i = 0; i < 256; ++i) {
        const int j = i / 32, l = i % 32;
        int sc, m;
        Q4KScaleMin(in + 4, j, &sc, &m);
        const int low = in[48 + 32 * (j / 2) + l] >> 4 * (j % 2) & 15;
        const int level = low | (in[16 + l] >> j & 1) << 4;
        const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
        v[i] = ds * static_cast<float>(level) - dm;
      }
      return;
    }
  }
}

// One block of a rewritten type into its native block (same values, bit for bit).
void RewriteOne(const uint8_t* in, uint32_t type, uint8_t* out) {
  if (type == kGgmlQ5_0) {  // q8 {d, int8 q − 16}
    int q[32];
    FiveBitLevels(in + 2, in + 6, q);
    out[0] = in[0];
    out[1] = in[1];
    for (int i = 0; i < 32; ++i) out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q[i] - 16));
    return;
  }
  if (type == kGgmlIQ4NL) {  // q8 {d, the table's level}
    out[0] = in[0];
    out[1] = in[1];
    for (int i = 0; i < 16; ++i) {
      out[2 + i] = static_cast<uint8_t>(kIQ4NLLevels[in[2 + i] & 15]);
      out[18 + i] = static_cast<uint8_t>(kIQ4NLLevels[in[2 + i] >> 4]);
    }
    return;
  }
  // Q3_K -> q6k: level q − (high bit ? 0 : 4) in −4..3, stored 6-bit as level + 32.
  int8_t levels[256];
  for (int i = 0; i < 256; ++i) {
    const int high = in[i % 32] >> (4 * (i / 128) + i % 128 / 32) & 1;
    levels[i] = static_cast<int8_t>(TwoBitLevel(in + 32, i) - (high ? 0 : 4));
  }
  std::memset(out, 0, DTypeBlockBytes(DType::kQ6K));
  // q6k: each half of 128 values, 64 bytes of low nibbles (values c, c+64 and c+32, c+96 share a
  // byte) and 32 bytes of top 2 bits (values c, c+32, c+64, c+96); int8 scales; d.
  for (int i = 0; i < 256; ++i) {
    const int n = levels[i] + 32, h = i / 128, k = i % 128 / 32, c = i % 32;
    out[64 * h + 32 * (k % 2) + c] |= static_cast<uint8_t>((n & 15) << 4 * (k / 2));
    out[128 + 32 * h + c] |= static_cast<uint8_t>((n >> 4) << 2 * k);
  }
  for (int g = 0; g < 16; ++g) out[192 + g] = static_cast<uint8_t>(Q3KScale(in + 96, g) - 32);
  out[208] = in[108];
  out[209] = in[109];
}

class Cursor {
 public:
  Cursor(const ByteSource& source, const std::string& path) : src_(source), path_(path) {}

  [[noreturn]] void Fail(const std::string& reason) const { throw Error(path_, reason); }
  uint64_t pos() const { return pos_; }
  void Need(uint64_t n, const std::string& what) const {
    if (n > src_.size() - pos_) Fail("truncated in " + what);
  }
  // The next n bytes (checked by Need) into out, through a buffer: a vocabulary is hundreds of
  // thousands of small values, and one read call each costs microseconds.
  void Copy(void* out, uint64_t n) {
    if (pos_ < buffer_start_ || n > buffer_start_ + buffer_.size() - pos_) {
      if (n > kBufferBytes) {
        src_.Read(pos_, out, n);
        pos_ += n;
        return;
      }
      buffer_.resize(std::min<uint64_t>(kBufferBytes, src_.size() - pos_));
      src_.Read(pos_, buffer_.data(), buffer_.size());
      buffer_start_ = pos_;
    }
    std::memcpy(out, buffer_.data() + (pos_ - buffer_start_), n);
    pos_ += n;
  }
  uint64_t Unsigned(int bytes, const std::string& what) {
    Need(bytes, what);
    uint8_t b[8] = {};
    Copy(b, bytes);
    uint64_t v = 0;
    for (int k = bytes - 1; k >= 0; --k) v = v << 8 | b[k];
    return v;
  }
  uint32_t U32(const std::string& what) { return static_cast<uint32_t>(Unsigned(4, what)); }
  uint64_t U64(const std::string& what) { return Unsigned(8, what); }
  std::string String(uint64_t max, const std::string& what) {
    const uint64_t n = U64(what);
    if (n > max) Fail(what + ": string of " + std::to_string(n) + " bytes is absurd");
    Need(n, what);
    std::string s(n, '\0');
    Copy(s.data(), n);
    return s;
  }
  // The smallest encoding of an element of `type`, for bounding array counts by the file.
  static uint64_t MinBytes(uint32_t type) {
    switch (type) {
      case kU8: case kI8: case kBool: return 1;
      case kU16: case kI16: return 2;
      case kU32: case kI32: case kF32: return 4;
      default: return 8;
    }
  }
  // A scalar of `type` (not an array) into `v`; numbers also as a double into *number.
  void Scalar(uint32_t type, const std::string& what, GgufValue& v, double* number) {
    switch (type) {
      case kU8: case kU16: case kU32: case kU64: {
        const int bytes = type == kU8 ? 1 : type == kU16 ? 2 : type == kU32 ? 4 : 8;
        v.type = GgufValue::Type::kUInt;
        v.u = Unsigned(bytes, what);
        *number = static_cast<double>(v.u);
        return;
      }
      case kI8: case kI16: case kI32: case kI64: {
        const int bytes = type == kI8 ? 1 : type == kI16 ? 2 : type == kI32 ? 4 : 8;
        const uint64_t raw = Unsigned(bytes, what);
        const int shift = 64 - 8 * bytes;  // sign-extend
        v.type = GgufValue::Type::kInt;
        v.i = static_cast<int64_t>(raw << shift) >> shift;
        *number = static_cast<double>(v.i);
        return;
      }
      case kF32: {
        const auto bits = static_cast<uint32_t>(Unsigned(4, what));
        float x;
        std::memcpy(&x, &bits, 4);
        v.type = GgufValue::Type::kFloat;
        v.f = x;
        *number = x;
        return;
      }
      case kF64: {
        const uint64_t bits = Unsigned(8, what);
        std::memcpy(&v.f, &bits, 8);
        v.type = GgufValue::Type::kFloat;
        *number = v.f;
        return;
      }
      case kBool: {
        const uint64_t b = Unsigned(1, what);
        if (b > 1) Fail(what + ": a bool must be 0 or 1, got " + std::to_string(b));
        v.type = GgufValue::Type::kBool;
        v.u = b;
        *number = static_cast<double>(b);
        return;
      }
      case kString:
        v.type = GgufValue::Type::kString;
        v.s = String(kMaxStringBytes, what);
        *number = 0;
        return;
      default:
        Fail(what + ": unknown value type " + std::to_string(type));
    }
  }
  GgufValue Value(uint32_t type, const std::string& what) {
    GgufValue v;
    double number = 0;
    if (type != kArray) {
      Scalar(type, what, v, &number);
      return v;
    }
    const uint32_t element = U32(what);
    if (element == kArray) Fail(what + ": arrays of arrays are not supported");
    if (element > kF64) Fail(what + ": unknown array element type " + std::to_string(element));
    const uint64_t count = U64(what);
    if (count > kMaxArray || count > (src_.size() - pos_) / MinBytes(element)) {
      Fail(what + ": array of " + std::to_string(count) + " elements does not fit the file");
    }
    v.type = GgufValue::Type::kArray;
    if (element == kString) {
      v.strings.reserve(count);
    } else {
      v.numbers.reserve(count);
    }
    GgufValue e;
    for (uint64_t k = 0; k < count; ++k) {
      Scalar(element, what, e, &number);
      if (element == kString) {
        v.strings.push_back(std::move(e.s));
      } else {
        v.numbers.push_back(number);
      }
    }
    v.element = count > 0 ? e.type : GgufValue::Type::kUInt;
    if (count == 0 && element == kString) v.element = GgufValue::Type::kString;
    return v;
  }

 private:
  static constexpr uint64_t kBufferBytes = 1 << 20;
  const ByteSource& src_;
  const std::string& path_;
  uint64_t pos_ = 0;
  std::vector<uint8_t> buffer_;  // bytes [buffer_start_, buffer_start_ + size) of the source
  uint64_t buffer_start_ = 0;
};

// ------------------------------------------------------------------------- metadata accessors

class Metadata {
 public:
  Metadata(const GgufHeader& h, const std::string& path) : h_(h), path_(path) {}
  [[noreturn]] void Fail(const std::string& reason) const { throw Error(path_, reason); }
  const GgufValue* Find(std::string_view key) const {
    const auto it = h_.metadata.find(key);
    return it == h_.metadata.end() ? nullptr : &it->second;
  }
  const GgufValue& At(std::string_view key) const {
    const GgufValue* v = Find(key);
    if (v == nullptr) Fail("missing metadata " + std::string(key));
    return *v;
  }
  // An integer as JSON (unsigned kept unsigned, so the config parser range-checks it).
  json Int(std::string_view key) const {
    const GgufValue& v = At(key);
    if (v.type == GgufValue::Type::kUInt) return v.u;
    if (v.type == GgufValue::Type::kInt) return v.i;
    Fail("metadata " + std::string(key) + " must be an integer");
  }
  double Float(std::string_view key) const {
    const GgufValue& v = At(key);
    if (v.type != GgufValue::Type::kFloat) Fail("metadata " + std::string(key) + " must be a float");
    // JSON has no NaN or Inf: the config text would say null, and the parser use its default.
    if (!std::isfinite(v.f)) Fail("metadata " + std::string(key) + " is NaN or infinite");
    return v.f;
  }
  const std::string& String(std::string_view key) const {
    const GgufValue& v = At(key);
    if (v.type != GgufValue::Type::kString) {
      Fail("metadata " + std::string(key) + " must be a string");
    }
    return v.s;
  }
  // An array of strings, or of numbers (any integer width or float: llama.cpp's writers differ).
  const GgufValue& Array(std::string_view key, bool strings) const {
    const GgufValue& v = At(key);
    const bool fits = v.type == GgufValue::Type::kArray &&
                      (Empty(v) || (strings ? v.element == GgufValue::Type::kString
                                            : v.element == GgufValue::Type::kUInt ||
                                                  v.element == GgufValue::Type::kInt ||
                                                  v.element == GgufValue::Type::kFloat));
    if (!fits) {
      Fail("metadata " + std::string(key) + " must be an array of " +
           (strings ? "strings" : "numbers") + ", not " + Describe(v));
    }
    return v;
  }
  static std::string Describe(const GgufValue& v) {
    auto name = [](GgufValue::Type t) -> std::string {
      switch (t) {
        case GgufValue::Type::kUInt: return "unsigned integers";
        case GgufValue::Type::kInt: return "integers";
        case GgufValue::Type::kFloat: return "floats";
        case GgufValue::Type::kBool: return "bools";
        case GgufValue::Type::kString: return "strings";
        case GgufValue::Type::kArray: return "arrays";
      }
      return "values";
    };
    if (v.type == GgufValue::Type::kArray) return "an array of " + name(v.element);
    std::string one = name(v.type);
    one.pop_back();  // singular
    return (one == "unsigned integer" || one == "integer") ? "an " + one : "a " + one;
  }
  static bool Empty(const GgufValue& v) { return v.strings.empty() && v.numbers.empty(); }

 private:
  const GgufHeader& h_;
  const std::string& path_;
};

// ------------------------------------------------------------------ sentencepiece wire format

void Varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void Tag(std::string& out, uint32_t field, uint32_t wire) { Varint(out, field << 3 | wire); }
void VarintField(std::string& out, uint32_t field, int64_t v) {
  Tag(out, field, 0);
  Varint(out, static_cast<uint64_t>(v));  // negative int32: ten bytes, as protobuf writes it
}
void BytesField(std::string& out, uint32_t field, std::string_view bytes) {
  Tag(out, field, 2);
  Varint(out, bytes.size());
  out.append(bytes);
}
void FloatField(std::string& out, uint32_t field, float v) {
  Tag(out, field, 5);
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  for (int k = 0; k < 4; ++k) out.push_back(static_cast<char>(bits >> (8 * k)));
}

// ------------------------------------------------------------------------- the checkpoint view

class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path) : file_(path) {}
  uint64_t size() const override { return file_.size(); }
  void Read(uint64_t offset, void* out, uint64_t n) const override {
    file_.ReadAt(offset, out, n);
  }

 private:
  InputFile file_;
};

// GGUF tensor names -> Hugging Face names, and which rows llama.cpp permuted (q: by the query
// heads, k: by the KV heads).
struct HfName {
  std::string name;
  int permute = 0;  // 0 none, 1 q, 2 k
};

std::optional<HfName> HfNameOf(const std::string& gguf) {
  static const std::pair<const char*, const char*> kTop[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  for (const auto& [g, hf] : kTop) {
    if (gguf == g) return HfName{hf};
  }
  static const std::tuple<const char*, const char*, int> kLayer[] = {
      {"attn_norm.weight", "input_layernorm.weight", 0},
      {"attn_q.weight", "self_attn.q_proj.weight", 1},
      {"attn_k.weight", "self_attn.k_proj.weight", 2},
      {"attn_v.weight", "self_attn.v_proj.weight", 0},
      {"attn_output.weight", "self_attn.o_proj.weight", 0},
      {"ffn_norm.weight", "post_attention_layernorm.weight", 0},
      {"ffn_gate.weight", "mlp.gate_proj.weight", 0},
      {"ffn_up.weight", "mlp.up_proj.weight", 0},
      {"ffn_down.weight", "mlp.down_proj.weight", 0}};
  if (gguf.rfind("blk.", 0) == 0) {
    const size_t dot = gguf.find('.', 4);
    const std::string layer = gguf.substr(4, dot == std::string::npos ? 0 : dot - 4);
    const bool digits = !layer.empty() && layer.size() <= 4 &&
                        std::all_of(layer.begin(), layer.end(), [](char c) {
                          return c >= '0' && c <= '9';
                        }) && (layer == "0" || layer[0] != '0');
    if (digits) {
      const std::string role = gguf.substr(dot + 1);
      for (const auto& [g, hf, permute] : kLayer) {
        if (role == g) return HfName{"model.layers." + layer + "." + hf, permute};
      }
    }
  }
  // Not a llama.cpp name. Kept as it is, a Hugging Face name (model.layers.0...) would be taken
  // for one, skipping the q/k un-permutation and the "tied" lm_head check.
  return std::nullopt;
}

class GgufCheckpoint : public CheckpointReader {
 public:
  GgufCheckpoint(const std::string& path, GgufHeader header)
      : path_(path), source_(path), header_(std::move(header)) {
    const Metadata m(header_, path_);
    auto count = [&](const char* key, int64_t fallback) -> int64_t {
      if (m.Find(key) == nullptr) return fallback;
      const json v = m.Int(key);
      return v.is_number_unsigned() && v.get<uint64_t>() <= 1024 ? v.get<int64_t>() : -1;
    };
    const int64_t heads = count("llama.attention.head_count", -1);
    const int64_t kv_heads = count("llama.attention.head_count_kv", heads);
    std::set<std::string> seen;
    for (const GgufTensorInfo& g : header_.tensors) {
      const std::optional<HfName> mapped = HfNameOf(g.name);
      if (!mapped) {
        throw Error(path_, "unexpected tensor '" + g.name +
                               "' (not a tensor of llama.cpp's llama architecture)");
      }
      const HfName& hf = *mapped;
      CheckpointTensor t;
      t.name = hf.name;
      t.dtype = g.dtype;
      t.read_f32 = g.read_f32;
      t.shape.assign(g.dims.rbegin(), g.dims.rend());
      const GgmlType type = *GgmlTypeOf(g.ggml_type);
      const uint64_t blocks = g.nbytes / type.block_bytes;
      t.nbytes = CheckedMul(
          blocks, g.read_f32 ? type.block_elements * sizeof(float) : DTypeBlockBytes(g.dtype),
          path_, "tensor '" + g.name + "' as read");
      t.path = path_;
      if (!seen.insert(t.name).second) throw Error(path_, "two tensors map to '" + t.name + "'");
      const int64_t h = hf.permute == 1 ? heads : hf.permute == 2 ? kv_heads : 0;
      if (hf.permute != 0) {
        if (h <= 0 || t.shape.size() != 2 || t.shape[0] % (2 * h) != 0) {
          throw Error(path_, "tensor '" + g.name + "': " + std::to_string(t.shape[0]) +
                                 " rows are not whole rotary heads of the metadata's head count");
        }
      }
      entries_.push_back({t.name, &g, h});
      tensors_.push_back(std::move(t));
    }
    std::sort(tensors_.begin(), tensors_.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
    std::sort(entries_.begin(), entries_.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
  }

  const std::string& path() const override { return path_; }
  std::vector<std::string> files() const override { return {path_}; }
  const std::vector<CheckpointTensor>& tensors() const override { return tensors_; }

  void Read(const CheckpointTensor& tensor, void* out) const override {
    const size_t k = static_cast<size_t>(&tensor - tensors_.data());
    const Entry& e = entries_.at(k);
    const GgmlType type = *GgmlTypeOf(e.info->ggml_type);
    const bool same = !type.rewrite && type.exact;
    if (e.heads == 0 && same) {
      source_.Read(e.info->offset, out, e.info->nbytes);
      return;
    }
    std::vector<uint8_t> raw(e.info->nbytes), rows;
    source_.Read(e.info->offset, raw.data(), raw.size());
    if (!same) {
      // The rows permuted below are the native blocks', or the f32 values'.
      rows.resize(tensor.nbytes);
      ReadGgmlBlocks(raw.data(), type.code, raw.size() / type.block_bytes, rows.data());
      if (e.heads == 0) {
        std::memcpy(out, rows.data(), rows.size());
        return;
      }
    } else {
      rows = std::move(raw);
    }
    // Undo llama.cpp's permutation: its row h*hd + 2i + j is row h*hd + j*hd/2 + i of the
    // Hugging Face tensor (i < hd/2, j in {0, 1}). Whole rows move, blocks untouched.
    const uint64_t n = tensor.shape[0], hd = n / static_cast<uint64_t>(e.heads);
    const uint64_t row_bytes = tensor.nbytes / n;
    auto* dst = static_cast<uint8_t*>(out);
    for (uint64_t h = 0; h < static_cast<uint64_t>(e.heads); ++h) {
      for (uint64_t i = 0; i < hd / 2; ++i) {
        for (uint64_t j = 0; j < 2; ++j) {
          std::memcpy(dst + (h * hd + j * hd / 2 + i) * row_bytes,
                      rows.data() + (h * hd + 2 * i + j) * row_bytes, row_bytes);
        }
      }
    }
  }

 private:
  struct Entry {
    std::string name;
    const GgufTensorInfo* info;
    int64_t heads;  // rotary heads of a permuted q/k; 0 for the others
  };
  std::string path_;
  FileSource source_;
  GgufHeader header_;
  std::vector<CheckpointTensor> tensors_;  // sorted by name
  std::vector<Entry> entries_;             // parallel to tensors_
};

}  // namespace

void ReadGgmlBlocks(const uint8_t* in, uint32_t ggml_type, uint64_t blocks, uint8_t* out) {
  const GgmlType type = *GgmlTypeOf(ggml_type);
  if (!type.exact) {
    float v[kSuperBlock];
    for (uint64_t b = 0; b < blocks; ++b) {
      DequantizeOne(in + b * type.block_bytes, ggml_type, v);
      std::memcpy(out + b * type.block_elements * sizeof(float), v,
                  type.block_elements * sizeof(float));
    }
  } else if (type.rewrite) {
    const uint64_t native = DTypeBlockBytes(type.native);
    for (uint64_t b = 0; b < blocks; ++b) {
      RewriteOne(in + b * type.block_bytes, ggml_type, out + b * native);
    }
  } else {
    std::memcpy(out, in, blocks * type.block_bytes);
  }
}

GgufHeader ParseGgufHeader(const ByteSource& source, const std::string& path) {
  Cursor c(source, path);
  c.Need(4, "the magic");
  char magic[4];
  source.Read(0, magic, 4);
  if (std::memcmp(magic, "GGUF", 4) != 0) c.Fail("not a GGUF file (bad magic)");
  c.Unsigned(4, "the magic");
  GgufHeader h;
  h.version = c.U32("the version");
  if (h.version != 2 && h.version != 3) {
    c.Fail("GGUF version " + std::to_string(h.version) + " is not supported (2 or 3)");
  }
  const uint64_t n_tensors = c.U64("the tensor count");
  const uint64_t n_kv = c.U64("the metadata count");
  if (n_tensors > kMaxTensors) c.Fail(std::to_string(n_tensors) + " tensors is absurd");
  if (n_kv > kMaxMetadata) c.Fail(std::to_string(n_kv) + " metadata entries is absurd");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.String(kMaxKeyBytes, "metadata key " + std::to_string(k));
    const uint32_t type = c.U32("metadata " + key);
    GgufValue v = c.Value(type, "metadata " + key);
    if (!h.metadata.emplace(key, std::move(v)).second) c.Fail("metadata " + key + " repeats");
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = c.String(kMaxNameBytes, "tensor info " + std::to_string(k));
    const std::string what = "tensor '" + t.name + "'";
    const uint32_t n_dims = c.U32(what);
    if (n_dims < 1 || n_dims > 4) c.Fail(what + ": " + std::to_string(n_dims) + " dimensions");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.U64(what);
      if (dim < 1 || dim > kMaxDim) c.Fail(what + ": dimension " + std::to_string(dim));
      t.dims.push_back(dim);
      elements = CheckedMul(elements, dim, path, what + " element count");
    }
    t.ggml_type = c.U32(what);
    const std::optional<GgmlType> type = GgmlTypeOf(t.ggml_type);
    if (!type) {
      c.Fail(what + ": ggml type " + GgmlTypeName(t.ggml_type) + " (" +
             std::to_string(t.ggml_type) +
             ") is not supported (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_K, "
             "q3_K, q4_K, q5_K, q6_K; requantize with llama-quantize)");
    }
    t.dtype = type->native;
    t.read_f32 = !type->exact;
    const uint64_t block = type->block_elements;
    if (t.dims[0] % block != 0) {
      c.Fail(what + ": rows of " + std::to_string(t.dims[0]) + " are not whole blocks of " +
             std::to_string(block));
    }
    t.nbytes = CheckedMul(elements / block, type->block_bytes, path, what);
    t.offset = c.U64(what);
    h.tensors.push_back(std::move(t));
  }
  uint64_t alignment = kDefaultAlignment;
  if (const auto it = h.metadata.find("general.alignment"); it != h.metadata.end()) {
    const GgufValue& a = it->second;
    if (a.type != GgufValue::Type::kUInt || a.u == 0 || a.u > (1u << 16) || (a.u & (a.u - 1))) {
      c.Fail("general.alignment must be a power of two up to 65536");
    }
    alignment = a.u;
  }
  const uint64_t data = CheckedAdd(c.pos(), alignment - 1, path, "data offset") / alignment *
                        alignment;
  std::vector<const GgufTensorInfo*> by_offset;
  std::map<std::string_view, int> names;
  for (GgufTensorInfo& t : h.tensors) {
    const std::string what = "tensor '" + t.name + "'";
    if (!names.emplace(t.name, 0).second) c.Fail(what + " appears twice");
    if (t.offset % alignment != 0) c.Fail(what + ": offset is not aligned");
    t.offset = CheckedAdd(data, t.offset, path, what + " offset");
    const uint64_t end = CheckedAdd(t.offset, t.nbytes, path, what + " end");
    if (end > source.size()) c.Fail(what + ": data runs past the end of the file (truncated?)");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    if (by_offset[k - 1]->offset + by_offset[k - 1]->nbytes > by_offset[k]->offset) {
      c.Fail("tensors '" + by_offset[k - 1]->name + "' and '" + by_offset[k]->name + "' overlap");
    }
  }
  return h;
}

std::string GgufConfigJson(const GgufHeader& header, const std::string& path,
                           const std::string& act) {
  const Metadata m(header, path);
  const std::string& arch = m.String("general.architecture");
  if (arch != "llama") {
    m.Fail("general.architecture '" + arch + "' is not supported (llama)");
  }
  if (const GgufValue* s = m.Find("llama.rope.scaling.type");
      s != nullptr && !(s->type == GgufValue::Type::kString && s->s == "none")) {
    m.Fail("llama.rope.scaling.type is not supported (rope scaling)");
  }
  json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}};
  cfg["hidden_size"] = m.Int("llama.embedding_length");
  cfg["intermediate_size"] = m.Int("llama.feed_forward_length");
  cfg["num_hidden_layers"] = m.Int("llama.block_count");
  cfg["num_attention_heads"] = m.Int("llama.attention.head_count");
  if (m.Find("llama.attention.head_count_kv")) {
    cfg["num_key_value_heads"] = m.Int("llama.attention.head_count_kv");
  }
  if (m.Find("llama.attention.key_length")) {
    cfg["head_dim"] = m.Int("llama.attention.key_length");
    if (m.Find("llama.attention.value_length") &&
        m.Int("llama.attention.value_length") != cfg["head_dim"]) {
      m.Fail("llama.attention.value_length differs from key_length (not supported)");
    }
  }
  if (m.Find("llama.rope.dimension_count")) {
    // Rotary over the whole head is all the Llama forward does.
    const json rope = m.Int("llama.rope.dimension_count");
    const json hidden = cfg["hidden_size"], heads = cfg["num_attention_heads"];
    const json head_dim =
        cfg.contains("head_dim")
            ? cfg["head_dim"]
            : (hidden.is_number_unsigned() && heads.is_number_unsigned() && heads.get<uint64_t>()
                   ? json(hidden.get<uint64_t>() / heads.get<uint64_t>())
                   : json());
    if (rope != head_dim) m.Fail("llama.rope.dimension_count differs from the head size");
  }
  cfg["max_position_embeddings"] = m.Int("llama.context_length");
  cfg["rms_norm_eps"] = m.Float("llama.attention.layer_norm_rms_epsilon");
  if (m.Find("llama.rope.freq_base")) cfg["rope_theta"] = m.Float("llama.rope.freq_base");
  const uint64_t vocab = m.Array("tokenizer.ggml.tokens", true).strings.size();
  cfg["vocab_size"] = vocab;
  if (m.Find("llama.vocab_size") && m.Int("llama.vocab_size") != json(vocab)) {
    m.Fail("llama.vocab_size differs from the number of tokenizer.ggml.tokens");
  }
  cfg["tie_word_embeddings"] =
      std::none_of(header.tensors.begin(), header.tensors.end(),
                   [](const GgufTensorInfo& t) { return t.name == "output.weight"; });
  for (const char* id : {"bos", "eos"}) {
    const std::string key = std::string("tokenizer.ggml.") + id + "_token_id";
    if (m.Find(key)) cfg[std::string(id) + "_token_id"] = m.Int(key);
  }
  // No standard key says the activation (llama.cpp's llama graph assumes SiLU): zeroskip writes
  // and reads llama.hidden_act (and llama.hidden_act_param for fatrelu), else --act.
  if (m.Find("llama.hidden_act")) {
    const std::string& stored = m.String("llama.hidden_act");
    if (!act.empty() && act != stored) {
      m.Fail("llama.hidden_act is '" + stored + "' but --act says '" + act + "'");
    }
    cfg["hidden_act"] = stored;
    if (m.Find("llama.hidden_act_param")) {
      cfg["hidden_act_param"] = m.Float("llama.hidden_act_param");
    }
  } else if (!act.empty()) {
    cfg["hidden_act"] = act;
  } else {
    m.Fail("no activation in the metadata (llama.hidden_act); pass --act relu or --act silu "
           "(llama.cpp would assume silu)");
  }
  // Metadata strings need not be UTF-8: replaced, they fail the config parser by name.
  return cfg.dump(2, ' ', false, json::error_handler_t::replace);
}

std::string GgufTokenizerModel(const GgufHeader& header, const std::string& path) {
  const Metadata m(header, path);
  const std::string& model = m.String("tokenizer.ggml.model");
  if (model != "llama") {
    m.Fail("tokenizer.ggml.model '" + model + "' is not supported (llama: sentencepiece)");
  }
  const auto& tokens = m.Array("tokenizer.ggml.tokens", true).strings;
  const size_t n = tokens.size();
  if (n == 0) m.Fail("tokenizer.ggml.tokens is empty");
  std::vector<double> scores(n, 0.0), types(n, 1.0);
  if (m.Find("tokenizer.ggml.scores")) {
    scores = m.Array("tokenizer.ggml.scores", false).numbers;
  }
  if (m.Find("tokenizer.ggml.token_type")) {
    types = m.Array("tokenizer.ggml.token_type", false).numbers;
  }
  if (scores.size() != n || types.size() != n) {
    m.Fail("tokenizer.ggml.scores / token_type do not have one entry per token");
  }
  auto id = [&](const char* key, int64_t fallback) -> int64_t {
    if (!m.Find(key)) return fallback;
    const json v = m.Int(key);
    if (!v.is_number_unsigned() || v.get<uint64_t>() >= n) m.Fail(std::string(key) + " is out of range");
    return v.get<int64_t>();
  };
  bool byte_fallback = false;
  std::string proto;
  for (size_t k = 0; k < n; ++k) {
    const double type = types[k];
    // llama.cpp's token types are sentencepiece's piece types (1 normal ... 6 byte).
    if (!(type >= 1 && type <= 6) || type != std::floor(type)) {
      m.Fail("tokenizer.ggml.token_type[" + std::to_string(k) + "] is not a token type (1-6)");
    }
    if (!std::isfinite(scores[k])) m.Fail("tokenizer.ggml.scores holds NaN or Inf");
    byte_fallback = byte_fallback || type == 6;
    std::string piece;
    BytesField(piece, 1, tokens[k]);
    FloatField(piece, 2, static_cast<float>(scores[k]));
    VarintField(piece, 3, static_cast<int64_t>(type));
    BytesField(proto, 1, piece);
  }
  std::string trainer;
  VarintField(trainer, 3, 2);  // model_type BPE: what llama.cpp's SPM tokenizer merges by
  VarintField(trainer, 35, byte_fallback);
  VarintField(trainer, 40, id("tokenizer.ggml.unknown_token_id", 0));
  VarintField(trainer, 41, id("tokenizer.ggml.bos_token_id", -1));
  VarintField(trainer, 42, id("tokenizer.ggml.eos_token_id", -1));
  VarintField(trainer, 43, id("tokenizer.ggml.padding_token_id", -1));
  BytesField(proto, 2, trainer);
  bool space_prefix = true;
  if (const GgufValue* v = m.Find("tokenizer.ggml.add_space_prefix")) {
    if (v->type != GgufValue::Type::kBool) m.Fail("tokenizer.ggml.add_space_prefix must be a bool");
    space_prefix = v->u != 0;
  }
  std::string normalizer;
  BytesField(normalizer, 1, "identity");
  VarintField(normalizer, 3, space_prefix);
  VarintField(normalizer, 4, 0);  // remove_extra_whitespaces
  VarintField(normalizer, 5, 1);  // escape_whitespaces
  BytesField(proto, 3, normalizer);
  return proto;
}

std::unique_ptr<CheckpointReader> OpenGgufCheckpoint(const std::string& path, GgufHeader header) {
  return std::make_unique<GgufCheckpoint>(path, std::move(header));
}

bool IsGgufFile(const std::string& path) {
  uint64_t size = 0;
  int fd = -1;
  try {
    fd = OpenRegularFile(path, &size);
  } catch (const Error&) {
    return false;
  }
  char magic[4] = {};
  const bool gguf = size >= 4 && ::pread(fd, magic, 4, 0) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
  ::close(fd);
  return gguf;
}

GgufHeader ReadGgufHeader(const std::string& path) {
  const FileSource source(path);
  return ParseGgufHeader(source, path);
}

}  // namespace zeroskip
