#include "zeroskip/session.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <new>
#include <stdexcept>

#include "arch/forward.h"
#include "format/file_io.h"
#include "zeroskip/error.h"

namespace zeroskip {

ZeroedPages::ZeroedPages(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  data_ = static_cast<uint8_t*>(p);
}

ZeroedPages::~ZeroedPages() {
  if (data_ != nullptr) ::munmap(data_, bytes_);
}

SequenceState::SequenceState(const ModelConfig& c, int64_t context_in, int threads,
                             FfnSettings ffn_in, DType kv_type_in)
    : ffn(ffn_in),
      context(context_in),
      kv_type(kv_type_in),
      layer_bytes(DTypeBytes(kv_type_in, static_cast<uint64_t>(context_in) * c.kv_dim())),
      k_cache(c.layers * layer_bytes),
      v_cache(c.layers * layer_bytes),
      score_stride(AttentionScoreStride({c.heads, c.kv_heads, c.head_dim}, context_in)),
      rope(context_in, c.head_dim, c.rope_theta) {
  scores.resize(static_cast<size_t>(threads) * score_stride);
  logits.reserve(c.vocab);
}

uint64_t SequenceState::Bytes(const ModelConfig& c, int64_t context, int threads, DType kv_type,
                              const std::string& path) {
  auto mul = [&](uint64_t a, uint64_t b) { return CheckedMul(a, b, path, "session size"); };
  const uint64_t cache =
      mul(mul(mul(2 * static_cast<uint64_t>(c.layers), context), c.kv_dim()), DTypeBytes(kv_type, 1));
  const uint64_t scores = mul(mul(threads, kAttentionRowBlock * c.heads / c.kv_heads), context);
  return cache + mul(mul(context, c.head_dim) + scores + c.vocab, sizeof(float));
}

namespace {

FfnSettings ResolveFfn(const Model& model, FfnMode ffn, GateMode gate,
                       const ActivationOptions& activation) {
  const FfnSettings settings = FfnSettings::Resolve(model.config(), ffn, activation, gate);
  for (int64_t l = 0; l < model.config().layers && settings.gate == GateMode::kShadow; ++l) {
    if (model.layer(l).ffn.gate_shadow.data == nullptr) {
      throw Error(model.file().path(), "has no shadow gate for layer " + std::to_string(l) +
                                           " (`zeroskip shadow` adds them)");
    }
  }
  return settings;
}

// What a session of these options takes for `context` positions (checked arithmetic: the sizes
// come from the file).
uint64_t SessionBytes(const Engine& engine, const SessionOptions& options, int64_t context) {
  return SequenceState::Bytes(engine.model().config(), context, engine.threads(), options.kv_type,
                              engine.model().file().path());
}

// The longest context that `sessions` sessions of these options fit in `room` bytes (a session's
// bytes are a fixed part and as much again for each position).
int64_t LongestContextIn(uint64_t room, int sessions, const Engine& engine,
                         const SessionOptions& options) {
  const uint64_t share = room / static_cast<uint64_t>(sessions);
  const uint64_t fixed = SessionBytes(engine, options, 0);
  const uint64_t per_position = SessionBytes(engine, options, 1) - fixed;
  return share > fixed ? static_cast<int64_t>((share - fixed) / per_position) : int64_t{0};
}

}  // namespace

int64_t Session::ContextThatFits(const Engine& engine, const SessionOptions& options,
                                 int sessions) {
  const int64_t model_context = engine.model().config().context;
  if (options.context > 0) return options.context;
  sessions = std::max(sessions, 1);
  const uint64_t room = engine.session_memory_left();
  if (SessionBytes(engine, options, model_context) <= room / static_cast<uint64_t>(sessions)) {
    return model_context;
  }
  return std::min(model_context, LongestContextIn(room, sessions, engine, options));
}

Session::Session(Engine& engine, const SessionOptions& options) : engine_(engine) {
  const ModelConfig& c = engine.model().config();
  const std::string& path = engine.model().file().path();
  if (options.context > c.context) {
    throw Error(path, "a context of " + std::to_string(options.context) +
                          " tokens exceeds the model's context length " +
                          std::to_string(c.context));
  }
  const FfnSettings ffn = ResolveFfn(engine.model(), options.ffn, options.gate, options.activation);
  if (!IsKvType(options.kv_type)) {
    throw Error(path, "a KV cache of " + std::string(DTypeName(options.kv_type)) +
                          " is not supported (f32, f16 or bf16)");
  }

  // Sized from the (untrusted) file: add it up with overflow checks and refuse what this machine
  // cannot hold, instead of dying in the allocator. Beside a memory budget the model does not fit
  // in, the room is what the budget leaves: the model's own context that does not fit there
  // becomes the longest that does (ContextThatFits); a context asked for is refused.
  const auto mib = [](uint64_t b) { return std::to_string((b + (1u << 20) - 1) >> 20); };
  context_ = ContextThatFits(engine, options);
  const uint64_t left = engine.session_memory_left();
  if (context_ < 1 || SessionBytes(engine, options, context_) > left) {
    const int64_t wanted = options.context > 0 ? options.context : c.context;
    throw Error(path, "a context of " + std::to_string(wanted) + " tokens needs " +
                          mib(SessionBytes(engine, options, wanted)) +
                          " MiB of KV cache, and beside the memory budget this process's " +
                          mib(engine.model().memory().limit) + " MiB leave " + mib(left) +
                          ", room for " +
                          std::to_string(LongestContextIn(left, 1, engine, options)) +
                          " tokens (a smaller context, a 16-bit KV cache or a smaller memory "
                          "budget)");
  }
  const uint64_t bytes = SessionBytes(engine, options, context_);
  const auto too_big = [&] {
    return Error(path, "a context of " + std::to_string(context_) + " tokens needs " + mib(bytes) +
                           " MiB of KV cache, more than this machine has free (use a smaller "
                           "context)");
  };
  if (bytes > AvailableMemoryBytes()) throw too_big();
  try {
    state_ = std::make_unique<SequenceState>(c, context_, engine.threads(), ffn, options.kv_type);
  } catch (const std::bad_alloc&) {
    throw too_big();  // the estimate above missed: still name the file and the cause
  }
  ffn_stats_.resize(c.layers);
  forward_ = ForwardFor(c);
  // Last: nothing after it throws, so the destructor gives back what this took.
  if (!engine.TakeSessionMemory(bytes)) {
    throw Error(path, "a context of " + std::to_string(context_) + " tokens needs " + mib(bytes) +
                          " MiB of KV cache; the memory budget's other sessions left " +
                          mib(engine.session_memory_left()) + " MiB");
  }
  memory_taken_ = bytes;
}

Session::~Session() { engine_.ReturnSessionMemory(memory_taken_); }

void Session::CheckFfn(const Model& model, FfnMode ffn, GateMode gate,
                       const ActivationOptions& activation) {
  ResolveFfn(model, ffn, gate, activation);
}

void Session::SetFfn(FfnMode ffn, GateMode gate, const ActivationOptions& activation) {
  state_->ffn = ResolveFfn(model(), ffn, gate, activation);
}

bool IsKvType(DType type) {
  return type == DType::kF32 || type == DType::kF16 || type == DType::kBF16;
}

bool Session::sparse_decode() const { return state_->ffn.sparse_decode; }
DType Session::kv_type() const { return state_->kv_type; }
FfnActivation Session::activation() const { return state_->ffn.act; }

FfnLayerStats Session::ffn_total() const {
  FfnLayerStats total;
  for (const auto& s : ffn_stats_) total.Add(s);
  return total;
}

void Session::ResetFfnStats() {
  for (auto& s : ffn_stats_) s = {};
}

void Session::Rewind(int64_t position) {
  if (position < 0 || position > position_) {
    throw Error(model().file().path(), "cannot rewind to position " + std::to_string(position) +
                                           " from " + std::to_string(position_));
  }
  position_ = position;
}

void Session::CopyFrom(const Session& other) {
  if (&other.engine_ != &engine_ || other.context_ != context_ ||
      other.state_->kv_type != state_->kv_type) {
    throw std::logic_error("Session::CopyFrom: the sessions differ in engine, context or KV type");
  }
  // [layers, kv_heads, context, head_dim]: the first position_ rows of every (layer, head).
  const ModelConfig& c = model().config();
  const uint64_t row = DTypeBytes(state_->kv_type, static_cast<uint64_t>(c.head_dim));
  const uint64_t block = row * static_cast<uint64_t>(context_);
  const uint64_t used = row * static_cast<uint64_t>(other.position_);
  for (const auto cache : {&SequenceState::k_cache, &SequenceState::v_cache}) {
    const uint8_t* from = ((*other.state_).*cache).data();
    uint8_t* to = ((*state_).*cache).data();
    for (uint64_t b = 0; b < static_cast<uint64_t>(c.layers * c.kv_heads); ++b) {
      std::copy_n(from + b * block, used, to + b * block);
    }
  }
  state_->logits = other.state_->logits;
  position_ = other.position_;
}

void Session::CheckTokens(std::span<const int> tokens) const {
  const std::string& path = model().file().path();
  for (int id : tokens) {
    if (id < 0 || id >= model().config().vocab) {
      throw Error(path, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(model().config().vocab) + ")");
    }
  }
}

// Weights are checksummed only by `verify` (opening reads just the header): a flipped bit in the
// data shows up here, and garbage text or a NaN perplexity must not be the symptom.
void Session::CheckFinite(std::span<const float> logits) const {
  for (const float l : logits) {
    if (!std::isfinite(l)) {
      const std::string& path = model().file().path();
      throw Error(path,
                  "the model computed a NaN or infinite logit; its weights may be damaged "
                  "(check them with: zeroskip verify " +
                      path + ")");
    }
  }
}

std::span<const float> Session::Forward(std::span<const int> tokens, bool all_logits) {
  const auto n = static_cast<int64_t>(tokens.size());
  const int64_t max_batch = engine_.max_batch();
  const std::string& path = model().file().path();
  if (n == 0) throw Error(path, "no tokens to run");
  if (position_ + n > context_) {
    throw Error(path, std::to_string(position_ + n) + " tokens do not fit the context of " +
                          std::to_string(context_));
  }
  if (all_logits && n > max_batch) throw Error(path, "too many tokens for one batch of logits");
  CheckTokens(tokens);
  Workspace& ws = engine_.workspace();
  std::lock_guard<std::mutex> hold(ws.lock);
  for (int64_t done = 0; done < n;) {
    const int64_t m = std::min(max_batch, n - done);
    const bool last = done + m == n;
    const SequenceRows rows{state_.get(), position_, m, &ffn_stats_};
    const ForwardPass pass{model(), ws, {&rows, 1}, nullptr};
    forward_(pass, tokens.data() + done, last, all_logits);
    position_ += m;
    done += m;
  }
  const size_t vocab = static_cast<size_t>(model().config().vocab);
  std::span<const float> logits(ws.logits.data(), vocab);
  if (all_logits) {
    logits = {ws.logits.data(), static_cast<size_t>(n) * vocab};
    state_->logits.assign(logits.end() - vocab, logits.end());  // logits() is the last row
  } else {
    // The session's own copy: another session's pass may reuse the engine's buffer at once.
    state_->logits.assign(logits.begin(), logits.end());
    logits = state_->logits;
  }
  CheckFinite(logits);
  return logits;
}

std::span<const float> Session::logits() const { return state_->logits; }

void Session::DecodeBatch(std::span<Session* const> sessions, std::span<const int> tokens,
                          std::vector<FfnLayerStats>* batch_stats) {
  if (sessions.size() != tokens.size()) {
    throw std::invalid_argument("DecodeBatch: one token per session");
  }
  if (sessions.empty()) return;
  Engine& engine = sessions[0]->engine_;
  for (size_t i = 0; i < sessions.size(); ++i) {
    Session& s = *sessions[i];
    if (&s.engine_ != &engine) throw std::invalid_argument("DecodeBatch: sessions of two engines");
    // Twice in one step would run two rows at one position and advance it by two.
    if (std::find(sessions.begin(), sessions.begin() + i, &s) != sessions.begin() + i) {
      throw std::invalid_argument("DecodeBatch: a session twice");
    }
    if (s.position_ + 1 > s.context_) {
      throw Error(s.model().file().path(), std::to_string(s.position_ + 1) +
                                               " tokens do not fit the context of " +
                                               std::to_string(s.context_));
    }
    s.CheckTokens(tokens.subspan(i, 1));
  }
  const int64_t layers = engine.model().config().layers;
  if (batch_stats != nullptr) batch_stats->resize(layers);
  const auto vocab = static_cast<size_t>(engine.model().config().vocab);
  Workspace& ws = engine.workspace();
  std::lock_guard<std::mutex> hold(ws.lock);
  // Sessions whose FFN settings batch together share a pass; the rest get passes of their own.
  // Quantized weights: each session its own pass. Their int8 kernels are compute-bound, so a
  // batched token costs what a lone one does, plus the batched path's extra work (measured: two
  // q8 sessions in one pass ran at 0.7x the tokens per second of one; docs/BENCHMARKS.md,
  // "Server").
  const FfnWeights& ffn0 = engine.model().layer(0).ffn;
  const bool quantized = IsQuantized(ffn0.gate.dtype) || IsQuantized(ffn0.down_t.dtype) ||
                         (ffn0.up.data != nullptr && IsQuantized(ffn0.up.dtype));
  const int64_t pass_limit = quantized ? 1 : engine.max_batch();
  std::vector<bool> done(sessions.size(), false);
  std::vector<SequenceRows> rows;
  std::vector<int> ids;
  std::vector<Session*> members;
  for (size_t first = 0; first < sessions.size(); ++first) {
    if (done[first]) continue;
    rows.clear();
    ids.clear();
    members.clear();
    const FfnSettings& settings = sessions[first]->state_->ffn;
    for (size_t i = first; i < sessions.size() && static_cast<int64_t>(rows.size()) < pass_limit;
         ++i) {
      Session& s = *sessions[i];
      if (done[i] || (i != first && !settings.Batchable(s.state_->ffn))) continue;
      done[i] = true;
      rows.push_back({s.state_.get(), s.position_, 1, &s.ffn_stats_});
      ids.push_back(tokens[i]);
      members.push_back(&s);
    }
    const ForwardPass pass{engine.model(), ws, rows, batch_stats};
    sessions[first]->forward_(pass, ids.data(), true, false);
    for (size_t k = 0; k < members.size(); ++k) {
      Session& s = *members[k];
      const float* l = ws.logits.data() + k * vocab;
      s.state_->logits.assign(l, l + vocab);
      ++s.position_;
    }
    for (Session* s : members) s->CheckFinite(s->state_->logits);
  }
}

}  // namespace zeroskip
