// Generation: prompt ids in, sampled tokens and their text out, streamed token by token.
//
// The loop every front end shares (run, chat, the coming server): prefill the prompt at the
// session's current position, then sample, stream and decode until a stop condition. It owns no
// model state and prints nothing: text goes to `on_token`, and `should_stop` lets a caller cancel
// between tokens (Ctrl-C in chat, a closed connection in a server).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/sampler.h"
#include "zeroskip/score.h"
#include "zeroskip/session.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {

enum class StopReason { kLength, kEos, kContext, kCancelled, kStopString };
// "length", "eos", "context", "cancelled", "stop"
std::string_view StopReasonName(StopReason reason);

// Streams text while watching for stop strings: text that could be the start of a stop string is
// held back until it is known not to be, so a caller never prints part of one.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // Appends `text`; returns what is now safe to emit. After a stop string appears, stopped() is
  // true and the returned text ends just before it (the stop string itself is never emitted).
  std::string Push(std::string_view text);
  std::string Flush();  // whatever is held back, at the end of generation
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// Restricts which tokens may come next (JSON mode: json_constraint.h). Stateful: one per
// generation.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets to -inf the logit of every token that may not come next; EOS stays only where the text
  // may end. False when no token may come next.
  virtual bool Mask(std::span<float> logits) = 0;
  virtual void Accept(int id) = 0;    // the token chosen
  virtual bool Finished() const = 0;  // the text is complete and nothing may follow
};

struct GenerateConfig {
  int64_t max_tokens = 128;
  bool stop_at_eos = true;
  // Text that starts from BOS alone drops sentencepiece's dummy-prefix space, as decoding does.
  bool drop_leading_space = false;
  // Called with each token and the UTF-8 text it completes (possibly empty: a multi-byte
  // character arrives over several byte tokens; id -1 carries the incomplete tail flushed at the
  // end as U+FFFD). Return false to stop after it.
  std::function<bool(int id, std::string_view text)> on_token;
  // Polled before every decode step; true cancels.
  std::function<bool()> should_stop;
  // Generation ends where one of these strings appears in the text; it is not part of the text.
  std::vector<std::string> stop_strings;
  // >= 0: record each generated token's log-probability and its `logprobs` most likely
  // alternatives (result.logprobs), of the model's distribution: before the sampler's penalties,
  // bias, temperature and truncation.
  int logprobs = -1;
  // Null: any token. Else sampling only picks what it allows; EOS then always ends the text (the
  // constraint allows it only where the text is complete), and so does Finished().
  std::shared_ptr<TokenConstraint> constraint;
};

struct GenerateResult {
  std::vector<int> tokens;  // generated ids (without the stopping EOS)
  std::vector<TokenLogProb> logprobs;  // [tokens] when GenerateConfig::logprobs >= 0
  std::string text;         // their text, complete UTF-8
  StopReason stop = StopReason::kLength;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0, decode_steps = 0;
  double prefill_tok_s() const { return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0; }
  double decode_tok_s() const { return decode_seconds > 0 ? decode_steps / decode_seconds : 0; }
};

// One generation's token-by-token half, apart from running the model: samples each next token
// from the logits it is given, applies EOS, the budget and stop strings, and streams the text.
// Generate() drives it with one session; the server drives many at once (Session::DecodeBatch).
class Generation {
 public:
  // `sampler` must outlive it. `prompt` is what the repetition penalty sees first.
  Generation(const Model& model, Sampler& sampler, std::span<const int> prompt,
             const GenerateConfig& config);
  // Samples after `logits` ([vocab]; the next-token logits of the prompt or of the last token
  // returned). Returns the token to run next, or -1 when the generation has ended (then
  // finished() is true and result() complete). `context_full`: no room for another token.
  int Next(std::span<const float> logits, bool context_full);
  // Ends the generation now (a cancelled request).
  void Cancel();
  bool finished() const { return finished_; }
  GenerateResult& result() { return result_; }

 private:
  bool Emit(int id, std::string_view bytes);
  void Finish(StopReason reason);

  const Model& model_;
  Sampler& sampler_;
  GenerateConfig config_;
  GenerateResult result_;
  std::vector<int> history_;  // what the repetition penalty sees
  std::vector<float> scratch_;  // the sampler edits its input
  Utf8Stream stream_;
  StopStringFilter stops_;
  size_t budget_;
  bool finished_ = false;
};

// Runs `prompt` at session.position() and generates after it. `prompt` must be non-empty and fit
// the context (Error otherwise). The text streamed through on_token is exactly result.text.
GenerateResult Generate(Session& session, Sampler& sampler, std::span<const int> prompt,
                        const GenerateConfig& config);

}  // namespace zeroskip
