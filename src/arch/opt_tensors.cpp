#include "arch/opt_tensors.h"

namespace zeroskip {

// OPT's learned positions start at row 2 (fairseq reserved rows 0 and 1 for padding).
constexpr uint64_t kOptPositionOffset = 2;

TensorTable OptTensorTable(const ModelConfig& c) {
  const auto h = static_cast<uint64_t>(c.hidden), f = static_cast<uint64_t>(c.ffn),
             v = static_cast<uint64_t>(c.vocab), e = static_cast<uint64_t>(c.embed_dim),
             positions = static_cast<uint64_t>(c.context) + kOptPositionOffset;
  constexpr Layout kRows = Layout::kRowMajor;
  const std::string d = "model.decoder.";
  const bool projected = c.embed_dim != c.hidden;
  std::vector<TensorDef> t;
  t.push_back({"tok_embeddings", d + "embed_tokens.weight", {v, e}, kRows, false, true});
  t.push_back({"pos_embeddings", d + "embed_positions.weight", {positions, h}});
  if (projected) t.push_back({"project_in", d + "project_in.weight", {h, e}});
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string hf = d + "layers." + std::to_string(i) + ".";
    auto layer = [i](const char* role) { return LayerTensorName(i, role); };
    auto vector = [&](const char* role, const std::string& hf_name, uint64_t n) {
      t.push_back({layer(role), hf + hf_name, {n}, kRows, true});
    };
    vector("attn_norm", "self_attn_layer_norm.weight", h);
    vector("attn_norm_bias", "self_attn_layer_norm.bias", h);
    t.push_back({layer("attn_q"), hf + "self_attn.q_proj.weight", {h, h}});
    vector("attn_q_bias", "self_attn.q_proj.bias", h);
    t.push_back({layer("attn_k"), hf + "self_attn.k_proj.weight", {h, h}});
    vector("attn_k_bias", "self_attn.k_proj.bias", h);
    t.push_back({layer("attn_v"), hf + "self_attn.v_proj.weight", {h, h}});
    vector("attn_v_bias", "self_attn.v_proj.bias", h);
    t.push_back({layer("attn_output"), hf + "self_attn.out_proj.weight", {h, h}});
    vector("attn_output_bias", "self_attn.out_proj.bias", h);
    vector("ffn_norm", "final_layer_norm.weight", h);
    vector("ffn_norm_bias", "final_layer_norm.bias", h);
    t.push_back({layer("ffn_fc1"), hf + "fc1.weight", {f, h}});
    vector("ffn_fc1_bias", "fc1.bias", f);
    // Transposed so each FFN neuron is one contiguous row of fc1 and fc2 alike.
    t.push_back({layer("ffn_fc2"), hf + "fc2.weight", {h, f}, Layout::kTransposed});
    vector("ffn_fc2_bias", "fc2.bias", h);
  }
  // Without do_layer_norm_before every layer ends in a norm and the decoder has no final one.
  if (!c.post_norm) {
    t.push_back({"output_norm", d + "final_layer_norm.weight", {h}, kRows, true});
    t.push_back({"output_norm_bias", d + "final_layer_norm.bias", {h}, kRows, true});
  }
  if (projected) t.push_back({"project_out", d + "project_out.weight", {e, h}});
  // OPTForCausalLM's lm_head is tied to embed_tokens (config parsing refuses untied ones).
  t.push_back({"output", "lm_head.weight", {v, e}, kRows, false, true, "embeddings are tied"});
  return TensorTable(std::move(t), {});
}

}  // namespace zeroskip
