// GGUF input: a checkpoint converted from its Hugging Face directory and from a GGUF written by
// tests/data/make_gguf.py (llama.cpp's layout: ggml names and dim order, q/k rows permuted for
// ggml's rotary, tokenizer as tokenizer.ggml.* arrays) gives bit-identical logits at f32, and the
// same tokenization; q8_0/q4_0/q4_K/q6_K/f16/bf16 blocks pass through unchanged; ggml's other
// types (Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q5_K) read as the values ggml gives them. Hostile
// GGUF files are in tests/corrupt (make_corpus.py) and the fuzz target tests/fuzz/fuzz_gguf.cpp.
#include "format/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "arch/architectures.h"
#include "format/checkpoint_reader.h"
#include "format/dtype.h"
#include "format/file_io.h"
#include "test_util.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"
#include "zeroskip/session.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {
namespace {

std::string Gguf(const std::string& name) { return testing::TestDataDir() + "/gguf/" + name; }

std::string ConvertGgufFile(const testing::TempDir& dir, const std::string& gguf,
                            std::optional<DType> dtype = std::nullopt, std::string act = "") {
  ConvertOptions opt;
  opt.hf_dir = Gguf(gguf);
  opt.out_path = dir / (gguf + ".zsk");
  opt.dtype = dtype;
  opt.act = std::move(act);
  ConvertHfCheckpoint(opt);
  return opt.out_path;
}

// Every position of a prompt, decoded token by token and prefilled in one batch, both sparse
// and dense: the two models' logits must be the same bits.
void ExpectSameLogits(const Model& a, const Model& b, const std::string& what) {
  ASSERT_EQ(a.config(), b.config()) << what;
  const std::vector<int> ids = {1, 17, 42, 300, 5, 77, 200, 9, 123, 250, 31, 64};
  for (FfnMode ffn : {FfnMode::kAuto, FfnMode::kDense}) {
    Engine ea(a, {.threads = 2}), eb(b, {.threads = 2});
    Session sa(ea, {.ffn = ffn}), sb(eb, {.ffn = ffn});
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      const auto la = sa.Forward({&ids[pos], 1});
      const std::vector<float> want(la.begin(), la.end());
      const auto lb = sb.Forward({&ids[pos], 1});
      ASSERT_EQ(lb.size(), want.size());
      ASSERT_EQ(std::memcmp(lb.data(), want.data(), lb.size_bytes()), 0)
          << what << " " << FfnModeName(ffn) << " position " << pos;
    }
    Session pa(ea, {.ffn = ffn}), pb(eb, {.ffn = ffn});
    const auto all_a = pa.Forward(ids, /*all_logits=*/true);
    const std::vector<float> want(all_a.begin(), all_a.end());
    const auto all_b = pb.Forward(ids, /*all_logits=*/true);
    ASSERT_EQ(std::memcmp(all_b.data(), want.data(), all_b.size_bytes()), 0)
        << what << " " << FfnModeName(ffn) << " prefill";
  }
}

// Catches: q/k rows left in llama.cpp's permuted order (or un-permuted with the query head count
// for k), dims not reversed, a tied model given an output matrix or an untied one tied, norm eps /
// rope base / head_dim read from the wrong key, the fatrelu threshold lost, and token types or
// scores mapped wrongly (the encodings differ).
TEST(Gguf, SameLogitsAsTheHuggingFaceCheckpointAtF32) {
  testing::TempDir dir;
  for (const char* name : {"llama_gqa_hd64_relu_f32", "llama_mqa_hd128_silu_tied_f32",
                           "prosparse_gqa_hd56_fatrelu_f32"}) {
    const std::string gguf = std::string(name) + "_f32.gguf";
    const auto from_gguf = Model::Load(ConvertGgufFile(dir, gguf));
    const Model& from_hf = testing::LoadedModel(name);
    // The architecture name differs (a GGUF says "llama"); everything the forward reads must not.
    ModelConfig want = from_hf.config();
    want.hf_architecture = "LlamaForCausalLM";
    EXPECT_EQ(from_gguf->config(), want) << name;
    for (const char* text : {"The cat sees the red apple.", "Hello world", " leading space",
                             "two  spaces and trailing ", "Numbers 1234567 and 3.14",
                             "Grüße aus Zürich 日本!", "line\nbreak\ttab"}) {
      EXPECT_EQ(from_gguf->tokenizer().Encode(text), from_hf.tokenizer().Encode(text))
          << name << ": " << text;
    }
    if (from_hf.config().hf_architecture == "LlamaForCausalLM") {
      ExpectSameLogits(from_hf, *from_gguf, name);
    } else {
      // ProSparse: the same Llama body under another architecture name.
      std::vector<float> logits[2];
      const Model* models[2] = {&from_hf, from_gguf.get()};
      for (int k = 0; k < 2; ++k) {
        Engine e(*models[k], {.threads = 2});
        Session s(e, {});
        const std::vector<int> ids = {1, 17, 42, 300, 5, 77};
        const auto l = s.Forward(ids, /*all_logits=*/true);
        logits[k].assign(l.begin(), l.end());
      }
      EXPECT_EQ(logits[0], logits[1]) << name;
    }
  }
}

// f16, bf16, q8_0, q4_0, q4_K and q6_K GGUFs converted with the same --dtype as the Hugging Face
// checkpoint: every tensor stored in its GGUF type and layout is the same bytes (ggml's blocks
// are ours; the GGUF's K-quant blocks come from tools/reference/quant.py, whose bytes equal the
// C++ converter's and whose values equal ggml's own dequantizer's, test_quant.py); the rest
// (ffn_down, transposed, or f32 in the GGUF when its rows are not whole blocks of 256; q4's
// embeddings, kept q8; q4k's, kept q6k) went through f32 and load. f16/bf16 files are then wholly
// identical: the same logits. Catches a swapped type code, a wrong block size and a permutation
// that moves bytes inside a row.
TEST(Gguf, WeightTypesPassThroughLosslessly) {
  testing::TempDir dir;
  const std::map<std::string, DType> kinds = {{"f16", DType::kF16},  {"bf16", DType::kBF16},
                                              {"q8_0", DType::kQ8},  {"q4_0", DType::kQ4},
                                              {"q4_k", DType::kQ4K}, {"q6_k", DType::kQ6K}};
  for (const auto& [kind, dtype] : kinds) {
    const std::string checkpoint = "llama_gqa_hd64_relu_f32";
    const auto from_gguf =
        Model::Load(ConvertGgufFile(dir, checkpoint + "_" + kind + ".gguf", dtype));
    const Model& from_hf =
        testing::LoadedModel(checkpoint + "@" + std::string(DTypeName(dtype)));
    const GgufHeader header = ReadGgufHeader(Gguf(checkpoint + "_" + kind + ".gguf"));
    int identical = 0;
    for (const TensorInfo& t : from_hf.file().tensors()) {
      const TensorInfo* g = from_gguf->file().Find(t.name);
      ASSERT_NE(g, nullptr) << t.name;
      ASSERT_EQ(g->dtype, t.dtype) << kind << " " << t.name;
      ASSERT_EQ(g->shape, t.shape) << kind << " " << t.name;
      const bool same = g->nbytes == t.nbytes &&
                        std::memcmp(from_gguf->file().data(*g), from_hf.file().data(t),
                                    t.nbytes) == 0;
      const bool vocab = t.name == "tok_embeddings" || t.name == "output";
      // q4k: also the q6k attn_v of the layers llama.cpp's Q4_K_M gives more bits.
      const bool through_f32 = t.name.ends_with("ffn_down") ||
                               ((dtype == DType::kQ4 || dtype == DType::kQ4K) && vocab) ||
                               (dtype == DType::kQ4K && t.dtype == DType::kQ6K);
      if (!through_f32 || !IsQuantized(dtype)) {
        EXPECT_TRUE(same) << kind << " " << t.name;
      }
      identical += same;
    }
    EXPECT_GT(identical, 10) << kind;
    if (!IsQuantized(dtype)) ExpectSameLogits(from_hf, *from_gguf, kind);
    EXPECT_EQ(header.version, 3u);
  }
}

// A GGUF mixing types as llama.cpp's Q4_K_M does (make_gguf.py's q4_k_m: q6_K attn_v and output
// in the use_more_bits layers, q4_K elsewhere; ffn_down f32, its rows of 200 not whole blocks of
// 256, beside q4_K gate and up) converts as it is: every tensor in its GGUF type, every one stored
// in the GGUF's layout the reader's bytes exactly, the transposed ffn_down its exact transpose.
// --dtype q4k gives the same blocks (its recipe keeps Q4_K_M's q6k attn_v) except the first
// layer's attn_v, which its recipe stores in q6k and Q4_K_M (on 2 layers) does not; the ffn_downs
// quantized from f32, the first layer's to q6k. Catches a mix refused, converted to one type, or a block requantized
// that could have been copied.
TEST(Gguf, MixedTypesOfQ4KMKeepTheirBlocks) {
  testing::TempDir dir;
  const std::string name = "llama_gqa_hd64_relu_f32_q4_k_m.gguf";
  const auto kept = Model::Load(ConvertGgufFile(dir, name));
  const auto reader = OpenGgufCheckpoint(Gguf(name), ReadGgufHeader(Gguf(name)));
  const TensorTable table = ArchitectureTensors(kept->config());
  ASSERT_EQ(kept->config().layers, 2);
  std::map<DType, int> types;
  for (const TensorDef& def : table.stored()) {
    const CheckpointTensor& src = *reader->Find(def.hf_name);
    const TensorInfo& t = *kept->file().Find(def.name);
    ASSERT_EQ(t.dtype, src.dtype) << def.name;
    ++types[t.dtype];
    std::vector<uint8_t> bytes(src.nbytes);
    reader->Read(src, bytes.data());
    const auto* stored = static_cast<const uint8_t*>(kept->file().data(t));
    if (def.layout == Layout::kRowMajor) {
      ASSERT_EQ(t.nbytes, src.nbytes) << def.name;
      EXPECT_EQ(std::memcmp(stored, bytes.data(), src.nbytes), 0) << def.name;
      continue;
    }
    ASSERT_EQ(src.dtype, DType::kF32) << def.name;
    const uint64_t rows = src.shape[0], cols = src.shape[1];
    const auto* in = reinterpret_cast<const float*>(bytes.data());
    const auto* out = reinterpret_cast<const float*>(stored);
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t c = 0; c < cols; ++c)
        ASSERT_EQ(out[c * rows + r], in[r * cols + c]) << def.name;
    }
  }
  EXPECT_GT(types[DType::kQ4K], 0);
  EXPECT_GT(types[DType::kQ6K], 0);
  EXPECT_EQ(kept->layer(0).v.dtype, DType::kQ4K);
  EXPECT_EQ(kept->layer(1).v.dtype, DType::kQ6K);
  EXPECT_EQ(kept->layer(0).ffn.gate.dtype, DType::kQ4K);
  EXPECT_EQ(kept->layer(0).ffn.down_t.dtype, DType::kF32);

  const auto q4k = Model::Load(ConvertGgufFile(dir, name, DType::kQ4K));
  for (const TensorInfo& t : kept->file().tensors()) {
    const TensorInfo& r = *q4k->file().Find(t.name);
    if (t.name.ends_with("ffn_down") || t.name == "tok_embeddings" ||
        t.name == "layers.0.attn_v") {
      continue;
    }
    ASSERT_EQ(r.dtype, t.dtype) << t.name;
    EXPECT_EQ(std::memcmp(q4k->file().data(r), kept->file().data(t), t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(q4k->layer(0).v.dtype, DType::kQ6K);
  EXPECT_EQ(q4k->layer(0).ffn.down_t.dtype, DType::kQ6K);
  EXPECT_EQ(q4k->layer(1).ffn.down_t.dtype, DType::kQ4K);
  // The more-bits rule is --dtype q4k's: a q4_K GGUF converted as it is keeps every type.
  const std::string plain = "llama_gqa_hd64_relu_f32_q4_k.gguf";
  const auto plain_kept = Model::Load(ConvertGgufFile(dir, plain));
  const auto plain_reader = OpenGgufCheckpoint(Gguf(plain), ReadGgufHeader(Gguf(plain)));
  for (const TensorDef& def : table.stored()) {
    EXPECT_EQ(plain_kept->file().Find(def.name)->dtype, plain_reader->Find(def.hf_name)->dtype)
        << plain << " " << def.name;
  }
  EXPECT_EQ(q4k->layer(1).ffn.down_t.dtype, DType::kQ4K);
  // Both run, the sparse decode matching the dense one.
  for (const Model* m : {kept.get(), q4k.get()}) {
    Engine e(*m, {.threads = 2});
    Session sparse(e, {.ffn = FfnMode::kSparse}), dense(e, {.ffn = FfnMode::kDense});
    for (int id : {1, 17, 42, 300}) {
      const auto ls = sparse.Forward({&id, 1});
      const std::vector<float> want(ls.begin(), ls.end());
      const auto ld = dense.Forward({&id, 1});
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_TRUE(std::isfinite(want[i]));
        ASSERT_NEAR(ld[i], want[i], 1e-3f * (1 + std::abs(want[i])));
      }
    }
  }
}

// ------------------------------------------------------------- ggml's other block types

// i * a + b mod 256, n bytes: filler that reaches every bit pattern of the levels.
std::vector<uint8_t> Pattern(int n, int a, int b) {
  std::vector<uint8_t> out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>((i * a + b) % 256));
  return out;
}

std::vector<uint8_t> Concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// One hand-made block of each type, with the values llama.cpp's own numpy dequantizer (gguf-py,
// gguf.quants.dequantize) gives for it: at some elements, and Σ (i + 1)·v_i (exact in double).
// The blocks hold negative mins, extreme levels (0, 15, 31) and 6-bit scales of 63;
// tools/reference/test_ggml_quants.py pins the same on the numpy reference.
struct HandBlock {
  uint32_t ggml_type;
  DType native;
  bool as_f32;
  std::vector<uint8_t> bytes;
  std::vector<std::pair<int, float>> at;
  double weighted_sum;
};

std::vector<HandBlock> HandBlocks() {
  return {
      // d 0.5, m -3.25
      {3,
       DType::kQ8,
       true,
       Concat({{0x00, 0x38, 0x80, 0xC2, 0x0F, 0xF0, 0xFF, 0x00}, Pattern(12, 37, 11)}),
       {{0, 4.25f}, {1, -3.25f}, {2, 4.25f}, {15, -2.25f}, {16, -3.25f}, {17, 4.25f}, {31, 1.75f}},
       105.5},
      // d -0.25, q 0..31 both present: d·(q − 16)
      {6,
       DType::kQ8,
       false,
       Concat({{0x00, 0xB4, 0x01, 0x80, 0xFF, 0x5A, 0x0F, 0xF0, 0xFF, 0x00}, Pattern(12, 29, 7)}),
       {{0, -3.75f}, {1, 4.0f}, {2, 0.25f}, {15, -1.5f}, {16, 0.0f}, {17, -3.75f}, {31, 3.0f}},
       40.25},
      // d 0.125, m -1.5
      {7,
       DType::kQ8,
       true,
       Concat({{0x00, 0x30, 0x00, 0xBE, 0xFF, 0x00, 0xA5, 0x81, 0xFF, 0x00, 0xF0, 0x0F},
               Pattern(12, 53, 3)}),
       {{0, 2.375f}, {1, 0.5f}, {2, 0.5f}, {15, -0.25f}, {16, 2.375f}, {17, -1.5f}, {31, 1.0f}},
       -20.625},
      // d -0.5, levels 0 (-127) and 15 (113) among the nibbles
      {20,
       DType::kQ8,
       false,
       Concat({{0x00, 0xB8, 0x0F, 0xF0, 0xFF, 0x00}, Pattern(12, 37, 11)}),
       {{0, -56.5f}, {1, 63.5f}, {2, -56.5f}, {15, 41.5f}, {16, 63.5f}, {17, -56.5f}, {31, -12.5f}},
       3934.0},
      // scale/min bytes 0xFF, 0x0F, 0xF0, 0x00 first; d 0.5, dmin -0.25
      {10,
       DType::kQ4K,
       true,
       Concat({{0xFF, 0x0F, 0xF0, 0x00},
               Pattern(12, 37, 11),
               {0xFF, 0x00, 0xE4, 0x1B},
               Pattern(60, 29, 7),
               {0x00, 0x38, 0x00, 0xB4}}),
       {{0, 26.25f},
        {15, 18.75f},
        {16, 22.5f},
        {31, 15.0f},
        {32, 3.75f},
        {63, 0.0f},
        {64, 16.5f},
        {100, 1.25f},
        {130, 9.75f},
        {160, 3.5f},
        {200, 2.25f},
        {224, 1.75f},
        {255, 4.5f}},
       246255.0},
      // 6-bit scales 63 (31) and 0 (-32) among them; d -0.0625
      {11,
       DType::kQ6K,
       false,
       Concat({{0xFF, 0x00},
               Pattern(30, 53, 3),
               {0xFF, 0x00, 0xE4, 0x1B},
               Pattern(60, 37, 11),
               {0xFF, 0x00, 0x3F, 0xF0, 0x12, 0x34, 0x56, 0x78, 0xFF, 0x00, 0x9A, 0xBC},
               {0x00, 0xAC}}),
       {{0, -5.8125f},
        {15, 3.875f},
        {16, 6.0f},
        {31, -4.0f},
        {32, -2.8125f},
        {63, -8.0f},
        {64, -3.375f},
        {100, 0.0f},
        {130, 5.8125f},
        {160, 0.8125f},
        {200, -3.1875f},
        {224, 0.0f},
        {255, 0.875f}},
       5086.0},
      // d 1, dmin -0.5, sub-block 0 scale 63 and min 63, level 31 at element 0
      {13,
       DType::kQ6K,
       true,
       Concat({{0x00, 0x3C, 0x00, 0xB8, 0xFF, 0x82, 0xC3, 0x04, 0xFF, 0x46, 0xC7, 0x08, 0x21, 0x43,
                0x65, 0xF7, 0xFF, 0x00},
               Pattern(30, 29, 7),
               {0xFF, 0x00},
               Pattern(126, 37, 11)}),
       {{0, 1984.5f},
        {15, 787.5f},
        {16, 1102.5f},
        {31, 787.5f},
        {32, 65.0f},
        {63, 9.0f},
        {64, 54.5f},
        {100, 64.0f},
        {130, 564.0f},
        {160, 570.0f},
        {200, 504.0f},
        {224, 189.5f},
        {255, 14.5f}},
       13939876.0},
  };
}

// Catches a wrong nibble or bit order, a scale or min read from the wrong byte, a min added
// instead of subtracted, a Q3_K level offset or scale bias off, and Q5_0/Q3_K rewritten into
// blocks of other values (checked through the native dequantizer).
TEST(GgufTypes, HandBlocksDequantizeAsGgml) {
  for (const HandBlock& b : HandBlocks()) {
    const uint64_t n = b.bytes.size() > 24 ? kSuperBlock : kQuantBlock;
    std::vector<uint8_t> out(b.as_f32 ? n * 4 : DTypeBlockBytes(b.native));
    ReadGgmlBlocks(b.bytes.data(), b.ggml_type, 1, out.data());
    std::vector<float> v(n);
    if (b.as_f32) {
      std::memcpy(v.data(), out.data(), n * 4);
    } else {
      ASSERT_EQ(DTypeBlockElements(b.native), n);
      DequantizeBlock(out.data(), b.native, v.data());
    }
    for (const auto& [i, want] : b.at) EXPECT_EQ(v[i], want) << b.ggml_type << " at " << i;
    double sum = 0;
    for (uint64_t i = 0; i < n; ++i) sum += static_cast<double>(i + 1) * v[i];
    EXPECT_EQ(sum, b.weighted_sum) << b.ggml_type;
  }
}

// An Inf or NaN in any f16 scale of a block (d, and m or dmin) makes every value of the block
// non-finite as read, which the converter refuses (CountNonFinite). Catches a scale read from
// the wrong offset and a rewrite that drops the scale's exponent.
TEST(GgufTypes, NonFiniteScalesMakeEveryValueNonFinite) {
  const std::map<uint32_t, std::vector<int>> scales = {
      {3, {0, 2}}, {6, {0}}, {7, {0, 2}}, {20, {0}}, {10, {80, 82}}, {11, {108}}, {13, {0, 2}}};
  for (const HandBlock& b : HandBlocks()) {
    const uint64_t n = b.bytes.size() > 24 ? kSuperBlock : kQuantBlock;
    const DType read = b.as_f32 ? DType::kF32 : b.native;
    for (int at : scales.at(b.ggml_type)) {
      for (uint16_t bits : {0x7c00, 0xfc00, 0x7e00}) {  // +Inf, -Inf, NaN
        std::vector<uint8_t> bad = b.bytes;
        bad[at] = static_cast<uint8_t>(bits);
        bad[at + 1] = static_cast<uint8_t>(bits >> 8);
        std::vector<uint8_t> out(DTypeBytes(read, n));
        ReadGgmlBlocks(bad.data(), b.ggml_type, 1, out.data());
        EXPECT_EQ(CountNonFinite(out.data(), read, n), n) << b.ggml_type << " at " << at;
      }
    }
  }
}

struct OtherType {
  const char* kind;  // the fixture's --dtype
  DType native;
  bool read_f32;
};
constexpr OtherType kOtherTypes[] = {{"q4_1", DType::kQ8, true},  {"q5_0", DType::kQ8, false},
                                     {"q5_1", DType::kQ8, true},  {"iq4_nl", DType::kQ8, false},
                                     {"q2_k", DType::kQ4K, true}, {"q3_k", DType::kQ6K, false},
                                     {"q5_k", DType::kQ6K, true}};

// A tensor of a checkpoint view as f32 values (native blocks dequantized).
std::vector<float> ReadValues(const CheckpointReader& ckpt, const CheckpointTensor& t) {
  std::vector<uint8_t> raw(t.nbytes);
  ckpt.Read(t, raw.data());
  uint64_t elements = 1;
  for (uint64_t d : t.shape) elements *= d;
  std::vector<float> v(elements);
  ConvertMatrix(raw.data(), t.read_type(), 1, elements, false, reinterpret_cast<uint8_t*>(v.data()),
                DType::kF32);
  return v;
}

// Each type's GGUF (blocks from tools/reference/ggml_quants.py's quantizer, every matrix whose
// rows are whole blocks) read through the checkpoint view gives, bit for bit, the f32 values
// ggml_quants.py's dequantizer wrote into the _values GGUF, q/k rows un-permuted alike; each
// tensor says the native type of the mapping and whether it is read as f32. Catches a
// mapping changed, Q5_0 or Q3_K rewritten inexactly, and rows permuted by the size of the
// file's blocks instead of the blocks read.
TEST(GgufTypes, FixturesReadAsTheirValues) {
  const std::string ck = "llama_gqa_hd64_relu_f32_";
  for (const OtherType& o : kOtherTypes) {
    const std::string kind = o.kind;
    const auto quant =
        OpenGgufCheckpoint(Gguf(ck + kind + ".gguf"), ReadGgufHeader(Gguf(ck + kind + ".gguf")));
    const auto values = OpenGgufCheckpoint(Gguf(ck + kind + "_values.gguf"),
                                           ReadGgufHeader(Gguf(ck + kind + "_values.gguf")));
    int mapped = 0;
    for (const CheckpointTensor& t : quant->tensors()) {
      const CheckpointTensor* v = values->Find(t.name);
      ASSERT_NE(v, nullptr) << t.name;
      if (t.dtype != DType::kF32) {
        EXPECT_EQ(t.dtype, o.native) << kind << " " << t.name;
        EXPECT_EQ(t.read_f32, o.read_f32) << kind << " " << t.name;
        ++mapped;
      }
      const std::vector<float> got = ReadValues(*quant, t), want = ReadValues(*values, *v);
      ASSERT_EQ(got.size(), want.size()) << kind << " " << t.name;
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << kind << " " << t.name;
    }
    EXPECT_GE(mapped, 8) << kind;  // embeddings, q, k, v, o, gate, up of two layers...
  }
}

// The largest error a stored block may have against values it quantized: half a q8 step (d /
// 2, d = f16(max / 127) may round below max / 127 by 2⁻¹¹), 1.5 levels of a q4k sub-block or a
// q6k group (their least-squares fits may leave the extremes outside the levels' range).
float BlockErrorBound(const uint8_t* block, DType type, uint64_t i) {
  if (type == DType::kQ8) return 0.5f * (1 + 1e-3f) * std::abs(HalfToFloat(LoadLe16(block)));
  if (type == DType::kQ6K) {
    return 1.5f * std::abs(HalfToFloat(LoadLe16(block + 208)) *
                           static_cast<float>(static_cast<int8_t>(block[192 + i / 16])));
  }
  int sc, m;
  Q4KScaleMin(block + 4, static_cast<int>(i / 32), &sc, &m);
  return 1.5f * HalfToFloat(LoadLe16(block)) * static_cast<float>(sc);
}

// Converted with --dtype the mapping's type, every tensor whose GGUF type is one of these is
// stored in it: Q5_0, IQ4_NL and Q3_K with the GGUF's values bit for bit (their blocks copied),
// Q4_1, Q5_1, Q2_K and Q5_K quantized once from the exact values, each element within its stored
// block's bound. Catches an inexact type copied or requantized twice, and values lost.
TEST(GgufTypes, ConvertedExactlyOrWithinABlockStep) {
  testing::TempDir dir;
  const std::string ck = "llama_gqa_hd64_relu_f32_";
  for (const OtherType& o : kOtherTypes) {
    const std::string kind = o.kind;
    const auto quant = Model::Load(ConvertGgufFile(dir, ck + kind + ".gguf", o.native));
    const auto exact = Model::Load(ConvertGgufFile(dir, ck + kind + "_values.gguf", DType::kF32));
    int checked = 0;
    for (const TensorInfo& t : quant->file().tensors()) {
      if (t.layout != Layout::kRowMajor || t.dtype == DType::kF32) continue;
      const TensorInfo* x = exact->file().Find(t.name);
      ASSERT_NE(x, nullptr) << t.name;
      const auto* bytes = static_cast<const uint8_t*>(quant->file().data(t));
      std::vector<float> got(t.elements());
      ConvertMatrix(bytes, t.dtype, 1, t.elements(), false, reinterpret_cast<uint8_t*>(got.data()),
                    DType::kF32);
      const auto* want = static_cast<const float*>(exact->file().data(*x));
      const uint64_t block = DTypeBlockElements(t.dtype);
      for (uint64_t i = 0; i < got.size(); ++i) {
        if (o.read_f32) {
          const uint8_t* b = bytes + i / block * DTypeBlockBytes(t.dtype);
          ASSERT_LE(std::abs(got[i] - want[i]), BlockErrorBound(b, t.dtype, i % block))
              << kind << " " << t.name << " " << i;
        } else {
          ASSERT_EQ(got[i], want[i]) << kind << " " << t.name << " " << i;
        }
      }
      ++checked;
    }
    EXPECT_GE(checked, 8) << kind;
  }
}

// A GGUF without llama.hidden_act: --act says it; without --act the converter refuses (llama.cpp
// would silently run SiLU); --act contradicting the metadata is refused.
TEST(Gguf, ActivationFromMetadataOrAct) {
  testing::TempDir dir;
  EXPECT_EQ(Model::Load(ConvertGgufFile(dir, "llama_gqa_hd64_relu_f32_noact.gguf", {}, "relu"))
                ->config()
                .activation,
            Activation::kReLU);
  EXPECT_EQ(Model::Load(ConvertGgufFile(dir, "llama_gqa_hd64_relu_f32_noact.gguf", {}, "silu"))
                ->config()
                .activation,
            Activation::kSiLU);
  try {
    ConvertGgufFile(dir, "llama_gqa_hd64_relu_f32_noact.gguf");
    ADD_FAILURE() << "converted without an activation";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("pass --act"), std::string::npos) << e.reason();
  }
  EXPECT_THROW(ConvertGgufFile(dir, "llama_gqa_hd64_relu_f32_f32.gguf", {}, "silu"), Error);
}

// ------------------------------------------------------------------------ config defaults

GgufValue UInt(uint64_t u) {
  GgufValue v;
  v.u = u;
  return v;
}
GgufValue Float(double f) {
  GgufValue v;
  v.type = GgufValue::Type::kFloat;
  v.f = f;
  return v;
}
GgufValue Text(std::string s) {
  GgufValue v;
  v.type = GgufValue::Type::kString;
  v.s = std::move(s);
  return v;
}
GgufValue ArrayOf(GgufValue::Type element) {
  GgufValue v;
  v.type = GgufValue::Type::kArray;
  v.element = element;
  return v;
}

// The keys every GGUF must have: hidden 256 over 4 heads (a head of 64), 10 tokens.
GgufHeader MinimalHeader() {
  GgufHeader h;
  h.version = 3;
  auto& m = h.metadata;
  m["general.architecture"] = Text("llama");
  m["llama.embedding_length"] = UInt(256);
  m["llama.feed_forward_length"] = UInt(200);
  m["llama.block_count"] = UInt(2);
  m["llama.attention.head_count"] = UInt(4);
  m["llama.context_length"] = UInt(64);
  m["llama.attention.layer_norm_rms_epsilon"] = Float(1e-5);
  GgufValue tokens = ArrayOf(GgufValue::Type::kString);
  for (int i = 0; i < 10; ++i) tokens.strings.push_back(std::string("t").append(std::to_string(i)));
  m["tokenizer.ggml.tokens"] = tokens;
  return h;
}

nlohmann::json ConfigOf(const GgufHeader& h, const std::string& act = "relu") {
  return nlohmann::json::parse(GgufConfigJson(h, "x.gguf", act));
}

std::string RefusalOf(const GgufHeader& h, const std::string& act = "relu") {
  try {
    GgufConfigJson(h, "x.gguf", act);
  } catch (const Error& e) {
    return e.reason();
  }
  return "";
}

// Every optional key absent: exactly the required ones, the vocabulary counted from the tokens,
// tied (no output.weight), --act's activation. Then each present, and each contradicting another
// (or --act) is refused by name. The expected configs are written out here, not derived.
TEST(GgufConfig, OptionalKeysAbsentPresentAndContradictory) {
  const nlohmann::json bare = {{"architectures", {"LlamaForCausalLM"}},
                               {"model_type", "llama"},
                               {"hidden_size", 256},
                               {"intermediate_size", 200},
                               {"num_hidden_layers", 2},
                               {"num_attention_heads", 4},
                               {"max_position_embeddings", 64},
                               {"rms_norm_eps", 1e-5},
                               {"vocab_size", 10},
                               {"tie_word_embeddings", true},
                               {"hidden_act", "relu"}};
  EXPECT_EQ(ConfigOf(MinimalHeader()), bare);
  EXPECT_EQ(ConfigOf(MinimalHeader(), "silu")["hidden_act"], "silu");
  EXPECT_NE(RefusalOf(MinimalHeader(), "").find("pass --act"), std::string::npos);

  GgufHeader full = MinimalHeader();
  auto& m = full.metadata;
  m["llama.attention.head_count_kv"] = UInt(2);
  m["llama.attention.key_length"] = UInt(64);
  m["llama.attention.value_length"] = UInt(64);
  m["llama.rope.dimension_count"] = UInt(64);
  m["llama.rope.freq_base"] = Float(500000.0);
  m["llama.rope.scaling.type"] = Text("none");
  m["llama.vocab_size"] = UInt(10);
  m["tokenizer.ggml.bos_token_id"] = UInt(1);
  m["tokenizer.ggml.eos_token_id"] = UInt(2);
  m["llama.hidden_act"] = Text("fatrelu");
  m["llama.hidden_act_param"] = Float(0.25);
  full.tensors.emplace_back();
  full.tensors.back().name = "output.weight";
  nlohmann::json want = bare;
  want.update({{"num_key_value_heads", 2},
               {"head_dim", 64},
               {"rope_theta", 500000.0},
               {"bos_token_id", 1},
               {"eos_token_id", 2},
               {"tie_word_embeddings", false},
               {"hidden_act", "fatrelu"},
               {"hidden_act_param", 0.25}});
  EXPECT_EQ(ConfigOf(full, ""), want);
  EXPECT_EQ(ConfigOf(full, "fatrelu"), want);

  // A head size from key_length, not hidden / heads: the rotary dimension must match it.
  GgufHeader wide = MinimalHeader();
  wide.metadata["llama.attention.key_length"] = UInt(80);
  wide.metadata["llama.rope.dimension_count"] = UInt(80);
  EXPECT_EQ(ConfigOf(wide)["head_dim"], 80);

  const auto refused = [](GgufHeader h, const std::string& key, GgufValue v, const std::string& act,
                          const std::string& reason) {
    h.metadata[key] = std::move(v);
    EXPECT_EQ(RefusalOf(h, act), reason) << key;
  };
  const std::string rope = "llama.rope.dimension_count differs from the head size";
  refused(MinimalHeader(), "llama.rope.dimension_count", UInt(63), "relu", rope);
  refused(MinimalHeader(), "llama.rope.dimension_count", UInt(65), "relu", rope);
  refused(wide, "llama.rope.dimension_count", UInt(64), "relu", rope);
  refused(full, "llama.attention.value_length", UInt(63), "",
          "llama.attention.value_length differs from key_length (not supported)");
  const std::string vocab = "llama.vocab_size differs from the number of tokenizer.ggml.tokens";
  refused(full, "llama.vocab_size", UInt(9), "", vocab);
  refused(full, "llama.vocab_size", UInt(11), "", vocab);
  refused(full, "llama.rope.scaling.type", Text("linear"), "",
          "llama.rope.scaling.type is not supported (rope scaling)");
  refused(full, "llama.hidden_act", Text("fatrelu"), "relu",
          "llama.hidden_act is 'fatrelu' but --act says 'relu'");
}

// The tokenizer's optional keys: scores and types default (0, normal), ids must name a token
// (the last one does, one past it does not), types are sentencepiece's 1..6.
TEST(GgufConfig, TokenizerIdsAndTypesAtTheirEdges) {
  GgufHeader h = MinimalHeader();
  h.metadata["tokenizer.ggml.model"] = Text("llama");
  const auto refusal = [](GgufHeader h) -> std::string {
    try {
      GgufTokenizerModel(h, "x.gguf");
    } catch (const Error& e) {
      return e.reason();
    }
    return "";
  };
  EXPECT_EQ(refusal(h), "");
  for (const char* key : {"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
                          "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"}) {
    GgufHeader edge = h;
    edge.metadata[key] = UInt(9);
    EXPECT_EQ(refusal(edge), "") << key;
    edge.metadata[key] = UInt(10);
    EXPECT_EQ(refusal(edge), std::string(key) + " is out of range");
  }
  GgufValue types = ArrayOf(GgufValue::Type::kUInt);
  types.numbers.assign(10, 1.0);
  types.numbers[9] = 6;
  h.metadata["tokenizer.ggml.token_type"] = types;
  EXPECT_EQ(refusal(h), "");
  for (double bad : {0.0, 7.0, 1.5}) {
    types.numbers[9] = bad;
    h.metadata["tokenizer.ggml.token_type"] = types;
    EXPECT_EQ(refusal(h), "tokenizer.ggml.token_type[9] is not a token type (1-6)") << bad;
  }
  types.numbers.assign(9, 1.0);
  h.metadata["tokenizer.ggml.token_type"] = types;
  EXPECT_EQ(refusal(h), "tokenizer.ggml.scores / token_type do not have one entry per token");
}

}  // namespace
}  // namespace zeroskip
