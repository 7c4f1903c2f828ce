#include <cpuid.h>

#include <cstdlib>
#include <xsimd/xsimd.hpp>

#include "kernels/kernels.h"

namespace zeroskip {
namespace {

// One CPUID feature bit (leaf, sub-leaf 0, register index 0..3 = eax..edx, bit).
bool CpuidBit(unsigned leaf, int reg, int bit) {
  unsigned r[4] = {};
  if (!__get_cpuid_count(leaf, 0, &r[0], &r[1], &r[2], &r[3])) return false;
  return (r[reg] >> bit) & 1u;
}

// ZEROSKIP_MAX_ISA=scalar|avx2 hides the better ISAs as if the CPU lacked them, so the fallbacks
// (and the tests' "skipped: this CPU cannot run ..." paths) can be exercised on any machine.
Isa MaxIsa() {
  static const Isa max = [] {
    const char* name = std::getenv("ZEROSKIP_MAX_ISA");
    Isa isa;
    return name != nullptr && ParseIsaName(name, &isa) ? isa : Isa::kAvx512;
  }();
  return max;
}

bool Supported(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(MaxIsa())) return false;
  // xsimd reads CPUID and XCR0, so an OS that does not save AVX-512 state reports it missing;
  // xsimd 8 has no flags for F16C (leaf 1 ecx bit 29) and AVX512VL (leaf 7 ebx bit 31).
  const auto arch = xsimd::available_architectures();
  const bool avx2 = arch.avx2 && arch.fma3_avx2 && CpuidBit(1, 2, 29);
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return avx2;
    case Isa::kAvx512:
      return avx2 && arch.avx512f && arch.avx512bw && arch.avx512dq && CpuidBit(7, 1, 31);
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

}  // namespace

Isa BestIsa() {
  if (Supported(Isa::kAvx512)) return Isa::kAvx512;
  if (Supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

const KernelTable* KernelsFor(Isa isa) { return Supported(isa) ? &TableFor(isa) : nullptr; }

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
