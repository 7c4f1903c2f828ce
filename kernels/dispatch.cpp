#include <cpuid.h>

#include <cstdio>
#include <cstdlib>
#include <xsimd/xsimd.hpp>

#include "kernels/kernels.h"

namespace zeroskip {

// Defined in the per-ISA object libraries.
const KernelTable& Avx2Kernels();
const KernelTable& Avx512Kernels();
const KernelTable& Avx512VnniKernels();
const KernelTable& Avx512Bf16Kernels();

namespace {

// One CPUID feature bit (leaf, sub-leaf, register index 0..3 = eax..edx, bit).
bool CpuidBit(unsigned leaf, unsigned subleaf, int reg, int bit) {
  unsigned r[4] = {};
  if (!__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3])) return false;
  return (r[reg] >> bit) & 1u;
}

// xsimd reads CPUID and XCR0, so an OS that does not save AVX-512 state reports it missing;
// xsimd 8 has no flags for F16C (leaf 1 ecx bit 29), AVX512VL (leaf 7 ebx bit 31) and
// AVX512_BF16 (leaf 7 sub-leaf 1 eax bit 5; it uses the AVX-512 register state, which the
// AVX-512 check has already found the OS saving).
bool CpuHasAvx2() {
  const auto arch = xsimd::available_architectures();
  return arch.avx2 && arch.fma3_avx2 && CpuidBit(1, 0, 2, 29);
}

bool CpuHasAvx512() {
  const auto arch = xsimd::available_architectures();
  return CpuHasAvx2() && arch.avx512f && arch.avx512bw && arch.avx512dq && CpuidBit(7, 0, 1, 31);
}

// AVX512_VNNI: leaf 7 ecx bit 11 (its state is the AVX-512 state CpuHasAvx512 checked).
bool CpuHasAvx512Vnni() { return CpuHasAvx512() && CpuidBit(7, 0, 2, 11); }

// The avx512bf16 table builds on the avx512vnni one (every CPU with AVX512_BF16 so far has VNNI:
// Cooper Lake, Sapphire Rapids, Zen 4), so it asks for both.
bool CpuHasAvx512Bf16() {
  unsigned max_subleaf = 0, unused[3];
  if (!__get_cpuid_count(7, 0, &max_subleaf, &unused[0], &unused[1], &unused[2])) return false;
  return CpuHasAvx512Vnni() && max_subleaf >= 1 && CpuidBit(7, 1, 0, 5);
}

constexpr IsaInfo kIsas[] = {
    {Isa::kScalar, "scalar", ScalarKernels, [] { return true; }},
    {Isa::kAvx2, "avx2", Avx2Kernels, CpuHasAvx2},
    {Isa::kAvx512, "avx512", Avx512Kernels, CpuHasAvx512},
    {Isa::kAvx512Vnni, "avx512vnni", Avx512VnniKernels, CpuHasAvx512Vnni},
    {Isa::kAvx512Bf16, "avx512bf16", Avx512Bf16Kernels, CpuHasAvx512Bf16},
};

const IsaInfo* Find(Isa isa) {
  for (const IsaInfo& info : kIsas) {
    if (info.isa == isa) return &info;
  }
  return nullptr;
}

// ZEROSKIP_MAX_ISA=scalar|avx2|avx512 hides the better ISAs (those after it in kIsas) as if the CPU
// lacked them, so the fallbacks (and the tests' "skipped: this CPU cannot run ..." paths) can be
// exercised on any machine.
const IsaInfo* MaxIsa() {
  static const IsaInfo* const max = [] {
    const char* name = std::getenv("ZEROSKIP_MAX_ISA");
    Isa isa;
    return name != nullptr && ParseIsaName(name, &isa) ? Find(isa) : std::end(kIsas) - 1;
  }();
  return max;
}

bool Supported(const IsaInfo& info) { return &info <= MaxIsa() && info.cpu_supports(); }

}  // namespace

void NoKernelsFor(DType dtype) {
  std::fprintf(stderr, "zeroskip: internal error: no kernels for weight type %u\n",
               static_cast<unsigned>(dtype));
  std::abort();
}

std::span<const IsaInfo> AllIsas() { return kIsas; }

Isa BestIsa() {
  for (auto it = std::rbegin(kIsas); it != std::rend(kIsas); ++it) {
    if (Supported(*it)) return it->isa;
  }
  return Isa::kScalar;
}

const KernelTable* KernelsFor(Isa isa) {
  const IsaInfo* info = Find(isa);
  return info != nullptr && Supported(*info) ? &info->table() : nullptr;
}

std::string_view IsaName(Isa isa) {
  const IsaInfo* info = Find(isa);
  return info != nullptr ? info->name : "?";
}

bool ParseIsaName(std::string_view name, Isa* out) {
  for (const IsaInfo& info : kIsas) {
    if (name == info.name) {
      *out = info.isa;
      return true;
    }
  }
  return false;
}

}  // namespace zeroskip
