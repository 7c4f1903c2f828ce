// How far a model's next-token distributions are from a reference model's over the same text:
// the KL divergence a quantization is judged by (as llama-perplexity's --kl-divergence). The
// reference run writes its distribution at every position perplexity scores to a base file; the
// other run reads them back and compares. docs/FORMAT.md describes the file. Front ends call
// PerplexityWriteKlBase and PerplexityKlDivergence and print what they return.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "zeroskip/score.h"
#include "zeroskip/session.h"

namespace zeroskip {

// log softmax(logits) computed in double and stored as f32: what a base file holds and what the
// comparison computes from the other model's logits, the same function on both sides so that a
// model against itself gives exactly 0. out.size() == logits.size().
void NextTokenLogSoftmax(std::span<const float> logits, std::span<float> out);

// What a comparison must share with the base run: the same vocabulary, the same text and the same
// windows (the perplexity context, and BOS or not), hence the same positions in the same order.
struct KlBaseInfo {
  int64_t vocab = 0;
  int64_t context = 0;  // tokens per perplexity window, BOS included
  int64_t bos_id = -1;  // -1: the model has no BOS
  std::vector<int> text_ids;
  uint64_t positions = 0;  // rows: the positions perplexity scored
};

// Writes a base file atomically: the header and the text's ids, then one row of `vocab` f32
// log-probabilities per scored position, then a checksum. Nothing is left at `path` unless
// Commit runs.
class KlBaseWriter {
 public:
  KlBaseWriter(std::string path, KlBaseInfo info);  // info.positions is counted by Add
  ~KlBaseWriter();
  KlBaseWriter(const KlBaseWriter&) = delete;
  KlBaseWriter& operator=(const KlBaseWriter&) = delete;

  void Add(std::span<const float> log_probs);  // [vocab]
  void Commit();
  uint64_t bytes() const;  // the file's size so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a base file. Opening checks the header, that the file's size is exactly what the header
// says, and the checksum over every byte, before the rows are used: a truncated, padded or damaged
// file is refused with Error(path, reason).
class KlBaseReader {
 public:
  explicit KlBaseReader(const std::string& path);
  ~KlBaseReader();
  KlBaseReader(const KlBaseReader&) = delete;
  KlBaseReader& operator=(const KlBaseReader&) = delete;

  const KlBaseInfo& info() const;
  // Throws Error(path, what differs) unless `run` has the same vocab, context, BOS and text.
  void CheckSameRun(const KlBaseInfo& run) const;
  // Row `i` of the base's log-probabilities, [vocab], valid until the next call.
  std::span<const float> Row(uint64_t i);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Statistics of the comparison, as llama-perplexity prints them. "±" values are standard errors of
// the mean; percentiles interpolate linearly between the sorted per-position values.
struct KlDivergenceSummary {
  int64_t positions = 0;
  double kld_mean = 0, kld_mean_se = 0;  // KL(base || model) per position, nats
  double kld_median = 0, kld_p99 = 0, kld_p999 = 0, kld_max = 0;
  double same_top = 0, same_top_se = 0;  // fraction where both models' most likely token is one
  double ppl = 0, ppl_base = 0;          // exp(mean NLL) of the model and of the base
  double ln_ppl_ratio = 0, ln_ppl_ratio_se = 0;  // mean of NLL(model) - NLL(base)
  double ppl_ratio = 0;                          // exp(ln_ppl_ratio)
  double delta_p_mean = 0, delta_p_mean_se = 0;  // p_model(correct) - p_base(correct)
  double delta_p_rms = 0;
};

// Accumulates one position at a time.
class KlDivergence {
 public:
  // base_log_probs: the base's row; logits: the model's at the same position; next: the token
  // that follows (the correct one). Sizes must agree and next must be in range.
  void Add(std::span<const float> base_log_probs, std::span<const float> logits, int next);
  KlDivergenceSummary Summary() const;

 private:
  std::vector<float> log_probs_;  // [vocab] scratch: the model's log softmax
  std::vector<double> kld_;       // per position
  double sum_nll_ = 0, sum_nll_base_ = 0, sum_diff_ = 0, sum_diff2_ = 0;
  double sum_dp_ = 0, sum_dp2_ = 0;
  int64_t same_top_ = 0;
};

// Perplexity (as Perplexity in score.h) that also writes every scored position's distribution to
// a base file at `base_path`.
PerplexityResult PerplexityWriteKlBase(Session& session, std::span<const int> text_ids,
                                       bool token_by_token, const std::string& base_path,
                                       const ProgressFn& progress = {});

struct KlDivergenceResult {
  PerplexityResult perplexity;
  KlDivergenceSummary kl;
};

// Perplexity and the comparison with the base file at `base_path`; throws Error(base_path, ...)
// before running anything if the file was written for another vocabulary, context, BOS or text.
KlDivergenceResult PerplexityKlDivergence(Session& session, std::span<const int> text_ids,
                                          bool token_by_token, const std::string& base_path,
                                          const ProgressFn& progress = {});

}  // namespace zeroskip
