// eval, score and perplexity against the float64 reference: every number the CLI prints is
// recomputed here from the logits of tests/data/golden/scoring.json (tools/reference/
// make_scoring_golden.py), so an off-by-one in which position scores which token, or where a
// perplexity window starts, changes the result by far more than the tolerance. Relations between
// two of the engine's own paths (sparse vs dense) would not catch those: both share the bug.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "zeroskip/score.h"

namespace zeroskip {
namespace {

using nlohmann::json;
using testing::RunCli;

// The engine's logits and log-probabilities agree with the reference to under 1e-5 here (f32
// weights; measured: 7e-6 and 6e-6 at worst), so 1e-4 leaves room while a wrong row, which
// changes a log-probability by O(1), cannot pass.
constexpr double kLogProbTolerance = 1e-4;

const json& Fixture() {
  static const json fixture =
      json::parse(testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  return fixture;
}

const std::string& ModelPath() { return testing::ConvertedModel(Fixture()["checkpoint"]); }

std::vector<int> Ids(const json& sequence) { return sequence["ids"].get<std::vector<int>>(); }

// log softmax(row)[token], from the definition, in double.
double LogSoftmax(const json& row, int token) {
  double max = -INFINITY;
  for (const auto& v : row) max = std::max(max, v.get<double>());
  double sum = 0;
  for (const auto& v : row) sum += std::exp(v.get<double>() - max);
  return row[token].get<double>() - max - std::log(sum);
}

// The reference logits after `prefix` (which must start one of the fixture's sequences: a causal
// model's logits at position i depend only on tokens 0..i).
const json& ReferenceRow(const std::vector<int>& prefix) {
  for (const auto& s : Fixture()["sequences"]) {
    const auto ids = Ids(s);
    if (ids.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), ids.begin())) {
      return s["logits"][prefix.size() - 1];
    }
  }
  static const json none;
  ADD_FAILURE() << "the fixture has no sequence starting with these " << prefix.size() << " ids";
  return none;
}

json RunJson(std::vector<std::string> args) {
  args.insert(args.begin() + 1, {"-m", ModelPath(), "--json"});
  const auto r = RunCli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json();
}

// Both ways the CLI runs a model: one batched pass (auto), and token by token through the sparse
// decode path (--ffn sparse).
const char* const kPaths[] = {"auto", "sparse"};

// Hand-computed: logits {1, 3, 2, 3} have log-sum-exp 3 + ln(2 + e^-1 + e^-2).
TEST(ScoreToken, LogSoftmaxAndTheMostLikelyTokensTiesByLowerId) {
  const std::vector<float> logits = {1, 3, 2, 3};
  const double lse = 3 + std::log(2 + std::exp(-1.0) + std::exp(-2.0));
  const TokenLogProb t = ScoreToken(logits, 2, 3);
  EXPECT_EQ(t.id, 2);
  EXPECT_NEAR(t.logprob, 2 - lse, 1e-12);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // tied with 3: the lower id first
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 2);
  EXPECT_NEAR(t.top[0].second, 3 - lse, 1e-12);
  EXPECT_NEAR(t.top[2].second, 2 - lse, 1e-12);
  EXPECT_TRUE(ScoreToken(logits, 0).top.empty());
  EXPECT_EQ(ScoreToken(logits, 0, 10).top.size(), 4u);  // at most the vocabulary
}

TEST(Scoring, ScoreIsTheSumOfReferenceLogProbsFromThePreviousPosition) {
  const std::vector<int> ids = Ids(Fixture()["sequences"][0]);
  for (const char* ffn : kPaths) {
    for (size_t from : {size_t{1}, size_t{9}, ids.size() - 1}) {
      double want = 0;
      for (size_t i = from; i < ids.size(); ++i) {
        // Token i is predicted by the logits after tokens 0..i-1.
        want += LogSoftmax(ReferenceRow({ids.begin(), ids.begin() + i}), ids[i]);
      }
      const json got =
          RunJson({"score", "--tokens", testing::JoinIds(ids), "--from", std::to_string(from), "--ffn", ffn});
      const double n = static_cast<double>(ids.size() - from);
      EXPECT_EQ(got["tokens"], ids.size() - from);
      EXPECT_NEAR(got["log_likelihood"].get<double>(), want, kLogProbTolerance * n)
          << "--from " << from << " --ffn " << ffn;
      EXPECT_NEAR(got["mean_log_likelihood"].get<double>(), want / n, kLogProbTolerance)
          << "--from " << from << " --ffn " << ffn;
    }
  }
}

TEST(Scoring, ScoreRefusesAFromThatLeavesNothingToScore) {
  for (const char* from : {"3", "4"}) {
    const auto r = RunCli({"score", "-m", ModelPath(), "--tokens", "1,5,9", "--from", from});
    EXPECT_EQ(r.exit_code, 1) << "--from " << from;
    EXPECT_EQ(r.err, "zeroskip: error: --from leaves nothing to score\n") << "--from " << from;
  }
}

// Perplexity restarts from BOS at every window of ctx - 1 text tokens and predicts each text token
// exactly once: exp of the mean negative log-likelihood over all of them.
double ReferencePerplexity(const std::vector<int>& text, int64_t ctx) {
  const size_t chunk = static_cast<size_t>(ctx - 1);
  double nll = 0;
  for (size_t start = 0; start < text.size(); start += chunk) {
    std::vector<int> window = {1};  // BOS
    for (size_t i = start; i < std::min(text.size(), start + chunk); ++i) {
      window.push_back(text[i]);
    }
    for (size_t i = 1; i < window.size(); ++i) {
      nll -= LogSoftmax(ReferenceRow({window.begin(), window.begin() + i}), window[i]);
    }
  }
  return std::exp(nll / static_cast<double>(text.size()));
}

TEST(Scoring, PerplexityIsExpOfTheMeanReferenceNllOverEveryWindow) {
  const auto text = Fixture()["text_ids"].get<std::vector<int>>();
  testing::TempDir dir;
  testing::WriteFile(dir / "text.txt", Fixture()["text"].get<std::string>());
  // Several windows (the last one partial), then one window holding the whole text.
  const int64_t window_ctx = Fixture()["window_ctx"].get<int64_t>();
  ASSERT_GT(text.size(), static_cast<size_t>(2 * (window_ctx - 1)));
  for (const char* ffn : kPaths) {
    for (int64_t ctx : {window_ctx, int64_t{64}}) {
      const double want = ReferencePerplexity(text, ctx);
      const json got = RunJson(
          {"perplexity", "-f", dir / "text.txt", "--ctx", std::to_string(ctx), "--ffn", ffn});
      EXPECT_EQ(got["tokens"], text.size()) << "--ctx " << ctx << " --ffn " << ffn;
      // exp(mean NLL): a relative error of the perplexity is an absolute error of the mean NLL.
      EXPECT_NEAR(std::log(got["perplexity"].get<double>()), std::log(want), kLogProbTolerance)
          << "--ctx " << ctx << " --ffn " << ffn << ": got " << got["perplexity"] << ", want "
          << want;
    }
  }
}

TEST(Scoring, EvalPrintsEveryReferenceLogitInOrder) {
  const auto& sequences = Fixture()["sequences"];
  for (const char* ffn : kPaths) {
    for (const auto& s : {sequences[0], sequences[1]}) {
      const std::vector<int> ids = Ids(s);
      const json& want = s["logits"].back();
      const json got = RunJson({"eval", "--tokens", testing::JoinIds(ids), "--top", "100000", "--ffn", ffn});
      ASSERT_EQ(got["top"].size(), want.size());
      double max_ref = 0;
      for (const auto& v : want) max_ref = std::max(max_ref, std::abs(v.get<double>()));
      double previous = INFINITY;
      std::vector<bool> seen(want.size());
      for (const auto& entry : got["top"]) {
        const int id = entry["id"];
        const double logit = entry["logit"];
        ASSERT_TRUE(id >= 0 && id < static_cast<int>(want.size()) && !seen[id]) << id;
        seen[id] = true;
        EXPECT_NEAR(logit, want[id].get<double>(), 1e-4 * max_ref) << "id " << id;
        EXPECT_LE(logit, previous) << "not sorted at id " << id;
        previous = logit;
      }
    }
  }
}

}  // namespace
}  // namespace zeroskip
