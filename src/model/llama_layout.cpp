#include "model/llama_layout.h"

namespace zeroskip {

std::string ShapeString(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string LayerTensorName(int64_t layer, const char* role) {
  return "layers." + std::to_string(layer) + "." + role;
}

namespace {
// The slot order below: embeddings, then per layer attn_norm, q, k, v, o, ffn_norm, gate, up, down.
constexpr size_t kSlotsBeforeLayers = 1, kSlotsPerLayer = 9, kGateInLayer = 6;
}  // namespace

size_t FfnGateSlot(int64_t layer) {
  return kSlotsBeforeLayers + kSlotsPerLayer * static_cast<size_t>(layer) + kGateInLayer;
}

std::vector<TensorSlot> LlamaTensorSlots(const ModelConfig& c) {
  const auto h = static_cast<uint64_t>(c.hidden), f = static_cast<uint64_t>(c.ffn),
             v = static_cast<uint64_t>(c.vocab), q = static_cast<uint64_t>(c.q_dim()),
             kv = static_cast<uint64_t>(c.kv_dim());
  std::vector<TensorSlot> slots;
  slots.push_back({"model.embed_tokens.weight", "tok_embeddings", {v, h}});
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string hf = "model.layers." + std::to_string(i) + ".";
    slots.push_back({hf + "input_layernorm.weight", LayerTensorName(i, "attn_norm"), {h}, false,
                     true});
    slots.push_back({hf + "self_attn.q_proj.weight", LayerTensorName(i, "attn_q"), {q, h}});
    slots.push_back({hf + "self_attn.k_proj.weight", LayerTensorName(i, "attn_k"), {kv, h}});
    slots.push_back({hf + "self_attn.v_proj.weight", LayerTensorName(i, "attn_v"), {kv, h}});
    slots.push_back({hf + "self_attn.o_proj.weight", LayerTensorName(i, "attn_output"), {h, q}});
    slots.push_back({hf + "post_attention_layernorm.weight", LayerTensorName(i, "ffn_norm"), {h},
                     false, true});
    slots.push_back({hf + "mlp.gate_proj.weight", LayerTensorName(i, "ffn_gate"), {f, h}});
    slots.push_back({hf + "mlp.up_proj.weight", LayerTensorName(i, "ffn_up"), {f, h}});
    slots.push_back({hf + "mlp.down_proj.weight", LayerTensorName(i, "ffn_down"), {h, f}, true});
  }
  slots.push_back({"model.norm.weight", "output_norm", {h}, false, true});
  if (!c.tied_embeddings) slots.push_back({"lm_head.weight", "output", {v, h}});
  return slots;
}

}  // namespace zeroskip
