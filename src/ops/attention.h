// Causal multi-head attention of a batch of queries over a KV cache, with grouped-query heads
// (`heads / kv_heads` query heads share one KV head). f32 throughout; threads split (row, head).
#pragma once

#include <cstdint>

namespace zeroskip {

struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
};

// q: [n, heads * head_dim], row i at position pos0 + i, attending to cached positions
// 0..pos0 + i of keys/values ([>= pos0 + n, kv_heads * head_dim], already holding this batch).
// out: [n, heads * head_dim]. scores: scratch of [threads, score_stride] with
// score_stride >= pos0 + n.
void CausalAttention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos0,
                     const float* keys, const float* values, float* out, float* scores,
                     int64_t score_stride, int threads);

}  // namespace zeroskip
