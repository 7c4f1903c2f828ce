#include "zeroskip/kl_divergence.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// The lowest id among the largest values (as ScoreToken's ties).
size_t ArgMax(std::span<const float> v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Linear interpolation between the sorted values around fraction * (n - 1).
double Percentile(const std::vector<double>& sorted, double fraction) {
  const double at = fraction * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(at);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (at - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// Standard error of the mean from a sum and a sum of squares over n values.
double StandardError(double sum, double sum2, int64_t n) {
  if (n < 2) return 0;
  const double mean = sum / n;
  const double variance = std::max(0.0, sum2 / n - mean * mean);
  return std::sqrt(variance / static_cast<double>(n - 1));
}

KlBaseInfo RunInfo(const Session& session, std::span<const int> text_ids) {
  KlBaseInfo info;
  info.vocab = session.model().config().vocab;
  info.context = session.context();
  info.bos_id = session.model().config().bos_id;
  info.text_ids.assign(text_ids.begin(), text_ids.end());
  return info;
}

}  // namespace

void NextTokenLogSoftmax(std::span<const float> logits, std::span<float> out) {
  if (out.size() != logits.size() || logits.empty()) {
    throw std::invalid_argument("NextTokenLogSoftmax: sizes differ");
  }
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (const float l : logits) sum += std::exp(double(l) - max);
  const double log_sum = std::log(sum);
  for (size_t v = 0; v < logits.size(); ++v) {
    out[v] = static_cast<float>(double(logits[v]) - max - log_sum);
  }
}

void KlDivergence::Add(std::span<const float> base_log_probs, std::span<const float> logits,
                       int next) {
  if (base_log_probs.size() != logits.size() || next < 0 ||
      static_cast<size_t>(next) >= logits.size()) {
    throw std::invalid_argument("KlDivergence::Add: sizes or token out of range");
  }
  log_probs_.resize(logits.size());
  NextTokenLogSoftmax(logits, log_probs_);
  // KL(base || model) = sum_v p_base(v) (log p_base(v) - log p_model(v)), every term included.
  double kld = 0;
  for (size_t v = 0; v < logits.size(); ++v) {
    const double lb = base_log_probs[v];
    kld += std::exp(lb) * (lb - double(log_probs_[v]));
  }
  kld_.push_back(kld);
  const double nll = -double(log_probs_[next]), nll_base = -double(base_log_probs[next]);
  sum_nll_ += nll;
  sum_nll_base_ += nll_base;
  sum_diff_ += nll - nll_base;
  sum_diff2_ += (nll - nll_base) * (nll - nll_base);
  const double dp = std::exp(-nll) - std::exp(-nll_base);
  sum_dp_ += dp;
  sum_dp2_ += dp * dp;
  if (ArgMax(log_probs_) == ArgMax(base_log_probs)) ++same_top_;
}

KlDivergenceSummary KlDivergence::Summary() const {
  KlDivergenceSummary s;
  const int64_t n = static_cast<int64_t>(kld_.size());
  s.positions = n;
  if (n == 0) return s;
  double sum = 0, sum2 = 0;
  for (const double k : kld_) {
    sum += k;
    sum2 += k * k;
  }
  s.kld_mean = sum / n;
  s.kld_mean_se = StandardError(sum, sum2, n);
  std::vector<double> sorted = kld_;
  std::sort(sorted.begin(), sorted.end());
  s.kld_median = Percentile(sorted, 0.5);
  s.kld_p99 = Percentile(sorted, 0.99);
  s.kld_p999 = Percentile(sorted, 0.999);
  s.kld_max = sorted.back();
  s.same_top = double(same_top_) / n;
  s.same_top_se = n > 1 ? std::sqrt(s.same_top * (1 - s.same_top) / double(n - 1)) : 0;
  s.ppl = std::exp(sum_nll_ / n);
  s.ppl_base = std::exp(sum_nll_base_ / n);
  s.ln_ppl_ratio = sum_diff_ / n;
  s.ln_ppl_ratio_se = StandardError(sum_diff_, sum_diff2_, n);
  s.ppl_ratio = std::exp(s.ln_ppl_ratio);
  s.delta_p_mean = sum_dp_ / n;
  s.delta_p_mean_se = StandardError(sum_dp_, sum_dp2_, n);
  s.delta_p_rms = std::sqrt(sum_dp2_ / n);
  return s;
}

PerplexityResult PerplexityWriteKlBase(Session& session, std::span<const int> text_ids,
                                       bool token_by_token, const std::string& base_path,
                                       const ProgressFn& progress) {
  KlBaseWriter writer(base_path, RunInfo(session, text_ids));
  std::vector<float> row(static_cast<size_t>(session.model().config().vocab));
  const PerplexityResult result = Perplexity(session, text_ids, token_by_token, progress,
                                             [&](std::span<const float> logits, int) {
                                               NextTokenLogSoftmax(logits, row);
                                               writer.Add(row);
                                             });
  writer.Commit();
  return result;
}

KlDivergenceResult PerplexityKlDivergence(Session& session, std::span<const int> text_ids,
                                          bool token_by_token, const std::string& base_path,
                                          const ProgressFn& progress) {
  KlBaseReader base(base_path);
  base.CheckSameRun(RunInfo(session, text_ids));
  KlDivergence kl;
  uint64_t position = 0;
  KlDivergenceResult result;
  result.perplexity = Perplexity(
      session, text_ids, token_by_token, progress, [&](std::span<const float> logits, int next) {
        if (position >= base.info().positions) {
          throw Error(base_path, "has fewer positions (" + std::to_string(base.info().positions) +
                                     ") than this run scores");
        }
        kl.Add(base.Row(position++), logits, next);
      });
  if (position != base.info().positions) {
    throw Error(base_path, "has " + std::to_string(base.info().positions) +
                               " positions but this run scored " + std::to_string(position));
  }
  result.kl = kl.Summary();
  return result;
}

}  // namespace zeroskip
