// Chat templates render the exact text each format defines, and stop strings never leak into the
// streamed text, however the text is split into tokens.
#include <gtest/gtest.h>

#include "zeroskip/chat.h"
#include "zeroskip/generate.h"

namespace zeroskip {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Who?"}};

std::string Render(std::string_view name, bool generation_prompt = true) {
  return ChatTemplate::ByName(name)->Render(kConversation, generation_prompt);
}

TEST(ChatTemplate, RendersEachFormatExactly) {
  EXPECT_EQ(Render("chatml"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWho?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(Render("zephyr"),
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello.</s>\n"
            "<|user|>\nWho?</s>\n<|assistant|>\n");
  EXPECT_EQ(Render("llama2"),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Who? [/INST]");
  EXPECT_EQ(Render("dialogue"),
            "SYSTEM:\nBe brief.\n\nUSER:\nHi\n\nASSISTANT:\nHello.\n\nUSER:\nWho?\n\nASSISTANT:\n");
  EXPECT_EQ(Render("dialogue", false),
            "SYSTEM:\nBe brief.\n\nUSER:\nHi\n\nASSISTANT:\nHello.\n\nUSER:\nWho?\n\n");
  EXPECT_FALSE(ChatTemplate::ByName("alpaca"));
  EXPECT_EQ(ChatTemplate::ByName("dialogue")->stop_strings(), std::vector<std::string>{"\n\n"});
}

// A tool's result in the history: its own turn where the template has roles, an instruction turn
// in llama2 (which has none: rendered as an assistant reply it would close the turn wrongly).
TEST(ChatTemplate, RendersAToolResult) {
  const std::vector<ChatMessage> history = {
      {"user", "Weather?"}, {"assistant", ""}, {"tool", "sunny"}};
  EXPECT_EQ(ChatTemplate::ByName("llama2")->Render(history, true),
            "[INST] Weather? [/INST]  </s><s>[INST] sunny [/INST]");
  EXPECT_EQ(ChatTemplate::ByName("chatml")->Render(history, false),
            "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
            "<|im_start|>tool\nsunny<|im_end|>\n");
  EXPECT_EQ(ChatTemplate::ByName("dialogue")->Render(history, false),
            "USER:\nWeather?\n\nASSISTANT:\n\n\nTOOL:\nsunny\n\n");
}

// Every way of cutting the text into pieces gives the same emitted text.
TEST(StopStringFilter, HoldsBackPrefixesAndCutsAtTheFirstStop) {
  const std::string text = "one <|im_e two <|im_end|> three";
  for (size_t a = 0; a <= text.size(); ++a) {
    for (size_t b = a; b <= text.size(); ++b) {
      StopStringFilter f({"<|im_end|>", "zzz"});
      std::string out = f.Push(text.substr(0, a));
      out += f.Push(text.substr(a, b - a));
      out += f.Push(text.substr(b));
      out += f.Flush();
      EXPECT_EQ(out, "one <|im_e two ") << a << " " << b;
      EXPECT_TRUE(f.stopped());
    }
  }
  StopStringFilter none({"\n\n"});
  EXPECT_EQ(none.Push("a\n"), "a");  // "\n" may start "\n\n": held
  EXPECT_EQ(none.Push("b"), "\nb");
  EXPECT_EQ(none.Push("\n"), "");
  EXPECT_EQ(none.Flush(), "\n");
  EXPECT_FALSE(none.stopped());
}

}  // namespace
}  // namespace zeroskip
