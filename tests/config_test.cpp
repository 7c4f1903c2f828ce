#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "zeroskip/config.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

using nlohmann::json;

json Base() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 256},
          {"intermediate_size", 200},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 384},
          {"hidden_act", "relu"},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"rope_scaling", nullptr}};
}

TEST(HfConfig, ParsesALlamaConfig) {
  const ModelConfig c = ParseHfConfig(Base().dump(), "config.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_heads, 2);
  EXPECT_EQ(c.activation, Activation::kReLU);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
}

TEST(HfConfig, RoundTripsThroughNativeMetadata) {
  json j = Base();
  j["head_dim"] = 128;
  j["tie_word_embeddings"] = true;
  j["eos_token_id"] = json::array({2, 7});
  j["hidden_act"] = "silu";
  const ModelConfig c = ParseHfConfig(j.dump(), "config.json");
  EXPECT_EQ(c.eos_id, 2);
  const ModelConfig back = ConfigFromJson(ConfigToJson(c), "m.zsk");
  EXPECT_EQ(back.head_dim, 128);
  EXPECT_TRUE(back.tied_embeddings);
  EXPECT_EQ(back.activation, Activation::kSiLU);
  EXPECT_EQ(ConfigToJson(back), ConfigToJson(c));
}

// Every field set away from its default, so a field that one side drops or misnames shows.
TEST(HfConfig, EveryFieldSurvivesTheNativeMetadata) {
  const json hf = {{"architectures", {"MistralForCausalLM"}},
                   {"hidden_size", 256},
                   {"intermediate_size", 200},
                   {"num_hidden_layers", 3},
                   {"num_attention_heads", 4},
                   {"num_key_value_heads", 2},
                   {"head_dim", 96},
                   {"vocab_size", 384},
                   {"hidden_act", "relu"},
                   {"max_position_embeddings", 64},
                   {"sliding_window", 48},
                   {"rms_norm_eps", 1e-5},
                   {"rope_theta", 500000.0},
                   {"tie_word_embeddings", true},
                   {"bos_token_id", 3},
                   {"eos_token_id", {5, 6}}};
  const ModelConfig want{.hf_architecture = "MistralForCausalLM",
                         .hidden = 256,
                         .ffn = 200,
                         .layers = 3,
                         .heads = 4,
                         .kv_heads = 2,
                         .head_dim = 96,
                         .vocab = 384,
                         .context = 48,  // capped by the sliding window
                         .activation = Activation::kReLU,
                         .embed_dim = 256,  // OPT's word_embed_proj_dim; hidden elsewhere
                         .rms_eps = 1e-5f,
                         .rope_theta = 500000.0f,
                         .tied_embeddings = true,
                         .bos_id = 3,
                         .eos_id = 5};
  const ModelConfig c = ParseHfConfig(hf.dump(), "config.json");
  EXPECT_EQ(c, want);
  const std::string native = ConfigToJson(c);
  EXPECT_EQ(ConfigFromJson(native, "m.zsk"), want);
  const json stored = json::parse(native);
  // One key per ModelConfig member but those the architecture implies (relu_up, gated_ffn)
  // and OPT's two, written for OPT alone.
  EXPECT_EQ(stored.size(), 15u) << native;
  EXPECT_EQ(stored["context_length"], 48);
  EXPECT_EQ(stored["architecture"], "MistralForCausalLM");
  EXPECT_EQ(stored["hidden_act"], "relu");
  // What the native metadata has always looked like (existing .zsk files hold this text).
  ModelConfig defaults;
  defaults.hf_architecture = "LlamaForCausalLM";
  EXPECT_EQ(ConfigToJson(defaults),
            R"({"architecture":"LlamaForCausalLM","bos_token_id":-1,"context_length":0,)"
            R"("eos_token_id":-1,"head_dim":0,"hidden_act":"relu","hidden_size":0,)"
            R"("intermediate_size":0,"num_attention_heads":0,"num_hidden_layers":0,)"
            R"("num_key_value_heads":0,"rms_norm_eps":9.999999747378752e-06,"rope_theta":10000.0,)"
            R"("tie_word_embeddings":false,"vocab_size":0})");
}

TEST(HfConfig, DefaultsAndMistralWindow) {
  json j = Base();
  j.erase("num_key_value_heads");
  j["architectures"] = {"MistralForCausalLM"};
  j["max_position_embeddings"] = 32768;
  j["sliding_window"] = 4096;
  const ModelConfig c = ParseHfConfig(j.dump(), "config.json");
  EXPECT_EQ(c.kv_heads, 4);
  EXPECT_EQ(c.context, 4096);
}

// ProSparse's config.json (SparseLLM/prosparse-llama-2-7b, sizes shrunk): its architecture,
// "fatrelu" and the threshold in hidden_act_param; the threshold is stored (only for fatrelu) and
// read back. Catches a threshold that is dropped on either side or stored for every model.
TEST(HfConfig, ProSparseFatReluThreshold) {
  json j = Base();
  j["architectures"] = {"SparseLlamaForCausalLM"};
  j["model_type"] = "sparsellama";
  j["hidden_act"] = "fatrelu";
  j["hidden_act_param"] = 0.01;
  const ModelConfig c = ParseHfConfig(j.dump(), "config.json");
  EXPECT_EQ(c.hf_architecture, "SparseLlamaForCausalLM");
  EXPECT_EQ(c.activation, Activation::kFatReLU);
  EXPECT_EQ(c.activation_threshold, 0.01f);
  EXPECT_FALSE(c.relu_up);
  const json stored = json::parse(ConfigToJson(c));
  EXPECT_EQ(stored["hidden_act"], "fatrelu");
  EXPECT_EQ(stored["hidden_act_param"].get<float>(), 0.01f);
  EXPECT_EQ(ConfigFromJson(ConfigToJson(c), "m.zsk"), c);
  // Without "architectures", model_type names it.
  j.erase("architectures");
  EXPECT_EQ(ParseHfConfig(j.dump(), "config.json").hf_architecture, "SparseLlamaForCausalLM");
  // Other activations ignore hidden_act_param (MiniCPM's silu configs carry one) and store none.
  j["hidden_act"] = "relu";
  const ModelConfig relu = ParseHfConfig(j.dump(), "config.json");
  EXPECT_EQ(relu.activation_threshold, 0.0f);
  EXPECT_FALSE(json::parse(ConfigToJson(relu)).contains("hidden_act_param"));
}

// Bamboo / TurboSparse-Mistral: BambooForCausalLM with hidden_act relu is dReLU, derived from the
// architecture on both sides (nothing extra stored). Catches relu_up lost in the native round
// trip (the .zsk would then run plain ReLU on up).
TEST(HfConfig, BambooIsDRelu) {
  json j = Base();
  j["architectures"] = {"BambooForCausalLM"};
  j["model_type"] = "bamboo";
  j["sliding_window"] = 4096;
  const ModelConfig c = ParseHfConfig(j.dump(), "config.json");
  EXPECT_TRUE(c.relu_up);
  EXPECT_EQ(c.activation, Activation::kReLU);
  EXPECT_EQ(ConfigFromJson(ConfigToJson(c), "m.zsk"), c);
  EXPECT_TRUE(ConfigFromJson(ConfigToJson(c), "m.zsk").relu_up);
  EXPECT_FALSE(ParseHfConfig(Base().dump(), "config.json").relu_up);
}

struct BadCase {
  const char* name;
  std::function<void(json&)> edit;
  const char* reason;
};

// OPT-350m's config.json as facebook/opt-350m publishes it (sizes shrunk).
json OptBase() {
  return {{"architectures", {"OPTForCausalLM"}},
          {"model_type", "opt"},
          {"hidden_size", 256},
          {"ffn_dim", 1024},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"word_embed_proj_dim", 128},
          {"do_layer_norm_before", false},
          {"activation_function", "relu"},
          {"enable_bias", true},
          {"layer_norm_elementwise_affine", true},
          {"vocab_size", 640},
          {"max_position_embeddings", 64},
          {"dropout", 0.1},
          {"bos_token_id", 2},
          {"eos_token_id", 2},
          {"pad_token_id", 1}};
}

// OPT's own keys (ffn_dim, activation_function, word_embed_proj_dim, do_layer_norm_before) and
// defaults (tied, LayerNorm eps 1e-5, pre-norm, no projection) survive the native metadata; the
// OPT-only keys are written for OPT alone (a Llama file's metadata is unchanged).
TEST(HfConfig, OptConfig) {
  const ModelConfig c = ParseHfConfig(OptBase().dump(), "config.json");
  EXPECT_EQ(c.hf_architecture, "OPTForCausalLM");
  EXPECT_EQ(c.ffn, 1024);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_heads, 4);
  EXPECT_EQ(c.embed_dim, 128);
  EXPECT_TRUE(c.post_norm);
  EXPECT_FALSE(c.gated_ffn);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.activation, Activation::kReLU);
  EXPECT_EQ(ConfigFromJson(ConfigToJson(c), "m.zsk"), c);
  json j = OptBase();
  for (const char* key : {"word_embed_proj_dim", "do_layer_norm_before", "activation_function"}) {
    j.erase(key);
  }
  j.erase("architectures");  // model_type names it
  const ModelConfig pre = ParseHfConfig(j.dump(), "config.json");
  EXPECT_EQ(pre.embed_dim, 256);
  EXPECT_FALSE(pre.post_norm);
  EXPECT_EQ(ConfigFromJson(ConfigToJson(pre), "m.zsk"), pre);
  const ModelConfig llama = ParseHfConfig(Base().dump(), "config.json");
  EXPECT_TRUE(llama.gated_ffn);
  EXPECT_EQ(llama.embed_dim, llama.hidden);
  EXPECT_EQ(ConfigToJson(llama).find("word_embed_proj_dim"), std::string::npos);
  EXPECT_EQ(ConfigToJson(llama).find("do_layer_norm_before"), std::string::npos);
}

TEST(HfConfig, RefusesBadOptConfigsByName) {
  const BadCase cases[] = {
      {"gelu", [](json& j) { j["activation_function"] = "gelu"; },
       "activation_function 'gelu' is not supported (OPT: relu)"},
      {"no ffn_dim", [](json& j) { j.erase("ffn_dim"); }, "missing ffn_dim"},
      {"llama key", [](json& j) { j["intermediate_size"] = 1024; },
       "intermediate_size is not an OPT config key"},
      {"no bias", [](json& j) { j["enable_bias"] = false; }, "enable_bias false is not supported"},
      {"no affine", [](json& j) { j["layer_norm_elementwise_affine"] = false; },
       "layer_norm_elementwise_affine false"},
      {"removed final norm", [](json& j) { j["_remove_final_layer_norm"] = true; },
       "_remove_final_layer_norm is not supported"},
      {"wide embeddings", [](json& j) { j["word_embed_proj_dim"] = 512; },
       "word_embed_proj_dim must not exceed hidden_size"},
      {"zero embeddings", [](json& j) { j["word_embed_proj_dim"] = 0; },
       "word_embed_proj_dim must be in"},
      {"pre-norm string", [](json& j) { j["do_layer_norm_before"] = "yes"; },
       "do_layer_norm_before must be true or false"},
      {"untied", [](json& j) { j["tie_word_embeddings"] = false; },
       "OPT with an untied lm_head is not supported"},
      {"heads", [](json& j) { j["num_attention_heads"] = 3; }, "multiple of num_attention_heads"},
  };
  for (const auto& c : cases) {
    json j = OptBase();
    c.edit(j);
    try {
      ParseHfConfig(j.dump(), "dir/config.json");
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(e.reason().find(c.reason), std::string::npos) << c.name << ": " << e.reason();
    }
  }
  // OPT's keys on another architecture would run it wrong: refused.
  json llama = Base();
  llama["do_layer_norm_before"] = false;
  EXPECT_THROW(ParseHfConfig(llama.dump(), "c"), Error);
  llama = Base();
  llama["word_embed_proj_dim"] = 128;
  EXPECT_THROW(ParseHfConfig(llama.dump(), "c"), Error);
}

TEST(HfConfig, RefusesBadConfigsByName) {
  const BadCase cases[] = {
      {"arch", [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, "unsupported architecture 'GPT2LMHeadModel'"},
      {"rope", [](json& j) { j["rope_scaling"] = {{"type", "linear"}}; }, "rope_scaling is not supported"},
      {"act", [](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act 'gelu' is not supported"},
      {"zero", [](json& j) { j["hidden_size"] = 0; }, "hidden_size must be in"},
      {"negative", [](json& j) { j["num_hidden_layers"] = -3; }, "num_hidden_layers must be in"},
      {"absurd", [](json& j) { j["vocab_size"] = 1000000000000000LL; }, "vocab_size must be in"},
      {"huge unsigned", [](json& j) { j["hidden_size"] = 18446744073709551615ULL; }, "out of range"},
      {"float", [](json& j) { j["hidden_size"] = 256.5; }, "hidden_size must be an integer"},
      {"string", [](json& j) { j["intermediate_size"] = "200"; }, "must be an integer"},
      {"missing", [](json& j) { j.erase("vocab_size"); }, "missing vocab_size"},
      {"gqa", [](json& j) { j["num_key_value_heads"] = 3; }, "multiple of num_key_value_heads"},
      {"heads", [](json& j) { j["hidden_size"] = 250; }, "multiple of num_attention_heads"},
      // Derived head_dim past what a .zsk may hold (the file could be written, never opened).
      {"derived head_dim",
       [](json& j) {
         j["hidden_size"] = 2048;
         j["num_attention_heads"] = 1;
         j["num_key_value_heads"] = 1;
       },
       "absurd head_dim"},
      {"bias", [](json& j) { j["attention_bias"] = true; }, "attention_bias"},
      {"eos", [](json& j) { j["eos_token_id"] = 384; }, "eos_token_id must be in"},
      {"eps", [](json& j) { j["rms_norm_eps"] = -1; }, "rms_norm_eps is out of range"},
      {"fatrelu no threshold", [](json& j) { j["hidden_act"] = "fatrelu"; },
       "fatrelu needs hidden_act_param"},
      {"fatrelu negative",
       [](json& j) {
         j["hidden_act"] = "fatrelu";
         j["hidden_act_param"] = -0.01;
       },
       "hidden_act_param must be in [0, "},
      {"fatrelu string",
       [](json& j) {
         j["hidden_act"] = "fatrelu";
         j["hidden_act_param"] = "0.01";
       },
       "hidden_act_param must be a number"},
      {"drelu silu",
       [](json& j) {
         j["architectures"] = {"BambooForCausalLM"};
         j["hidden_act"] = "silu";
       },
       "BambooForCausalLM (dReLU) needs hidden_act relu"},
  };
  for (const auto& c : cases) {
    json j = Base();
    c.edit(j);
    try {
      ParseHfConfig(j.dump(), "dir/config.json");
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.path(), "dir/config.json");
      EXPECT_NE(e.reason().find(c.reason), std::string::npos) << c.name << ": " << e.reason();
    }
  }
  EXPECT_THROW(ParseHfConfig("{not json", "c"), Error);
  EXPECT_THROW(ParseHfConfig("[1, 2]", "c"), Error);
}

}  // namespace
}  // namespace zeroskip
