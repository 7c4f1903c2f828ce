#include "zeroskip/chat.h"

#include <nlohmann/json.hpp>

#include "zeroskip/model.h"

namespace zeroskip {
namespace {

constexpr std::string_view kNames[] = {"llama2", "chatml", "zephyr", "dialogue"};

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return out;
}

}  // namespace

std::vector<std::string_view> ChatTemplate::Names() { return {std::begin(kNames), std::end(kNames)}; }

std::optional<ChatTemplate> ChatTemplate::ByName(std::string_view name) {
  for (const auto known : kNames) {
    if (name == known) return ChatTemplate(name);
  }
  return std::nullopt;
}

ChatTemplate::ChatTemplate(std::string_view name) : name_(name) {
  if (name_ == "chatml") stops_ = {"<|im_end|>", "<|im_start|>"};
  if (name_ == "zephyr") stops_ = {"</s>", "<|user|>"};
  if (name_ == "llama2") stops_ = {"</s>", "[INST]"};
  // A speech ends at the blank line before the next speaker's name.
  if (name_ == "dialogue") stops_ = {"\n\n"};
}

ChatTemplate ChatTemplate::ForModel(const Model& model) {
  const auto meta = nlohmann::json::parse(model.file().metadata_json(), nullptr, false);
  if (meta.is_object() && meta.contains("chat_template") && meta["chat_template"].is_string()) {
    if (auto t = ByName(meta["chat_template"].get<std::string>())) return *t;
  }
  const Tokenizer& tok = model.tokenizer();
  if (tok.HasPiece("<|im_start|>")) return ChatTemplate("chatml");
  if (tok.HasPiece("<|user|>")) return ChatTemplate("zephyr");
  if (tok.HasPiece("[INST]")) return ChatTemplate("llama2");
  return ChatTemplate("dialogue");
}

std::string ChatTemplate::Render(std::span<const ChatMessage> messages,
                                 bool add_generation_prompt) const {
  std::string out;
  if (name_ == "chatml") {
    for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
  } else if (name_ == "zephyr") {
    for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
    if (add_generation_prompt) out += "<|assistant|>\n";
  } else if (name_ == "llama2") {
    // [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s><s>[INST] user [/INST]
    // (add_generation_prompt changes nothing: a rendered user turn already ends with [/INST].)
    std::string system;
    for (const auto& m : messages) {
      if (m.role == "system") {
        system = "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n";
      } else if (m.role != "assistant") {  // user, or a tool's result: the next instruction
        out += std::string(out.empty() ? "" : "<s>") + "[INST] " + system + m.content + " [/INST]";
        system.clear();
      } else {
        out += " " + m.content + " </s>";
      }
    }
  } else {  // dialogue: a play script, each speech under its speaker's name
    for (const auto& m : messages) out += Upper(m.role) + ":\n" + m.content + "\n\n";
    if (add_generation_prompt) out += "ASSISTANT:\n";
  }
  return out;
}

}  // namespace zeroskip
