#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "format/dtype.h"

namespace zeroskip {
namespace {

// Positions a pass over the cache takes at a time: a chunk of one KV head's keys (or values)
// stays in L2 while every row of a unit reads it, and while the weighted sum's later passes over
// the chunk's columns read it again (a decoded token's one pass over 2048 positions instead ran
// at 16 GB/s against 24, BM_AttentionDecode). Chunking changes no result: each score is its own
// dot product, and each output adds the positions in order.
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

int64_t AttentionScoreStride(const AttentionShape& shape, int64_t context) {
  return kAttentionRowBlock * shape.heads / shape.kv_heads * context;
}

void CausalAttention(const KernelTable& kernels, const AttentionShape& shape, const float* q_rows,
                     int64_t n, int64_t pos0, KvView keys, KvView values, float* out_rows,
                     float* scores_all, int64_t score_stride, WorkerPool& pool) {
  const int64_t hd = shape.head_dim, q_dim = shape.heads * hd;
  const int64_t group = shape.heads / shape.kv_heads;
  // A unit of work: a block of consecutive rows, one KV head and `per_unit` of its query heads.
  // Each chunk of keys and values is read into L2 once for every row and query head of the unit
  // (a prompt's rows would otherwise each stream the whole head from L3); when blocks x KV heads
  // are too few to keep every thread busy (one decoded token of an MQA model), a group splits
  // across threads.
  const int64_t block_rows =
      std::clamp<int64_t>(score_stride / (group * (pos0 + n)), 1, kAttentionRowBlock);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  int64_t splits = 1;
  while (splits < group && blocks * shape.kv_heads * splits < pool.threads()) ++splits;
  while (group % splits != 0) ++splits;
  const int64_t per_unit = group / splits;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const DotRowsBatchFn dot = kernels.ops(keys.dtype).dot_rows_batch;
  const AxpyRowsBatchFn axpy = kernels.ops(values.dtype).axpy_rows_batch;
  // One unit per chunk, claimed in turn by the threads: a later row attends to more positions,
  // so contiguous ranges of units would leave the first thread idle for most of a prompt.
  pool.Run(blocks * shape.kv_heads * splits, [&](int64_t unit, int slot) {
    const int64_t i0 = unit / (shape.kv_heads * splits) * block_rows;
    const int64_t rows = std::min(block_rows, n - i0);
    const int64_t kv_head = unit / splits % shape.kv_heads;
    const int64_t head0 = kv_head * group + unit % splits * per_unit;
    const int64_t last_count = pos0 + i0 + rows;  // the unit's last row sees the most positions
    // Row r of the unit attends to positions 0..pos0 + i0 + r (causal); scores[(r * per_unit +
    // h) * last_count + p]: query head head0 + h's weight of position p.
    float* scores = scores_all + static_cast<size_t>(slot) * score_stride;
    auto count_of = [&](int64_t r) { return pos0 + i0 + r + 1; };
    auto scores_of = [&](int64_t r, int64_t h) { return scores + (r * per_unit + h) * last_count; };
    auto query_of = [&](int64_t r) { return q_rows + (i0 + r) * q_dim + head0 * hd; };
    auto out_of = [&](int64_t r) { return out_rows + (i0 + r) * q_dim + head0 * hd; };
    for (int64_t p0 = 0; p0 < last_count; p0 += kKvChunk) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t len = std::min(kKvChunk, count_of(r) - p0);
        if (len <= 0) continue;
        dot({HeadRow(keys, kv_head, p0, hd), hd}, len, hd, query_of(r), per_unit, hd,
            scores_of(r, 0) + p0, last_count);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < per_unit; ++h) {
        kernels.scaled_softmax(scores_of(r, h), count_of(r), scale);
      }
      std::memset(out_of(r), 0, sizeof(float) * per_unit * hd);
    }
    for (int64_t p0 = 0; p0 < last_count; p0 += kKvChunk) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t len = std::min(kKvChunk, count_of(r) - p0);
        if (len <= 0) continue;
        axpy({HeadRow(values, kv_head, p0, hd), hd}, scores_of(r, 0) + p0, last_count, len, hd,
             per_unit, out_of(r), hd);
      }
    }
  });
}

}  // namespace zeroskip
