// WorkerPool: every chunk of every phase runs exactly once, on a slot below threads(), and a
// phase returns only when all its chunks are done, however many threads take part.
#include "model/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace zeroskip {
namespace {

TEST(WorkerPoolTest, RunsEveryChunkOnceOnAValidSlot) {
  for (int threads : {1, 2, 3, 8}) {
    WorkerPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    // Many short phases in a row (as decode runs them), then a few with idle gaps, so workers
    // are caught both spinning and asleep.
    for (int phase = 0; phase < 2000; ++phase) {
      const int64_t chunks = phase % 7;  // none, one (runs inline), fewer and more than threads
      std::vector<std::atomic<int>> runs(static_cast<size_t>(chunks));
      std::atomic<int> bad_slots = 0;
      pool.Run(chunks, [&](int64_t chunk, int slot) {
        runs[static_cast<size_t>(chunk)].fetch_add(1);
        if (slot < 0 || slot >= threads) bad_slots.fetch_add(1);
      });
      for (int64_t c = 0; c < chunks; ++c) {
        ASSERT_EQ(runs[static_cast<size_t>(c)].load(), 1) << threads << " threads, chunk " << c;
      }
      ASSERT_EQ(bad_slots.load(), 0);
      if (phase % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

TEST(WorkerPoolTest, SlotsAreExclusiveWithinAPhase) {
  // Per-slot scratch is only safe if no two chunks run on one slot at the same time.
  WorkerPool pool(4);
  std::vector<std::atomic<int>> busy(4);
  std::atomic<int> overlaps = 0;
  for (int phase = 0; phase < 200; ++phase) {
    pool.Run(64, [&](int64_t, int slot) {
      if (busy[static_cast<size_t>(slot)].fetch_add(1) != 0) overlaps.fetch_add(1);
      volatile int spin = 0;
      for (int i = 0; i < 200; ++i) spin = spin + i;
      busy[static_cast<size_t>(slot)].fetch_sub(1);
    });
  }
  EXPECT_EQ(overlaps.load(), 0);
}

}  // namespace
}  // namespace zeroskip
