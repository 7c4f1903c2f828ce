// The decode loop allocates nothing: a Session sizes every buffer once, and so does the Sampler.
// Counted with a replacement global operator new (this test binary only).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>

#include "kernels/kernels.h"
#include "test_util.h"
#include "zeroskip/sampler.h"
#include "zeroskip/session.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// GCC 12 cannot see that the operator new above allocates with malloc.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace zeroskip {
namespace {

TEST(Allocation, CounterSeesAllocations) {
  g_allocations = 0;
  g_counting = true;
  auto probe = std::make_unique<std::vector<int>>(10);
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 2);  // the vector object and its buffer
}

TEST(Allocation, DecodeStepsAndSamplingAllocateNothing) {
  for (const char* name : {"llama_gqa_hd64_relu_f32", "llama_mha_hd64_relu_bf16",
                           "llama_gqa_hd64_relu_f32@q8", "llama_gqa_hd64_relu_f32@q4",
                           "llama_gqa_hd64_relu_f32+shadow", "llama_mha_hd64_relu_bf16+shadow"}) {
    // Every ISA this CPU runs, the scalar reference included (--isa scalar decodes with it).
    for (Isa isa : testing::AllIsaValues()) {
      if (KernelsFor(isa) == nullptr) continue;
      for (FfnMode ffn : {FfnMode::kSparse, FfnMode::kDense}) {
        const Model& m = testing::LoadedModel(name);
        SessionOptions o;
        o.ffn = ffn;
        Engine engine(m, {.threads = 2, .isa = std::string(IsaName(isa))});
        Session session(engine, o);
        SamplerOptions so;
        so.temperature = 0.8f;
        so.repeat_penalty = 1.1f;
        Sampler sampler(so, m.config().vocab);
        std::vector<int> history = {1, 281, 342};
        history.reserve(64);
        auto logits = session.Forward(history);
        std::vector<float> scratch(logits.begin(), logits.end());
        session.Forward({&history[0], 1});  // first single-token call: lazy runtime set-up is fine
        g_allocations = 0;
        g_counting = true;
        for (int i = 0; i < 16; ++i) {
          const int id = sampler.Sample(scratch.data(), history);
          history.push_back(id);
          logits = session.Forward({&id, 1});
          std::copy(logits.begin(), logits.end(), scratch.begin());
        }
        g_counting = false;
        EXPECT_EQ(g_allocations.load(), 0)
            << name << " " << IsaName(isa) << " " << FfnModeName(ffn);
      }
    }
  }
}

}  // namespace
}  // namespace zeroskip
