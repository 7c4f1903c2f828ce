#include "ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "format/dtype.h"

namespace zeroskip {
namespace {

// Positions a pass over the cache takes at a time: a chunk of one KV head's keys (or values)
// stays in L2 while every query head of its group reads it. A multiple of every kernel's row
// block, so chunking changes no result.
constexpr int64_t kKvChunk = 256;

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
  // A unit of work: one row, one KV head and `per_unit` of its query heads. The heads of a group
  // share each chunk of keys and values while it sits in L2; when rows x KV heads are too few to
  // keep every thread busy (one decoded token of an MQA model), a group splits across threads.
  int64_t splits = 1;
  while (splits < group && n * shape.kv_heads * splits < threads) ++splits;
  while (group % splits != 0) ++splits;
  const int64_t per_unit = group / splits;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const DotRowsFn dot = kernels.ops(keys.dtype).dot_rows;
  const AxpyRowsFn axpy = kernels.ops(values.dtype).axpy_rows;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t unit = 0; unit < n * shape.kv_heads * splits; ++unit) {
    const int64_t i = unit / (shape.kv_heads * splits);
    const int64_t kv_head = unit / splits % shape.kv_heads;
    const int64_t head0 = kv_head * group + unit % splits * per_unit;
    const int64_t count = pos0 + i + 1;  // causal: positions 0..pos0 + i
    // scores[h * count + p]: head head0 + h's weight of position p.
    float* scores = scores_all + static_cast<size_t>(omp_get_thread_num()) * score_stride;
    const float* q = q_rows + i * q_dim + head0 * hd;
    float* out = out_rows + i * q_dim + head0 * hd;
    for (int64_t p0 = 0; p0 < count; p0 += kKvChunk) {
      const int64_t len = std::min(kKvChunk, count - p0);
      for (int64_t h = 0; h < per_unit; ++h) {
        dot({HeadRow(keys, kv_head, p0, hd), hd}, nullptr, len, hd, q + h * hd,
            scores + h * count + p0);
      }
    }
    for (int64_t h = 0; h < per_unit; ++h) kernels.scaled_softmax(scores + h * count, count, scale);
    std::memset(out, 0, sizeof(float) * per_unit * hd);
    for (int64_t p0 = 0; p0 < count; p0 += kKvChunk) {
      const int64_t len = std::min(kKvChunk, count - p0);
      for (int64_t h = 0; h < per_unit; ++h) {
        axpy({HeadRow(values, kv_head, p0, hd), hd}, nullptr, scores + h * count + p0, len, hd,
             out + h * hd);
      }
    }
  }
}

}  // namespace zeroskip
