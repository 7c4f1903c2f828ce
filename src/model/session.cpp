#include "zeroskip/session.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <set>
#include <thread>

#include "format/file_io.h"
#include "model/matmul.h"
#include "zeroskip/error.h"

namespace zeroskip {

int PhysicalCores() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, physical = "0";
  while (std::getline(cpuinfo, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (line.rfind("physical id", 0) == 0) physical = value;
    if (line.rfind("core id", 0) == 0) cores.emplace(physical, value);
  }
  int n = cores.empty() ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                        : static_cast<int>(cores.size());
  // Never more than the CPUs this process may run on (taskset, containers).
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) n = std::min(n, CPU_COUNT(&allowed));
  return std::max(1, n);
}

uint64_t PhysicalMemoryBytes() {
  return static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
         static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

namespace {

// What can be allocated without swapping or the OOM killer: MemAvailable, else all of RAM.
uint64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) return std::stoull(line.substr(13)) * 1024;  // kB
  }
  return PhysicalMemoryBytes();
}

}  // namespace

Session::Session(const Model& model, const SessionOptions& options)
    : model_(model), config_(model.config()) {
  threads_ = options.threads > 0 ? options.threads : PhysicalCores();
  if (options.context > config_.context) {
    throw Error("", "--ctx " + std::to_string(options.context) +
                        " exceeds the model's context length " + std::to_string(config_.context));
  }
  context_ = options.context > 0 ? options.context : config_.context;
  max_batch_ = std::max<int64_t>(1, std::min(options.max_batch, context_));
  omp_set_num_threads(threads_);  // oneDNN's OpenMP runtime follows this

  // Everything below is sized from the (untrusted) file: add it up with overflow checks and
  // refuse what this machine cannot hold, instead of dying in the allocator.
  const std::string& path = model.file().path();
  auto mul = [&](uint64_t a, uint64_t b) { return CheckedMul(a, b, path, "session size"); };
  const uint64_t floats =
      mul(mul(2 * static_cast<uint64_t>(config_.layers), context_), config_.kv_dim()) +
      mul(max_batch_, config_.vocab + 2 * config_.ffn + 4 * config_.hidden + 2 * config_.q_dim()) +
      mul(context_, config_.head_dim + threads_);
  const uint64_t buffer_bytes = mul(floats, sizeof(float));
  const auto too_big = [&] {
    return Error(path, "a context of " + std::to_string(context_) + " tokens needs " +
                           std::to_string((buffer_bytes + (1u << 20) - 1) >> 20) +
                           " MiB of buffers, more than this machine has free (use a smaller "
                           "context)");
  };
  if (buffer_bytes > AvailableMemoryBytes()) throw too_big();
  try {
    Allocate(model, options);
  } catch (const std::bad_alloc&) {
    throw too_big();  // the estimate above missed: still name the file and the cause
  }
}

void Session::Allocate(const Model& model, const SessionOptions& options) {
  matmul_ = std::make_unique<DenseMatmul>(threads_);
  ffn_ = std::make_unique<FfnRuntime>(config_, options.ffn, threads_, max_batch_, matmul_.get(),
                                      options.activation);

  const auto h = static_cast<size_t>(config_.hidden), q = static_cast<size_t>(config_.q_dim()),
             kv = static_cast<size_t>(config_.kv_dim()), b = static_cast<size_t>(max_batch_),
             ctx = static_cast<size_t>(context_);
  x_.resize(b * h);
  xn_.resize(b * h);
  q_.resize(b * q);
  k_.resize(b * kv);
  v_.resize(b * kv);
  att_.resize(b * q);
  proj_.resize(b * h);
  scores_.resize(static_cast<size_t>(threads_) * ctx);
  k_cache_.resize(static_cast<size_t>(config_.layers) * ctx * kv);
  v_cache_.resize(static_cast<size_t>(config_.layers) * ctx * kv);
  logits_.resize(b * static_cast<size_t>(config_.vocab));

  // Rotary tables in the Hugging Face convention: angle(p, i) = p * theta^(-2i / head_dim).
  const int64_t half = config_.head_dim / 2;
  rope_cos_.resize(ctx * half);
  rope_sin_.resize(ctx * half);
  for (int64_t i = 0; i < half; ++i) {
    const double inv_freq = std::pow(double(config_.rope_theta), -2.0 * i / config_.head_dim);
    for (int64_t p = 0; p < context_; ++p) {
      rope_cos_[p * half + i] = static_cast<float>(std::cos(p * inv_freq));
      rope_sin_[p * half + i] = static_cast<float>(std::sin(p * inv_freq));
    }
  }

  // Batched products widen bf16/f16 matrices into one reusable buffer: size it now.
  uint64_t widen = 0;
  auto need = [&](const WeightView& w) {
    if (w.dtype != DType::kF32) widen = std::max<uint64_t>(widen, w.rows * w.cols);
  };
  need(model.lm_head());
  for (int64_t l = 0; l < config_.layers; ++l) {
    const LayerWeights& w = model.layer(l);
    for (const WeightView* v : {&w.q, &w.k, &w.v, &w.o, &w.ffn.gate, &w.ffn.up, &w.ffn.down_t}) need(*v);
  }
  if (max_batch_ > 1) matmul_->ReserveWiden(widen);
}

Session::~Session() = default;

void Session::Rewind(int64_t position) {
  if (position < 0 || position > position_) {
    throw Error(model_.file().path(), "cannot rewind to position " + std::to_string(position) +
                                          " from " + std::to_string(position_));
  }
  position_ = position;
}

std::span<const float> Session::Forward(std::span<const int> tokens, bool all_logits) {
  const auto n = static_cast<int64_t>(tokens.size());
  const std::string& path = model_.file().path();
  if (n == 0) throw Error(path, "no tokens to run");
  if (position_ + n > context_) {
    throw Error(path, std::to_string(position_ + n) + " tokens do not fit the context of " +
                          std::to_string(context_));
  }
  if (all_logits && n > max_batch_) throw Error(path, "too many tokens for one batch of logits");
  for (int id : tokens) {
    if (id < 0 || id >= config_.vocab) {
      throw Error(path, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(config_.vocab) + ")");
    }
  }
  for (int64_t done = 0; done < n;) {
    const int64_t m = std::min(max_batch_, n - done);
    const bool last = done + m == n;
    ForwardChunk(tokens.data() + done, m, last, all_logits, logits_.data());
    done += m;
  }
  const size_t vocab = static_cast<size_t>(config_.vocab);
  const std::span<const float> logits(logits_.data(),
                                      all_logits ? static_cast<size_t>(n) * vocab : vocab);
  // Weights are checksummed only by `verify` (opening reads just the header): a flipped bit in
  // the data shows up here, and garbage text or a NaN perplexity must not be the symptom.
  for (const float l : logits) {
    if (!std::isfinite(l)) {
      throw Error(path,
                  "the model computed a NaN or infinite logit; its weights may be damaged "
                  "(check them with: zeroskip verify " +
                      path + ")");
    }
  }
  return logits;
}

}  // namespace zeroskip
