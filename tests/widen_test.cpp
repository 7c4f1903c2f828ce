// f16 and bf16 conversions against an independent oracle (tests/test_util.cpp builds each value
// from sign, exponent and mantissa with std::ldexp, and rounds on the binade's quantum): every one
// of the 65536 bit patterns, subnormals, infinities and NaN included, through the converter's
// ConvertMatrix and through every ISA's kernels; and which long batches widen at all.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>

#include "format/dtype.h"
#include "kernels/kernels.h"
#include "model/matmul.h"
#include "test_util.h"

namespace zeroskip {
namespace {

using testing::Bf16BitsToFloat;
using testing::HalfBitsToFloat;

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Exact: same bits, except that any NaN matches any NaN of the same sign.
::testing::AssertionResult SameFloat(float got, float want) {
  if (std::isnan(want) ? std::isnan(got) && std::signbit(got) == std::signbit(want)
                       : Bits(got) == Bits(want)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << got << " (0x" << std::hex << Bits(got)
                                       << "), want " << want << " (0x" << Bits(want) << ")";
}

std::vector<uint16_t> AllPatterns() {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  return all;
}

TEST(Oracle, KnownValues) {
  EXPECT_EQ(HalfBitsToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfBitsToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfBitsToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfBitsToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfBitsToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(HalfBitsToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(HalfBitsToFloat(0x8000)));
  EXPECT_EQ(Bf16BitsToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16BitsToFloat(0x4049), 3.140625f);
  EXPECT_EQ(Bf16BitsToFloat(0x0001), std::ldexp(1.0f, -133));
  EXPECT_EQ(Bf16BitsToFloat(0xff80), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(testing::RoundToHalf(65519.0f), 65504.0f);
  EXPECT_EQ(testing::RoundToHalf(65520.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(testing::RoundToHalf(1.0f + std::ldexp(1.0f, -11)), 1.0f);  // tie: to even
  EXPECT_EQ(testing::RoundToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(testing::RoundToBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(testing::RoundToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
}

TEST(Widen, ConvertMatrixWidensEveryHalfAndBf16Pattern) {
  const auto patterns = AllPatterns();
  for (DType type : {DType::kF16, DType::kBF16}) {
    std::vector<float> out(patterns.size());
    ConvertMatrix(reinterpret_cast<const uint8_t*>(patterns.data()), type, 1, patterns.size(),
                  false, reinterpret_cast<uint8_t*>(out.data()), DType::kF32);
    for (size_t i = 0; i < patterns.size(); ++i) {
      const float want =
          type == DType::kF16 ? HalfBitsToFloat(patterns[i]) : Bf16BitsToFloat(patterns[i]);
      ASSERT_TRUE(SameFloat(out[i], want)) << DTypeName(type) << " pattern 0x" << std::hex << i;
    }
  }
}

TEST(Widen, ConvertMatrixTransposesWhileWidening) {
  const uint64_t rows = 67, cols = 9;  // not multiples of the 64-element blocks
  std::mt19937 rng(3);
  std::vector<uint16_t> src(rows * cols);
  for (auto& v : src) v = static_cast<uint16_t>(rng());
  for (DType type : {DType::kF16, DType::kBF16}) {
    std::vector<float> out(rows * cols);
    ConvertMatrix(reinterpret_cast<const uint8_t*>(src.data()), type, rows, cols, true,
                  reinterpret_cast<uint8_t*>(out.data()), DType::kF32);
    for (uint64_t r = 0; r < rows; ++r) {
      for (uint64_t c = 0; c < cols; ++c) {
        const uint16_t bits = src[r * cols + c];
        const float want = type == DType::kF16 ? HalfBitsToFloat(bits) : Bf16BitsToFloat(bits);
        ASSERT_TRUE(SameFloat(out[c * rows + r], want)) << r << ", " << c;
      }
    }
  }
}

// f32 values around every interesting boundary: ties, the subnormal ranges, overflow.
std::vector<float> NarrowingProbes() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.5f,
                          65504.0f,
                          65519.99f,
                          65520.0f,
                          -70000.0f,
                          3.0e38f,
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::denorm_min(),
                          1e-30f};
  for (int e = -30; e <= 20; ++e) {
    for (double m : {1.0, 1.0 + 1.0 / 2048, 1.0 + 3.0 / 2048, 1.0 + 1.0 / 256, 1.0 + 3.0 / 256,
                     1.999, 1.5 + 1.0 / 4096}) {
      v.push_back(static_cast<float>(std::ldexp(m, e)));
      v.push_back(static_cast<float>(-std::ldexp(m, e)));
    }
  }
  std::mt19937 rng(4);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 20000; ++i) {
    float f;
    const uint32_t u = bits(rng);
    std::memcpy(&f, &u, 4);
    if (!std::isnan(f)) v.push_back(f);
  }
  return v;
}

TEST(Narrow, ConvertMatrixRoundsToNearestEvenAndCountsOverflows) {
  const auto probes = NarrowingProbes();
  for (DType type : {DType::kF16, DType::kBF16}) {
    std::vector<uint16_t> out(probes.size());
    const uint64_t overflows =
        ConvertMatrix(reinterpret_cast<const uint8_t*>(probes.data()), DType::kF32, 1,
                      probes.size(), false, reinterpret_cast<uint8_t*>(out.data()), type);
    uint64_t want_overflows = 0;
    for (size_t i = 0; i < probes.size(); ++i) {
      const float want =
          type == DType::kF16 ? testing::RoundToHalf(probes[i]) : testing::RoundToBf16(probes[i]);
      want_overflows += std::isfinite(probes[i]) && std::isinf(want);
      const float got = type == DType::kF16 ? HalfBitsToFloat(out[i]) : Bf16BitsToFloat(out[i]);
      ASSERT_TRUE(SameFloat(got, want)) << DTypeName(type) << " of " << probes[i];
    }
    EXPECT_EQ(overflows, want_overflows) << DTypeName(type);
    EXPECT_GE(want_overflows, 1u);  // the probes do reach the overflow range
  }
}

// The kernels widen in registers (bf16: shift; f16: F16C / AVX-512 conversion). A 1-column
// dot product with x = 1 returns the widened weight itself (plus zeros: -0 comes back as +0).
// A table with bf16_products multiplies bf16 by bf16 in vdpbf16ps, which reads subnormals as zero:
// there the 254 subnormal bf16 patterns come back as +0, every other pattern exactly.
class WidenIsaTest : public testing::IsaTest {};

TEST_P(WidenIsaTest, DotRowsWidensEveryHalfAndBf16Pattern) {
  const KernelTable& k = kernels();
  const auto patterns = AllPatterns();
  const float one = 1.0f;
  for (DType type : {DType::kF16, DType::kBF16}) {
    std::vector<float> out(patterns.size());
    k.ops(type).dot_rows({patterns.data(), 1}, nullptr, static_cast<int64_t>(patterns.size()), 1,
                         &one, out.data());
    for (size_t i = 0; i < patterns.size(); ++i) {
      float want =
          type == DType::kF16 ? HalfBitsToFloat(patterns[i]) : Bf16BitsToFloat(patterns[i]);
      if (type == DType::kBF16 && k.bf16_products && std::fpclassify(want) == FP_SUBNORMAL) {
        want = 0.0f;
      }
      if (want == 0.0f) want = 0.0f;  // the accumulator starts at +0
      ASSERT_TRUE(SameFloat(out[i], want))
          << IsaName(GetParam()) << " " << DTypeName(type) << " pattern 0x" << std::hex << i;
    }
  }
}

// Long batches widen bf16 weights to f32 for oneDNN, except under a table with bf16_products
// where oneDNN's bf16 matmul is native (not a reference loop): then they stay bf16. f32 never
// widens, f16 always does.
TEST_P(WidenIsaTest, LongBf16BatchesSkipWideningOnlyUnderBf16Products) {
  const KernelTable& k = kernels();
  const std::string& impl = DenseMatmul::OneDnnBf16Impl();
  EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
  EXPECT_FALSE(DenseMatmul::Bf16Batches(k, DType::kF32));
  EXPECT_FALSE(DenseMatmul::Bf16Batches(k, DType::kF16));
  EXPECT_EQ(DenseMatmul::Bf16Batches(k, DType::kBF16), k.bf16_products && !impl.empty());
  if (k.bf16_products) {
    std::cout << "oneDNN bf16 matmul: " << (impl.empty() ? "none (bf16 batches widen)" : impl)
              << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, WidenIsaTest, ::testing::ValuesIn(testing::AllIsaValues()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

}  // namespace
}  // namespace zeroskip
