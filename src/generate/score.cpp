#include "zeroskip/score.h"

#include <algorithm>
#include <cmath>

#include "zeroskip/error.h"

namespace zeroskip {
namespace {

double LogProb(std::span<const float> row, int next) { return ScoreToken(row, next).logprob; }

// Calls fn(logits, ids[i + 1]) for i in [0, n - 1): one batched pass, or one token at a time.
void ForEachNextToken(Session& session, std::span<const int> ids, bool token_by_token,
                      const PositionFn& fn, const ProgressFn& progress) {
  const size_t vocab = static_cast<size_t>(session.model().config().vocab);
  if (ids.size() < 2) return;
  if (!token_by_token) {
    const auto logits = session.Forward(ids, /*all_logits=*/true);
    for (size_t i = 0; i + 1 < ids.size(); ++i) fn(logits.subspan(i * vocab, vocab), ids[i + 1]);
    if (progress) progress(ids.size(), ids.size());
    return;
  }
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    fn(session.Forward(ids.subspan(i, 1)), ids[i + 1]);
    if (progress) progress(i + 1, ids.size());
  }
}

}  // namespace

TokenLogProb ScoreToken(std::span<const float> logits, int id, int top) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (const float l : logits) sum += std::exp(double(l) - max);
  const double log_sum = std::log(sum);
  const auto log_prob = [&](int v) { return double(logits[v]) - max - log_sum; };
  TokenLogProb out{id, log_prob(id), {}};
  const size_t k = std::min(static_cast<size_t>(std::max(top, 0)), logits.size());
  if (k == 0) return out;
  std::vector<int> order(logits.size());
  for (size_t v = 0; v < order.size(); ++v) order[v] = static_cast<int>(v);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (size_t i = 0; i < k; ++i) out.top.emplace_back(order[i], log_prob(order[i]));
  return out;
}

std::vector<double> NextTokenLogProbs(Session& session, std::span<const int> ids,
                                      bool token_by_token, const ProgressFn& progress) {
  std::vector<double> out;
  if (ids.size() >= 2) out.reserve(ids.size() - 1);
  ForEachNextToken(
      session, ids, token_by_token,
      [&](std::span<const float> logits, int next) { out.push_back(LogProb(logits, next)); },
      progress);
  return out;
}

PerplexityResult Perplexity(Session& session, std::span<const int> text_ids, bool token_by_token,
                            const ProgressFn& progress, const PositionFn& on_position) {
  const ModelConfig& c = session.model().config();
  const bool bos = c.bos_id >= 0;
  const int64_t chunk = session.context() - (bos ? 1 : 0);
  if (chunk < 1 || text_ids.size() < (bos ? 1u : 2u)) {
    throw Error("", "the text is too short to measure perplexity");
  }
  double nll = 0;
  PerplexityResult result;
  std::vector<int> window;
  for (size_t start = 0; start < text_ids.size(); start += static_cast<size_t>(chunk)) {
    const size_t end = std::min(text_ids.size(), start + static_cast<size_t>(chunk));
    window.clear();
    if (bos) window.push_back(static_cast<int>(c.bos_id));
    window.insert(window.end(), text_ids.begin() + start, text_ids.begin() + end);
    if (window.size() < 2) break;
    session.Reset();
    ForEachNextToken(session, window, token_by_token,
                     [&](std::span<const float> logits, int next) {
                       nll -= LogProb(logits, next);
                       ++result.tokens;
                       if (on_position) on_position(logits, next);
                     },
                     {});
    if (progress) progress(end, text_ids.size());
  }
  result.perplexity = std::exp(nll / result.tokens);
  return result;
}

}  // namespace zeroskip
