// The architecture tensor tables: lookup by native and Hugging Face name, what a config leaves
// unstored.
#include "model/tensor_table.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "model/architectures.h"
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

}  // namespace
}  // namespace zeroskip
