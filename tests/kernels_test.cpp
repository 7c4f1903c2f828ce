// Every kernel x every ISA this CPU runs, against the scalar reference, over sizes with tails
// and over sparsity levels. Tolerance for sums of n products: |Δ| <= 4·n·2⁻²⁴·Σ|terms| (the
// worst-case float summation bound; SIMD changes only the order of additions). An indexing bug
// is off by a whole term (~Σ|terms|/n) and fails it. bf16 and f16 weights are widened exactly,
// so the same bound holds for them. q8 and q4 weights: the reference and every ISA multiply them
// with the same quantized activations (pinned bit for bit below) in exact integer arithmetic, so
// the same bound holds with the terms w·x̂ (x̂ the dequantized activations). A table with
// bf16_products (AVX512-BF16) multiplies bf16 weights by x rounded to bf16: products of two bf16
// are exact in f32, so its bf16 dots meet the same bound against the reference run on that
// rounded x, and lie within 2⁻⁸·Σ|w·x| more of the reference on x itself (bf16's unit roundoff,
// 2⁻⁸, times every term).
#include "kernels/kernels.h"

#include <gtest/gtest.h>

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>

#include "format/dtype.h"
#include "kernels/ref/kernels_ref.h"
#include "test_util.h"

namespace zeroskip {
namespace {

class KernelIsaTest : public testing::IsaTest {};

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
  m.bytes.resize(DTypeBytes(type, n));
  if (IsQuantized(type)) {
    // Every byte value (q8's -128 included, which the converter never writes but a file may
    // hold) and scales of either sign across binades (q4k: d and dmin; q6k: d at its end).
    const uint64_t block_bytes = DTypeBlockBytes(type), elements = DTypeBlockElements(type);
    for (size_t b = 0; b < n / elements; ++b) {
      uint8_t* block = &m.bytes[b * block_bytes];
      for (uint64_t i = 0; i < block_bytes; ++i) block[i] = static_cast<uint8_t>(rng());
      for (uint64_t at : type == DType::kQ4K   ? std::vector<uint64_t>{0, 2}
                         : type == DType::kQ6K ? std::vector<uint64_t>{208}
                                               : std::vector<uint64_t>{0}) {
        const Eigen::half d(std::ldexp(dist(rng), static_cast<int>(rng() % 9) - 8));
        std::memcpy(block + at, &d, 2);
      }
      DequantizeBlock(block, type, &m.values[b * elements]);
    }
    return m;
  }
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

// x as the table's `type` dot products are given it: rounded to bf16 (to nearest even,
// subnormals to zero, as vcvtne2ps2bf16 does) where the table has bf16_products, else x itself.
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

const DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8,
                        DType::kQ4,  DType::kQ4K, DType::kQ6K};
const int64_t kRows[] = {0, 1, 3, 4, 5, 9, 67};

// Row lengths with every kind of tail; quantized rows are whole blocks.
std::vector<int64_t> Cols(DType type) {
  if (IsKQuant(type)) return {256, 512, 768, 2304};
  if (IsQuantized(type)) return {32, 64, 96, 160, 288};
  return {1, 7, 8, 15, 16, 17, 33, 64, 100, 257};
}

// x as the dot products with `type` read it: itself, or dequantized from its quantized blocks.
std::vector<float> AsRead(DType type, const std::vector<float>& x) {
  if (!IsQuantized(type)) return x;
  const int64_t blocks = static_cast<int64_t>(x.size() / kQuantBlock);
  std::vector<int8_t> q(x.size());
  std::vector<float> d(blocks), out(x.size());
  ref::QuantizeActivations(x.data(), blocks, q.data(), d.data());
  for (size_t i = 0; i < x.size(); ++i) out[i] = d[i / kQuantBlock] * q[i];
  return out;
}

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
    EXPECT_NE(table.compact_above, nullptr) << info.name;
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
  EXPECT_DEATH(ScalarKernels().ops(static_cast<DType>(9)), "no kernels for weight type 9");
}

TEST_P(KernelIsaTest, DotRowsMatchesReference) {
  std::mt19937 rng(1);
  const Isa isa = GetParam();
  const KernelTable& k = this->kernels();
  for (DType type : kTypes) {
    for (int64_t cols : Cols(type)) {
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
          const std::vector<float> xr = AsRead(type, xs), xr_x = AsRead(type, x);
          k.ops(type).dot_rows(wr, rp, rows, cols, x.data(), got.data());
          ScalarKernels().ops(type).dot_rows(wr, rp, rows, cols, xs.data(), want.data());
          ScalarKernels().ops(type).dot_rows(wr, rp, rows, cols, x.data(), exact.data());
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t row = rp ? rp[r] : r;
            double abs_sum = 0, abs_sum_x = 0;
            for (int64_t c = 0; c < cols; ++c) {
              abs_sum += std::abs(w.values[row * cols + c] * xr[c]);
              abs_sum_x += std::abs(w.values[row * cols + c] * xr_x[c]);
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
  const KernelTable& k = this->kernels();
  for (DType type : kTypes) {
    for (int64_t cols : Cols(type)) {
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
  const KernelTable& k = this->kernels();
  for (DType type : kTypes) {
    const std::vector<int64_t> hiddens = IsKQuant(type) ? std::vector<int64_t>{256, 768}
                                         : IsQuantized(type)
                                             ? std::vector<int64_t>{32, 64, 96, 288}
                                             : std::vector<int64_t>{1, 17, 64, 100, 257};
    for (int64_t hidden : hiddens) {
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
        const std::vector<float> xr = AsRead(type, xs), xr_x = AsRead(type, x);
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
              dot_abs += std::abs(up.values[rows[j] * hidden + d] * xr[d]);
              dot_abs_x += std::abs(up.values[rows[j] * hidden + d] * xr_x[d]);
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

// q8 rows holding one level 1 with scale 1 each, an identity: their dot products with x return
// each quantized activation d·q exactly.
std::vector<float> QuantizedByIdentity(const KernelTable& k, const float* x, int64_t cols) {
  std::vector<uint8_t> rows(DTypeBytes(DType::kQ8, cols * cols), 0);
  const uint16_t one = 0x3c00;  // f16 1.0
  for (int64_t r = 0; r < cols; ++r) {
    uint8_t* row = &rows[DTypeBytes(DType::kQ8, r * cols)];
    for (int64_t b = 0; b < cols / 32; ++b) std::memcpy(row + 34 * b, &one, 2);
    row[34 * (r / 32) + 2 + r % 32] = 1;
  }
  std::vector<float> out(cols);
  k.ops(DType::kQ8).dot_rows({rows.data(), cols}, nullptr, cols, cols, x, out.data());
  return out;
}

// The activations' quantization is the same on every ISA, bit for bit, and is what
// ref::QuantizeActivations defines; its special cases checked by hand.
TEST_P(KernelIsaTest, ActivationQuantizationIsBitExact) {
  const Isa isa = GetParam();
  constexpr int64_t kBlocks = 8, kCols = kBlocks * kQuantBlock;
  std::vector<float> x(kCols);
  std::mt19937 rng(5);
  for (auto& v : x) v = std::normal_distribution<float>(0.0f, 3.0f)(rng);
  auto expect_definition = [&](const std::vector<float>& got, int64_t c0, int64_t cols) {
    std::vector<int8_t> q(cols);
    std::vector<float> d(cols / 32);
    ref::QuantizeActivations(x.data() + c0, cols / 32, q.data(), d.data());
    for (int64_t i = 0; i < cols; ++i) {
      const float want = d[i / 32] * q[i];
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got[i])) << IsaName(isa) << " column " << c0 + i;
      } else {
        EXPECT_EQ(got[i], want) << IsaName(isa) << " column " << c0 + i;
      }
    }
  };
  // Many blocks in one call, then the special blocks one call each (a NaN scale poisons every
  // product of its row).
  expect_definition(QuantizedByIdentity(kernels(), x.data(), kCols), 0, kCols);
  // Block 0 by hand: amax 127 gives d = 1, q = round-half-even(x): ties 0.5 -> 0, 1.5 -> 2,
  // 2.5 -> 2, -3.5 -> -4.
  const float by_hand[] = {127, -126.4f, 0.5f, 1.5f, 2.5f, -3.5f, 0.49f, -0.51f};
  const float by_hand_want[] = {127, -126, 0, 2, 2, -4, 0, -1};
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  std::copy(std::begin(by_hand), std::end(by_hand), x.begin());
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);                    // all zero: q = 0, d = 0
  x[64 + 3] = std::numeric_limits<float>::infinity();                 // Inf: the block is NaN
  x[96 + 31] = std::numeric_limits<float>::quiet_NaN();               // NaN: likewise
  for (int64_t i = 128; i < 160; ++i) x[i] = std::ldexp(1.0f, -100);  // below the floor: 0
  x[160] = -1e30f;                                                    // huge, finite
  std::vector<float> got(kCols);
  for (int64_t b = 0; b < kBlocks; ++b) {
    const std::vector<float> block = QuantizedByIdentity(kernels(), x.data() + 32 * b, 32);
    std::copy(block.begin(), block.end(), got.begin() + 32 * b);
    expect_definition(block, 32 * b, 32);
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[i], by_hand_want[i]) << i;
  for (int64_t i = 32; i < 64; ++i) EXPECT_EQ(got[i], 0.0f);
  for (int64_t i = 64; i < 128; ++i) EXPECT_TRUE(std::isnan(got[i])) << i;
  for (int64_t i = 128; i < 160; ++i) EXPECT_EQ(got[i], 0.0f);
  EXPECT_EQ(got[160], -1e30f / 127.0f * 127.0f);
}

// Rows longer than a kernel may hold x for in one piece (the AVX512-BF16 table rounds x into a
// 16384-column stack buffer, chunk by chunk beyond that): dots and the sparse step still match.
TEST_P(KernelIsaTest, LongRowsMatchReference) {
  std::mt19937 rng(5);
  const Isa isa = GetParam();
  const KernelTable& k = this->kernels();
  for (DType type : kTypes) {
    // Quantized rows are whole blocks (and within one chunk of quantized x for the sparse step).
    const std::vector<int64_t> lengths = IsKQuant(type) ? std::vector<int64_t>{16384, 40192}
                                         : IsQuantized(type)
                                             ? std::vector<int64_t>{16384, 40000}
                                             : std::vector<int64_t>{16384, 16417, 40000};
    for (int64_t cols : lengths) {
      const int64_t rows = 6;
      const Matrix up = RandomMatrix(type, rows, cols, rng);
      const Matrix down = RandomMatrix(type, rows, cols, rng);
      const std::vector<float> x = RandomX(cols, rng);
      const std::vector<float> xs = XAsSeen(k, type, x);
      const std::vector<float> xr = AsRead(type, xs);
      const WeightRows wu{up.bytes.data(), cols}, wd{down.bytes.data(), cols};
      const int32_t picked[] = {5, 0, 3, 1, 4};
      const float gate[] = {0.5f, 1.5f, 0.25f, 2.0f, 1.0f};
      std::vector<float> got(rows), want(rows);
      k.ops(type).dot_rows(wu, nullptr, rows, cols, x.data(), got.data());
      ScalarKernels().ops(type).dot_rows(wu, nullptr, rows, cols, xs.data(), want.data());
      std::vector<double> dot_abs(rows, 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) dot_abs[r] += std::abs(up.values[r * cols + c] * xr[c]);
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

// The reference's K-quant loads against the format's dequantizer (src/format/dtype.cpp, pinned on
// llama.cpp's values in format_test): axpy_rows of one row with coefficient 1 into zeros is the
// row's values exactly, and dot_rows is Σ value·x̂ over the quantized activations.
TEST(Kernels, ReferenceKQuantsReadTheFormatsValues) {
  std::mt19937 rng(9);
  for (DType type : {DType::kQ4K, DType::kQ6K}) {
    const int64_t rows = 3, cols = 512;
    const Matrix w = RandomMatrix(type, rows, cols, rng);
    const std::vector<float> x = RandomX(cols, rng), xr = AsRead(type, x);
    std::vector<float> dots(rows);
    ScalarKernels().ops(type).dot_rows({w.bytes.data(), cols}, nullptr, rows, cols, x.data(),
                                       dots.data());
    for (int32_t r = 0; r < rows; ++r) {
      std::vector<float> y(cols, 0.0f);
      const float one = 1.0f;
      ScalarKernels().ops(type).axpy_rows({w.bytes.data(), cols}, &r, &one, 1, cols, y.data());
      double want = 0, abs_sum = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(y[c], w.values[r * cols + c]) << DTypeName(type) << " row " << r << " col " << c;
        want += double(w.values[r * cols + c]) * xr[c];
        abs_sum += std::abs(double(w.values[r * cols + c]) * xr[c]);
      }
      // q4k's two scale products per unit round apart from the value's own rounding.
      EXPECT_NEAR(dots[r], want, Tolerance(cols, abs_sum) + 1e-6 * abs_sum) << DTypeName(type);
    }
  }
}

// The batched quantized product is dot_rows, token by token, bit for bit (so a prompt computes the
// same logits in one batch as token by token), on activations quantized by the table's
// quantize_activations, which is ref::QuantizeActivations bit for bit. Rows are read through a
// leading dimension wider than cols, and y's padding between tokens stays untouched.
TEST_P(KernelIsaTest, QuantMatmulEqualsDotRowsBitForBit) {
  std::mt19937 rng(6);
  const Isa isa = GetParam();
  const KernelTable& k = this->kernels();
  for (DType type : {DType::kQ8, DType::kQ4, DType::kQ4K, DType::kQ6K}) {
    EXPECT_EQ(ScalarKernels().ops(DType::kF32).quant_matmul, nullptr);
    const std::vector<int64_t> widths = IsKQuant(type)
                                            ? std::vector<int64_t>{256, 768}
                                            : std::vector<int64_t>{32, 96, 256, 288, 800};
    for (int64_t cols : widths) {
      const int64_t ld = cols + (IsKQuant(type) ? 256 : 64), blocks = cols / 32;
      for (int64_t rows : {1, 3, 4, 5, 9, 67}) {
        const Matrix w = RandomMatrix(type, rows, ld, rng);
        for (int64_t n : {1, 2, 4, 5, 7, 9}) {
          std::vector<float> x(n * cols);
          for (auto& v : x) v = std::normal_distribution<float>(0.0f, 2.0f)(rng);
          std::vector<int8_t> q(n * cols), q_ref(n * cols);
          std::vector<float> d(n * blocks), d_ref(n * blocks);
          k.quantize_activations(x.data(), n * blocks, q.data(), d.data());
          ref::QuantizeActivations(x.data(), n * blocks, q_ref.data(), d_ref.data());
          ASSERT_EQ(q, q_ref) << IsaName(isa);
          ASSERT_EQ(d, d_ref) << IsaName(isa);
          const int64_t ldy = rows + 3;
          std::vector<float> y(n * ldy, -7.0f);
          k.ops(type).quant_matmul({w.bytes.data(), ld}, rows, cols, q.data(), d.data(), n,
                                   y.data(), ldy);
          for (int64_t t = 0; t < n; ++t) {
            std::vector<float> want(rows);
            k.ops(type).dot_rows({w.bytes.data(), ld}, nullptr, rows, cols, x.data() + t * cols,
                                 want.data());
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(y[t * ldy + r], want[r])
                  << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " rows " << rows
                  << " n " << n << " token " << t << " row " << r;
            }
            for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(y[t * ldy + r], -7.0f) << "padding";
          }
        }
      }
    }
  }
}

// The batch kernels (attention's) are dot_rows and axpy_rows per vector, bit for bit, and within
// the summation bound of the float64 reference: every float type, every length up to a vector and
// one past it (1..17: AVX2's 8 lanes, AVX-512's 16), at and one either side of a block of column
// vectors (AVX2's 16 columns, AVX-512's 64), vectors not a multiple of the tile (1 to 9), rows not
// a multiple of four, rows, vectors and outputs read and written through leading dimensions wider
// than they are (padding must stay untouched). A table with bf16 products keeps its bf16
// dot_rows; its batch kernels widen exactly, as its widening sibling's (avx512vnni, of which it
// is a copy) dot_rows does.
TEST_P(KernelIsaTest, BatchKernelsEqualRowKernelsBitForBit) {
  std::mt19937 rng(7);
  const Isa isa = GetParam();
  const KernelTable& k = this->kernels();
  for (DType type : {DType::kF32, DType::kF16, DType::kBF16}) {
    const KernelTable& widening =
        k.bf16_products && type == DType::kBF16 ? *KernelsFor(Isa::kAvx512Vnni) : k;
    for (int64_t cols : {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,  12,  13, 14,
                         15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100, 128, 257}) {
      const int64_t ld = cols + 3;
      for (int64_t n : {0, 1, 3, 4, 5, 9, 67}) {
        const Matrix w = RandomMatrix(type, n, ld, rng);
        const WeightRows wr{w.bytes.data(), ld};
        for (int64_t nx : {1, 2, 3, 4, 5, 7, 9}) {
          // Scores: x [nx, ld_x], out [nx, ld_out].
          const int64_t ld_x = cols + 5, ld_out = n + 2;
          std::vector<float> x(nx * ld_x, std::numeric_limits<float>::quiet_NaN());
          for (int64_t i = 0; i < nx; ++i)
            for (int64_t c = 0; c < cols; ++c)
              x[i * ld_x + c] = std::normal_distribution<float>()(rng);
          std::vector<float> got(nx * ld_out, -7.0f);
          k.ops(type).dot_rows_batch(wr, n, cols, x.data(), nx, ld_x, got.data(), ld_out);
          for (int64_t i = 0; i < nx; ++i) {
            std::vector<float> want(n), exact(n);
            widening.ops(type).dot_rows(wr, nullptr, n, cols, x.data() + i * ld_x, want.data());
            ScalarKernels().ops(type).dot_rows(wr, nullptr, n, cols, x.data() + i * ld_x,
                                               exact.data());
            for (int64_t r = 0; r < n; ++r) {
              ASSERT_EQ(got[i * ld_out + r], want[r])
                  << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " n " << n
                  << " nx " << nx << " vector " << i << " row " << r;
              double abs_sum = 0;
              for (int64_t c = 0; c < cols; ++c)
                abs_sum += std::abs(w.values[r * ld + c] * x[i * ld_x + c]);
              ASSERT_NEAR(got[i * ld_out + r], exact[r], Tolerance(cols, abs_sum));
            }
            for (int64_t r = n; r < ld_out; ++r) ASSERT_EQ(got[i * ld_out + r], -7.0f) << "padding";
          }
          // Weighted sums: coef [nx, ld_coef], y [nx, ld_y], y accumulated.
          const int64_t ld_coef = n + 1, ld_y = cols + 2;
          std::vector<float> coef(nx * ld_coef, std::numeric_limits<float>::quiet_NaN());
          std::vector<float> y(nx * ld_y, -7.0f);
          for (int64_t i = 0; i < nx; ++i) {
            for (int64_t r = 0; r < n; ++r)
              coef[i * ld_coef + r] = std::normal_distribution<float>()(rng);
            for (int64_t c = 0; c < cols; ++c)
              y[i * ld_y + c] = std::normal_distribution<float>()(rng);
          }
          std::vector<float> sum(y);
          k.ops(type).axpy_rows_batch(wr, coef.data(), ld_coef, n, cols, nx, sum.data(), ld_y);
          for (int64_t i = 0; i < nx; ++i) {
            std::vector<float> want(y.begin() + i * ld_y, y.begin() + i * ld_y + cols);
            std::vector<float> exact(want);
            k.ops(type).axpy_rows(wr, nullptr, coef.data() + i * ld_coef, n, cols, want.data());
            ScalarKernels().ops(type).axpy_rows(wr, nullptr, coef.data() + i * ld_coef, n, cols,
                                                exact.data());
            for (int64_t c = 0; c < cols; ++c) {
              ASSERT_EQ(sum[i * ld_y + c], want[c])
                  << IsaName(isa) << " " << DTypeName(type) << " cols " << cols << " n " << n
                  << " nx " << nx << " vector " << i << " column " << c;
              double abs_sum = std::abs(y[i * ld_y + c]);
              for (int64_t r = 0; r < n; ++r)
                abs_sum += std::abs(coef[i * ld_coef + r] * w.values[r * ld + c]);
              ASSERT_NEAR(sum[i * ld_y + c], exact[c], Tolerance(n + 1, abs_sum));
            }
            for (int64_t c = cols; c < ld_y; ++c) ASSERT_EQ(sum[i * ld_y + c], -7.0f) << "padding";
          }
        }
      }
    }
  }
  EXPECT_EQ(k.ops(DType::kQ8).dot_rows_batch, nullptr);
}

// Against the definition (g[i] > threshold, in order) spelled out here, for ReLU's threshold 0
// and a FATReLU threshold; gates equal to the threshold, and (threshold 0) both zeros, are
// inactive. Catches a comparison that keeps the threshold itself (>=), ignores the threshold
// (compares with 0), or loses a tail element. Runs the scalar table too (the SIMD ones'
// reference).
TEST_P(KernelIsaTest, CompactAboveIsExact) {
  std::mt19937 rng(4);
  const Isa isa = GetParam();
  for (const KernelTable* k : {&this->kernels(), &ScalarKernels()}) {
    for (float threshold : {0.0f, 0.25f}) {
      for (int64_t n : {0, 1, 7, 8, 15, 16, 17, 31, 100, 1000}) {
        for (double sparsity : {0.0, 0.5, 0.9, 1.0}) {
          std::vector<float> g(n);
          for (auto& v : g) {
            const bool zero = std::uniform_real_distribution<double>()(rng) < sparsity;
            // Inactive ones fall in [threshold - 1, threshold], some of them above zero.
            v = zero ? threshold - std::uniform_real_distribution<float>(0.0f, 1.0f)(rng)
                     : threshold + std::uniform_real_distribution<float>(1e-6f, 1.0f)(rng);
          }
          if (n > 2) g[1] = threshold;             // exactly the threshold is inactive
          if (n > 3) g[2] = -0.0f;                 // so is negative zero
          if (n > 4) g[n - 1] = threshold + 0.5f;  // the tail's last element is active
          std::vector<int32_t> rows(n + 16, -1), want_rows;
          std::vector<float> vals(n + 16), want_vals;
          for (int64_t i = 0; i < n; ++i) {
            if (g[i] > threshold) {
              want_rows.push_back(static_cast<int32_t>(i));
              want_vals.push_back(g[i]);
            }
          }
          const int64_t got = k->compact_above(g.data(), n, threshold, rows.data(), vals.data());
          ASSERT_EQ(got, static_cast<int64_t>(want_rows.size()))
              << IsaName(k->isa) << " n " << n << " threshold " << threshold;
          for (int64_t i = 0; i < got; ++i) {
            EXPECT_EQ(rows[i], want_rows[i]) << IsaName(isa);
            EXPECT_EQ(vals[i], want_vals[i]) << IsaName(isa);
          }
        }
      }
    }
  }
}

// Against a direct double-precision softmax computed here (not the scalar table: that one is
// checked too, as the reference for the others). One row has a -inf (a masked position).
TEST(Kernels, ScalarSoftmaxIsTheDefinition) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, -std::numeric_limits<float>::infinity()};
  ScalarKernels().scaled_softmax(x.data(), 4, 0.5f);
  const double e[3] = {std::exp(-1.0), std::exp(-0.5), 1.0};
  const double sum = e[0] + e[1] + e[2];
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(x[i], e[i] / sum, 1e-7) << i;
  EXPECT_EQ(x[3], 0.0f);
}

// Spreads of 0 (every score tied), 1, 60 and 200 after scaling: f32's exp overflows past 88.7,
// so only the last one notices an exp without the max shift (inf / inf).
TEST_P(KernelIsaTest, ScaledSoftmaxMatchesReference) {
  std::mt19937 rng(6);
  const KernelTable& k = this->kernels();
  for (int64_t n : {1, 2, 7, 8, 15, 16, 17, 33, 100, 2049}) {
    for (float spread : {0.0f, 1.0f, 60.0f, 200.0f}) {
      std::vector<float> x(n);
      for (auto& v : x) v = std::uniform_real_distribution<float>(-spread, spread)(rng) * 8.0f;
      std::vector<float> want = x;
      k.scaled_softmax(x.data(), n, 0.125f);
      ScalarKernels().scaled_softmax(want.data(), n, 0.125f);
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(x[i], want[i], 1e-6 * want[i] + 1e-30)
            << IsaName(GetParam()) << " n " << n << " spread " << spread << " i " << i;
        sum += x[i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Simd, KernelIsaTest, ::testing::ValuesIn(testing::SimdIsas()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

}  // namespace
}  // namespace zeroskip
