// Causal multi-head attention of a batch of queries over a KV cache, with grouped-query heads
// (`heads / kv_heads` query heads share one KV head).
//
// The cache streams: per KV head, keys (and values) are contiguous over positions, [positions,
// head_dim] in the cache's element type (f32, f16 or bf16). Scores are the dispatched
// dot_rows_batch kernel over the cached keys (each key loaded once for every query head of the
// group, four keys and up to four heads in registers), the weighted sum of values the
// axpy_rows_batch kernel (the heads' outputs held in registers across positions), both
// prefetching ahead, so a decoded token reads the cache at ~25 GB/s on 2 threads here, most of the
// memory's bandwidth (BM_AttentionDecode). Threads split (block of rows, KV head), each pass over
// a chunk of the cache serving every row of the block and query head of the group; a group splits
// further when there are fewer such pairs than threads (not positions: a split softmax's merge
// would make the result depend on the thread count).
#pragma once

#include <cstdint>

#include "kernels/kernels.h"
#include "model/worker_pool.h"

namespace zeroskip {

struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
};

// One layer's cache of one kind (keys or values): head h's position p starts at element
// (h * stride + p) * head_dim of `data`, elements of `dtype`.
struct KvView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t stride = 0;  // positions per head (the cache's context)
};

// Writes rows [n, kv_heads * head_dim] of f32 keys or values at positions pos0..pos0+n-1,
// converted to the cache's type (round to nearest even).
void StoreKv(const AttentionShape& shape, const float* rows, int64_t n, int64_t pos0, KvView cache);

// Rows of a prompt that attention takes together, sharing each chunk of the cache they read.
inline constexpr int64_t kAttentionRowBlock = 8;

// The scratch CausalAttention wants per thread for a cache of `context` positions: room for the
// scores of kAttentionRowBlock rows of every query head of a group.
int64_t AttentionScoreStride(const AttentionShape& shape, int64_t context);

// q: [n, heads * head_dim], row i at position pos0 + i, attending to cached positions
// 0..pos0 + i (the cache already holds this batch). out: [n, heads * head_dim].
// scores: scratch of [pool.threads(), score_stride] floats with score_stride >= (heads / kv_heads)
// * (pos0 + n); a larger one (AttentionScoreStride) lets rows share the cache's reads. Each row's
// result is the same bits however rows are grouped and threads split.
void CausalAttention(const KernelTable& kernels, const AttentionShape& shape, const float* q,
                     int64_t n, int64_t pos0, KvView keys, KvView values, float* out, float* scores,
                     int64_t score_stride, WorkerPool& pool);

}  // namespace zeroskip
