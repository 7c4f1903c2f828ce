// Chat templates: a conversation (system, user and assistant messages) as the prompt text a model
// was trained on, and the strings that end an assistant's turn. Shared by `zeroskip chat` and the
// server. Knows nothing of tokens or sessions.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zeroskip {

class Model;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" or "tool" (a tool call's result)
  std::string content;
};

class ChatTemplate {
 public:
  // "llama2" ([INST] ... [/INST]), "chatml" (<|im_start|>role ... <|im_end|>), "zephyr"
  // (<|user|> ... </s>), "dialogue" (a play script: `USER:` / `ASSISTANT:` speeches separated by
  // blank lines, what the Shakespeare demo model knows). nullopt for any other name.
  static std::optional<ChatTemplate> ByName(std::string_view name);
  static std::vector<std::string_view> Names();
  // The template a model asks for: named in its metadata ("chat_template"), else chosen from its
  // tokenizer's special pieces (<|im_start|> -> chatml, <|user|> -> zephyr, [INST] -> llama2),
  // else "dialogue".
  static ChatTemplate ForModel(const Model& model);

  std::string_view name() const { return name_; }
  // The conversation as prompt text; with add_generation_prompt it ends where the assistant's next
  // reply begins. BOS is not included (the caller adds the token).
  std::string Render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;
  // Where an assistant's reply ends (besides EOS).
  const std::vector<std::string>& stop_strings() const { return stops_; }

 private:
  explicit ChatTemplate(std::string_view name);
  std::string name_;
  std::vector<std::string> stops_;
};

}  // namespace zeroskip
