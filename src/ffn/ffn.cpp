#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>

#include "ffn/ffn_runtime.h"
#include "ffn/neuron_cache.h"
#include "ffn/shadow_bound.h"
#include "kernels/kernels.h"
#include "model/matmul.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// Slices of FFN neurons are multiples of this, so SIMD compaction works on whole vectors.
constexpr int64_t kNeuronAlign = 16;
// A decode step from the neuron cache certifies each slice in this many pieces (see
// DecodeStepFromCache).
constexpr int kCertifyPieces = 4;
// Neurons a batch's sparse up and down take at a time: enough that each token has a few active
// ones per block at 90% zeros (so x or y is loaded once for several rows), few enough that the
// block's rows stay in L2 while every token passes over them.
constexpr int64_t kBatchNeurons = 64;

float Silu(float g) { return g / (1.0f + std::exp(-g)); }

// SplitMix64's finalizer: a strong 64-bit mix, the basis of the counter-based draw.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

bool StochasticPick(uint64_t seed, int64_t position, int64_t layer, int64_t neuron, float p) {
  const uint64_t key = Mix(Mix(Mix(seed) ^ static_cast<uint64_t>(position)) ^
                           (static_cast<uint64_t>(layer) << 32 | static_cast<uint32_t>(neuron)));
  return static_cast<double>(key >> 11) * 0x1.0p-53 < p;
}

std::string_view FfnModeName(FfnMode mode) {
  switch (mode) {
    case FfnMode::kAuto:
      return "auto";
    case FfnMode::kSparse:
      return "sparse";
    case FfnMode::kDense:
      return "dense";
  }
  return "?";
}

bool ParseFfnMode(std::string_view name, FfnMode* out) {
  for (FfnMode m : {FfnMode::kAuto, FfnMode::kSparse, FfnMode::kDense}) {
    if (name == FfnModeName(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

std::string_view GateModeName(GateMode mode) {
  switch (mode) {
    case GateMode::kAuto:
      return "auto";
    case GateMode::kDense:
      return "dense";
    case GateMode::kShadow:
      return "shadow";
  }
  return "?";
}

bool ParseGateMode(std::string_view name, GateMode* out) {
  for (GateMode m : {GateMode::kAuto, GateMode::kDense, GateMode::kShadow}) {
    if (name == GateModeName(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

std::string_view FfnActivationName(FfnActivation act) {
  switch (act) {
    case FfnActivation::kModel:
      return "model";
    case FfnActivation::kReLU:
      return "relu";
    case FfnActivation::kSiLU:
      return "silu";
    case FfnActivation::kStochastic:
      return "stoch";
  }
  return "?";
}

bool ParseFfnActivation(std::string_view name, FfnActivation* out) {
  for (FfnActivation a : {FfnActivation::kModel, FfnActivation::kReLU, FfnActivation::kSiLU,
                          FfnActivation::kStochastic}) {
    if (name == FfnActivationName(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

void FfnLayerStats::Add(const FfnLayerStats& o) {
  tokens += o.tokens;
  neurons += o.neurons;
  zero_neurons += o.zero_neurons;
  flops_done += o.flops_done;
  flops_dense += o.flops_dense;
  weight_bytes_read += o.weight_bytes_read;
  negative_gates += o.negative_gates;
  picked_negatives += o.picked_negatives;
  shadow_rows += o.shadow_rows;
  shadow_zeros += o.shadow_zeros;
  certified_rows += o.certified_rows;
  up_zero_neurons += o.up_zero_neurons;
  pass_rows += o.pass_rows;
  pass_rows_read += o.pass_rows_read;
  neuron_fetches += o.neuron_fetches;
  neuron_warmed += o.neuron_warmed;
  neuron_reads += o.neuron_reads;
  neuron_bytes_read += o.neuron_bytes_read;
}

FfnSettings FfnSettings::Resolve(const ModelConfig& config, FfnMode mode,
                                 const ActivationOptions& activation, GateMode gate) {
  FfnSettings s;
  s.act = activation.kind;
  if (s.act == FfnActivation::kModel) {
    s.act = config.relu_family() ? FfnActivation::kReLU : FfnActivation::kSiLU;
    // --act relu asks for plain ReLU; the model's own activation keeps its threshold.
    if (config.activation == Activation::kFatReLU) s.threshold = config.activation_threshold;
  }
  s.relu_up = config.relu_up;
  s.stoch_p = activation.stoch_p;
  s.seed = activation.seed;
  if (!(s.stoch_p >= 0.0f && s.stoch_p <= 1.0f)) {
    throw Error("", "the stochastic activation's probability must be in [0, 1]");
  }
  if (mode == FfnMode::kSparse && s.act == FfnActivation::kSiLU) {
    throw Error("", "a sparse FFN needs a ReLU or stochastic activation (this one is silu, "
                    "which has no zeros)");
  }
  // Auto: decode sparsely whenever the activation makes exact zeros. Even at 0% zeros the sparse
  // path reads the same bytes as the dense one, so no sparsity level makes dense decode win by
  // more than noise (docs/BENCHMARKS.md).
  s.sparse_decode = s.act != FfnActivation::kSiLU && mode != FfnMode::kDense;
  // Certifying g <= 0 says act(g) = 0 only for ReLU; the dense FFN reads every row anyway.
  const bool shadow_possible = s.sparse_decode && s.act == FfnActivation::kReLU;
  if (gate == GateMode::kShadow && !shadow_possible) {
    throw Error("", "the shadow gate needs the sparse FFN with plain ReLU (this is " +
                        std::string(s.sparse_decode ? "sparse" : "dense") + " with " +
                        std::string(FfnActivationName(s.act)) + ")");
  }
  s.gate = shadow_possible ? gate : GateMode::kDense;
  return s;
}

bool FfnSettings::Batchable(const FfnSettings& other) const {
  // threshold: --act relu on a FATReLU model resolves to the same act with threshold 0.
  return act == other.act && sparse_decode == other.sparse_decode &&
         threshold == other.threshold && relu_up == other.relu_up &&
         act != FfnActivation::kStochastic;
}

bool FfnSettings::UsesShadow(const FfnWeights& w) const {
  if (gate == GateMode::kDense || w.gate_shadow.data == nullptr) return false;
  // Auto: a q8/q4 gate is already about as small as its shadow (docs/BENCHMARKS.md).
  return gate == GateMode::kShadow || !IsQuantized(w.gate.dtype);
}

float ActivateNeuron(const FfnSettings& settings, float g, int64_t position, int64_t layer,
                     int64_t neuron) {
  switch (settings.act) {
    case FfnActivation::kSiLU:
      return Silu(g);
    case FfnActivation::kStochastic:
      if (g < 0.0f && StochasticPick(settings.seed, position, layer, neuron, settings.stoch_p)) {
        return Silu(g);
      }
      [[fallthrough]];
    default:
      // threshold 0: std::max keeps ReLU's results (a NaN gate stays NaN) bit for bit.
      return settings.threshold > 0.0f ? (g > settings.threshold ? g : 0.0f) : std::max(g, 0.0f);
  }
}

// What one call computes, shared by its phases.
struct FfnRuntime::Call {
  const FfnSettings& settings;
  int64_t layer;
  const FfnWeights& w;
  int64_t position;
  // Bytes of one row of each matrix (all three are [ffn, hidden]; each has its own dtype).
  size_t gate_row, up_row, down_row;  // up_row 0 when ungated
  bool gated;          // false: fc1 (the gate) and fc2 (down) only, with biases (OPT)
  ShadowBound shadow;  // usable only when this call goes through the shadow gate
  bool uses_shadow = false;
};

FfnRuntime::FfnRuntime(const ModelConfig& config, const KernelTable& kernels, DenseMatmul& matmul,
                       int threads, int64_t max_tokens)
    : config_(config), kernels_(kernels), matmul_(matmul), threads_(threads) {
  const auto f = static_cast<size_t>(config.ffn), h = static_cast<size_t>(config.hidden);
  gate_.resize(f);
  up_.resize(f);
  active_.resize(f);
  active_g_.resize(f);
  partial_y_.resize(static_cast<size_t>(threads) * h);
  uncertain_.resize(f);
  shadow_xq_.resize(h);
  shadow_xd_.resize(h / kQuantBlock);
  slices_.resize(static_cast<size_t>(threads));
  requested_.resize(static_cast<size_t>(threads));
  fetch_.resize(f);
  fetch_parts_.resize(f);
  fetch_slots_.resize(f);
  neuron_slot_.resize(f);
  slot_rows_.resize(f);
  row_zeros_.resize(static_cast<size_t>(std::max<int64_t>(max_tokens, 1)));
  if (max_tokens > 1) {
    batch_gate_.resize(static_cast<size_t>(max_tokens) * f);
    batch_up_.resize(static_cast<size_t>(max_tokens) * f);
  }
}

void FfnRuntime::Forward(const FfnSettings& settings, int64_t layer, const FfnWeights& w,
                         const float* x, int64_t n, float* y, int64_t position,
                         FfnLayerStats* stats) {
  const bool shadow = n == 1 && settings.UsesShadow(w);
  const Call call{settings,
                  layer,
                  w,
                  position,
                  DTypeBytes(w.gate.dtype, config_.hidden),
                  w.up.data != nullptr ? DTypeBytes(w.up.dtype, config_.hidden) : 0,
                  DTypeBytes(w.down_t.dtype, config_.hidden),
                  w.up.data != nullptr,
                  shadow
                      ? PrepareShadowInput(x, config_.hidden, w.gate.dtype, kernels_.bf16_products,
                                           shadow_xq_.data(), shadow_xd_.data())
                      : ShadowBound{},
                  shadow};
  if (n == 1) {
    const bool from_cache = neurons_ != nullptr && call.gated && settings.sparse_decode;
    stats->Add(from_cache ? DecodeStepFromCache(call, x, y) : DecodeStep(call, x, y));
  } else {
    FfnLayerStats batch =
        settings.sparse_decode ? BatchedSparse(call, x, n, y) : BatchedDense(call, x, n, y);
    if (neurons_ != nullptr && call.gated && settings.sparse_decode) {
      batch.neuron_warmed = static_cast<uint64_t>(WarmNeuronCache(call, n));
    }
    stats->Add(batch);
  }
}

int64_t FfnRuntime::WarmNeuronCache(const Call& call, int64_t n) {
  // The batch's coefficients (act(gate) * up) are [n, ffn] in batch_gate_: a neuron is active
  // for a token where its coefficient is not zero.
  const int64_t ffn = config_.ffn;
  const float* h = batch_gate_.data();
  std::fill(warm_counts_.begin(), warm_counts_.end(), 0);
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t i = 0; i < ffn; ++i) warm_counts_[i] += h[k * ffn + i] != 0.0f;
  }
  return neurons_->Warm(
      call.layer, warm_counts_.data(), static_cast<const uint8_t*>(call.w.gate.data),
      static_cast<const uint8_t*>(call.w.up.data), static_cast<const uint8_t*>(call.w.down_t.data));
}

void FfnRuntime::GateRows(const Call& call, Slice& s, const float* x) {
  if (call.uses_shadow) {
    ShadowGateRows(call, s, x);
    return;
  }
  const int64_t hidden = config_.hidden;
  const auto* gate = static_cast<const uint8_t*>(call.w.gate.data) + s.r0 * call.gate_row;
  kernels_.ops(call.w.gate.dtype).dot_rows({gate, hidden}, nullptr, s.rows, hidden, x, s.g);
  if (call.w.gate_bias != nullptr) {
    for (int64_t i = 0; i < s.rows; ++i) s.g[i] += call.w.gate_bias[s.r0 + i];
  }
  if (call.settings.act == FfnActivation::kStochastic) {
    for (int64_t i = 0; i < s.rows; ++i) s.negatives += s.g[i] < 0.0f;
  }
}

void FfnRuntime::ShadowGateRows(const Call& call, Slice& s, const float* x) {
  CertifyShadowRows(call, s, 0, s.rows);
  const auto* gate = static_cast<const uint8_t*>(call.w.gate.data) + s.r0 * call.gate_row;
  FullGateRows(call, s, x, {gate, config_.hidden}, uncertain_.data() + s.r0);
}

void FfnRuntime::CertifyShadowRows(const Call& call, Slice& s, int64_t begin, int64_t end) {
  const int64_t hidden = config_.hidden;
  const int64_t r0 = s.r0 + begin;
  const auto* shadow =
      static_cast<const uint8_t*>(call.w.gate_shadow.data) + r0 * DTypeBytes(DType::kQ8, hidden);
  kernels_.shadow_dot_rows(shadow, end - begin, hidden, shadow_xq_.data(), shadow_xd_.data(),
                           s.g + begin);
  const float* err = call.w.gate_shadow_norms + r0;
  const float* norm = call.w.gate_shadow_norms + config_.ffn + r0;
  int32_t* found = uncertain_.data() + s.r0 + s.uncertain;
  const int64_t n = CertifyRows(call.shadow, err, norm, end - begin, s.g + begin, found);
  for (int64_t k = 0; k < n; ++k) found[k] += static_cast<int32_t>(begin);  // slice-relative
  s.uncertain += n;
}

void FfnRuntime::FullGateRows(const Call& call, Slice& s, const float* x, WeightRows gate,
                              const int32_t* rows) {
  // The full gate for the uncertain rows, in row order: the same values, compacted in the same
  // order, as the dense gate gives them.
  const int64_t hidden = config_.hidden;
  float* full = active_g_.data() + s.r0;
  kernels_.ops(call.w.gate.dtype).dot_rows(gate, rows, s.uncertain, hidden, x, full);
  const int32_t* uncertain = uncertain_.data() + s.r0;
  for (int64_t k = 0; k < s.uncertain; ++k) s.g[uncertain[k]] = full[k];
}

void FfnRuntime::ActivateRows(const Call& call, Slice& s) {
  const bool stochastic = call.settings.act == FfnActivation::kStochastic;
  if (!call.settings.sparse_decode) return;  // the dense path activates during up/down
  int32_t* active = active_.data() + s.r0;
  float* active_g = active_g_.data() + s.r0;
  if (!stochastic) {
    // Only neurons with gate > threshold survive (FAT)ReLU: compact them with SIMD.
    s.active = kernels_.compact_above(s.g, s.rows, call.settings.threshold, active, active_g);
    return;
  }
  // Picked negatives are active rows too, carrying SiLU(g).
  for (int64_t i = 0; i < s.rows; ++i) {
    const float a = ActivateNeuron(call.settings, s.g[i], call.position, call.layer, s.r0 + i);
    if (a != 0.0f) {
      active[s.active] = static_cast<int32_t>(i);
      active_g[s.active++] = a;
      s.picked += s.g[i] < 0.0f;
    }
  }
}

void FfnRuntime::UpDownRows(const Call& call, Slice& s, const float* x, float* partial_y) {
  const int64_t hidden = config_.hidden;
  const WeightOps& down_ops = kernels_.ops(call.w.down_t.dtype);
  const auto* down = static_cast<const uint8_t*>(call.w.down_t.data) + s.r0 * call.down_row;
  float* u = up_.data() + s.r0;
  if (!call.gated) {
    // y += act(g_i) · down_i: sparse over the active rows only, dense over every row (adding
    // 0 · row where act(g_i) = 0, which leaves the same sums).
    if (call.settings.sparse_decode) {
      down_ops.axpy_rows({down, hidden}, active_.data() + s.r0, active_g_.data() + s.r0, s.active,
                         hidden, partial_y);
      return;
    }
    const bool stochastic = call.settings.act == FfnActivation::kStochastic;
    for (int64_t i = 0; i < s.rows; ++i) {
      const float a = ActivateNeuron(call.settings, s.g[i], call.position, call.layer, s.r0 + i);
      s.active += a != 0.0f;
      s.picked += stochastic && s.g[i] < 0.0f && a != 0.0f;
      s.g[i] = a;
    }
    down_ops.axpy_rows({down, hidden}, nullptr, s.g, s.rows, hidden, partial_y);
    return;
  }
  const WeightOps& up_ops = kernels_.ops(call.w.up.dtype);
  const auto* up = static_cast<const uint8_t*>(call.w.up.data) + s.r0 * call.up_row;
  if (call.settings.sparse_decode) {
    UpDownActive(call, s, x, partial_y, {{up, hidden}, {down, hidden}, active_.data() + s.r0});
    return;
  }
  const bool stochastic = call.settings.act == FfnActivation::kStochastic;
  up_ops.dot_rows({up, hidden}, nullptr, s.rows, hidden, x, u);
  for (int64_t i = 0; i < s.rows; ++i) {
    const float a = ActivateNeuron(call.settings, s.g[i], call.position, call.layer, s.r0 + i);
    s.active += a != 0.0f;
    s.picked += stochastic && s.g[i] < 0.0f && a != 0.0f;
    s.g[i] = a * (call.settings.relu_up ? std::max(u[i], 0.0f) : u[i]);
  }
  down_ops.axpy_rows({down, hidden}, nullptr, s.g, s.rows, hidden, partial_y);
}

void FfnRuntime::UpDownActive(const Call& call, Slice& s, const float* x, float* partial_y,
                              const ActiveRows& r) {
  const int64_t hidden = config_.hidden;
  const WeightOps& up_ops = kernels_.ops(call.w.up.dtype);
  const WeightOps& down_ops = kernels_.ops(call.w.down_t.dtype);
  float* coef = active_g_.data() + s.r0;
  // The fused kernel reads up and down with one weight type; a layer that mixes types (llama.cpp's
  // Q4_K_M: some down projections q6k) runs its two halves one after the other.
  if (call.w.up.dtype == call.w.down_t.dtype && !call.settings.relu_up) {
    down_ops.sparse_up_down(r.up, r.down, hidden, r.rows, coef, s.active, x, partial_y);
    return;
  }
  // Up for the active rows, then the coefficients act(g) * u in place; dReLU keeps (in row
  // order) only the rows whose up is positive, so only their down rows are read.
  float* u = up_.data() + s.r0;
  up_ops.dot_rows(r.up, r.rows, s.active, hidden, x, u);
  int64_t kept = 0;
  for (int64_t k = 0; k < s.active; ++k) {
    if (!call.settings.relu_up || u[k] > 0.0f) {
      r.rows[kept] = r.rows[k];
      coef[kept++] = coef[k] * u[k];
    }
  }
  s.up_zeros = s.active - kept;
  down_ops.axpy_rows(r.down, r.rows, coef, kept, hidden, partial_y);
}

FfnLayerStats FfnRuntime::DecodeStep(const Call& call, const float* x, float* y) {
  // One phase: chunk t is the slice thread t of threads_ would take (the same sums whichever
  // thread runs it), accumulated privately and reduced after it without a second phase.
  matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
    Slice& s = StartSlice(static_cast<int>(chunk));
    float* partial_y = PartialY(static_cast<int>(chunk));
    if (s.rows > 0) {
      GateRows(call, s, x);
      ActivateRows(call, s);
      UpDownRows(call, s, x, partial_y);
    }
  });
  return FinishDecodeStep(call, y);
}

template <typename PartOf>
int64_t FfnRuntime::RequestRows(const Call& call, const std::vector<int32_t>& rows,
                                int64_t Slice::*count, PartOf part_of) {
  // One request for all slices, each in neuron order.
  int64_t n = 0;
  for (size_t t = 0; t < slices_.size(); ++t) {
    const Slice& s = slices_[t];
    for (int64_t k = requested_[t]; k < s.*count; ++k) {
      const int32_t row = rows[s.r0 + k];
      fetch_parts_[n] = part_of(s, row);
      fetch_[n++] = static_cast<int32_t>(s.r0 + row);
    }
    requested_[t] = s.*count;
  }
  neurons_->Request(call.layer, fetch_.data(), fetch_parts_.data(), n, fetch_slots_.data());
  for (int64_t k = 0; k < n; ++k) neuron_slot_[fetch_[k]] = fetch_slots_[k];
  return n;
}

FfnLayerStats FfnRuntime::DecodeStepFromCache(const Call& call, const float* x, float* y) {
  const NeuronLayout& l = neurons_->layout();
  const NeuronCache::Stats before = neurons_->stats();
  neurons_->StartLayer();
  std::fill(requested_.begin(), requested_.end(), 0);
  const uint8_t* pool = neurons_->pool();
  const auto ld = [&](DType dtype) {
    return static_cast<int64_t>(l.stride / DTypeBytes(dtype, 1));
  };
  int64_t fetched = 0;
  if (call.uses_shadow) {
    // The rows the shadow cannot certify need their gate rows read: certified a piece of each
    // slice at a time, each piece's reads requested before the next piece, so the disk reads
    // while the shadow's product runs. A row the shadow estimates positive is most likely active:
    // its up and down rows come in the same read (adjacent in the file; a disk costs more per
    // request than per byte, and the active rows' fetch then finds them).
    for (int piece = 0; piece < kCertifyPieces; ++piece) {
      matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
        Slice& s = piece == 0 ? StartSlice(static_cast<int>(chunk)) : slices_[chunk];
        const auto edge = [&](int p) {
          return s.rows * p / kCertifyPieces / kNeuronAlign * kNeuronAlign;
        };
        const int64_t end = piece + 1 == kCertifyPieces ? s.rows : edge(piece + 1);
        if (end > edge(piece)) CertifyShadowRows(call, s, edge(piece), end);
      });
      fetched += RequestRows(call, uncertain_, &Slice::uncertain, [](const Slice& s, int32_t row) {
        return s.g[row] > 0.0f ? NeuronCache::kBundle : NeuronCache::kGate;
      });
    }
    neurons_->Wait();
    // The same gate values as in memory from the gate rows; the full gate alone decides which
    // rows are active.
    matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
      Slice& s = slices_[chunk];
      if (s.rows == 0) return;
      int32_t* slots = SlotsOf(s, uncertain_.data() + s.r0, s.uncertain);
      FullGateRows(call, s, x, {pool, ld(l.gate)}, slots);
      ActivateRows(call, s);
    });
  } else {
    // Without the shadow, the gate over every row (resident) tells the active rows.
    matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
      Slice& s = StartSlice(static_cast<int>(chunk));
      if (s.rows == 0) return;
      GateRows(call, s, x);
      ActivateRows(call, s);
    });
  }
  // The active rows' up and down rows, then the usual kernels on the cache's slots.
  std::fill(requested_.begin(), requested_.end(), 0);
  fetched += RequestRows(call, active_, &Slice::active,
                         [](const Slice&, int32_t) { return NeuronCache::kUpDown; });
  neurons_->Wait();
  const ActiveRows from_pool{
      {pool + l.gate_read, ld(l.up)}, {pool + l.gate_read + l.up_bytes, ld(l.down)}, nullptr};
  matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
    Slice& s = slices_[chunk];
    float* partial_y = PartialY(static_cast<int>(chunk));
    if (s.rows == 0) return;
    ActiveRows rows = from_pool;
    rows.rows = SlotsOf(s, active_.data() + s.r0, s.active);
    UpDownActive(call, s, x, partial_y, rows);
  });
  FfnLayerStats step = FinishDecodeStep(call, y);
  const NeuronCache::Stats& after = neurons_->stats();
  step.neuron_fetches = static_cast<uint64_t>(fetched);
  step.neuron_reads = after.misses - before.misses;
  step.neuron_bytes_read = after.bytes_read - before.bytes_read;
  return step;
}

int32_t* FfnRuntime::SlotsOf(const Slice& s, const int32_t* rows, int64_t n) {
  int32_t* slots = slot_rows_.data() + s.r0;
  for (int64_t k = 0; k < n; ++k) slots[k] = neuron_slot_[s.r0 + rows[k]];
  return slots;
}

FfnRuntime::Slice& FfnRuntime::StartSlice(int t) {
  const auto [r0, r1] = ThreadSlice(config_.ffn, t, threads_, kNeuronAlign);
  Slice& s = slices_[t];
  s = Slice{};
  s.r0 = r0;
  s.rows = r1 - r0;
  s.g = gate_.data() + r0;
  return s;
}

float* FfnRuntime::PartialY(int t) {
  float* partial_y = partial_y_.data() + static_cast<size_t>(t) * config_.hidden;
  std::memset(partial_y, 0, sizeof(float) * config_.hidden);
  return partial_y;
}

FfnLayerStats FfnRuntime::FinishDecodeStep(const Call& call, float* y) {
  const int64_t hidden = config_.hidden, ffn = config_.ffn;
  int64_t active_total = 0, negatives = 0, picked = 0, uncertain = 0, up_zeros = 0;
  for (const Slice& s : slices_) {
    active_total += s.active;
    negatives += s.negatives;
    picked += s.picked;
    uncertain += s.uncertain;
    up_zeros += s.up_zeros;
  }
  // The private accumulators summed in chunk order; [threads, hidden] is small next to the
  // weights, so one thread does it rather than another phase.
  std::fill(y, y + hidden, 0.0f);
  for (int p = 0; p < threads_; ++p) {
    const float* part = partial_y_.data() + static_cast<size_t>(p) * hidden;
    for (int64_t c = 0; c < hidden; ++c) y[c] += part[c];
  }
  if (call.w.down_bias != nullptr) {
    for (int64_t c = 0; c < hidden; ++c) y[c] += call.w.down_bias[c];
  }

  row_zeros_[0] = ffn - active_total;
  FfnLayerStats step = CallStats(1, ffn - active_total, negatives, picked);
  const uint64_t hf = static_cast<uint64_t>(hidden) * ffn;
  // Sparse: the whole gate, then two rows (up, down) per active neuron.
  const bool sparse = call.settings.sparse_decode;
  // dReLU: the down rows of active neurons whose up is not positive are skipped too.
  // Ungated: one row (fc2) per active neuron.
  const int64_t rows_read = call.gated ? 2 * active_total - up_zeros : active_total;
  step.up_zero_neurons = up_zeros;
  const uint64_t active_elems = static_cast<uint64_t>(hidden) * rows_read;
  step.flops_done = sparse ? 2 * (hf + active_elems) : step.flops_dense;
  // Sparse: up and down of each active neuron (ungated: up_row is 0), less the skipped downs.
  step.weight_bytes_read = sparse ? ffn * call.gate_row +
                                        active_total * (call.up_row + call.down_row) -
                                        up_zeros * call.down_row
                                  : ffn * (call.gate_row + call.up_row + call.down_row);
  step.pass_rows = ffn;
  step.pass_rows_read = sparse ? active_total : ffn;
  if (call.uses_shadow) {
    // The shadow and its norms, then the full gate's uncertain rows instead of all of them.
    const auto rows = static_cast<uint64_t>(ffn), certified = rows - uncertain;
    step.shadow_rows = rows;
    step.shadow_zeros = rows - active_total;
    step.certified_rows = certified;
    step.flops_done += 2 * static_cast<uint64_t>(hidden) * uncertain;
    step.weight_bytes_read += rows * (DTypeBytes(DType::kQ8, hidden) + 2 * sizeof(float));
    step.weight_bytes_read -= certified * call.gate_row;
  }
  return step;
}

uint64_t FfnRuntime::Matrices() const { return config_.gated_ffn ? 3 : 2; }

void FfnRuntime::AddGateBias(const Call& call, float* g, int64_t n) const {
  if (call.w.gate_bias == nullptr) return;
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t i = 0; i < config_.ffn; ++i) g[k * config_.ffn + i] += call.w.gate_bias[i];
  }
}

void FfnRuntime::AddDownBias(const Call& call, float* y, int64_t n) const {
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t c = 0; c < config_.hidden; ++c) y[k * config_.hidden + c] += call.w.down_bias[c];
  }
}

FfnLayerStats FfnRuntime::CallStats(int64_t tokens, int64_t zeros, int64_t negatives,
                                    int64_t picked) const {
  FfnLayerStats s;
  s.tokens = tokens;
  s.neurons = tokens * config_.ffn;
  s.zero_neurons = zeros;
  s.negative_gates = negatives;
  s.picked_negatives = picked;
  s.flops_dense = 2 * Matrices() * static_cast<uint64_t>(config_.hidden) * config_.ffn * tokens;
  return s;
}

FfnLayerStats FfnRuntime::RowStats(const FfnSettings& settings, int64_t row,
                                   int64_t rows) const {
  const int64_t zeros = std::accumulate(row_zeros_.begin() + row, row_zeros_.begin() + row + rows,
                                        int64_t{0});
  FfnLayerStats s = CallStats(rows, zeros, 0, 0);
  // As the batched paths count it: the gate for every token, then up and down for the sparse
  // path's active neurons, or every neuron for the dense path.
  const uint64_t hf = static_cast<uint64_t>(config_.hidden) * config_.ffn;
  const auto active = static_cast<uint64_t>(rows * config_.ffn - zeros);
  s.flops_done = settings.sparse_decode
                     ? 2 * hf * rows + 2 * (Matrices() - 1) * config_.hidden * active
                     : s.flops_dense;
  return s;
}

void FfnRuntime::ActivateBlock(const Call& call, float* g, int64_t k0, int64_t k1, int64_t i0,
                               int64_t i1, BatchCounts& counts) {
  const int64_t ffn = config_.ffn;
  const bool stochastic = call.settings.act == FfnActivation::kStochastic;
  int64_t neg = 0, pick = 0;
  for (int64_t k = k0; k < k1; ++k) {
    int64_t zeros = 0;
    for (int64_t i = i0; i < i1; ++i) {
      float& gi = g[k * ffn + i];
      const float a = ActivateNeuron(call.settings, gi, call.position + k, call.layer, i);
      zeros += a == 0.0f;
      if (stochastic && gi < 0.0f) {
        ++neg;
        pick += a != 0.0f;
      }
      gi = a;
    }
    std::atomic_ref<int64_t>(row_zeros_[k]).fetch_add(zeros, std::memory_order_relaxed);
  }
  counts.negatives.fetch_add(neg, std::memory_order_relaxed);
  counts.picked.fetch_add(pick, std::memory_order_relaxed);
}

int64_t FfnRuntime::BatchZeros(int64_t n) const {
  return std::accumulate(row_zeros_.begin(), row_zeros_.begin() + n, int64_t{0});
}

FfnLayerStats FfnRuntime::BatchedDense(const Call& call, const float* x, int64_t n, float* y) {
  const int64_t ffn = config_.ffn;
  float* g = batch_gate_.data();
  float* u = batch_up_.data();
  matmul_.Linear(call.w.gate, x, n, g);
  AddGateBias(call, g, n);
  if (call.gated) matmul_.Linear(call.w.up, x, n, u);
  BatchCounts counts;
  std::fill(row_zeros_.begin(), row_zeros_.begin() + n, 0);
  // act(gate) ⊙ up in one phase, each chunk on its own tokens.
  matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
    const auto [k0, k1] = ThreadSlice(n, static_cast<int>(chunk), threads_);
    ActivateBlock(call, g, k0, k1, 0, ffn, counts);
    // Ungated: act(fc1 x + b1) already is the coefficient of each fc2 row.
    if (call.gated && call.settings.relu_up) {
      for (int64_t i = k0 * ffn; i < k1 * ffn; ++i) g[i] *= std::max(u[i], 0.0f);
    } else if (call.gated) {
      for (int64_t i = k0 * ffn; i < k1 * ffn; ++i) g[i] *= u[i];
    }
  });
  matmul_.LinearTransposed(call.w.down_t, g, n, y);
  if (call.w.down_bias != nullptr) AddDownBias(call, y, n);

  FfnLayerStats batch = CallStats(n, BatchZeros(n), counts.negatives, counts.picked);
  batch.flops_done = batch.flops_dense;
  // The batch reads each weight once for all n tokens.
  batch.weight_bytes_read = ffn * (call.gate_row + call.up_row + call.down_row);
  batch.pass_rows = batch.pass_rows_read = ffn;
  return batch;
}

FfnLayerStats FfnRuntime::BatchedSparse(const Call& call, const float* x, int64_t n, float* y) {
  const int64_t hidden = config_.hidden, ffn = config_.ffn;
  const DType down_dtype = call.w.down_t.dtype;
  const WeightOps& down_ops = kernels_.ops(down_dtype);
  const WeightOps& up_ops = kernels_.ops(call.w.up.dtype);  // ungated: unused
  float* h = batch_gate_.data();  // [n, ffn]: gate, then act(gate), then act(gate) * up
  matmul_.Linear(call.w.gate, x, n, h);
  AddGateBias(call, h, n);
  BatchCounts counts;
  std::fill(row_zeros_.begin(), row_zeros_.begin() + n, 0);
  const auto* up = static_cast<const uint8_t*>(call.w.up.data);
  const auto* down = static_cast<const uint8_t*>(call.w.down_t.data);
  std::atomic<int64_t> rows_read = 0;  // neurons active for at least one token: up and down rows
  // The neurons of [i0, i0 + kBatchNeurons) active for token k (rows relative to i0) and their
  // coefficients, into rows and coef; returns how many.
  auto active_of = [&](int64_t i0, int64_t k, int32_t* rows, float* coef) {
    const float* hk = h + k * ffn + i0;
    int64_t count = 0;
    for (int64_t i = 0; i < std::min(kBatchNeurons, ffn - i0); ++i) {
      if (hk[i] != 0.0f) {
        rows[count] = static_cast<int32_t>(i);
        coef[count++] = hk[i];
      }
    }
    return count;
  };
  // Two phases, each chunk running a whole phase of the layer on its own share without waiting.
  // Activate and up, over a slice of the neurons a block at a time (the block's rows stay in L2
  // across the tokens): one dot_rows call per token over the block's rows active for it.
  matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
    int32_t rows[kBatchNeurons];
    float coef[kBatchNeurons];
    const auto [r0, r1] = ThreadSlice(ffn, static_cast<int>(chunk), threads_, kBatchNeurons);
    ActivateBlock(call, h, 0, n, r0, r1, counts);
    int64_t read_here = 0;
    for (int64_t i0 = r0; i0 < r1; i0 += kBatchNeurons) {
      const WeightRows block{up + i0 * call.up_row, hidden};
      std::array<bool, kBatchNeurons> read{};
      for (int64_t k = 0; k < n; ++k) {
        const int64_t count = active_of(i0, k, rows, coef);
        if (count == 0) continue;
        if (!call.gated) {  // no up: act(gate) is the coefficient
          for (int64_t j = 0; j < count; ++j) read[rows[j]] = true;
          continue;
        }
        float u[kBatchNeurons];
        up_ops.dot_rows(block, rows, count, hidden, x + k * hidden, u);
        // dReLU: a zero product here drops the neuron from this token's down projection.
        if (call.settings.relu_up) {
          for (int64_t j = 0; j < count; ++j) u[j] = std::max(u[j], 0.0f);
        }
        for (int64_t j = 0; j < count; ++j) {
          h[k * ffn + i0 + rows[j]] *= u[j];
          read[rows[j]] = true;
        }
      }
      read_here += std::count(read.begin(), read.end(), true);
    }
    rows_read += read_here;
  });
  // Down: a slice of the columns of every token's output, the neurons in order, a block at a
  // time (one axpy_rows call per token over the block's active rows, sharing each load of y).
  matmul_.pool().Run(threads_, [&](int64_t chunk, int) {
    int32_t rows[kBatchNeurons];
    float coef[kBatchNeurons];
    const auto align = static_cast<int64_t>(std::max<uint64_t>(16, DTypeBlockElements(down_dtype)));
    const auto [c0, c1] = ThreadSlice(hidden, static_cast<int>(chunk), threads_, align);
    for (int64_t k = 0; k < n; ++k) std::fill(y + k * hidden + c0, y + k * hidden + c1, 0.0f);
    if (c1 > c0) {
      for (int64_t i0 = 0; i0 < ffn; i0 += kBatchNeurons) {
        const WeightRows block{down + i0 * call.down_row + DTypeBytes(down_dtype, c0), hidden};
        for (int64_t k = 0; k < n; ++k) {
          const int64_t count = active_of(i0, k, rows, coef);
          if (count > 0) {
            down_ops.axpy_rows(block, rows, coef, count, c1 - c0, y + k * hidden + c0);
          }
        }
      }
    }
  });

  if (call.w.down_bias != nullptr) AddDownBias(call, y, n);

  const int64_t zeros = BatchZeros(n);
  FfnLayerStats batch = CallStats(n, zeros, counts.negatives, counts.picked);
  const uint64_t hf = static_cast<uint64_t>(hidden) * ffn;
  const uint64_t active = static_cast<uint64_t>(n * ffn - zeros);
  batch.flops_done = 2 * hf * n + 2 * (Matrices() - 1) * static_cast<uint64_t>(hidden) * active;
  // Up and down of each neuron read, or fc2 alone (up_row 0).
  batch.weight_bytes_read = ffn * call.gate_row + rows_read * (call.up_row + call.down_row);
  batch.pass_rows = ffn;
  batch.pass_rows_read = rows_read;
  return batch;
}

}  // namespace zeroskip
