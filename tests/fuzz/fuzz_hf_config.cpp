// Fuzz target: the Hugging Face config.json parser (ParseHfConfig) and the native metadata
// parser (ConfigFromJson), both fed the input text.
//
// Oracles beyond "only zeroskip::Error escapes": an accepted config satisfies the documented
// limits, and ConfigToJson / ConfigFromJson round-trip it exactly (config.h promises this; the
// converter stores ConfigToJson(ParseHfConfig(config.json)) and ZskFile::Open reads it back with
// ConfigFromJson, so a config that does not round-trip yields a .zsk that cannot be opened).
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "zeroskip/config.h"
#include "zeroskip/error.h"

namespace {

using zeroskip::ModelConfig;

bool Same(const ModelConfig& a, const ModelConfig& b) {
  return a.hf_architecture == b.hf_architecture && a.hidden == b.hidden && a.ffn == b.ffn &&
         a.layers == b.layers && a.heads == b.heads && a.kv_heads == b.kv_heads &&
         a.head_dim == b.head_dim && a.vocab == b.vocab && a.context == b.context &&
         a.activation == b.activation &&
         std::memcmp(&a.activation_threshold, &b.activation_threshold, sizeof(float)) == 0 &&
         a.relu_up == b.relu_up &&
         std::memcmp(&a.rms_eps, &b.rms_eps, sizeof(float)) == 0 &&
         std::memcmp(&a.rope_theta, &b.rope_theta, sizeof(float)) == 0 &&
         a.tied_embeddings == b.tied_embeddings && a.bos_id == b.bos_id && a.eos_id == b.eos_id;
}

void CheckAccepted(const ModelConfig& c) {
  FUZZ_CHECK(c.hf_architecture == "LlamaForCausalLM" || c.hf_architecture == "MistralForCausalLM" ||
             c.hf_architecture == "SparseLlamaForCausalLM" ||
             c.hf_architecture == "BambooForCausalLM");
  FUZZ_CHECK(c.relu_up == (c.hf_architecture == "BambooForCausalLM"));
  FUZZ_CHECK(!c.relu_up || c.activation == zeroskip::Activation::kReLU);
  // A threshold only for fatrelu, never negative or NaN (the shadow gate's exactness needs >= 0).
  FUZZ_CHECK(c.activation == zeroskip::Activation::kFatReLU
                 ? c.activation_threshold >= 0.0f && c.activation_threshold <= 1e4f
                 : c.activation_threshold == 0.0f);
  FUZZ_CHECK(c.hidden >= 1 && c.hidden <= (1 << 16));
  FUZZ_CHECK(c.ffn >= 1 && c.ffn <= (1 << 18));
  FUZZ_CHECK(c.layers >= 1 && c.layers <= 1024);
  FUZZ_CHECK(c.heads >= 1 && c.heads <= 1024);
  FUZZ_CHECK(c.kv_heads >= 1 && c.kv_heads <= c.heads && c.heads % c.kv_heads == 0);
  FUZZ_CHECK(c.head_dim >= 2 && c.head_dim <= 1024 && c.head_dim % 2 == 0);
  FUZZ_CHECK(c.vocab >= 1 && c.vocab <= (1 << 22));
  FUZZ_CHECK(c.context >= 1 && c.context <= (1 << 22));
  // rms_eps / rope_theta ranges are checked on the double before the narrowing to float; the
  // round trip below checks that the stored float is still accepted.
  FUZZ_CHECK(c.bos_id >= -1 && c.bos_id < c.vocab);
  FUZZ_CHECK(c.eos_id >= -1 && c.eos_id < c.vocab);
}

// Stores the config the way the converter does and reads it back the way ZskFile::Open does.
void CheckRoundTrip(const ModelConfig& c) {
  const std::string text = zeroskip::ConfigToJson(c);
  ModelConfig back;
  try {
    back = zeroskip::ConfigFromJson(text, "metadata");
  } catch (const zeroskip::Error& e) {
    std::fprintf(stderr, "accepted config does not round-trip: %s\n  stored as: %s\n", e.what(),
                 text.c_str());
    std::abort();
  }
  FUZZ_CHECK(Same(c, back));
  FUZZ_CHECK(zeroskip::ConfigToJson(back) == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const ModelConfig c = zeroskip::ParseHfConfig(text, "config.json");
    CheckAccepted(c);
    CheckRoundTrip(c);
  } catch (const zeroskip::Error&) {
  }
  try {
    const ModelConfig c = zeroskip::ConfigFromJson(text, "metadata");
    CheckAccepted(c);
    CheckRoundTrip(c);
  } catch (const zeroskip::Error&) {
  }
  return 0;
}
