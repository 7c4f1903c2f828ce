// Picks the next token from logits: greedy, or temperature with top-k, top-p and min-p, plus a
// repetition penalty. The random generator is a member seeded explicitly (same seed, same
// output); there is no global state. Buffers are sized at construction: Sample allocates nothing.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace zeroskip {

struct SamplerOptions {
  float temperature = 0.8f;  // 0: greedy
  int top_k = 40;            // 0: off; exactly k survive (ties at the k-th broken by lower id)
  float top_p = 0.95f;       // 1: off
  float min_p = 0.05f;       // 0: off
  // 1: off. As Hugging Face: each distinct recent token's positive logit is divided by it and a
  // negative one multiplied, but only over the last repeat_last_n tokens (HF: the whole text).
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  uint64_t seed = 0;
  // OpenAI's, in [-2, 2], over the tokens this sampler has picked (never the prompt): a token
  // picked c times so far has its logit lowered by c * frequency_penalty + (c > 0) *
  // presence_penalty before anything below.
  float presence_penalty = 0;
  float frequency_penalty = 0;
  // OpenAI's logit_bias: (id, bias) added to the token's logit first; ids must be in the vocab.
  std::vector<std::pair<int, float>> logit_bias = {};
};

class Sampler {
 public:
  Sampler(const SamplerOptions& options, int64_t vocab);

  // `logits` [vocab] is modified in place. `history`: the tokens seen so far (prompt included).
  int Sample(float* logits, std::span<const int> history);

 private:
  int Choose(float* logits, std::span<const int> history);

  SamplerOptions options_;
  int64_t vocab_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> candidates_;  // [vocab]
  std::vector<int> picked_;  // [vocab] times each token was picked (with a penalty only)
};

}  // namespace zeroskip
