// The OPT forward pass (OPTForCausalLM as Hugging Face computes it): token embeddings
// (project_in when word_embed_proj_dim differs) plus learned positions at offset 2; per layer
// LayerNorm -> attention with biases and no rotary embedding -> residual, LayerNorm -> ungated
// ReLU FFN (fc1 + bias, only active fc2 rows, + bias) -> residual, with the norms after the
// residual adds instead when do_layer_norm_before is false; final LayerNorm (pre-norm only),
// project_out, the tied LM head.

#include <algorithm>

#include "arch/forward.h"
#include "format/dtype.h"
#include "ops/attention.h"
#include "ops/norm.h"

namespace zeroskip {
namespace {

constexpr int64_t kPositionOffset = 2;  // fairseq's padding rows before the first position

// A linear layer with an optional bias: y[n, w.rows] = x · wᵀ + bias.
void LinearBias(Workspace& ws, const WeightView& w, const float* bias, const float* x, int64_t n,
                float* y) {
  ws.matmul.Linear(w, x, n, y);
  if (bias != nullptr) AddBias(y, bias, n, w.rows);
}

// Row `row` of a stored matrix, widened to f32.
void ReadRow(const WeightView& m, int64_t row, float* out) {
  ConvertMatrix(static_cast<const uint8_t*>(m.data) + row * DTypeBytes(m.dtype, m.cols), m.dtype,
                1, m.cols, false, reinterpret_cast<uint8_t*>(out), DType::kF32);
}

}  // namespace

void OptForward(const ForwardPass& pass, const int* tokens, bool need_logits, bool all_logits) {
  const Model& model = pass.model;
  Workspace& ws = pass.ws;
  const ModelConfig& c = model.config();
  const int64_t h = c.hidden, e = c.embed_dim, n = pass.rows();
  const bool projected = model.project_in().data != nullptr;
  // Token embeddings ([n, embed_dim], in xn when they go through project_in), then positions.
  float* embedded = projected ? ws.xn.data() : ws.x.data();
  for (int64_t i = 0; i < n; ++i) ReadRow(model.embeddings(), tokens[i], embedded + i * e);
  if (projected) ws.matmul.Linear(model.project_in(), ws.xn.data(), n, ws.x.data());
  int64_t row = 0;
  for (const SequenceRows& part : pass.sequences) {
    for (int64_t i = 0; i < part.rows; ++i, ++row) {
      ReadRow(model.positions(), part.position + i + kPositionOffset, ws.proj.data());
      AddInPlace(ws.x.data() + row * h, ws.proj.data(), h);
    }
  }

  const AttentionShape shape{c.heads, c.kv_heads, c.head_dim};
  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = model.layer(l);
    // Pre-norm reads normalized copies; post-norm reads the residual stream itself.
    const float* attn_in = ws.x.data();
    if (!c.post_norm) {
      LayerNorm(ws.x.data(), n, h, w.attn_norm, w.attn_norm_bias, c.rms_eps, ws.xn.data());
      attn_in = ws.xn.data();
    }
    LinearBias(ws, w.q, w.q_bias, attn_in, n, ws.q.data());
    LinearBias(ws, w.k, w.k_bias, attn_in, n, ws.k.data());
    LinearBias(ws, w.v, w.v_bias, attn_in, n, ws.v.data());
    row = 0;
    for (const SequenceRows& part : pass.sequences) {
      SequenceState& seq = *part.seq;
      const float* q = ws.q.data() + row * h;
      StoreKv(shape, ws.k.data() + row * h, part.rows, part.position, seq.Keys(l));
      StoreKv(shape, ws.v.data() + row * h, part.rows, part.position, seq.Values(l));
      CausalAttention(ws.kernels, shape, q, part.rows, part.position, seq.Keys(l), seq.Values(l),
                      ws.att.data() + row * h, seq.scores.data(), seq.score_stride,
                      ws.matmul.pool());
      row += part.rows;
    }
    LinearBias(ws, w.o, w.o_bias, ws.att.data(), n, ws.proj.data());
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
    const float* ffn_in = ws.x.data();
    if (c.post_norm) {
      LayerNorm(ws.x.data(), n, h, w.attn_norm, w.attn_norm_bias, c.rms_eps, ws.x.data());
    } else {
      LayerNorm(ws.x.data(), n, h, w.ffn_norm, w.ffn_norm_bias, c.rms_eps, ws.xn.data());
      ffn_in = ws.xn.data();
    }
    RunFfn(pass, l, w.ffn, ffn_in, ws.proj.data());
    AddInPlace(ws.x.data(), ws.proj.data(), n * h);
    if (c.post_norm) {
      LayerNorm(ws.x.data(), n, h, w.ffn_norm, w.ffn_norm_bias, c.rms_eps, ws.x.data());
    }
  }
  if (!need_logits) return;

  // The rows whose logits are wanted: every row, or each sequence's last.
  int64_t m = 0;
  if (all_logits) {
    std::copy(ws.x.begin(), ws.x.begin() + n * h, ws.xn.begin());
    m = n;
  } else {
    row = 0;
    for (const SequenceRows& part : pass.sequences) {
      row += part.rows;
      std::copy_n(ws.x.data() + (row - 1) * h, h, ws.xn.data() + m++ * h);
    }
  }
  if (model.output_norm() != nullptr) {
    LayerNorm(ws.xn.data(), m, h, model.output_norm(), model.output_norm_bias(), c.rms_eps,
              ws.xn.data());
  }
  const float* head_in = ws.xn.data();
  if (projected) {
    ws.matmul.Linear(model.project_out(), ws.xn.data(), m, ws.proj.data());
    head_in = ws.proj.data();
  }
  ws.matmul.Linear(model.lm_head(), head_in, m, ws.logits.data());
}

}  // namespace zeroskip
