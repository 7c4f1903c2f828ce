// What one sequence keeps between forward passes: its KV cache, rotary tables for its context,
// attention scratch and how it runs the FFN.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ffn/ffn_runtime.h"
#include "ops/attention.h"
#include "ops/rope.h"

namespace zeroskip {

// Anonymous memory whose pages read as zero and take memory only once written: a sequence's KV
// cache then costs the positions it reaches, not its whole context (a model's 4096 positions
// are 4 GiB of f32 keys and values at 7B, which a run under a memory limit cannot spare).
class ZeroedPages {
 public:
  explicit ZeroedPages(size_t bytes);  // throws std::bad_alloc
  ~ZeroedPages();
  ZeroedPages(const ZeroedPages&) = delete;
  ZeroedPages& operator=(const ZeroedPages&) = delete;
  uint8_t* data() const { return data_; }

 private:
  uint8_t* data_ = nullptr;
  size_t bytes_;
};

struct SequenceState {
  SequenceState(const ModelConfig& config, int64_t context, int threads, FfnSettings ffn,
                DType kv_type);

  // Bytes a sequence of `context` positions takes (checked against free memory first).
  static uint64_t Bytes(const ModelConfig& config, int64_t context, int threads, DType kv_type,
                        const std::string& path);

  // One layer's keys or values, laid out for CausalAttention.
  KvView Keys(int64_t layer) { return View(k_cache, layer); }
  KvView Values(int64_t layer) { return View(v_cache, layer); }

  FfnSettings ffn;
  int64_t context;
  DType kv_type;
  size_t layer_bytes;             // one layer's keys (or values)
  ZeroedPages k_cache;            // [layers, kv_heads, context, head_dim] of kv_type
  ZeroedPages v_cache;            // [layers, kv_heads, context, head_dim] of kv_type
  int64_t score_stride;        // AttentionScoreStride: one thread's attention scores
  std::vector<float> scores;   // [threads, score_stride]
  RopeTable rope;              // positions [0, context)
  std::vector<float> logits;   // [vocab] of the last token run

 private:
  KvView View(const ZeroedPages& cache, int64_t layer) {
    return {cache.data() + layer * layer_bytes, kv_type, context};
  }
};

}  // namespace zeroskip
