// GGUF input: a checkpoint converted from its Hugging Face directory and from a GGUF written by
// tests/data/make_gguf.py (llama.cpp's layout: ggml names and dim order, q/k rows permuted for
// ggml's rotary, tokenizer as tokenizer.ggml.* arrays) gives bit-identical logits at f32, and the
// same tokenization; q8_0/q4_0/f16/bf16 blocks pass through unchanged. Hostile GGUF files are in
// tests/corrupt (make_corpus.py) and the fuzz target tests/fuzz/fuzz_gguf.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "format/gguf.h"
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

// f16, bf16, q8_0 and q4_0 GGUFs converted with the same --dtype as the Hugging Face checkpoint:
// every tensor stored in its GGUF type and layout is the same bytes (ggml's q8_0/q4_0 blocks are
// ours); the rest (ffn_down, transposed; q4's embeddings, kept q8) went through f32 and load.
// f16/bf16 files are then wholly identical: the same logits. Catches a swapped type code, a
// wrong block size and a permutation that moves bytes inside a row.
TEST(Gguf, WeightTypesPassThroughLosslessly) {
  testing::TempDir dir;
  const std::map<std::string, DType> kinds = {
      {"f16", DType::kF16}, {"bf16", DType::kBF16}, {"q8_0", DType::kQ8}, {"q4_0", DType::kQ4}};
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
      const bool through_f32 = t.name.ends_with("ffn_down") ||
                               (dtype == DType::kQ4 && t.name == "tok_embeddings") ||
                               (dtype == DType::kQ4 && t.name == "output");
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

}  // namespace
}  // namespace zeroskip
