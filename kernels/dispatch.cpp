#include <atomic>
#include <xsimd/xsimd.hpp>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

bool Supported(Isa isa) {
  // xsimd reads CPUID and XCR0, so an OS that does not save AVX-512 state reports it missing;
  // xsimd 8 has no flags for VL and F16C, which GCC's CPUID probe supplies.
  const auto arch = xsimd::available_architectures();
  const bool avx2 = arch.avx2 && arch.fma3_avx2 && __builtin_cpu_supports("f16c");
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return avx2;
    case Isa::kAvx512:
      return avx2 && arch.avx512f && arch.avx512bw && arch.avx512dq &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
}

const KernelTable& TableFor(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return Avx512Kernels();
    case Isa::kAvx2:
      return Avx2Kernels();
    case Isa::kScalar:
      break;
  }
  return ScalarKernels();
}

std::atomic<const KernelTable*> g_current{nullptr};

}  // namespace

Isa BestIsa() {
  if (Supported(Isa::kAvx512)) return Isa::kAvx512;
  if (Supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

const KernelTable& Kernels() {
  const KernelTable* t = g_current.load(std::memory_order_acquire);
  if (t == nullptr) {
    t = &TableFor(BestIsa());
    g_current.store(t, std::memory_order_release);
  }
  return *t;
}

const KernelTable* KernelsFor(Isa isa) { return Supported(isa) ? &TableFor(isa) : nullptr; }

bool SelectIsa(Isa isa) {
  if (!Supported(isa)) return false;
  g_current.store(&TableFor(isa), std::memory_order_release);
  return true;
}

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool ParseIsaName(std::string_view name, Isa* out) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (name == IsaName(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace zeroskip
