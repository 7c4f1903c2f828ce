#include "zeroskip/generate.h"

#include <algorithm>
#include <chrono>

#include "zeroskip/error.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {

std::string_view StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kLength:
      return "length";
    case StopReason::kEos:
      return "eos";
    case StopReason::kContext:
      return "context";
    case StopReason::kCancelled:
      return "cancelled";
    case StopReason::kStopString:
      return "stop";
  }
  return "?";
}

StopStringFilter::StopStringFilter(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopStringFilter::Push(std::string_view text) {
  if (stopped_) return {};
  held_ += text;
  // Text already emitted never ends with a stop string's prefix (that is held), so any stop
  // string that appears lies wholly inside held_.
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  size_t keep = 0;  // the longest tail of held_ that begins some stop string
  for (const auto& s : stops_) {
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::Flush() {
  std::string out = stopped_ ? std::string() : std::move(held_);
  held_.clear();
  return out;
}

Generation::Generation(const Model& model, Sampler& sampler, std::span<const int> prompt,
                       const GenerateConfig& config)
    : model_(model),
      sampler_(sampler),
      config_(config),
      history_(prompt.begin(), prompt.end()),
      scratch_(model.config().vocab),
      stops_(config.stop_strings),
      budget_(static_cast<size_t>(std::max<int64_t>(0, config.max_tokens))) {
  result_.prompt_tokens = static_cast<int64_t>(prompt.size());
  history_.reserve(prompt.size() + budget_);
  result_.tokens.reserve(budget_);
  if (budget_ == 0) Finish(StopReason::kLength);
}

bool Generation::Emit(int id, std::string_view bytes) {
  const std::string text = stops_.Push(bytes);
  result_.text += text;
  if (config_.on_token && !config_.on_token(id, text)) return false;
  return !stops_.stopped();
}

void Generation::Finish(StopReason reason) {
  if (finished_) return;
  finished_ = true;
  result_.stop = reason;
  if (const std::string tail = stream_.Flush(); !tail.empty() && !stops_.stopped()) Emit(-1, tail);
  if (stops_.stopped()) result_.stop = StopReason::kStopString;
  if (const std::string held = stops_.Flush(); !held.empty()) {
    result_.text += held;
    if (config_.on_token) config_.on_token(-1, held);
  }
}

void Generation::Cancel() { Finish(StopReason::kCancelled); }

int Generation::Next(std::span<const float> logits, bool context_full) {
  if (finished_) return -1;
  if (config_.should_stop && config_.should_stop()) {
    Finish(StopReason::kCancelled);
    return -1;
  }
  std::copy(logits.begin(), logits.end(), scratch_.begin());
  TokenConstraint* constraint = config_.constraint.get();
  // No token can continue the text (a vocabulary without a needed byte): it stays incomplete.
  if (constraint && !constraint->Mask(scratch_)) {
    Finish(StopReason::kLength);
    return -1;
  }
  const int id = sampler_.Sample(scratch_.data(), history_);
  if ((config_.stop_at_eos || constraint) && id == model_.config().eos_id) {
    Finish(StopReason::kEos);
    return -1;
  }
  const size_t i = result_.tokens.size();
  result_.tokens.push_back(id);
  if (config_.logprobs >= 0) result_.logprobs.push_back(ScoreToken(logits, id, config_.logprobs));
  history_.push_back(id);
  std::string bytes = model_.tokenizer().PieceBytes(id);
  if (i == 0 && config_.drop_leading_space && !bytes.empty() && bytes[0] == ' ') {
    bytes.erase(0, 1);
  }
  if (!Emit(id, stream_.Push(bytes))) {
    Finish(stops_.stopped() ? StopReason::kStopString : StopReason::kCancelled);
    return -1;
  }
  if (constraint) {
    constraint->Accept(id);
    if (constraint->Finished()) {  // as if EOS came next: nothing else may
      Finish(StopReason::kEos);
      return -1;
    }
  }
  if (i + 1 == budget_) {
    Finish(StopReason::kLength);
    return -1;
  }
  if (context_full) {
    Finish(StopReason::kContext);
    return -1;
  }
  return id;
}

GenerateResult Generate(Session& session, Sampler& sampler, std::span<const int> prompt,
                        const GenerateConfig& config) {
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const std::string& path = session.model().file().path();
  if (prompt.empty()) throw Error(path, "nothing to generate from: the prompt has no tokens");
  if (session.position() + static_cast<int64_t>(prompt.size()) > session.context()) {
    throw Error(path, "the prompt is " + std::to_string(prompt.size()) +
                          " tokens but the context has room for " +
                          std::to_string(session.context() - session.position()));
  }
  Generation generation(session.model(), sampler, prompt, config);
  const auto t0 = Clock::now();
  auto logits = session.Forward(prompt);
  const auto t1 = Clock::now();
  int64_t steps = 0;
  for (int id; (id = generation.Next(logits, session.position() >= session.context())) >= 0;) {
    logits = session.Forward({&id, 1});
    ++steps;
  }
  const auto t2 = Clock::now();
  GenerateResult result = std::move(generation.result());
  result.decode_steps = steps;
  result.prefill_seconds = seconds(t0, t1);
  result.decode_seconds = seconds(t1, t2);
  return result;
}

}  // namespace zeroskip
