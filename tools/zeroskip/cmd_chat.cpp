// chat: a conversation in the terminal, in the model's chat template.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "commands.h"
#include "zeroskip/chat.h"
#include "zeroskip/error.h"
#include "zeroskip/generate.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void OnInterrupt(int) { g_interrupted.store(true); }

// Ctrl-C sets a flag instead of ending the process: it stops the reply being generated, and at
// the input prompt it interrupts the read (no SA_RESTART) so the prompt can say how to leave.
class InterruptFlag {
 public:
  InterruptFlag() {
    struct sigaction sa = {};
    sa.sa_handler = OnInterrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &previous_);
  }
  ~InterruptFlag() { sigaction(SIGINT, &previous_, nullptr); }
  InterruptFlag(const InterruptFlag&) = delete;
  InterruptFlag& operator=(const InterruptFlag&) = delete;

 private:
  struct sigaction previous_ = {};
};

void Notice(const std::string& text) { WriteStdout("(" + text + ")\n"); }

}  // namespace

void AddChat(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    SamplerOptions sampler;
    int n = 256;
    std::string chat_template, system;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("chat", "Talk with a model in the terminal (/reset, /exit)");
  AddComputeFlags(cmd, &f->compute);
  AddSamplerFlags(cmd, &f->sampler);
  cmd->add_option("-n,--n-predict", f->n, "longest reply, in tokens")->check(CLI::Range(1, 1 << 22));
  std::string names;
  for (const auto name : ChatTemplate::Names()) names += (names.empty() ? "" : "|") + std::string(name);
  cmd->add_option("--chat-template", f->chat_template, names + " (default: the model's)");
  cmd->add_option("--system", f->system, "a system message that opens the conversation");
  cmd->callback([f] {
    f->sampler.seed = f->compute.seed;
    std::optional<ChatTemplate> chosen;
    if (!f->chat_template.empty()) {
      chosen = ChatTemplate::ByName(f->chat_template);
      if (!chosen) throw Error("--chat-template", "unknown template '" + f->chat_template + "'");
    }
    // Before the model is loaded, so the message names the flag, not the model's tokenizer.
    if (!IsValidUtf8(f->system)) throw Error("--system", "is not valid UTF-8");
    const auto model = LoadModel(f->compute);
    const ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    const ChatTemplate tmpl = chosen ? *chosen : ChatTemplate::ForModel(*model);
    Engine engine(*model, co.engine);
    const std::unique_ptr<Session> started = StartSession(engine, co.session);
    Session& session = *started;
    Sampler sampler(f->sampler, model->config().vocab);
    // The reply's room: a prompt is trimmed until this many tokens fit after it.
    const int64_t reply_room = std::min<int64_t>(f->n, session.context() / 2);

    std::vector<ChatMessage> messages;
    if (!f->system.empty()) messages.push_back({"system", f->system});
    const size_t first_turn = messages.size();
    std::vector<int> cached;  // the tokens whose keys and values the session holds, in order
    InterruptFlag interrupt;
    std::fprintf(stderr,
                 "zeroskip chat: template %s, context %lld tokens. /reset clears the "
                 "conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops a reply.\n",
                 std::string(tmpl.name()).c_str(), static_cast<long long>(session.context()));
    std::string line;
    while (true) {
      WriteStdout("> ");
      g_interrupted.store(false);
      errno = 0;
      if (!std::getline(std::cin, line)) {
        const int error = errno;
        if (g_interrupted.load() && !std::cin.eof()) {
          std::cin.clear();
          WriteStdout("\n");
          Notice("Ctrl-C stops a reply; /exit leaves");
          continue;
        }
        // End of input ends the conversation; a failed read (stdin a directory, closed) is an
        // error, not a quiet goodbye. std::cin reads through stdio, which keeps the error flag.
        if (std::ferror(stdin) && error != EINTR) {
          throw Error("stdin", std::string("read failed: ") + std::strerror(error ? error : EIO));
        }
        WriteStdout("\n");
        break;
      }
      if (line == "/exit") break;
      if (line == "/reset") {
        messages.resize(first_turn);
        cached.clear();
        session.Reset();
        Notice("conversation cleared");
        continue;
      }
      if (line.empty()) continue;
      if (!IsValidUtf8(line)) {
        Notice("that line is not valid UTF-8; not sent");
        continue;
      }
      messages.push_back({"user", line});
      std::vector<int> ids;
      while (true) {
        const std::string text = tmpl.Render(messages, /*add_generation_prompt=*/true);
        const bool fits = model->tokenizer().MinTokens(text) + reply_room <= session.context();
        ids = fits ? WithBos(*model, model->tokenizer().Encode(text)) : std::vector<int>();
        if (fits && static_cast<int64_t>(ids.size()) + reply_room <= session.context()) break;
        if (messages.size() - first_turn <= 1) break;  // only the new message is left
        // Drop the oldest exchange (a user message and the reply to it).
        messages.erase(messages.begin() + first_turn,
                       messages.begin() + std::min(first_turn + 2, messages.size() - 1));
        Notice("dropped the oldest turn to fit the context");
      }
      if (ids.empty() || static_cast<int64_t>(ids.size()) + reply_room > session.context()) {
        messages.pop_back();
        Notice("that message is too long for the context; not sent");
        continue;
      }
      // Keep the cache for the prefix this prompt shares with what was run; at least one token
      // must be new for the next logits.
      size_t keep = std::mismatch(cached.begin(), cached.end(), ids.begin(), ids.end()).first -
                    cached.begin();
      keep = std::min(keep, ids.size() - 1);
      session.Rewind(static_cast<int64_t>(keep));
      cached.assign(ids.begin(), ids.end());

      GenerateConfig gc;
      gc.max_tokens = f->n;
      gc.stop_strings = tmpl.stop_strings();
      gc.should_stop = [] { return g_interrupted.load(); };
      gc.on_token = [](int, std::string_view text) {
        WriteStdout(text);
        return true;
      };
      const std::span<const int> fresh(ids.data() + keep, ids.size() - keep);
      const GenerateResult r = Generate(session, sampler, fresh, gc);
      // The last sampled token was never run: the cache holds the reply up to the one before it.
      cached.insert(cached.end(), r.tokens.begin(), r.tokens.begin() + r.decode_steps);
      WriteStdout(r.stop == StopReason::kCancelled ? " [stopped]\n" : "\n");
      messages.push_back({"assistant", r.text});
    }
  });
}

}  // namespace zeroskip::cli
