// A fixed team of threads that runs a parallel phase as numbered chunks, each claimed by
// whichever thread gets to it first. Unlike an OpenMP team, a phase ends when its chunks are
// done, not when every thread has arrived: a thread the OS has descheduled (another process
// holds its core) simply misses the phase and the caller runs its chunks, so a shared machine
// costs the work, not a wait for a thread that is not running (issue 29). Idle threads spin
// briefly (during decode the next phase follows within microseconds) and then sleep, so they do
// not burn a slice that someone else needs.
//
// Which thread runs a chunk never changes a result: a chunk owns its outputs, and the `slot`
// passed with it only names per-thread scratch. Chunk functions must not throw. Not reentrant:
// one caller at a time (the Engine's lock), and no Run from inside a chunk.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace zeroskip {

class WorkerPool {
 public:
  // threads - 1 workers; the caller of Run is the last thread (slot 0).
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return threads_; }

  // Idle workers stop spinning and sleep until the next phase: for work that other threads do
  // (oneDNN's OpenMP team), whose cores spinning workers would otherwise take.
  void Park() { park_.store(true, std::memory_order_relaxed); }

  // fn(int64_t chunk, int slot) for every chunk in [0, chunks), slot in [0, threads()).
  template <typename Fn>
  void Run(int64_t chunks, Fn&& fn) {
    RunErased(
        chunks, [](void* f, int64_t chunk, int slot) { (*static_cast<Fn*>(f))(chunk, slot); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using ChunkFn = void (*)(void* fn, int64_t chunk, int slot);

  void RunErased(int64_t chunks, ChunkFn call, void* fn);
  // Claims and runs chunks of the current phase until none is left.
  void RunClaimable(int slot);
  void WorkerLoop(int slot);

  int threads_;
  // The current phase: [chunks : 32 | next unclaimed chunk : 32], one word so that a claim is a
  // single compare-and-swap that also proves the phase is still open.
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint32_t> done_{0};           // chunks of the current phase finished
  std::atomic<uint32_t> phase_{0};          // bumped per phase: what idle workers wait on
  std::atomic<uint32_t> sleepers_{0};       // workers asleep on phase_ (the caller wakes them)
  std::atomic<bool> caller_asleep_{false};  // the caller sleeps on done_ (the last chunk wakes it)
  std::atomic<bool> park_{false};
  std::atomic<bool> stop_{false};
  // Written by the caller before it opens a phase; read by a thread only after it has claimed a
  // chunk, which keeps the phase from ending (and these from changing) until that chunk is done.
  ChunkFn call_ = nullptr;
  void* fn_ = nullptr;
  std::vector<std::thread> workers_;
};

}  // namespace zeroskip
