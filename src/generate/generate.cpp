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

GenerateResult Generate(Session& session, Sampler& sampler, std::span<const int> prompt,
                        const GenerateConfig& config) {
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const Model& model = session.model();
  const std::string& path = model.file().path();
  if (prompt.empty()) throw Error(path, "nothing to generate from: the prompt has no tokens");
  if (session.position() + static_cast<int64_t>(prompt.size()) > session.context()) {
    throw Error(path, "the prompt is " + std::to_string(prompt.size()) +
                          " tokens but the context has room for " +
                          std::to_string(session.context() - session.position()));
  }
  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  const auto budget = static_cast<size_t>(std::max<int64_t>(0, config.max_tokens));
  std::vector<int> history(prompt.begin(), prompt.end());  // what the repetition penalty sees
  history.reserve(prompt.size() + budget);
  result.tokens.reserve(budget);

  const auto t0 = Clock::now();
  auto logits = session.Forward(prompt);
  const auto t1 = Clock::now();
  std::vector<float> scratch(logits.begin(), logits.end());  // the sampler edits its input
  Utf8Stream stream;
  StopStringFilter stops(config.stop_strings);
  const auto emit = [&](int id, std::string_view bytes) {
    const std::string text = stops.Push(bytes);
    result.text += text;
    if (config.on_token && !config.on_token(id, text)) return false;
    return !stops.stopped();
  };
  for (size_t i = 0; i < budget; ++i) {
    if (config.should_stop && config.should_stop()) {
      result.stop = StopReason::kCancelled;
      break;
    }
    const int id = sampler.Sample(scratch.data(), history);
    if (config.stop_at_eos && id == model.config().eos_id) {
      result.stop = StopReason::kEos;
      break;
    }
    result.tokens.push_back(id);
    history.push_back(id);
    std::string bytes = model.tokenizer().PieceBytes(id);
    if (i == 0 && config.drop_leading_space && !bytes.empty() && bytes[0] == ' ') {
      bytes.erase(0, 1);
    }
    if (!emit(id, stream.Push(bytes))) {
      result.stop = stops.stopped() ? StopReason::kStopString : StopReason::kCancelled;
      break;
    }
    if (i + 1 == budget) break;
    if (session.position() >= session.context()) {
      result.stop = StopReason::kContext;
      break;
    }
    logits = session.Forward({&id, 1});
    ++result.decode_steps;
    std::copy(logits.begin(), logits.end(), scratch.begin());
  }
  const auto t2 = Clock::now();
  if (const std::string tail = stream.Flush(); !tail.empty() && !stops.stopped()) emit(-1, tail);
  if (stops.stopped()) result.stop = StopReason::kStopString;
  if (const std::string held = stops.Flush(); !held.empty()) {
    result.text += held;
    if (config.on_token) config.on_token(-1, held);
  }
  result.prefill_seconds = seconds(t0, t1);
  result.decode_seconds = seconds(t1, t2);
  return result;
}

}  // namespace zeroskip
