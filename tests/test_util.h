// Shared helpers for the tests: where the generated checkpoints are, converting them once per
// process, temporary directories and running the CLI binary.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/kernels.h"
#include "zeroskip/model.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {
// GoogleTest prints an Isa parameter by name (found by argument-dependent lookup).
inline void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }
}  // namespace zeroskip

namespace zeroskip::testing {

// Every ISA compiled in (kernels' AllIsas), and all of them but the scalar reference: the
// parameters of the per-ISA tests, one instance each whether or not this CPU has it, so a missing
// one shows up as skipped (with the reason) instead of passing without checking anything.
std::vector<Isa> AllIsaValues();
std::vector<Isa> SimdIsas();

std::string SourceDir();    // repository root
std::string TestDataDir();  // generated HF checkpoints (ctest fixture)
std::string CliBinary();

// A fresh directory removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The .zsk of checkpoint `name` (converted on first use, cached for the process): a generated
// test checkpoint, or a repository path such as "models/relu-ft" when the name has a '/';
// "<checkpoint>@<dtype>" converts it with --dtype (e.g. "models/relu-ft@q8"); a name ending in
// kShadowSuffix also with --shadow (e.g. "models/relu-ft@q8+shadow").
inline constexpr std::string_view kShadowSuffix = "+shadow";
const std::string& ConvertedModel(const std::string& name);
const Model& LoadedModel(const std::string& name);

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the zeroskip binary with `args` (no shell involved).
CliResult RunCli(const std::vector<std::string>& args);
// Token ids as the CLI's --tokens takes them: "1,5,9".
std::string JoinIds(const std::vector<int>& ids);

// IEEE binary16 and bfloat16 bit patterns to float, built from sign, exponent and mantissa with
// std::ldexp: an independent oracle for the engine's widening (which goes through Eigen or SIMD).
float HalfBitsToFloat(uint16_t bits);
float Bf16BitsToFloat(uint16_t bits);
// v rounded to the nearest binary16 / bfloat16 value (ties to even; beyond the largest finite
// value's rounding range: infinity), computed on the quantum of v's binade in double.
float RoundToHalf(float v);
float RoundToBf16(float v);

// max |got - want| / max |want| over a row of logits against a float64 reference row (a JSON
// array of the same length; infinity when the lengths differ).
double MaxRelativeError(std::span<const float> got, const nlohmann::json& want);

// Logits against a float64 reference row: MaxRelativeError within `tolerance` (the f32 engine's
// error is ~1e-5 of the largest logit; a wrong row or position is O(1)).
void ExpectNearReference(std::span<const float> got, const nlohmann::json& want,
                         const std::string& where, double tolerance = 1e-4);

// A test run once per ISA (its parameter), whether or not this CPU has it: a missing one shows up
// as skipped, with the reason, instead of passing without checking anything.
class IsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override;
  const KernelTable& kernels() const { return *KernelsFor(GetParam()); }
};

// A one-layer Llama config small enough to write by hand (vocab: the test tokenizer's pieces).
ModelConfig TinyConfig();

std::string ReadFile(const std::string& path);
// What the zeroskip::Error `fn` throws says, or "(accepted)" when it throws nothing.
std::string ErrorText(const std::function<void()>& fn);
void WriteFile(const std::string& path, const std::string& bytes);
std::vector<std::string> Lines(const std::string& text);
// The "VmFlags:" line of this process's mapping that holds `p` (/proc/self/smaps), "" if none.
std::string VmFlagsOf(const void* p);
// How many of the pages of [p, p + bytes) are in memory (mincore); p page-aligned.
uint64_t ResidentPagesOf(const void* p, size_t bytes);

// The text of `ids` streamed piece by piece through a Utf8Stream, as generation prints it; fails
// the test where the stream releases anything but valid UTF-8.
std::string StreamedText(const Tokenizer& tok, const std::vector<int>& ids);

}  // namespace zeroskip::testing
