// The Llama-family forward pass (LlamaForCausalLM / MistralForCausalLM as Hugging Face computes
// it): embeddings, per layer RMSNorm -> attention with rotary embeddings (rotate-half) and
// grouped-query heads -> residual, RMSNorm -> FFN runtime -> residual; final RMSNorm, LM head.

#include "arch/forward.h"
#include "format/dtype.h"
#include "ops/attention.h"
#include "ops/norm.h"

namespace zeroskip {

void LlamaForward(const ForwardPass& pass, const int* tokens, bool need_logits, bool all_logits) {
  const Model& model = pass.model;
  Workspace& ws = pass.ws;
  const ModelConfig& c = model.config();
  const int64_t h = c.hidden, n = pass.rows();
  const WeightView& emb = model.embeddings();
  for (int64_t i = 0; i < n; ++i) {
    ConvertMatrix(static_cast<const uint8_t*>(emb.data) + tokens[i] * DTypeBytes(emb.dtype, h),
                  emb.dtype, 1, h, false, reinterpret_cast<uint8_t*>(&ws.x[i * h]), DType::kF32);
  }
  const AttentionShape shape{c.heads, c.kv_heads, c.head_dim};
  const int64_t q_dim = c.heads * c.head_dim, kv_dim = c.kv_dim();
  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = model.layer(l);
    RmsNorm(ws.x.data(), n, h, w.attn_norm, c.rms_eps, ws.xn.data());
    const WeightView* qkv[] = {&w.q, &w.k, &w.v};
    float* const qkv_out[] = {ws.q.data(), ws.k.data(), ws.v.data()};
    ws.matmul.LinearSameInput(qkv, ws.xn.data(), n, qkv_out);
    int64_t row = 0;
    for (const SequenceRows& part : pass.sequences) {
      SequenceState& seq = *part.seq;
      float* q = ws.q.data() + row * q_dim;
      float* k = ws.k.data() + row * kv_dim;
      float* v = ws.v.data() + row * kv_dim;
      seq.rope.Apply(q, part.rows, c.heads, part.position);
      seq.rope.Apply(k, part.rows, c.kv_heads, part.position);
      StoreKv(shape, k, part.rows, part.position, seq.Keys(l));
      StoreKv(shape, v, part.rows, part.position, seq.Values(l));
      CausalAttention(ws.kernels, shape, q, part.rows, part.position, seq.Keys(l), seq.Values(l),
                      ws.att.data() + row * q_dim, seq.scores.data(), seq.score_stride,
                      ws.matmul.pool());
      row += part.rows;
    }
    ws.matmul.Linear(w.o, ws.att.data(), n, ws.proj.data());
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
    RmsNorm(ws.x.data(), n, h, w.ffn_norm, c.rms_eps, ws.xn.data());
    RunFfn(pass, l, w.ffn, ws.xn.data(), ws.proj.data());
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
  }
  if (need_logits) RunLmHead(pass, ws.x.data(), all_logits);
}

}  // namespace zeroskip
