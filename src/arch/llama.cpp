// The Llama-family forward pass (LlamaForCausalLM / MistralForCausalLM as Hugging Face computes
// it): embeddings, per layer RMSNorm -> attention with rotary embeddings (rotate-half) and
// grouped-query heads -> residual, RMSNorm -> FFN runtime -> residual; final RMSNorm, LM head.

#include "arch/forward.h"
#include "format/dtype.h"
#include "ops/attention.h"
#include "ops/norm.h"

namespace zeroskip {

void LlamaForward(const ForwardPass& pass, const int* tokens, int64_t n, int64_t position,
                  bool need_logits, bool all_logits) {
  const Model& model = pass.model;
  Workspace& ws = pass.ws;
  SequenceState& seq = pass.seq;
  const ModelConfig& c = model.config();
  const int64_t h = c.hidden;
  const WeightView& emb = model.embeddings();
  for (int64_t i = 0; i < n; ++i) {
    ConvertMatrix(static_cast<const uint8_t*>(emb.data) + tokens[i] * DTypeBytes(emb.dtype, h),
                  emb.dtype, 1, h, false, reinterpret_cast<uint8_t*>(&ws.x[i * h]), DType::kF32);
  }
  const AttentionShape shape{c.heads, c.kv_heads, c.head_dim};
  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = model.layer(l);
    RmsNorm(ws.x.data(), n, h, w.attn_norm, c.rms_eps, ws.xn.data());
    ws.matmul.Linear(w.q, ws.xn.data(), n, ws.q.data());
    ws.matmul.Linear(w.k, ws.xn.data(), n, ws.k.data());
    ws.matmul.Linear(w.v, ws.xn.data(), n, ws.v.data());
    seq.rope.Apply(ws.q.data(), n, c.heads, position);
    seq.rope.Apply(ws.k.data(), n, c.kv_heads, position);
    StoreKv(shape, ws.k.data(), n, position, seq.Keys(l));
    StoreKv(shape, ws.v.data(), n, position, seq.Values(l));
    CausalAttention(ws.kernels, shape, ws.q.data(), n, position, seq.Keys(l), seq.Values(l),
                    ws.att.data(), seq.scores.data(), c.heads / c.kv_heads * seq.context,
                    pass.threads);
    ws.matmul.Linear(w.o, ws.att.data(), n, ws.proj.data());
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
    RmsNorm(ws.x.data(), n, h, w.ffn_norm, c.rms_eps, ws.xn.data());
    ws.ffn.Forward(seq.ffn, l, w.ffn, ws.xn.data(), n, ws.proj.data(), position,
                   &pass.ffn_stats[l]);
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
  }
  if (!need_logits) return;
  // Logits of every row, or only of the last one (all a decoder needs).
  const float* rows = all_logits ? ws.x.data() : ws.x.data() + (n - 1) * h;
  const int64_t m = all_logits ? n : 1;
  RmsNorm(rows, m, h, model.output_norm(), c.rms_eps, ws.xn.data());
  ws.matmul.Linear(model.lm_head(), ws.xn.data(), m, ws.logits.data());
}

}  // namespace zeroskip
