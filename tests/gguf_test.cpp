// GGUF input: a checkpoint converted from its Hugging Face directory and from a GGUF written by
// tests/data/make_gguf.py (llama.cpp's layout: ggml names and dim order, q/k rows permuted for
// ggml's rotary, tokenizer as tokenizer.ggml.* arrays) gives bit-identical logits at f32, and the
// same tokenization; q8_0/q4_0/q4_K/q6_K/f16/bf16 blocks pass through unchanged. Hostile GGUF files are in
// tests/corrupt (make_corpus.py) and the fuzz target tests/fuzz/fuzz_gguf.cpp.
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
// --dtype q4k gives the same blocks (its recipe keeps Q4_K_M's q6k attn_v), the ffn_downs
// quantized from f32 to q4k. Catches a mix refused, converted to one type, or a block requantized
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
    if (t.name.ends_with("ffn_down") || t.name == "tok_embeddings") continue;
    ASSERT_EQ(r.dtype, t.dtype) << t.name;
    EXPECT_EQ(std::memcmp(q4k->file().data(r), kept->file().data(t), t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(q4k->layer(0).ffn.down_t.dtype, DType::kQ4K);
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
