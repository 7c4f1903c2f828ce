#include "zeroskip/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "zeroskip/error.h"

namespace zeroskip {

Sampler::Sampler(const SamplerOptions& options, int64_t vocab)
    : options_(options), vocab_(vocab), rng_(options.seed) {
  // Written so that NaN fails every check.
  const auto in = [](float v, float lo, float hi) { return v >= lo && v <= hi; };
  if (!in(options.temperature, 0.0f, 1e30f)) throw Error("", "sampling temperature must be >= 0");
  if (!in(options.top_p, 0.0f, 1.0f)) throw Error("", "top-p must be in [0, 1]");
  if (!in(options.min_p, 0.0f, 1.0f)) throw Error("", "min-p must be in [0, 1]");
  if (!in(options.repeat_penalty, 1e-30f, 1e30f)) {
    throw Error("", "the repetition penalty must be > 0");
  }
  for (const float p : {options.presence_penalty, options.frequency_penalty}) {
    if (!in(p, -2.0f, 2.0f)) throw Error("", "presence and frequency penalties must be in [-2, 2]");
  }
  for (const auto& [id, bias] : options.logit_bias) {
    if (id < 0 || id >= vocab) {
      throw Error("", "logit bias for token " + std::to_string(id) +
                          ", outside the vocabulary of " + std::to_string(vocab));
    }
    if (!std::isfinite(bias)) throw Error("", "a logit bias must be finite");
  }
  candidates_.reserve(static_cast<size_t>(vocab));
  if (options.presence_penalty != 0 || options.frequency_penalty != 0) picked_.resize(vocab);
}

int Sampler::Sample(float* logits, std::span<const int> history) {
  for (const auto& [id, bias] : options_.logit_bias) logits[id] += bias;
  if (!picked_.empty()) {
    for (int64_t i = 0; i < vocab_; ++i) {
      if (picked_[i] > 0) {
        logits[i] -= picked_[i] * options_.frequency_penalty + options_.presence_penalty;
      }
    }
  }
  const int id = Choose(logits, history);
  if (!picked_.empty()) ++picked_[id];
  return id;
}

int Sampler::Choose(float* logits, std::span<const int> history) {
  // A broken model can produce NaN; it must never be picked nor poison the sort.
  for (int64_t i = 0; i < vocab_; ++i) {
    if (std::isnan(logits[i])) logits[i] = -std::numeric_limits<float>::infinity();
  }
  if (options_.repeat_penalty != 1.0f && options_.repeat_last_n > 0) {
    const size_t n = std::min(history.size(), static_cast<size_t>(options_.repeat_last_n));
    const auto window = history.subspan(history.size() - n);
    for (size_t i = 0; i < window.size(); ++i) {
      const int id = window[i];
      if (id < 0 || id >= vocab_) continue;
      // Penalize each distinct token once, as Hugging Face does.
      if (std::find(window.begin(), window.begin() + i, id) != window.begin() + i) continue;
      float& l = logits[id];
      l = l > 0 ? l / options_.repeat_penalty : l * options_.repeat_penalty;
    }
  }
  if (options_.temperature <= 0.0f) {
    return static_cast<int>(std::max_element(logits, logits + vocab_) - logits);
  }
  // Hugging Face order: temperature, top-k, top-p, then min-p.
  candidates_.clear();
  for (int64_t i = 0; i < vocab_; ++i) candidates_.emplace_back(logits[i], static_cast<int>(i));
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);
  // Dividing by T happens after subtracting the maximum, so (x - max) / T <= 0 and no
  // temperature, however small, turns finite logits into inf - inf = NaN.
  const float max_logit = candidates_.front().first;
  // Softmax's limits, where exp(value - max) would be NaN: with no finite logit (all NaN or -inf)
  // pick the first token, as greedy does; a +inf logit takes all the probability (shared by ties).
  if (max_logit == -std::numeric_limits<float>::infinity()) return candidates_.front().second;
  const bool infinite = std::isinf(max_logit);
  double total = 0;
  for (auto& [value, id] : candidates_) {
    // Unnormalized probability from here on.
    value = infinite ? static_cast<float>(value == max_logit)
                     : std::exp((value - max_logit) / options_.temperature);
    total += value;
  }
  // Tokens with probability 0 (a -inf logit: masked in JSON mode) are never drawn, not even by
  // the rounding fallback at the end.
  while (candidates_.size() > 1 && candidates_.back().first == 0) candidates_.pop_back();
  if (options_.top_p < 1.0f) {
    double cumulative = 0;
    size_t cut = 0;
    while (cut < candidates_.size()) {
      cumulative += candidates_[cut++].first / total;
      if (cumulative >= options_.top_p) break;
    }
    candidates_.resize(cut);
  }
  if (options_.min_p > 0.0f) {
    const float floor = options_.min_p * candidates_.front().first;
    size_t cut = 1;
    while (cut < candidates_.size() && candidates_[cut].first >= floor) ++cut;
    candidates_.resize(cut);
  }
  double kept = 0;
  for (const auto& c : candidates_) kept += c.first;
  // 53 random bits -> uniform in [0, 1), identical on every platform (unlike std distributions).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * kept;
  double acc = 0;
  for (const auto& [p, id] : candidates_) {
    acc += p;
    if (u < acc) return id;
  }
  return candidates_.back().second;
}

}  // namespace zeroskip
