#include "model/worker_pool.h"

#include <chrono>

namespace zeroskip {
namespace {

// How long a waiting thread polls before it sleeps: longer than the gap between two phases of a
// decoded token (so a quiet machine never pays a wake-up there), far shorter than a scheduler
// slice (so on a busy machine a waiter gives its core away almost at once).
constexpr auto kSpin = std::chrono::microseconds(50);

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `ready` for up to kSpin; false if it never became true.
template <typename Ready>
bool SpinUntil(Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (ready()) return true;
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

constexpr uint64_t kNextMask = 0xffffffffu;

}  // namespace

WorkerPool::WorkerPool(int threads) : threads_(threads < 1 ? 1 : threads) {
  workers_.reserve(static_cast<size_t>(threads_ - 1));
  for (int slot = 1; slot < threads_; ++slot) {
    workers_.emplace_back([this, slot] { WorkerLoop(slot); });
  }
}

WorkerPool::~WorkerPool() {
  stop_.store(true);
  phase_.fetch_add(1);
  phase_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void WorkerPool::RunClaimable(int slot) {
  uint64_t word = claim_.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t next = word & kNextMask, chunks = word >> 32;
    if (next >= chunks) return;
    if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;
    }
    call_(fn_, static_cast<int64_t>(next), slot);
    if (done_.fetch_add(1) + 1 == chunks && caller_asleep_.load()) done_.notify_one();
    word = claim_.load(std::memory_order_acquire);
  }
}

void WorkerPool::RunErased(int64_t chunks, ChunkFn call, void* fn) {
  if (chunks <= 0) return;
  if (threads_ == 1 || chunks == 1) {
    for (int64_t c = 0; c < chunks; ++c) call(fn, c, 0);
    return;
  }
  call_ = call;
  fn_ = fn;
  park_.store(false, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  claim_.store(static_cast<uint64_t>(chunks) << 32, std::memory_order_release);
  phase_.fetch_add(1);
  if (sleepers_.load() > 0) phase_.notify_all();
  RunClaimable(0);
  const auto total = static_cast<uint32_t>(chunks);
  if (SpinUntil([&] { return done_.load(std::memory_order_acquire) == total; })) return;
  // A worker holds a chunk but is not running: sleep so that it can have this core.
  caller_asleep_.store(true);
  for (uint32_t d; (d = done_.load()) != total;) done_.wait(d);
  caller_asleep_.store(false, std::memory_order_relaxed);
}

void WorkerPool::WorkerLoop(int slot) {
  uint32_t seen = phase_.load();
  while (!stop_.load(std::memory_order_relaxed)) {
    RunClaimable(slot);
    SpinUntil([&] {
      return phase_.load(std::memory_order_acquire) != seen ||
             park_.load(std::memory_order_relaxed);
    });
    if (phase_.load(std::memory_order_acquire) == seen) {
      sleepers_.fetch_add(1);
      while (phase_.load() == seen) phase_.wait(seen);
      sleepers_.fetch_sub(1);
    }
    seen = phase_.load();
  }
}

}  // namespace zeroskip
