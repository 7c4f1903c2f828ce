// Causal attention over the KV cache against a float64 definition: softmax(q·k / sqrt(d)) · v over
// positions 0..pos0 + i for row i, on the keys and values as the cache stores them. The shapes are
// chosen to reach every branch: GQA groups of 3 and 8 (a group split across threads for one row;
// partial and whole tiles of query heads), head_dims that leave vector tails or none, rows that are
// not a multiple of the row block, and positions that cross chunks of the cache. Grouping rows and
// splitting threads must not change a bit.
#include "ops/attention.h"

#include <cmath>
#include <random>
#include <vector>

#include "format/dtype.h"
#include "test_util.h"

namespace zeroskip {
namespace {

class AttentionIsaTest : public testing::IsaTest {};

struct Cache {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // what the cache holds, read back as f32
};

// A cache of `heads` heads x `positions` x head_dim, random, stored as `type`.
Cache RandomCache(DType type, int64_t heads, int64_t positions, int64_t hd, std::mt19937& rng) {
  std::normal_distribution<float> dist;
  std::vector<float> f32(heads * positions * hd);
  for (auto& v : f32) v = dist(rng);
  Cache c;
  c.bytes.resize(DTypeBytes(type, f32.size()));
  ConvertMatrix(reinterpret_cast<const uint8_t*>(f32.data()), DType::kF32, 1, f32.size(), false,
                c.bytes.data(), type);
  c.values.resize(f32.size());
  ConvertMatrix(c.bytes.data(), type, 1, f32.size(), false,
                reinterpret_cast<uint8_t*>(c.values.data()), DType::kF32);
  return c;
}

TEST_P(AttentionIsaTest, MatchesFloat64DefinitionAndIgnoresRowBlocksAndThreads) {
  const KernelTable& k = kernels();
  std::mt19937 rng(11);
  // A group of 3 (a partial tile of query heads) and an MQA group of 8 (two whole tiles, split
  // across threads for one decoded row).
  for (const AttentionShape shape : {AttentionShape{.heads = 6, .kv_heads = 2, .head_dim = 40},
                                     AttentionShape{.heads = 8, .kv_heads = 1, .head_dim = 64}}) {
    const int64_t hd = shape.head_dim, group = shape.heads / shape.kv_heads,
                  q_dim = shape.heads * hd;
    for (DType kv_type : {DType::kF32, DType::kF16, DType::kBF16}) {
      // (rows, first position): a prompt of 19 rows after 300 cached positions (its rows cross the
      // 256-position chunk), a fresh prompt of 11, and one decoded token at position 520.
      for (auto [n, pos0] : {std::pair<int64_t, int64_t>{19, 300}, {11, 0}, {1, 520}}) {
        const int64_t context = pos0 + n;
        const Cache keys = RandomCache(kv_type, shape.kv_heads, context, hd, rng);
        const Cache values = RandomCache(kv_type, shape.kv_heads, context, hd, rng);
        std::vector<float> q(n * q_dim);
        for (auto& v : q) v = std::normal_distribution<float>(0.0f, 0.5f)(rng);
        auto run = [&](int64_t score_stride, int threads) {
          std::vector<float> scores(threads * score_stride), out(n * q_dim, -7.0f);
          WorkerPool pool(threads);
          CausalAttention(k, shape, q.data(), n, pos0,
                          {const_cast<uint8_t*>(keys.bytes.data()), kv_type, context},
                          {const_cast<uint8_t*>(values.bytes.data()), kv_type, context}, out.data(),
                          scores.data(), score_stride, pool);
          return out;
        };
        const std::vector<float> blocked = run(AttentionScoreStride(shape, context), 2);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t h = 0; h < shape.heads; ++h) {
            const int64_t kv = h / group, count = pos0 + i + 1;
            const float* qh = q.data() + i * q_dim + h * hd;
            std::vector<double> w(count);
            double max_s = -INFINITY, sum = 0;
            for (int64_t p = 0; p < count; ++p) {
              double s = 0;
              for (int64_t d = 0; d < hd; ++d) {
                s += double(qh[d]) * keys.values[(kv * context + p) * hd + d];
              }
              w[p] = s / std::sqrt(double(hd));
              max_s = std::max(max_s, w[p]);
            }
            for (auto& x : w) sum += (x = std::exp(x - max_s));
            for (int64_t d = 0; d < hd; ++d) {
              double want = 0, magnitude = 0;
              for (int64_t p = 0; p < count; ++p) {
                want += w[p] / sum * values.values[(kv * context + p) * hd + d];
                magnitude += w[p] / sum * std::abs(values.values[(kv * context + p) * hd + d]);
              }
              // f32 scores of 40-term dots (|q·k| up to ~20) through exp: a few 1e-6 relative
              // in each weight, carried by the weighted sum's magnitude.
              ASSERT_NEAR(blocked[i * q_dim + h * hd + d], want, 2e-5 * magnitude + 1e-6)
                  << IsaName(GetParam()) << " " << DTypeName(kv_type) << " n " << n << " pos0 "
                  << pos0 << " row " << i << " head " << h << " dim " << d;
            }
          }
        }
        // One row at a time (the smallest scratch the contract allows) on one thread, and on as
        // many threads as there are (row, KV head) pairs and more: the same bits.
        EXPECT_EQ(run(group * context, 1), blocked) << DTypeName(kv_type) << " n " << n;
        EXPECT_EQ(run(group * context, 5), blocked) << DTypeName(kv_type) << " n " << n;
        EXPECT_EQ(run(AttentionScoreStride(shape, context), 1), blocked)
            << DTypeName(kv_type) << " n " << n;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, AttentionIsaTest, ::testing::ValuesIn(testing::AllIsaValues()),
                         [](const auto& info) { return std::string(IsaName(info.param)); });

}  // namespace
}  // namespace zeroskip
