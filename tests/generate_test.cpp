// Generate(): the loop every front end shares. Pinned against a hand-written greedy loop over
// Session::Forward (argmax of the logits), plus its stop conditions and streaming contract.
#include "zeroskip/error.h"
#include "zeroskip/generate.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "test_util.h"

namespace zeroskip {
namespace {

const std::string kModel = "llama_gqa_hd64_relu_f32";  // context 64, BOS 1, EOS 2

SessionOptions Context(int64_t context) { return {.context = context}; }

GenerateConfig Config(int64_t max_tokens) {
  GenerateConfig c;
  c.max_tokens = max_tokens;
  c.stop_at_eos = false;
  return c;
}

Sampler Greedy(const Model& model) {
  SamplerOptions o;
  o.temperature = 0.0f;
  return Sampler(o, model.config().vocab);
}

std::vector<int> HandGreedy(const Model& model, std::vector<int> prompt, int n) {
  Engine engine(model, {.threads = 1});
  Session session(engine);
  std::vector<int> out;
  auto logits = session.Forward(prompt);
  for (int i = 0; i < n; ++i) {
    const int id =
        static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(id);
    logits = session.Forward({&id, 1});
  }
  return out;
}

TEST(Generate, GreedyMatchesAHandWrittenLoopAndStreamsExactlyItsText) {
  const Model& model = testing::LoadedModel(kModel);
  const std::vector<int> prompt = {1, 17, 42, 99};
  Engine engine(model, {.threads = 2});
  Session session(engine);
  Sampler sampler = Greedy(model);
  std::string streamed;
  GenerateConfig config = Config(12);
  config.on_token = [&](int, std::string_view text) {
    streamed += text;
    return true;
  };
  const GenerateResult r = Generate(session, sampler, prompt, config);
  EXPECT_EQ(r.tokens, HandGreedy(model, prompt, 12));
  EXPECT_EQ(r.stop, StopReason::kLength);
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.prompt_tokens, 4);
  EXPECT_EQ(r.decode_steps, 11);  // the last token is sampled, never run
  EXPECT_EQ(session.position(), 4 + 11);
}

TEST(Generate, StopsWhenCancelledOrTheCallbackDeclines) {
  const Model& model = testing::LoadedModel(kModel);
  const std::vector<int> prompt = {1, 17};
  Sampler sampler = Greedy(model);
  Engine engine(model, {.threads = 1});
  Session a(engine);
  int polls = 0;
  GenerateConfig cancel = Config(20);
  cancel.should_stop = [&] { return ++polls > 3; };
  const auto cancelled = Generate(a, sampler, prompt, cancel);
  EXPECT_EQ(cancelled.tokens.size(), 3u);
  EXPECT_EQ(cancelled.stop, StopReason::kCancelled);
  Session b(engine);
  GenerateConfig decline = Config(20);
  decline.on_token = [](int, std::string_view) { return false; };
  const auto declined = Generate(b, sampler, prompt, decline);
  EXPECT_EQ(declined.tokens.size(), 1u);
  EXPECT_EQ(declined.stop, StopReason::kCancelled);
}

TEST(Generate, StopsAtTheContextAndRefusesPromptsThatDoNotFit) {
  const Model& model = testing::LoadedModel(kModel);
  Sampler sampler = Greedy(model);
  Engine engine(model, {.threads = 1});
  Session session(engine, Context(6));
  const std::vector<int> prompt = {1, 17, 42, 99};
  const auto r = Generate(session, sampler, prompt, Config(20));
  EXPECT_EQ(r.stop, StopReason::kContext);
  EXPECT_EQ(r.tokens.size(), 3u);  // positions 4 and 5 are run; the token after them is sampled
  EXPECT_EQ(r.tokens, HandGreedy(model, prompt, 3));
  const std::vector<int> too_long(7, 17);
  Session fresh(engine, Context(6));
  EXPECT_THROW(Generate(fresh, sampler, too_long, Config(1)), Error);
  EXPECT_THROW(Generate(fresh, sampler, {}, Config(1)), Error);
}

}  // namespace
}  // namespace zeroskip
