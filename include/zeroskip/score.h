// How well a model predicts a text: the log-probability of each token given the ones before it,
// and perplexity over a long text in non-overlapping windows. Front ends (`score`,
// `perplexity`, a server's logprobs) print what these return; they compute nothing themselves.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "zeroskip/session.h"

namespace zeroskip {

// Called with (tokens done, tokens in total) as the work goes on.
using ProgressFn = std::function<void(size_t done, size_t total)>;

// One position's log-probabilities under the model's distribution (log softmax of the raw logits,
// in double precision): the chosen token's and the `top` most likely tokens' (most likely first,
// ties by lower id). What `score` sums and a server reports as logprobs.
struct TokenLogProb {
  int id = -1;
  double logprob = 0;
  std::vector<std::pair<int, double>> top;  // (id, logprob)
};
TokenLogProb ScoreToken(std::span<const float> logits, int id, int top = 0);

// log p(ids[i + 1] | ids[0..i]) for i in [0, n - 1), in double precision, running `ids` from the
// session's current position. One batched pass, or one token at a time when `token_by_token`
// (so a forced sparse FFN really runs the sparse decode path). n must be >= 2 and, batched, fit
// the engine's max_batch.
std::vector<double> NextTokenLogProbs(Session& session, std::span<const int> ids,
                                      bool token_by_token, const ProgressFn& progress = {});

struct PerplexityResult {
  double perplexity = 0;
  int64_t tokens = 0;  // tokens predicted
};

// Perplexity of `text_ids` over non-overlapping windows of the session's context, each window
// [BOS] (when the model has one) + the next chunk of text, predicting every text token in it.
// Resets the session for each window. Throws Error if the text is too short to predict anything.
// `on_position`, if given, sees every scored position in order: the logits there ([vocab]) and
// the token that follows.
using PositionFn = std::function<void(std::span<const float> logits, int next)>;
PerplexityResult Perplexity(Session& session, std::span<const int> text_ids, bool token_by_token,
                            const ProgressFn& progress = {}, const PositionFn& on_position = {});

}  // namespace zeroskip
