// The Llama-family forward pass (LlamaForCausalLM / MistralForCausalLM as Hugging Face computes
// it): embeddings, per layer RMSNorm -> attention with rotary embeddings (rotate-half) and
// grouped-query heads -> residual, RMSNorm -> FFN runtime -> residual; final RMSNorm, LM head.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "format/dtype.h"
#include "model/matmul.h"
#include "model/rms_norm.h"
#include "zeroskip/session.h"

namespace zeroskip {

void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = xr[i] * scale * weight[i];
  }
}

namespace {

// Rotate-half rotary embedding of `heads` heads in each of n rows, row r at position pos0 + r.
void ApplyRope(float* v, int64_t n, int64_t heads, int64_t head_dim, int64_t pos0,
               const float* cos_table, const float* sin_table) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < n; ++r) {
    const float* c = cos_table + (pos0 + r) * half;
    const float* s = sin_table + (pos0 + r) * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* x = v + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace

void Session::ForwardChunk(const int* tokens, int64_t n, bool need_logits, bool all_logits,
                           float* logits) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden, kv_dim = c.kv_dim();
  const WeightView& emb = model_.embeddings();
  for (int64_t i = 0; i < n; ++i) {
    ConvertMatrix(static_cast<const uint8_t*>(emb.data) + tokens[i] * h * DTypeSize(emb.dtype),
                  emb.dtype, 1, h, false, reinterpret_cast<uint8_t*>(&x_[i * h]), DType::kF32);
  }
  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = model_.layer(l);
    RmsNorm(x_.data(), n, h, w.attn_norm, c.rms_eps, xn_.data());
    matmul_->Linear(w.q, xn_.data(), n, q_.data());
    matmul_->Linear(w.k, xn_.data(), n, k_.data());
    matmul_->Linear(w.v, xn_.data(), n, v_.data());
    ApplyRope(q_.data(), n, c.heads, c.head_dim, position_, rope_cos_.data(), rope_sin_.data());
    ApplyRope(k_.data(), n, c.kv_heads, c.head_dim, position_, rope_cos_.data(),
              rope_sin_.data());
    const size_t layer_base = static_cast<size_t>(l) * context_ * kv_dim;
    std::memcpy(&k_cache_[layer_base + position_ * kv_dim], k_.data(), sizeof(float) * n * kv_dim);
    std::memcpy(&v_cache_[layer_base + position_ * kv_dim], v_.data(), sizeof(float) * n * kv_dim);
    Attention(l, n);
    matmul_->Linear(w.o, att_.data(), n, proj_.data());
    AddInPlace(x_.data(), proj_.data(), n * h);
    RmsNorm(x_.data(), n, h, w.ffn_norm, c.rms_eps, xn_.data());
    ffn_->Forward(l, w.ffn, xn_.data(), n, proj_.data(), position_);
    AddInPlace(x_.data(), proj_.data(), n * h);
  }
  position_ += n;
  if (!need_logits) return;
  // Logits of every row, or only of the last one (all a decoder needs).
  const float* rows = all_logits ? x_.data() : x_.data() + (n - 1) * h;
  const int64_t m = all_logits ? n : 1;
  RmsNorm(rows, m, h, model_.output_norm(), c.rms_eps, xn_.data());
  matmul_->Linear(model_.lm_head(), xn_.data(), m, logits);
}

void Session::Attention(int64_t layer, int64_t n) {
  const ModelConfig& c = config_;
  const int64_t hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int64_t group = c.heads / c.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* keys = &k_cache_[static_cast<size_t>(layer) * context_ * kv_dim];
  const float* values = &v_cache_[static_cast<size_t>(layer) * context_ * kv_dim];
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads_)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t head = 0; head < c.heads; ++head) {
      float* scores = &scores_[static_cast<size_t>(omp_get_thread_num()) * context_];
      const int64_t last = position_ + i;  // causal: attend to positions 0..last
      const float* q = &q_[i * q_dim + head * hd];
      const int64_t kv_off = (head / group) * hd;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t <= last; ++t) {
        const float* k = keys + t * kv_dim + kv_off;
        float dot = 0.0f;
        for (int64_t d = 0; d < hd; ++d) dot += q[d] * k[d];
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      float sum = 0.0f;
      for (int64_t t = 0; t <= last; ++t) {
        scores[t] = std::exp(scores[t] - max_score);
        sum += scores[t];
      }
      float* out = &att_[i * q_dim + head * hd];
      std::memset(out, 0, sizeof(float) * hd);
      const float inv = 1.0f / sum;
      for (int64_t t = 0; t <= last; ++t) {
        const float p = scores[t] * inv;
        const float* v = values + t * kv_dim + kv_off;
        for (int64_t d = 0; d < hd; ++d) out[d] += p * v[d];
      }
    }
  }
}

}  // namespace zeroskip
