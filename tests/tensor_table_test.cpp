// The architecture tensor tables: lookup by native and Hugging Face name, what a config leaves
// unstored, and the safetensors CheckpointReader the converter reads them through.
#include "arch/tensor_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>

#include "format/file_io.h"
#include "format/safetensors.h"
#include "arch/architectures.h"
#include "test_util.h"
#include "zeroskip/config.h"

namespace zeroskip {
namespace {

ModelConfig TwoLayers(bool tied) {
  ModelConfig c = testing::TinyConfig();
  c.layers = 2;
  c.tied_embeddings = tied;
  return c;
}

TEST(TensorTable, LooksUpTensorsByName) {
  const TensorTable table = ArchitectureTensors(TwoLayers(false));
  EXPECT_EQ(table.stored().size(), 1u + 9 * 2 + 2);
  const TensorDef& down = table.at("layers.1.ffn_down");
  EXPECT_EQ(down.hf_name, "model.layers.1.mlp.down_proj.weight");
  EXPECT_EQ(down.layout, Layout::kTransposed);
  EXPECT_EQ(down.hf_shape, (std::vector<uint64_t>{8, 12}));
  EXPECT_EQ(down.stored_shape(), (std::vector<uint64_t>{12, 8}));
  EXPECT_TRUE(table.at("layers.0.ffn_norm").always_f32);
  EXPECT_EQ(table.at("layers.0.attn_k").hf_shape, (std::vector<uint64_t>{4, 8}));
  EXPECT_EQ(table.FindHf("lm_head.weight"), &table.at("output"));
  EXPECT_EQ(table.stored().front().name, "tok_embeddings");  // file order
  EXPECT_EQ(table.stored().back().name, "output");
}

TEST(TensorTable, LookupRefusesUnknownAndMissingNames) {
  const TensorTable table = ArchitectureTensors(TwoLayers(true));
  EXPECT_THROW(table.at("layers.2.ffn_gate"), std::out_of_range);  // past the last layer
  EXPECT_THROW(table.at("layers.0.ffn_gates"), std::out_of_range);
  EXPECT_THROW(table.at("model.norm.weight"), std::out_of_range);  // an HF name, not a native one
  EXPECT_THROW(table.at("output"), std::out_of_range);             // tied: not stored
  EXPECT_EQ(table.find("output"), nullptr);
  EXPECT_EQ(table.FindHf("output_norm"), nullptr);
  EXPECT_EQ(table.FindHf("lm_head.weight"), nullptr);
  EXPECT_EQ(table.stored().size(), 1u + 9 * 2 + 1);
}

TEST(TensorTable, SaysWhichUnstoredCheckpointTensorsMayBeSkipped) {
  const TensorTable tied = ArchitectureTensors(TwoLayers(true));
  EXPECT_EQ(tied.SkipReason("lm_head.weight"), "embeddings are tied");
  EXPECT_EQ(tied.SkipReason("model.layers.1.self_attn.rotary_emb.inv_freq"),
            "derived rotary buffer");
  EXPECT_EQ(tied.SkipReason("model.layers.0.self_attn.q_proj.bias"), std::nullopt);
  const TensorTable untied = ArchitectureTensors(TwoLayers(false));
  EXPECT_EQ(untied.SkipReason("lm_head.weight"), std::nullopt);  // stored: not skippable
}

TEST(TensorTable, MistralSharesLlamasTensors) {
  ModelConfig c = TwoLayers(false);
  const TensorTable llama = ArchitectureTensors(c);
  c.hf_architecture = "MistralForCausalLM";
  const TensorTable mistral = ArchitectureTensors(c);
  ASSERT_EQ(mistral.stored().size(), llama.stored().size());
  for (size_t i = 0; i < llama.stored().size(); ++i) {
    EXPECT_EQ(mistral.stored()[i].hf_name, llama.stored()[i].hf_name);
  }
  c.hf_architecture = "GPT2LMHeadModel";
  EXPECT_THROW(ArchitectureTensors(c), std::invalid_argument);
}

// A sharded checkpoint reads as one: every tensor once, sorted by name, each read from its shard.
TEST(CheckpointReader, SafetensorsShardsReadAsOneCheckpoint) {
  const std::string dir = testing::TestDataDir() + "/llama_gqa_hd64_relu_f16_sharded";
  const auto ckpt = OpenSafetensorsCheckpoint(dir);
  EXPECT_EQ(ckpt->path(), dir + "/model.safetensors.index.json");
  const std::vector<std::string> files = ckpt->files();
  ASSERT_GE(files.size(), 3u);
  EXPECT_EQ(files[0], ckpt->path());
  size_t seen = 0;
  for (size_t f = 1; f < files.size(); ++f) {
    for (const SafetensorsTensor& t : ReadSafetensorsHeader(files[f]).tensors) {
      const CheckpointTensor* c = ckpt->Find(t.name);
      ASSERT_NE(c, nullptr) << t.name;
      EXPECT_EQ(c->path, files[f]);
      EXPECT_EQ(c->shape, t.shape);
      EXPECT_EQ(c->nbytes, t.end - t.begin);
      std::string want(c->nbytes, '\0'), got(c->nbytes, '\0');
      InputFile(files[f]).ReadAt(t.begin, want.data(), want.size());
      ckpt->Read(*c, got.data());
      EXPECT_EQ(got, want) << t.name;
      ++seen;
    }
  }
  EXPECT_EQ(seen, ckpt->tensors().size());
  EXPECT_TRUE(std::is_sorted(ckpt->tensors().begin(), ckpt->tensors().end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
  EXPECT_EQ(ckpt->Find("model.layers.9.mlp.up_proj.weight"), nullptr);
}

}  // namespace
}  // namespace zeroskip
