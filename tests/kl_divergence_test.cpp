// perplexity --kl-base / --kl-divergence against independent references: the statistics of
// distributions whose KL divergence is worked out by hand; a base file read back by this test (as
// docs/FORMAT.md describes it) against the float64 reference logits of
// tests/data/golden/scoring.json; and a q4 model's comparison recomputed here from those reference
// rows and the model's logits as `eval` prints them (another code path than the comparison's).
#include "zeroskip/kl_divergence.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace zeroskip {
namespace {

using nlohmann::json;
using testing::RunCli;

const json& Fixture() {
  static const json fixture =
      json::parse(testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  return fixture;
}

std::string Checkpoint() { return Fixture()["checkpoint"]; }

// log softmax(row), from the definition, in double.
std::vector<double> LogSoftmax(const std::vector<double>& row) {
  double max = -INFINITY;
  for (const double v : row) max = std::max(max, v);
  double sum = 0;
  for (const double v : row) sum += std::exp(v - max);
  std::vector<double> out;
  for (const double v : row) out.push_back(v - max - std::log(sum));
  return out;
}

// The reference logits after `prefix` (a prefix of one of the fixture's sequences).
std::vector<double> ReferenceRow(const std::vector<int>& prefix) {
  for (const auto& s : Fixture()["sequences"]) {
    const auto ids = s["ids"].get<std::vector<int>>();
    if (ids.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), ids.begin())) {
      return s["logits"][prefix.size() - 1].get<std::vector<double>>();
    }
  }
  ADD_FAILURE() << "the fixture has no sequence starting with these " << prefix.size() << " ids";
  return {};
}

// Every position perplexity scores, in order: the prefix it predicts from (windows of BOS + the
// next ctx - 1 text tokens) and the token it predicts.
struct Scored {
  std::vector<int> prefix;
  int next;
};
std::vector<Scored> ScoredPositions(const std::vector<int>& text, size_t ctx) {
  std::vector<Scored> out;
  for (size_t start = 0; start < text.size(); start += ctx - 1) {
    std::vector<int> prefix = {1};  // BOS
    for (size_t i = start; i < std::min(text.size(), start + ctx - 1); ++i) {
      out.push_back({prefix, text[i]});
      prefix.push_back(text[i]);
    }
  }
  return out;
}

uint64_t Le(const std::string& bytes, size_t at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t(uint8_t(bytes[at + i])) << (8 * i);
  return v;
}

// The comparison's statistics from per-position (base log-probs, model log-probs, next token).
struct Expected {
  std::vector<double> kld;
  double nll = 0, nll_base = 0, dp = 0;
  int same_top = 0;

  void Add(const std::vector<double>& base, const std::vector<double>& model, int next) {
    double k = 0;
    for (size_t v = 0; v < base.size(); ++v) k += std::exp(base[v]) * (base[v] - model[v]);
    kld.push_back(k);
    nll -= model[next];
    nll_base -= base[next];
    dp += std::exp(model[next]) - std::exp(base[next]);
    const auto top = [](const std::vector<double>& v) {
      return std::max_element(v.begin(), v.end()) - v.begin();
    };
    same_top += top(base) == top(model);
  }
};

// Hand-computed. Position A: p = (1/2, 1/4, 1/4), q = (1/4, 1/2, 1/4): KL = ln 2 / 4, the top
// tokens differ, the correct token 1 goes from 1/4 to 1/2. B: p = q: 0. C: p = (1/4, 1/4, 1/2),
// q = (1/8, 1/8, 3/4): KL = ln(4/3) / 2 (KL(q || p) would be 0.1308), token 2 from 1/2 to 3/4.
TEST(KlDivergence, StatisticsOfHandComputedDistributions) {
  const auto logs = [](std::vector<double> p) {
    std::vector<float> out;
    for (const double v : p) out.push_back(static_cast<float>(std::log(v)));
    return out;
  };
  KlDivergence kl;
  kl.Add(logs({0.5, 0.25, 0.25}), logs({0.25, 0.5, 0.25}), 1);
  kl.Add(logs({0.5, 0.25, 0.25}), logs({0.5, 0.25, 0.25}), 1);
  kl.Add(logs({0.25, 0.25, 0.5}), logs({0.125, 0.125, 0.75}), 2);
  const KlDivergenceSummary s = kl.Summary();
  const double a = std::log(2.0) / 4, c = std::log(4.0 / 3) / 2, mean = (a + c) / 3;
  constexpr double kTol = 1e-6;  // f32 log-probabilities
  EXPECT_EQ(s.positions, 3);
  EXPECT_NEAR(s.kld_mean, mean, kTol);
  // Standard error: sqrt(sum (x - mean)^2 / (n (n - 1))).
  const double squares = (a - mean) * (a - mean) + mean * mean + (c - mean) * (c - mean);
  EXPECT_NEAR(s.kld_mean_se, std::sqrt(squares / 6), kTol);
  EXPECT_NEAR(s.kld_median, c, kTol);  // sorted: 0, c, a
  EXPECT_NEAR(s.kld_p99, c + 0.98 * (a - c), kTol);
  EXPECT_NEAR(s.kld_p999, c + 0.998 * (a - c), kTol);
  EXPECT_NEAR(s.kld_max, a, kTol);
  EXPECT_NEAR(s.same_top, 2.0 / 3, 1e-12);
  EXPECT_NEAR(s.same_top_se, std::sqrt(2.0 / 9 / 2), 1e-12);
  // NLL: ln 2, ln 4, ln(4/3) against ln 4, ln 4, ln 2.
  EXPECT_NEAR(s.ppl, std::cbrt(32.0 / 3), kTol);
  EXPECT_NEAR(s.ppl_base, std::cbrt(32.0), kTol);
  EXPECT_NEAR(s.ln_ppl_ratio, -std::log(3.0) / 3, kTol);
  EXPECT_NEAR(s.ppl_ratio, std::cbrt(1.0 / 3), kTol);
  EXPECT_NEAR(s.delta_p_mean, 1.0 / 6, kTol);  // +1/4, 0, +1/4
  EXPECT_NEAR(s.delta_p_mean_se, 1.0 / 12, kTol);
  EXPECT_NEAR(s.delta_p_rms, std::sqrt(1.0 / 24), kTol);
}

class KlCli : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::WriteFile(dir_ / "text.txt", Fixture()["text"].get<std::string>());
    ctx_ = std::to_string(Fixture()["window_ctx"].get<int64_t>());
  }
  // perplexity over the fixture's text in windows of the fixture's context.
  testing::CliResult Perplexity(const std::string& model, std::vector<std::string> more) {
    std::vector<std::string> args = {
        "perplexity", "-m", testing::ConvertedModel(model), "-f", dir_ / "text.txt", "--ctx", ctx_};
    args.insert(args.end(), more.begin(), more.end());
    return RunCli(args);
  }
  std::string WriteBase() {
    const std::string base = dir_ / "base.kl";
    const auto r = Perplexity(Checkpoint(), {"--kl-base", base});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return base;
  }
  json Compare(const std::string& model, const std::string& base) {
    const auto r = Perplexity(model, {"--kl-divergence", base, "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? json::parse(r.out) : json();
  }
  // The one error line and exit 1 of a refused comparison.
  void ExpectRefused(const testing::CliResult& r, const std::string& base,
                     const std::string& reason) {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "zeroskip: error: " + base + ": " + reason + "\n");
  }

  testing::TempDir dir_;
  std::string ctx_;
};

// The file, read here as docs/FORMAT.md describes it, holds the reference log softmax at every
// position perplexity scores, in order.
TEST_F(KlCli, BaseFileHoldsTheReferenceDistributionOfEveryScoredPosition) {
  const std::string bytes = testing::ReadFile(WriteBase());
  const auto text = Fixture()["text_ids"].get<std::vector<int>>();
  const auto positions = ScoredPositions(text, std::stoul(ctx_));
  ASSERT_GE(bytes.size(), 48u);
  EXPECT_EQ(bytes.substr(0, 8), "ZSKLBASE");
  EXPECT_EQ(Le(bytes, 8, 4), 1u);
  const size_t vocab = Le(bytes, 12, 4);
  EXPECT_EQ(vocab, ReferenceRow({1}).size());
  EXPECT_EQ(Le(bytes, 16, 4), std::stoul(ctx_));
  EXPECT_EQ(Le(bytes, 20, 4), 1u);  // BOS
  ASSERT_EQ(Le(bytes, 24, 8), text.size());
  ASSERT_EQ(Le(bytes, 32, 8), positions.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(Le(bytes, 40 + 4 * i, 4), uint64_t(text[i]));
  const size_t rows = 40 + 4 * text.size();
  ASSERT_EQ(bytes.size(), rows + positions.size() * vocab * 4 + 8);
  for (size_t p = 0; p < positions.size(); ++p) {
    const std::vector<double> want = LogSoftmax(ReferenceRow(positions[p].prefix));
    for (size_t v = 0; v < vocab; ++v) {
      float got;
      std::memcpy(&got, &bytes[rows + (p * vocab + v) * 4], 4);
      ASSERT_NEAR(got, want[v], 1e-4) << "position " << p << " token " << v;
    }
  }
}

TEST_F(KlCli, AModelAgainstItselfIsExactlyZero) {
  const json got = Compare(Checkpoint(), WriteBase());
  const json& kl = got["kl_divergence"];
  EXPECT_EQ(kl["positions"], Fixture()["text_ids"].size());
  EXPECT_EQ(kl["kld_mean"].get<double>(), 0.0);
  EXPECT_EQ(kl["kld_max"].get<double>(), 0.0);
  EXPECT_EQ(kl["same_top"].get<double>(), 1.0);
  EXPECT_EQ(kl["ppl_ratio"].get<double>(), 1.0);
  EXPECT_EQ(kl["delta_p_mean"].get<double>(), 0.0);
  EXPECT_NEAR(kl["ppl_base"].get<double>(), got["perplexity"].get<double>(),
              1e-5 * got["perplexity"].get<double>());
}

// q4 against the f32 base, recomputed from the reference rows (base) and `eval`'s logits of the q4
// model at each scored position.
TEST_F(KlCli, AQuantizedModelAgainstTheBaseMatchesTheComparisonRecomputedHere) {
  const std::string q4 = Checkpoint() + "@q4";
  const json got = Compare(q4, WriteBase());
  Expected want;
  for (const Scored& p : ScoredPositions(Fixture()["text_ids"], std::stoul(ctx_))) {
    const auto r = RunCli({"eval", "-m", testing::ConvertedModel(q4), "--tokens", testing::JoinIds(p.prefix),
                           "--top", "1000000", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json top = json::parse(r.out)["top"];
    std::vector<double> logits(top.size());
    for (const auto& e : top) logits[e["id"].get<size_t>()] = e["logit"];
    want.Add(LogSoftmax(ReferenceRow(p.prefix)), LogSoftmax(logits), p.next);
  }
  const json& kl = got["kl_divergence"];
  const double n = static_cast<double>(want.kld.size());
  ASSERT_EQ(kl["positions"], want.kld.size());
  double mean = 0;
  for (const double k : want.kld) mean += k / n;
  std::vector<double> sorted = want.kld;
  std::sort(sorted.begin(), sorted.end());
  // The base file matches the reference to ~1e-5 per log-probability (f32 engine).
  constexpr double kTol = 1e-4;
  EXPECT_GT(mean, 100 * kTol) << "q4 should differ measurably from f32";
  EXPECT_NEAR(kl["kld_mean"].get<double>(), mean, kTol);
  EXPECT_NEAR(kl["kld_median"].get<double>(), sorted[sorted.size() / 2], kTol);  // n is odd
  EXPECT_NEAR(kl["kld_max"].get<double>(), sorted.back(), kTol);
  EXPECT_EQ(kl["same_top"].get<double>(), want.same_top / n);
  EXPECT_NEAR(kl["ln_ppl_ratio"].get<double>(), (want.nll - want.nll_base) / n, kTol);
  EXPECT_NEAR(std::log(kl["ppl_base"].get<double>()), want.nll_base / n, kTol);
  EXPECT_NEAR(kl["delta_p_mean"].get<double>(), want.dp / n, kTol);
  EXPECT_NEAR(std::log(got["perplexity"].get<double>()), want.nll / n, kTol);
}

TEST_F(KlCli, RefusesABaseOfAnotherTextVocabularyOrContext) {
  const std::string base = WriteBase();
  testing::WriteFile(dir_ / "other.txt", Fixture()["text"].get<std::string>() + " more");
  const auto text_ids = Fixture()["text_ids"];
  auto r = RunCli({"perplexity", "-m", testing::ConvertedModel(Checkpoint()), "-f",
                   dir_ / "other.txt", "--ctx", ctx_, "--kl-divergence", base});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.err.starts_with("zeroskip: error: " + base + ": was written for another text (" +
                                std::to_string(text_ids.size()) + " tokens, this one has "))
      << r.err;
  EXPECT_EQ(testing::Lines(r.err).size(), 1u);
  ExpectRefused(Perplexity("models/relu-ft", {"--kl-divergence", base}), base,
                "was written for a vocabulary of " + std::to_string(ReferenceRow({1}).size()) +
                    " tokens; this model has 4096");
  r = RunCli({"perplexity", "-m", testing::ConvertedModel(Checkpoint()), "-f", dir_ / "text.txt",
              "--ctx", "16", "--kl-divergence", base});
  ExpectRefused(r, base,
                "was written with a context of " + ctx_ + " tokens per window; this run's is 16");
}

TEST_F(KlCli, RefusesATruncatedDamagedOrForeignFile) {
  const std::string bytes = testing::ReadFile(WriteBase());
  const std::string bad = dir_ / "bad.kl";
  const auto compare = [&](const std::string& content) {
    testing::WriteFile(bad, content);
    return Perplexity(Checkpoint(), {"--kl-divergence", bad});
  };
  ExpectRefused(compare(bytes.substr(0, bytes.size() - 1)), bad,
                "is " + std::to_string(bytes.size() - 1) + " bytes but its header describes " +
                    std::to_string(bytes.size()) + " (truncated)");
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;
  ExpectRefused(compare(flipped), bad, "checksum mismatch (the file is damaged)");
  ExpectRefused(compare(bytes + "x"), bad,
                "is " + std::to_string(bytes.size() + 1) + " bytes but its header describes " +
                    std::to_string(bytes.size()));
  ExpectRefused(compare(std::string(100, 'z')), bad,
                "is not a KL divergence base file (no ZSKLBASE magic)");
  ExpectRefused(compare("ZSKLBASE"), bad, "is not a KL divergence base file (8 bytes, too short)");
  // Headers that claim 2^32 or 2^40 tokens and positions of a 2^24-token vocabulary: refused from
  // the sizes alone, before anything that large is allocated.
  const auto claims = [&](int log2_tokens) {
    std::string h = bytes.substr(0, 40);
    for (int i = 0; i < 4; ++i) h[12 + i] = i == 3 ? 1 : 0;
    for (int i = 0; i < 8; ++i) h[24 + i] = h[32 + i] = i == log2_tokens / 8 ? 1 : 0;
    return h + std::string(8, '\0');
  };
  const uint64_t want = 48 + (uint64_t{1} << 34) + (uint64_t{1} << 58);
  ExpectRefused(compare(claims(32)), bad,
                "is 48 bytes but its header describes " + std::to_string(want) + " (truncated)");
  ExpectRefused(compare(claims(40)), bad, "the rows' size overflows 64 bits");
}

}  // namespace
}  // namespace zeroskip
