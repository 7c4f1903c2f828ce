#include "ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace zeroskip {

void CausalAttention(const AttentionShape& shape, const float* q_rows, int64_t n, int64_t pos0,
                     const float* keys, const float* values, float* out_rows, float* scores_all,
                     int64_t score_stride, int threads) {
  const int64_t hd = shape.head_dim, q_dim = shape.heads * hd, kv_dim = shape.kv_heads * hd;
  const int64_t group = shape.heads / shape.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t head = 0; head < shape.heads; ++head) {
      float* scores = scores_all + static_cast<size_t>(omp_get_thread_num()) * score_stride;
      const int64_t last = pos0 + i;  // causal: attend to positions 0..last
      const float* q = q_rows + i * q_dim + head * hd;
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
      float* out = out_rows + i * q_dim + head * hd;
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
