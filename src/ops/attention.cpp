#include "ops/attention.h"

#include <omp.h>

#include <cmath>
#include <cstring>

#include "format/dtype.h"

namespace zeroskip {
namespace {

uint8_t* HeadRow(const KvView& v, int64_t head, int64_t pos, int64_t head_dim) {
  return static_cast<uint8_t*>(v.data) + DTypeBytes(v.dtype, (head * v.stride + pos) * head_dim);
}

}  // namespace

void StoreKv(const AttentionShape& shape, const float* rows, int64_t n, int64_t pos0,
             KvView cache) {
  const int64_t hd = shape.head_dim, kv_dim = shape.kv_heads * hd;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t h = 0; h < shape.kv_heads; ++h) {
      ConvertMatrix(reinterpret_cast<const uint8_t*>(rows + r * kv_dim + h * hd), DType::kF32, 1,
                    hd, false, HeadRow(cache, h, pos0 + r, hd), cache.dtype);
    }
  }
}

void CausalAttention(const KernelTable& kernels, const AttentionShape& shape, const float* q_rows,
                     int64_t n, int64_t pos0, KvView keys, KvView values, float* out_rows,
                     float* scores_all, int64_t score_stride, int threads) {
  const int64_t hd = shape.head_dim, q_dim = shape.heads * hd;
  const int64_t group = shape.heads / shape.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const DotRowsFn dot = kernels.ops(keys.dtype).dot_rows;
  const AxpyRowsFn axpy = kernels.ops(values.dtype).axpy_rows;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t head = 0; head < shape.heads; ++head) {
      float* scores = scores_all + static_cast<size_t>(omp_get_thread_num()) * score_stride;
      const int64_t count = pos0 + i + 1;  // causal: positions 0..pos0 + i
      const int64_t kv_head = head / group;
      dot({HeadRow(keys, kv_head, 0, hd), hd}, nullptr, count, hd, q_rows + i * q_dim + head * hd,
          scores);
      kernels.scaled_softmax(scores, count, scale);
      float* out = out_rows + i * q_dim + head * hd;
      std::memset(out, 0, sizeof(float) * hd);
      axpy({HeadRow(values, kv_head, 0, hd), hd}, nullptr, scores, count, hd, out);
    }
  }
}

}  // namespace zeroskip
