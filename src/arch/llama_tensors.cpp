#include "arch/llama_tensors.h"

namespace zeroskip {

TensorTable LlamaTensorTable(const ModelConfig& c) {
  const auto h = static_cast<uint64_t>(c.hidden), f = static_cast<uint64_t>(c.ffn),
             v = static_cast<uint64_t>(c.vocab), q = static_cast<uint64_t>(c.q_dim()),
             kv = static_cast<uint64_t>(c.kv_dim());
  constexpr Layout kRows = Layout::kRowMajor;
  std::vector<TensorDef> t;
  t.push_back({"tok_embeddings", "model.embed_tokens.weight", {v, h}, kRows, false, true});
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string hf = "model.layers." + std::to_string(i) + ".";
    auto layer = [i](const char* role) { return LayerTensorName(i, role); };
    t.push_back({layer("attn_norm"), hf + "input_layernorm.weight", {h}, kRows, true});
    t.push_back({layer("attn_q"), hf + "self_attn.q_proj.weight", {q, h}});
    t.push_back({layer("attn_k"), hf + "self_attn.k_proj.weight", {kv, h}});
    t.push_back({layer("attn_v"), hf + "self_attn.v_proj.weight", {kv, h}});
    t.push_back({layer("attn_output"), hf + "self_attn.o_proj.weight", {h, q}});
    t.push_back({layer("ffn_norm"), hf + "post_attention_layernorm.weight", {h}, kRows, true});
    t.push_back({layer("ffn_gate"), hf + "mlp.gate_proj.weight", {f, h}});
    t.push_back({layer("ffn_up"), hf + "mlp.up_proj.weight", {f, h}});
    // Transposed so each FFN neuron is one contiguous row of gate, up and down alike.
    t.push_back({layer("ffn_down"), hf + "mlp.down_proj.weight", {h, f}, Layout::kTransposed});
  }
  t.push_back({"output_norm", "model.norm.weight", {h}, kRows, true});
  t.push_back({"output",
               "lm_head.weight",
               {v, h},
               kRows,
               false,
               true,
               c.tied_embeddings ? "embeddings are tied" : nullptr});
  return TensorTable(std::move(t), {{".rotary_emb.inv_freq", "derived rotary buffer"}});
}

}  // namespace zeroskip
