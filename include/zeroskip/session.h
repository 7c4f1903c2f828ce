// One sequence being decoded: its KV cache, position and FFN settings and statistics. The heavy
// compute state (kernels, matmul primitives, activation buffers) lives in the Engine it runs on
// and is shared by every session of that Engine, so a session costs its KV cache.
//
// Forward runs a batch of tokens (a prompt in one batched pass, or one token at a time) at the
// next positions and returns logits. It does not sample and does not tokenize.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "zeroskip/engine.h"
#include "zeroskip/ffn.h"
#include "zeroskip/format.h"

namespace zeroskip {

struct SessionOptions {
  int64_t context = 0;  // 0: the model's context length; must not exceed it
  FfnMode ffn = FfnMode::kAuto;
  GateMode gate = GateMode::kAuto;  // how decode finds the gate's zeros (zeroskip/ffn.h)
  ActivationOptions activation{};  // the FFN activation (default: the model's own)
  // Element type of the KV cache: f32 (exact), or f16/bf16 (half the memory and bandwidth;
  // keys and values rounded to nearest even when stored).
  DType kv_type = DType::kF32;
};

// The element types a KV cache may have.
bool IsKvType(DType type);

struct SequenceState;  // KV cache and per-sequence tables (src/engine/sequence.h)
struct ForwardPass;    // what one forward pass works on (src/arch/forward.h)

class Session {
 public:
  // Throws Error if the options cannot run on this model (a context past the model's, a sparse
  // FFN with an activation that has no zeros, a shadow gate the file lacks) or the KV cache does
  // not fit in free memory, or in what a memory budget the model does not fit leaves
  // (Engine::session_memory_left); the model's own context (options.context 0) then becomes the
  // longest that fits there (context()). `engine` must outlive the session.
  Session(Engine& engine, const SessionOptions& options = {});
  ~Session();
  // The context a session of `options` gets on `engine` when `sessions` of them share it:
  // options.context if set, else the model's, or where that many would not fit in what a memory
  // budget leaves (Engine::session_memory_left), the longest that does (0: not one position).
  static int64_t ContextThatFits(const Engine& engine, const SessionOptions& options,
                                 int sessions = 1);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs `tokens` at positions position()..position()+n-1. Returns the logits of the last token
  // [vocab], the session's own copy, valid until its next Forward. With all_logits, the logits
  // of every token [n, vocab] (n <= the engine's max_batch), a view of the engine's buffer:
  // valid until the next Forward of any session on that engine. Throws Error if the tokens do
  // not fit the context or an id is out of range.
  std::span<const float> Forward(std::span<const int> tokens, bool all_logits = false);

  // The logits of the last token run (the last Forward's or DecodeBatch's), [vocab].
  std::span<const float> logits() const;

  // One decode step of many sequences: runs tokens[i] on sessions[i] (all on one engine) in one
  // forward pass, so the weights are read once for all of them; each session's logits() then
  // holds its next-token logits. Sessions whose FFN settings cannot share a batched FFN (a
  // stochastic activation, another path) run in passes of their own, and so does every session
  // of a quantized model (batching does not pay there: docs/SERVER.md). Every result is exact:
  // the sparse FFN runs each token's own active neurons (the pass reads the union of them), in
  // the batched arithmetic of a prompt. Adds each pass's FFN statistics per layer to
  // *batch_stats when given; each session's own statistics count its own token's zeros.
  // Throws Error (and runs nothing) if a token does not fit its session's context or is out
  // of the vocabulary; std::invalid_argument if the sizes differ, the sessions are of two
  // engines or one is there twice.
  static void DecodeBatch(std::span<Session* const> sessions, std::span<const int> tokens,
                          std::vector<FfnLayerStats>* batch_stats = nullptr);

  // Becomes a copy of `other` (on the same engine, with the same context and KV type): its cache
  // up to other's position, that position and its last logits. Sequences that share a prompt
  // run it once (a server's `n` choices). The FFN settings and statistics stay this session's.
  void CopyFrom(const Session& other);

  void Reset() { Rewind(0); }  // back to position 0 (the cache is overwritten, not cleared)
  // Back to an earlier position, keeping the cache before it (a chat whose new prompt shares a
  // prefix with what was run). Throws Error past the current position.
  void Rewind(int64_t position);
  int64_t position() const { return position_; }
  int64_t context() const { return context_; }
  const Model& model() const { return engine_.model(); }
  Engine& engine() { return engine_; }
  int threads() const { return engine_.threads(); }

  // How the FFN runs from the next Forward on (a server's session taking its next request);
  // throws Error, changing nothing, where the constructor would. The cache keeps what the old
  // settings computed: Reset() or Rewind() before a new sequence.
  void SetFfn(FfnMode ffn, GateMode gate, const ActivationOptions& activation);
  // Throws Error if sessions of `model` cannot run the FFN so (what SetFfn would refuse).
  static void CheckFfn(const Model& model, FfnMode ffn, GateMode gate,
                       const ActivationOptions& activation);

  // The FFN as this session runs it.
  bool sparse_decode() const;      // one token at a time through the sparse path
  FfnActivation activation() const;  // resolved: never kModel
  DType kv_type() const;
  const std::vector<FfnLayerStats>& ffn_stats() const { return ffn_stats_; }  // per layer
  FfnLayerStats ffn_total() const;
  void ResetFfnStats();

 private:
  void CheckTokens(std::span<const int> tokens) const;
  void CheckFinite(std::span<const float> logits) const;

  Engine& engine_;
  int64_t context_;
  int64_t position_ = 0;
  std::unique_ptr<SequenceState> state_;
  // The architecture's forward pass (src/arch/forward.h).
  void (*forward_)(const ForwardPass&, const int*, bool, bool) = nullptr;
  std::vector<FfnLayerStats> ffn_stats_;
  uint64_t memory_taken_ = 0;  // of the engine's session_memory_left
};

}  // namespace zeroskip
