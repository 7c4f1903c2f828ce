// Every kernel x every ISA this CPU runs, against the scalar reference, over sizes with tails
// and over sparsity levels. Tolerance for sums of n products: |Δ| <= 4·n·2⁻²⁴·Σ|terms| (the
// worst-case float summation bound; SIMD changes only the order of additions). An indexing bug
// is off by a whole term (~Σ|terms|/n) and fails it. bf16 and f16 weights are widened exactly,
// so the same bound holds for them. A table with bf16_products (AVX512-BF16) multiplies bf16
// weights by x rounded to bf16: products of two bf16 are exact in f32, so its bf16 dots meet the
// same bound against the reference run on that rounded x, and lie within 2⁻⁸·Σ|w·x| more of the
// reference on x itself (bf16's unit roundoff, 2⁻⁸, times every term).
#include "kernels/kernels.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "test_util.h"

namespace zeroskip {
namespace {

// One instance per SIMD ISA compiled in, whether or not this CPU has it: a missing one shows up
// as skipped (with the reason) instead of passing without checking anything.
class KernelIsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (KernelsFor(GetParam()) == nullptr) {
      GTEST_SKIP() << "this CPU cannot run " << IsaName(GetParam()) << " kernels";
    }
  }
  const KernelTable& k() const { return *KernelsFor(GetParam()); }
};

// Random weights stored as `type`, plus their exactly widened f32 values.
struct Matrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

Matrix RandomMatrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  Matrix m;
  const size_t n = static_cast<size_t>(rows * cols);
  m.values.resize(n);
  m.bytes.resize(n * DTypeSize(type));
  for (size_t i = 0; i < n; ++i) {
    const float v = dist(rng);
    if (type == DType::kF32) {
      m.values[i] = v;
      std::memcpy(&m.bytes[4 * i], &v, 4);
    } else if (type == DType::kBF16) {
      const auto b = Eigen::bfloat16(v);
      m.values[i] = static_cast<float>(b);
      std::memcpy(&m.bytes[2 * i], &b, 2);
    } else {
      const auto h = Eigen::half(v);
      m.values[i] = static_cast<float>(h);
      std::memcpy(&m.bytes[2 * i], &h, 2);
    }
  }
  return m;
}

double Tolerance(int64_t n, double abs_sum) {
  return 4.0 * n * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

// x[0:n) drawn from N(0, 1), followed by NaNs: a kernel that reads x past its end, even where it
// multiplies by zero-filled weights, turns its result into NaN.
std::vector<float> RandomX(int64_t n, std::mt19937& rng) {
  std::vector<float> x(n + 64, std::numeric_limits<float>::quiet_NaN());
  for (int64_t i = 0; i < n; ++i) x[i] = std::normal_distribution<float>()(rng);
  return x;
}

// x as the table's `type` dot products see it: rounded to bf16 (to nearest even, subnormals to
// zero, as vcvtne2ps2bf16 does) where the table has bf16_products, else x itself.
std::vector<float> XAsSeen(const KernelTable& k, DType type, const std::vector<float>& x) {
  if (!k.bf16_products || type != DType::kBF16) return x;
  std::vector<float> seen(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    seen[i] = std::fpclassify(x[i]) == FP_SUBNORMAL ? 0.0f : float(Eigen::bfloat16(x[i]));
  }
  return seen;
}

// The extra error a dot with x rounded to bf16 may carry (zero where x is used as it is).
double RoundingOfX(const KernelTable& k, DType type, double abs_sum) {
  return k.bf16_products && type == DType::kBF16 ? std::ldexp(abs_sum, -8) : 0.0;
}

const DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16};
const int64_t kCols[] = {1, 7, 8, 15, 16, 17, 33, 64, 100, 257};
const int64_t kRows[] = {0, 1, 3, 4, 5, 9, 67};

TEST(Kernels, DispatchPicksASupportedIsa) {
  EXPECT_NE(KernelsFor(BestIsa()), nullptr);
  EXPECT_NE(KernelsFor(Isa::kScalar), nullptr);
  Isa parsed;
  EXPECT_TRUE(ParseIsaName("avx2", &parsed));
  EXPECT_EQ(parsed, Isa::kAvx2);
  EXPECT_FALSE(ParseIsaName("neon", &parsed));
}

// The ISA list is the one place an ISA is named and found: pin what dispatch derives from it.
TEST(Kernels, IsaListIsConsistent) {
  ASSERT_FALSE(AllIsas().empty());
  EXPECT_EQ(AllIsas().front().isa, Isa::kScalar);  // the reference, which every CPU runs
  std::set<std::string_view> names;
  bool after_best = false;
  for (const IsaInfo& info : AllIsas()) {
    EXPECT_TRUE(names.insert(info.name).second) << "two ISAs named " << info.name;
    Isa parsed;
    ASSERT_TRUE(ParseIsaName(info.name, &parsed)) << info.name;
    EXPECT_EQ(parsed, info.isa) << info.name;
    EXPECT_EQ(IsaName(info.isa), info.name);
    const KernelTable& table = info.table();
    EXPECT_EQ(table.isa, info.isa) << info.name;
    for (DType type : kTypes) {
      const WeightOps& ops = table.ops(type);
      EXPECT_NE(ops.dot_rows, nullptr) << info.name << " " << DTypeName(type);
      EXPECT_NE(ops.axpy_rows, nullptr) << info.name << " " << DTypeName(type);
      EXPECT_NE(ops.sparse_up_down, nullptr) << info.name << " " << DTypeName(type);
    }
    EXPECT_NE(table.compact_positive, nullptr) << info.name;
    // BestIsa is the last one this CPU runs (within ZEROSKIP_MAX_ISA).
    if (after_best) {
      EXPECT_EQ(KernelsFor(info.isa), nullptr) << info.name;
    }
    after_best = after_best || info.isa == BestIsa();
  }
  EXPECT_TRUE(after_best) << "BestIsa() is not in AllIsas()";
  ASSERT_NE(KernelsFor(BestIsa()), nullptr);
  EXPECT_EQ(KernelsFor(BestIsa())->isa, BestIsa());
}

// A dtype without kernels is a caller's bug (files are validated on load): abort, do not throw.
TEST(KernelsDeathTest, OpsForAnUnknownDtypeAborts) {
  EXPECT_DEATH(ScalarKernels().ops(static_cast<DType>(3)), "no kernels for weight type 3");
}

TEST_P(KernelIsaTest, DotRowsMatchesReference) {
  std::mt19937 rng(1);
  const Isa isa = GetParam();
  const KernelTable& k = this->k();
  for (DType type : kTypes) {
    for (int64_t cols : kCols) {
      for (int64_t rows : kRows) {
        const Matrix w = RandomMatrix(type, rows + 3, cols, rng);
        std::vector<float> x = RandomX(cols, rng);
        // Gathered rows (sparse use) and contiguous rows (dense use).
        std::vector<int32_t> idx(rows);
        for (auto& i : idx) i = static_cast<int32_t>(rng() % (rows + 3));
        for (const int32_t* rp : std::array<const int32_t*, 2>{nullptr, idx.data()}) {
          std::vector<float> got(rows + 1, -7.0f), want(rows + 1, -7.0f), exact(rows + 1);
          const WeightRows wr{w.bytes.data(), cols};
          const std::vector<float> xs = XAsSeen(k, type, x);
          k.ops(type).dot_rows(wr, rp, rows, cols, x.data(), got.data());
          ScalarKernels().ops(type).dot_rows(wr, rp, rows, cols, xs.data(), want.data());
          ScalarKernels().ops(type).dot_rows(wr, rp, rows, cols, x.data(), exact.data());
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t row = rp ? rp[r] : r;
            double abs_sum = 0, abs_sum_x = 0;
            for (int64_t c = 0; c < cols; ++c) {
              abs_sum += std::abs(w.values[row * cols + c] * xs[c]);
              abs_sum_x += std::abs(w.values[row * cols + c] * x[c]);
            }
            ASSERT_NEAR(got[r], want[r], Tolerance(cols, abs_sum))
                << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " row " << r;
            ASSERT_NEAR(got[r], exact[r],
                        Tolerance(cols, abs_sum_x) + RoundingOfX(k, type, abs_sum_x))
                << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " row " << r;
          }
          EXPECT_EQ(got[rows], -7.0f) << "wrote past the end";
        }
      }
    }
  }
}

TEST_P(KernelIsaTest, AxpyRowsMatchesReference) {
  std::mt19937 rng(2);
  const Isa isa = GetParam();
  const KernelTable& k = this->k();
  for (DType type : kTypes) {
    for (int64_t cols : kCols) {
      for (int64_t rows : kRows) {
        const Matrix w = RandomMatrix(type, rows, cols, rng);
        std::vector<float> coef(rows), y0(cols + 1);
        for (auto& v : coef) v = std::normal_distribution<float>()(rng);
        for (auto& v : y0) v = std::normal_distribution<float>()(rng);
        std::vector<float> got(y0), want(y0);
        const WeightRows wr{w.bytes.data(), cols};
        k.ops(type).axpy_rows(wr, nullptr, coef.data(), rows, cols, got.data());
        ScalarKernels().ops(type).axpy_rows(wr, nullptr, coef.data(), rows, cols, want.data());
        for (int64_t c = 0; c < cols; ++c) {
          double abs_sum = std::abs(y0[c]);
          for (int64_t r = 0; r < rows; ++r) abs_sum += std::abs(coef[r] * w.values[r * cols + c]);
          ASSERT_NEAR(got[c], want[c], Tolerance(rows + 1, abs_sum))
              << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " rows " << rows;
        }
        EXPECT_EQ(got[cols], y0[cols]) << "wrote past the end";
      }
    }
  }
}

// Active sets of every sparsity, including empty and full; gate values arbitrary positives.
TEST_P(KernelIsaTest, SparseUpDownMatchesReference) {
  std::mt19937 rng(3);
  const Isa isa = GetParam();
  const KernelTable& k = this->k();
  for (DType type : kTypes) {
    for (int64_t hidden : {int64_t{1}, int64_t{17}, int64_t{64}, int64_t{100}, int64_t{257}}) {
      const int64_t ffn = 75;
      const Matrix up = RandomMatrix(type, ffn, hidden, rng);
      const Matrix down = RandomMatrix(type, ffn, hidden, rng);
      std::vector<float> x = RandomX(hidden, rng);
      for (double sparsity : {0.0, 0.5, 0.9, 1.0}) {
        std::vector<int32_t> rows;
        std::vector<float> gate;
        for (int32_t i = 0; i < ffn; ++i) {
          if (std::uniform_real_distribution<double>()(rng) >= sparsity) {
            rows.push_back(i);
            gate.push_back(std::uniform_real_distribution<float>(0.01f, 2.0f)(rng));
          }
        }
        std::vector<float> got(hidden, 0.5f), want(hidden, 0.5f), exact(hidden, 0.5f);
        const auto n = static_cast<int64_t>(rows.size());
        const WeightRows wu{up.bytes.data(), hidden}, wd{down.bytes.data(), hidden};
        const std::vector<float> xs = XAsSeen(k, type, x);
        k.ops(type).sparse_up_down(wu, wd, hidden, rows.data(), gate.data(), n, x.data(),
                                   got.data());
        ScalarKernels().ops(type).sparse_up_down(wu, wd, hidden, rows.data(), gate.data(), n,
                                                 xs.data(), want.data());
        ScalarKernels().ops(type).sparse_up_down(wu, wd, hidden, rows.data(), gate.data(), n,
                                                 x.data(), exact.data());
        for (int64_t c = 0; c < hidden; ++c) {
          // Bound: each h_k carries its own dot error, then the axpy sum adds more. Only the
          // dots see x rounded; the down half adds f32 coefficients times exact weights.
          double abs_sum = 0.5, abs_sum_x = 0.5, dot_terms_x = 0;
          for (int64_t j = 0; j < n; ++j) {
            double dot_abs = 0, dot_abs_x = 0;
            for (int64_t d = 0; d < hidden; ++d) {
              dot_abs += std::abs(up.values[rows[j] * hidden + d] * xs[d]);
              dot_abs_x += std::abs(up.values[rows[j] * hidden + d] * x[d]);
            }
            const double down_abs = gate[j] * std::abs(down.values[rows[j] * hidden + c]);
            abs_sum += dot_abs * down_abs;
            abs_sum_x += dot_abs_x * down_abs;
            dot_terms_x += dot_abs_x * down_abs;
          }
          ASSERT_NEAR(got[c], want[c], Tolerance(hidden + n + 1, abs_sum))
              << IsaName(isa) << " " << DTypeName(type) << " hidden " << hidden << " sparsity "
              << sparsity;
          ASSERT_NEAR(got[c], exact[c],
                      Tolerance(hidden + n + 1, abs_sum_x) + RoundingOfX(k, type, dot_terms_x))
              << IsaName(isa) << " " << DTypeName(type) << " hidden " << hidden << " sparsity "
              << sparsity;
        }
      }
    }
  }
}

// Rows longer than a kernel may hold x for in one piece (the AVX512-BF16 table rounds x into a
// 16384-column stack buffer, chunk by chunk beyond that): dots and the sparse step still match.
TEST_P(KernelIsaTest, LongRowsMatchReference) {
  std::mt19937 rng(5);
  const Isa isa = GetParam();
  const KernelTable& k = this->k();
  for (DType type : kTypes) {
    for (int64_t cols : {int64_t{16384}, int64_t{16417}, int64_t{40000}}) {
      const int64_t rows = 6;
      const Matrix up = RandomMatrix(type, rows, cols, rng);
      const Matrix down = RandomMatrix(type, rows, cols, rng);
      const std::vector<float> x = RandomX(cols, rng);
      const std::vector<float> xs = XAsSeen(k, type, x);
      const WeightRows wu{up.bytes.data(), cols}, wd{down.bytes.data(), cols};
      const int32_t picked[] = {5, 0, 3, 1, 4};
      const float gate[] = {0.5f, 1.5f, 0.25f, 2.0f, 1.0f};
      std::vector<float> got(rows), want(rows);
      k.ops(type).dot_rows(wu, nullptr, rows, cols, x.data(), got.data());
      ScalarKernels().ops(type).dot_rows(wu, nullptr, rows, cols, xs.data(), want.data());
      std::vector<double> dot_abs(rows, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) dot_abs[r] += std::abs(up.values[r * cols + c] * xs[c]);
        ASSERT_NEAR(got[r], want[r], Tolerance(cols, dot_abs[r]))
            << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " row " << r;
      }
      std::vector<float> y(cols, 0.0f), y_want(cols, 0.0f);
      k.ops(type).sparse_up_down(wu, wd, cols, picked, gate, 5, x.data(), y.data());
      ScalarKernels().ops(type).sparse_up_down(wu, wd, cols, picked, gate, 5, xs.data(),
                                               y_want.data());
      for (int64_t c = 0; c < cols; ++c) {
        double abs_sum = 0;
        for (int j = 0; j < 5; ++j) {
          abs_sum += gate[j] * dot_abs[picked[j]] * std::abs(down.values[picked[j] * cols + c]);
        }
        ASSERT_NEAR(y[c], y_want[c], Tolerance(cols + 6, abs_sum))
            << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " c " << c;
      }
    }
  }
}

TEST_P(KernelIsaTest, CompactPositiveIsExact) {
  std::mt19937 rng(4);
  const Isa isa = GetParam();
  const KernelTable& k = this->k();
  for (int64_t n : {0, 1, 7, 8, 15, 16, 17, 31, 100, 1000}) {
    for (double sparsity : {0.0, 0.5, 0.9, 1.0}) {
      std::vector<float> g(n);
      for (auto& v : g) {
        const bool zero = std::uniform_real_distribution<double>()(rng) < sparsity;
        v = zero ? -std::uniform_real_distribution<float>(0.0f, 1.0f)(rng)
                 : std::uniform_real_distribution<float>(1e-6f, 1.0f)(rng);
      }
      if (n > 2) g[1] = 0.0f;   // exactly zero is inactive
      if (n > 3) g[2] = -0.0f;  // so is negative zero
      std::vector<int32_t> rows(n + 16, -1), want_rows(n + 16, -1);
      std::vector<float> vals(n + 16), want_vals(n + 16);
      const int64_t got = k.compact_positive(g.data(), n, rows.data(), vals.data());
      const int64_t want =
          ScalarKernels().compact_positive(g.data(), n, want_rows.data(), want_vals.data());
      ASSERT_EQ(got, want) << IsaName(isa) << " n " << n;
      for (int64_t i = 0; i < got; ++i) {
        EXPECT_EQ(rows[i], want_rows[i]);
        EXPECT_EQ(vals[i], want_vals[i]);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Simd, KernelIsaTest, ::testing::ValuesIn(testing::SimdIsas()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

}  // namespace
}  // namespace zeroskip
