// The HTTP half of `zeroskip serve`: requests in, OpenAI-shaped JSON and server-sent events out.
// Generation itself happens in the Scheduler's thread; a connection's thread (connections.h)
// validates a request, submits it and relays the job's text as it arrives.
#include "zeroskip/server.h"

#include <sys/socket.h>

#include <cerrno>
#include <ctime>
#include <functional>
#include <httplib.h>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "serve/connections.h"
#include "serve/scheduler.h"
#include "zeroskip/chat.h"
#include "zeroskip/error.h"
#include "zeroskip/json_constraint.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {
namespace serve {
extern const char kChatPage[];  // generated from src/serve/chat.html (CMakeLists.txt)
}  // namespace serve

namespace {

using nlohmann::json;
using serve::Clock;
using serve::Job;
using serve::JobRequest;

// A request the server refuses: the status and an OpenAI-style error object.
struct HttpError {
  int status;
  std::string message;
  std::string param = {};
  std::string type = "invalid_request_error";
  std::string code = {};  // OpenAI's: a string ("context_length_exceeded") or null
};

json OrNull(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

std::string ErrorBody(const HttpError& e) {
  json error = {{"message", e.message}, {"type", e.type}, {"code", OrNull(e.code)}};
  error["param"] = OrNull(e.param);
  // The message may quote the client's bytes (a JSON parse error does): invalid UTF-8 in them
  // is replaced, or dumping would throw and the answer become a 500.
  return json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

void SendError(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  res.set_content(ErrorBody(e), "application/json");
}

const HttpError kShuttingDown{503, "the server is shutting down", "", "server_shutting_down"};

// ---- request fields, each checked for its type and range --------------------------------------

const json* Field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double Number(const json& body, const char* name, double lo, double hi, double fallback) {
  const json* v = Field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) throw HttpError{400, std::string("'") + name + "' must be a number", name};
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    throw HttpError{400,
                    std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]",
                    name};
  }
  return x;
}

int64_t Integer(const json& body, const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const json* v = Field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer()) {
    throw HttpError{400, std::string("'") + name + "' must be an integer", name};
  }
  // Unsigned JSON integers past INT64_MAX read as negative here: refused by the range.
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
                        ? -1
                        : v->get<int64_t>();
  if (x < lo || x > hi) {
    throw HttpError{400,
                    std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]",
                    name};
  }
  return x;
}

bool Boolean(const json& body, const char* name, bool fallback) {
  const json* v = Field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) throw HttpError{400, std::string("'") + name + "' must be a boolean", name};
  return v->get<bool>();
}

std::string Text(const json& v, const char* name) {
  if (!v.is_string()) throw HttpError{400, std::string("'") + name + "' must be a string", name};
  std::string s = v.get<std::string>();
  if (!IsValidUtf8(s)) throw HttpError{400, std::string("'") + name + "' is not valid UTF-8", name};
  return s;
}

// "stop": a string or an array of up to 4 strings (OpenAI's limit).
std::vector<std::string> StopStrings(const json& body) {
  const json* v = Field(body, "stop");
  if (!v) return {};
  if (v->is_string()) return {Text(*v, "stop")};
  if (!v->is_array() || v->size() > 4) {
    throw HttpError{400, "'stop' must be a string or an array of at most 4 strings", "stop"};
  }
  std::vector<std::string> out;
  for (const json& s : *v) out.push_back(Text(s, "stop"));
  return out;
}

// ---- the connection a handler answers -----------------------------------------------------------

// Whether the client of the request this thread answers has gone: a peer that closed reads as
// end-of-stream. Without it a non-streaming request would generate to its end for nobody,
// holding a slot.
class ConnectionProbe {
 public:
  ConnectionProbe() : fd_(serve::HttpServer::CurrentSocket()) {}

  bool Closed() const {
    if (fd_ < 0) return false;
    char byte;
    const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

 private:
  int fd_;
};

std::string FinishReason(const Job& job) {
  switch (job.result.stop) {
    case StopReason::kEos:
    case StopReason::kStopString:
      return "stop";
    case StopReason::kLength:
    case StopReason::kContext:
      return "length";
    case StopReason::kCancelled:
      return "cancelled";
  }
  return "stop";
}

// The prompts of a completion request: a string, an array of strings, an array of token ids or
// an array of such arrays. Token ids run as given (the client includes BOS); text gets the
// model's BOS. Each prompt is {tokens, whether BOS was added, its text}.
struct Prompt {
  std::vector<int> tokens;
  bool added_bos = false;
  std::string text;
};

std::vector<int> TokenIds(const json& ids, int64_t vocab) {
  std::vector<int> out;
  for (const json& id : ids) {
    if (!id.is_number_integer()) {
      throw HttpError{400,
                      "'prompt' must be a string, an array of strings, an array of token ids "
                      "or an array of arrays of token ids",
                      "prompt"};
    }
    const int64_t v = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t(INT64_MAX)
                          ? -1
                          : id.get<int64_t>();
    if (v < 0 || v >= vocab) {
      throw HttpError{400,
                      "token id " + std::to_string(v) +
                          " in 'prompt' is outside the vocabulary [0, " +
                          std::to_string(vocab) + ")",
                      "prompt"};
    }
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) throw HttpError{400, "a prompt of token ids must not be empty", "prompt"};
  return out;
}

// The names of a chat request's parameters that ask for what a plain text model cannot do.
constexpr const char* kUnsupportedChat[] = {"tools",           "functions",  "function_call",
                                            "audio",           "prediction", "web_search_options",
                                            "reasoning_effort"};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The `endpoint` label of /metrics: the routes, and "other" for any other path (a label per
// path a client makes up would grow without bound).
std::string EndpointLabel(const std::string& path) {
  for (const char* route :
       {"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"}) {
    if (path == route) return route;
  }
  if (path.starts_with("/v1/models/")) return "/v1/models/{id}";
  return "other";
}

std::chrono::milliseconds Milliseconds(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000 + 0.5));
}

serve::ConnectionLimits Limits(const ServeOptions& o) {
  serve::ConnectionLimits limits;
  limits.max_connections = o.max_connections;
  limits.idle = Milliseconds(o.idle_timeout);
  limits.headers = Milliseconds(o.header_timeout);
  limits.body = Milliseconds(o.body_timeout);
  const std::string body =
      ErrorBody({503, "too many open connections; retry later", "", "server_busy"});
  limits.refusal =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\nRetry-After: 1\r\nConnection: close\r\n";
  if (!o.cors_origin.empty()) {
    limits.refusal += "Access-Control-Allow-Origin: " + o.cors_origin + "\r\n";
  }
  limits.refusal += "\r\n" + body;
  return limits;
}

}  // namespace

struct Server::Impl {
  Impl(const Model& m, const ServeOptions& o)
      : model(m),
        options(o),
        engine(m, WithBatch(o.engine, o)),
        scheduler(engine, o.session, o.parallel, o.queue),
        chat(o.chat_template.empty() ? ChatTemplate::ForModel(m) : Template(o.chat_template)),
        http(Limits(o)) {
    const std::string& path = m.file().path();
    const size_t slash = path.find_last_of('/');
    model_id = path.substr(slash == std::string::npos ? 0 : slash + 1);
    if (model_id.size() > 4 && model_id.ends_with(".zsk")) model_id.resize(model_id.size() - 4);
    context = scheduler.context();
  }

  static EngineOptions WithBatch(EngineOptions e, const ServeOptions& o) {
    // A pass holds one prompt chunk or one token of every slot.
    e.max_batch = std::max<int64_t>(serve::Scheduler::kPrefillChunk, o.parallel);
    return e;
  }

  static ChatTemplate Template(const std::string& name) {
    if (auto t = ChatTemplate::ByName(name)) return *t;
    std::string names;
    for (const auto n : ChatTemplate::Names()) names += (names.empty() ? "" : ", ") + std::string(n);
    throw Error("", "--chat-template: unknown template '" + name + "' (known: " + names + ")");
  }

  void Routes();
  bool Authorized(const httplib::Request& req, httplib::Response& res) const;
  void Complete(const httplib::Request& req, httplib::Response& res,
                const httplib::ContentReader& content, bool chat_api);
  // The request body, at most --max-body bytes whatever its framing (chunked bodies too), or
  // nullopt with the error already set on `res`.
  std::optional<std::string> ReadBody(httplib::Response& res,
                                      const httplib::ContentReader& content) const;
  // A request as the scheduler's jobs (prompts x n choices, in choice order) and how to answer.
  struct Request {
    std::vector<JobRequest> jobs;
    std::vector<std::string> echo;  // [jobs] the prompt text to echo ("" without echo)
    std::vector<size_t> skip;       // [jobs] leading prompt tokens the server added (BOS)
    int logprobs = -1;              // alternatives per token; -1: no logprobs
    bool stream = false, include_usage = false;
    uint64_t seed = 0;
    int64_t clamped = -1;  // >= 0: max_tokens exceeded the context's room; this many instead
  };
  // Most choices (n) of one request, and most alternatives per token (logprobs).
  static constexpr int64_t kMaxChoices = 16;
  static constexpr int64_t kMaxTopLogprobs = 20;
  Request Parse(const json& body, bool chat_api) const;
  json Usage(const std::vector<std::shared_ptr<Job>>& jobs) const;
  json CompletionLogprobs(const Job& job, const std::string& echo, size_t skip) const;
  json ChatLogprobs(const Job& job) const;
  // "response_format": null for text, else what makes each generation's JSON constraint.
  std::function<std::shared_ptr<TokenConstraint>()> ResponseFormat(const json& format) const;
  // "fit_context": drops the oldest turns until the prompt leaves room for the reply; returns
  // how many messages went.
  int64_t FitContext(const json& body, std::vector<ChatMessage>* messages) const;
  json Timings(const Job& job) const;
  std::string Metrics();

  const Model& model;
  ServeOptions options;
  Engine engine;
  serve::Scheduler scheduler;
  ChatTemplate chat;
  std::string model_id;
  int64_t context;
  serve::HttpServer http;
  int port = -1;
  std::atomic<uint64_t> next_id{1};
  std::mutex answers_lock;
  std::map<std::pair<std::string, int>, uint64_t> answers;  // (endpoint, status) -> count
  // The model's pieces for JSON mode, built by the first request that uses it.
  mutable std::once_flag json_vocabulary_once;
  mutable std::shared_ptr<const JsonVocabulary> json_vocabulary;
};

bool Server::Impl::Authorized(const httplib::Request& req, httplib::Response& res) const {
  if (options.api_key.empty()) return true;
  const std::string want = "Bearer " + options.api_key;
  const std::string got = req.get_header_value("Authorization");
  // Constant time in the key's content: every byte is compared whatever the first mismatch.
  unsigned diff = got.size() != want.size();
  for (size_t i = 0; i < want.size(); ++i) {
    diff |= static_cast<unsigned char>(want[i]) ^
            static_cast<unsigned char>(i < got.size() ? got[i] : 0);
  }
  if (diff == 0) return true;
  SendError(res, {401, "missing or wrong API key (send 'Authorization: Bearer <key>')", "",
                  "authentication_error", "invalid_api_key"});
  return false;
}

Server::Impl::Request Server::Impl::Parse(const json& body, bool chat_api) const {
  if (!body.is_object()) throw HttpError{400, "the request body must be a JSON object"};
  Request out;
  JobRequest r;
  std::vector<Prompt> prompts;
  const int64_t vocab = model.config().vocab;
  const auto text_prompt = [&](std::string text) {
    Prompt p;
    p.added_bos = model.config().bos_id >= 0;
    p.text = std::move(text);
    return p;
  };
  if (chat_api) {
    for (const char* name : kUnsupportedChat) {
      if (Field(body, name)) {
        throw HttpError{400,
                        std::string("'") + name +
                            "' is not supported: the server runs a "
                            "plain text model (no tool calls, audio or predicted outputs)",
                        name};
      }
    }
    if (const json* v = Field(body, "tool_choice"); v && *v != "none") {
      throw HttpError{400, "'tool_choice' must be \"none\": tool calls are not supported",
                      "tool_choice"};
    }
    if (const json* v = Field(body, "modalities"); v && *v != json::array({"text"})) {
      throw HttpError{400, "'modalities' must be [\"text\"]", "modalities"};
    }
    const json* messages = Field(body, "messages");
    if (!messages || !messages->is_array() || messages->empty()) {
      throw HttpError{400, "'messages' must be a non-empty array", "messages"};
    }
    std::vector<ChatMessage> conversation;
    for (const json& m : *messages) {
      if (!m.is_object() || !m.contains("role")) {
        throw HttpError{400, "each message needs a 'role' and a 'content'", "messages"};
      }
      ChatMessage message{Text(m["role"], "role"), ""};
      // OpenAI's newer name for the system prompt.
      if (message.role == "developer") message.role = "system";
      if (message.role != "system" && message.role != "user" && message.role != "assistant" &&
          message.role != "tool") {
        throw HttpError{400, "a message's role must be system, developer, user, assistant or tool",
                        "messages"};
      }
      // An assistant turn that called tools has no content.
      const bool may_be_empty = message.role == "assistant";
      const auto content = m.find("content");
      if (content == m.end() || content->is_null()) {
        if (!may_be_empty) {
          throw HttpError{400, "each message needs a 'role' and a 'content'", "messages"};
        }
      } else if (content->is_array()) {  // content parts: only text ones
        for (const json& part : *content) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text")) {
            throw HttpError{400, "only text content parts are supported", "messages"};
          }
          message.content += Text(part["text"], "text");
        }
      } else {
        message.content = Text(*content, "content");
      }
      conversation.push_back(std::move(message));
    }
    if (Boolean(body, "fit_context", false)) r.dropped_messages = FitContext(body, &conversation);
    prompts.push_back(text_prompt(chat.Render(conversation, /*add_generation_prompt=*/true)));
    r.stop_strings = chat.stop_strings();
  } else {
    const json* p = Field(body, "prompt");
    if (!p) throw HttpError{400, "'prompt' is required", "prompt"};
    if (p->is_string()) {
      prompts.push_back(text_prompt(Text(*p, "prompt")));
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
      prompts.push_back({TokenIds(*p, vocab), false, {}});
    } else if (p->is_array() && !p->empty()) {
      for (const json& one : *p) {
        if (one.is_array()) {
          prompts.push_back({TokenIds(one, vocab), false, {}});
        } else {
          prompts.push_back(text_prompt(Text(one, "prompt")));
        }
      }
    } else {
      throw HttpError{400,
                      "'prompt' must be a string, an array of strings, an array of token ids "
                      "or an array of arrays of token ids",
                      "prompt"};
    }
    if (const json* v = Field(body, "suffix"); v && *v != "") {
      throw HttpError{400, "'suffix' (insertion) is not supported", "suffix"};
    }
  }
  const int64_t n = Integer(body, "n", 1, kMaxChoices, 1);
  if (const int64_t best_of = Integer(body, "best_of", 1, kMaxChoices, n); best_of != n) {
    throw HttpError{400, "'best_of' must equal 'n' (choices are not ranked)", "best_of"};
  }
  const int64_t choices = n * static_cast<int64_t>(prompts.size());
  if (choices > options.parallel + options.queue) {
    throw HttpError{400,
                    std::to_string(choices) +
                        " choices (prompts x n) exceed what this server "
                        "holds at once (--parallel + --queue = " +
                        std::to_string(options.parallel + options.queue) + ")",
                    prompts.size() > 1 ? "prompt" : "n"};
  }
  if (const json* format = Field(body, "response_format")) {
    r.constraint = ResponseFormat(*format);
    // The JSON value's end ends the reply; the template's stop strings could cut a string in it.
    if (r.constraint) r.stop_strings.clear();
  }
  for (auto& s : StopStrings(body)) r.stop_strings.push_back(std::move(s));

  // Logprobs: completions' "logprobs": N, chat's "logprobs": true with "top_logprobs": N.
  int logprobs = -1;
  if (chat_api) {
    const int64_t top = Integer(body, "top_logprobs", 0, kMaxTopLogprobs, -1);
    if (Boolean(body, "logprobs", false)) {
      logprobs = static_cast<int>(std::max<int64_t>(top, 0));
    } else if (top >= 0) {
      throw HttpError{400, "'top_logprobs' needs 'logprobs': true", "top_logprobs"};
    }
  } else {
    logprobs = static_cast<int>(Integer(body, "logprobs", 0, kMaxTopLogprobs, -1));
  }
  out.logprobs = logprobs;
  out.stream = Boolean(body, "stream", false);
  if (out.stream && logprobs >= 0) {
    throw HttpError{400, "'logprobs' is not supported with 'stream'", "logprobs"};
  }
  const bool echo = Boolean(body, "echo", false);
  if (echo && chat_api) throw HttpError{400, "'echo' applies to completions only", "echo"};

  const SamplerOptions& d = options.sampler;
  r.sampler.temperature = static_cast<float>(Number(body, "temperature", 0, 100, d.temperature));
  r.sampler.top_p = static_cast<float>(Number(body, "top_p", 0, 1, d.top_p));
  r.sampler.top_k = static_cast<int>(Integer(body, "top_k", 0, 1 << 22, d.top_k));
  r.sampler.min_p = static_cast<float>(Number(body, "min_p", 0, 1, d.min_p));
  r.sampler.repeat_penalty =
      static_cast<float>(Number(body, "repeat_penalty", 0.01, 100, d.repeat_penalty));
  r.sampler.repeat_last_n =
      static_cast<int>(Integer(body, "repeat_last_n", 0, 1 << 22, d.repeat_last_n));
  r.sampler.presence_penalty = static_cast<float>(Number(body, "presence_penalty", -2, 2, 0));
  r.sampler.frequency_penalty = static_cast<float>(Number(body, "frequency_penalty", -2, 2, 0));
  if (const json* bias = Field(body, "logit_bias")) {
    if (!bias->is_object()) throw HttpError{400, "'logit_bias' must be an object", "logit_bias"};
    for (const auto& [key, value] : bias->items()) {
      // OpenAI's keys are token ids as strings: all digits, in the vocabulary.
      const bool digits = !key.empty() && key.size() <= 10 &&
                          key.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || std::stoll(key) >= vocab) {
        throw HttpError{400,
                        "'logit_bias' key '" + key + "' is not a token id in [0, " +
                            std::to_string(vocab) + ")",
                        "logit_bias"};
      }
      if (!value.is_number() || !(value.get<double>() >= -100 && value.get<double>() <= 100)) {
        throw HttpError{400, "'logit_bias' values must be numbers in [-100, 100]", "logit_bias"};
      }
      r.sampler.logit_bias.emplace_back(std::stoi(key), value.get<float>());
    }
  }
  // No seed: a fresh one below 2^53 (a JavaScript number holds it exactly), reported in the
  // answer so the request can be repeated. Choice i samples with seed + i.
  if (const json* v = Field(body, "seed")) {
    if (!v->is_number_integer()) throw HttpError{400, "'seed' must be an integer", "seed"};
    out.seed =
        v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  } else {
    std::random_device random;
    out.seed = ((uint64_t(random()) << 32) ^ random()) & ((uint64_t(1) << 53) - 1);
  }
  r.stop_at_eos = !Boolean(body, "ignore_eos", false);

  // zeroskip's own: how the FFN runs.
  r.ffn = options.session.ffn;
  if (const json* v = Field(body, "ffn"); v && !ParseFfnMode(Text(*v, "ffn"), &r.ffn)) {
    throw HttpError{400, "'ffn' must be auto, sparse or dense", "ffn"};
  }
  r.gate = options.session.gate;
  if (const json* v = Field(body, "gate"); v && !ParseGateMode(Text(*v, "gate"), &r.gate)) {
    throw HttpError{400, "'gate' must be auto, dense or shadow", "gate"};
  }
  r.activation = options.session.activation;
  if (const json* v = Field(body, "act"); v && !ParseFfnActivation(Text(*v, "act"), &r.activation.kind)) {
    throw HttpError{400, "'act' must be model, relu, silu or stoch", "act"};
  }
  r.activation.stoch_p = static_cast<float>(Number(body, "stoch_p", 0, 1, r.activation.stoch_p));
  r.logprobs = logprobs;
  r.prompt_logprobs = echo ? logprobs : -1;

  out.include_usage = false;
  if (const json* so = Field(body, "stream_options")) {
    if (!so->is_object()) throw HttpError{400, "'stream_options' must be an object", "stream_options"};
    out.include_usage = Boolean(*so, "include_usage", false);
  }

  // OpenAI's newer name for it wins where both are given.
  const char* budget =
      Field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const int64_t asked = Integer(body, budget, 0, INT64_MAX, -1);
  for (Prompt& p : prompts) {
    // The prompt must leave room for at least one token; bounded before tokenizing (megabytes
    // of prompt would take seconds to tokenize).
    const auto too_long = [&](const std::string& tokens) {
      return HttpError{
          400, "the prompt is " + tokens + " tokens but the context is " + std::to_string(context),
          chat_api ? "messages" : "prompt", "invalid_request_error", "context_length_exceeded"};
    };
    JobRequest job = r;
    if (p.tokens.empty()) {
      if (const int64_t least = model.tokenizer().MinTokens(p.text); least >= context) {
        throw too_long("at least " + std::to_string(least));
      }
      if (p.added_bos) job.prompt.push_back(static_cast<int>(model.config().bos_id));
      for (int id : model.tokenizer().Encode(p.text)) job.prompt.push_back(id);
      if (job.prompt.empty()) {
        throw HttpError{400, "the prompt is empty and the model has no BOS token", "prompt"};
      }
      job.drop_leading_space = p.text.empty();
    } else {
      job.prompt = p.tokens;
      p.text = model.tokenizer().Decode(p.tokens);
      job.drop_leading_space = p.text.empty();
    }
    if (static_cast<int64_t>(job.prompt.size()) >= context) {
      throw too_long(std::to_string(job.prompt.size()));
    }
    const int64_t room = context - static_cast<int64_t>(job.prompt.size());
    job.max_tokens = asked < 0 ? room : std::min(room, asked);
    if (asked > room) {
      out.clamped = out.clamped < 0 ? room : std::min(out.clamped, room);
    }
    const int leader = static_cast<int>(out.jobs.size());
    for (int64_t i = 0; i < n; ++i) {
      JobRequest choice = job;
      choice.sampler.seed = out.seed + static_cast<uint64_t>(i);
      choice.activation.seed = choice.sampler.seed;
      // A stochastic activation draws from each choice's own seed, in the prompt too.
      const bool own_prompt = i == 0 || r.activation.kind == FfnActivation::kStochastic;
      choice.shares_prompt_of = own_prompt ? -1 : leader;
      out.jobs.push_back(std::move(choice));
      out.skip.push_back(p.added_bos ? 1 : 0);
      out.echo.push_back(echo ? p.text : std::string());
    }
  }
  return out;
}

std::function<std::shared_ptr<TokenConstraint>()> Server::Impl::ResponseFormat(
    const json& format) const {
  const auto refuse = [](const std::string& message) {
    return HttpError{400, message, "response_format"};
  };
  const json* type = format.is_object() ? Field(format, "type") : nullptr;
  if (!type || !type->is_string()) {
    throw refuse("'response_format' must be an object with a 'type'");
  }
  std::shared_ptr<const JsonGrammar> grammar;
  if (*type == "text") return {};
  if (*type == "json_object") {
    grammar = JsonGrammar::AnyObject();
  } else if (*type == "json_schema") {
    const json* spec = Field(format, "json_schema");
    if (!spec || !spec->is_object()) {
      throw refuse("'response_format.json_schema' must be an object");
    }
    if (const json* name = Field(*spec, "name"); !name || !name->is_string()) {
      throw refuse("'response_format.json_schema.name' must be a string");
    }
    if (const json* strict = Field(*spec, "strict"); strict && !strict->is_boolean()) {
      throw refuse("'response_format.json_schema.strict' must be a boolean");
    }
    const json* schema = Field(*spec, "schema");
    if (!schema) throw refuse("'response_format.json_schema.schema' is required");
    try {
      grammar = JsonGrammar::FromSchema(schema->dump());
    } catch (const Error& e) {
      throw refuse(e.reason());
    }
  } else {
    throw refuse("'response_format.type' must be text, json_object or json_schema");
  }
  std::call_once(json_vocabulary_once, [this] {
    json_vocabulary = JsonVocabulary::FromTokenizer(model.tokenizer(), model.config().vocab,
                                                    model.config().eos_id);
  });
  return [grammar, vocabulary = json_vocabulary] {
    return std::make_shared<JsonConstraint>(grammar, vocabulary);
  };
}

int64_t Server::Impl::FitContext(const json& body, std::vector<ChatMessage>* messages) const {
  // `zeroskip chat`'s policy: the reply keeps min(max_tokens, context / 2) tokens of room, and
  // the oldest exchange (two messages) after the leading system messages goes first.
  const char* budget =
      Field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const int64_t room = std::min(Integer(body, budget, 0, INT64_MAX, context), context / 2);
  const int64_t bos = model.config().bos_id >= 0 ? 1 : 0;
  const Tokenizer& tokenizer = model.tokenizer();
  size_t first = 0;
  while (first < messages->size() && (*messages)[first].role == "system") ++first;
  int64_t dropped = 0;
  for (;;) {
    const std::string text = chat.Render(*messages, /*add_generation_prompt=*/true);
    if (tokenizer.MinTokens(text) + bos + room <= context &&
        static_cast<int64_t>(tokenizer.Encode(text).size()) + bos + room <= context) {
      break;
    }
    if (messages->size() <= first + 1) break;  // only the newest is left: too long, as usual
    const size_t n = std::min<size_t>(2, messages->size() - first - 1);
    messages->erase(messages->begin() + static_cast<std::ptrdiff_t>(first),
                    messages->begin() + static_cast<std::ptrdiff_t>(first + n));
    dropped += static_cast<int64_t>(n);
  }
  return dropped;
}

namespace {

// A token as OpenAI shows it: its text (invalid UTF-8 of a partial character replaced when
// dumped) and its bytes.
json TokenBytes(const std::string& piece) {
  json bytes = json::array();
  for (const unsigned char c : piece) bytes.push_back(c);
  return bytes;
}

}  // namespace

// Completions' logprobs object: the echoed prompt's tokens (without a BOS the server added; the
// first token of the sequence has no logprob: null), then the generated ones.
json Server::Impl::CompletionLogprobs(const Job& job, const std::string& echo, size_t skip) const {
  const Tokenizer& tok = model.tokenizer();
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  // Text offsets are bytes into the choice's text, which lacks the first token's dummy-prefix
  // space when the echoed text or the generation (drop_leading_space) begins without it.
  size_t offset = 0;
  bool drop_space = echo.empty() ? job.request.drop_leading_space : echo[0] != ' ';
  const auto add = [&](int id, const TokenLogProb* lp) {
    const std::string piece = tok.PieceBytes(id);
    offsets.push_back(offset);
    offset += piece.size() - (drop_space && !piece.empty() && piece[0] == ' ' ? 1 : 0);
    drop_space = false;
    tokens.push_back(piece);
    if (lp == nullptr) {
      values.push_back(nullptr);
      tops.push_back(nullptr);
      return;
    }
    values.push_back(lp->logprob);
    json top = json::object();
    // Two ids may show as the same text: the likelier one is listed.
    for (const auto& [alt, value] : lp->top) top.emplace(tok.PieceBytes(alt), value);
    tops.push_back(top);
  };
  const std::vector<int>& prompt = job.request.prompt;
  for (size_t i = echo.empty() ? prompt.size() : skip; i < prompt.size(); ++i) {
    add(prompt[i], i == 0 ? nullptr : &job.prompt_logprobs[i - 1]);
  }
  offset = echo.size();
  drop_space = echo.empty() && job.request.drop_leading_space;
  for (size_t i = 0; i < job.result.logprobs.size(); ++i) {
    add(job.result.tokens[i], &job.result.logprobs[i]);
  }
  return {{"tokens", tokens},
          {"token_logprobs", values},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

// Chat's logprobs object: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
json Server::Impl::ChatLogprobs(const Job& job) const {
  const Tokenizer& tok = model.tokenizer();
  json content = json::array();
  for (size_t i = 0; i < job.result.logprobs.size(); ++i) {
    const TokenLogProb& lp = job.result.logprobs[i];
    const std::string piece = tok.PieceBytes(job.result.tokens[i]);
    json top = json::array();
    for (const auto& [alt, value] : lp.top) {
      const std::string alt_piece = tok.PieceBytes(alt);
      top.push_back({{"token", alt_piece}, {"logprob", value}, {"bytes", TokenBytes(alt_piece)}});
    }
    content.push_back({{"token", piece},
                       {"logprob", lp.logprob},
                       {"bytes", TokenBytes(piece)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

json Server::Impl::Usage(const std::vector<std::shared_ptr<Job>>& jobs) const {
  int64_t prompt = 0, completion = 0;
  for (const auto& job : jobs) {
    // A prompt shared by n choices counts once.
    if (job->request.shares_prompt_of < 0) prompt += job->result.prompt_tokens;
    completion += static_cast<int64_t>(job->result.tokens.size());
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json Server::Impl::Timings(const Job& job) const {
  const auto prompt_n = job.result.prompt_tokens;
  const auto predicted_n = static_cast<int64_t>(job.result.tokens.size());
  const bool started = job.first_token != Clock::time_point{};
  const double predicted_ms = started ? Ms(job.first_token, job.done) : 0.0;
  const double prompt_ms = 1000 * job.prefill_seconds;
  const uint64_t pass_rows = job.pass_ffn.pass_rows;
  return {{"queue_ms", Ms(job.submitted, job.admitted)},
          {"ttft_ms", started ? Ms(job.submitted, job.first_token) : 0.0},
          {"prompt_n", prompt_n},
          {"prompt_ms", prompt_ms},
          {"prompt_per_second", prompt_ms > 0 ? 1000.0 * prompt_n / prompt_ms : 0.0},
          {"predicted_n", predicted_n},
          {"predicted_ms", predicted_ms},
          {"predicted_per_second",
           predicted_ms > 0 && predicted_n > 1 ? 1000.0 * (predicted_n - 1) / predicted_ms : 0.0},
          {"ffn_zero_fraction", job.own_ffn.zero_fraction()},
          // The decode passes it shared: the share of up/down rows none of their tokens needed.
          {"ffn_union_zero_fraction",
           pass_rows ? 1.0 - double(job.pass_ffn.pass_rows_read) / pass_rows : 0.0}};
}

std::optional<std::string> Server::Impl::ReadBody(httplib::Response& res,
                                                  const httplib::ContentReader& content) const {
  std::string body;
  bool too_large = false;
  const bool read = content([&](const char* data, size_t n) {
    if (n > options.max_body_bytes - body.size()) {
      too_large = true;
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (read) return body;
  // Whatever is left of the body is not read: the connection cannot carry another request.
  res.set_header("Connection", "close");
  if (too_large || res.status == 413) {
    SendError(res, {413, "the request body is too large"});
  } else {
    SendError(res, {400, "the request body could not be read (malformed chunked encoding?)"});
  }
  return std::nullopt;
}

void Server::Impl::Complete(const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& content, bool chat_api) {
  // Before the body is read: a client without the key must not make the server buffer it.
  if (!Authorized(req, res)) {
    res.set_header("Connection", "close");
    return;
  }
  const std::optional<std::string> raw = ReadBody(res, content);
  if (!raw) return;
  serve::HttpServer::BodyRead();  // generating may take long: no read deadline meanwhile
  Request request;
  std::vector<std::shared_ptr<Job>> jobs;
  try {
    const json body = json::parse(*raw);  // throws on malformed JSON
    request = Parse(body, chat_api);
    jobs = scheduler.Submit(request.jobs);
  } catch (const json::parse_error& e) {
    SendError(res, {400, std::string("malformed JSON: ") + e.what()});
    return;
  } catch (const json::exception& e) {  // a field of the wrong type inside an object or array
    SendError(res, {400, std::string("a field has the wrong type: ") + e.what()});
    return;
  } catch (const HttpError& e) {
    SendError(res, e);
    return;
  } catch (const Error& e) {
    SendError(res, {400, e.reason()});
    return;
  }
  if (jobs.empty()) {
    if (scheduler.Stopping()) {
      SendError(res, kShuttingDown);
      return;
    }
    res.set_header("Retry-After", "1");
    SendError(res, {503, "every slot is busy and the queue is full; retry later", "",
                    "server_busy"});
    return;
  }
  // max_tokens past the room the context leaves: what each choice may generate instead.
  if (request.clamped >= 0) res.set_header("X-Max-Tokens-Clamped", std::to_string(request.clamped));
  const std::string id = (chat_api ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
  const auto created = static_cast<int64_t>(std::time(nullptr));
  const std::string object = chat_api ? "chat.completion" : "text_completion";
  const auto choice = [chat_api](size_t index, const std::string& text, const json& finish,
                                 bool delta) {
    json c = {{"index", index}, {"finish_reason", finish}};
    if (!chat_api) {
      c["text"] = text;
      c["logprobs"] = nullptr;
    } else if (delta) {
      c["delta"] = text.empty() && finish.is_null() ? json{{"role", "assistant"}, {"content", ""}}
                   : text.empty()                   ? json::object()
                                                    : json{{"content", text}};
    } else {
      c["message"] = {{"role", "assistant"}, {"content", text}};
      c["logprobs"] = nullptr;
    }
    return c;
  };
  const auto cancel_all = [jobs] {
    for (const auto& job : jobs) job->cancel = true;
  };
  // Called with every job finished and locked.
  const auto extras = [this, request, jobs](json& answer) {
    answer["timings"] = Timings(*jobs[0]);
    answer["seed"] = request.seed;
    if (request.clamped >= 0) answer["max_tokens_clamped"] = request.clamped;
    // Chat messages "fit_context" dropped (the same for every choice of the request).
    if (jobs[0]->request.dropped_messages > 0) {
      answer["dropped_messages"] = jobs[0]->request.dropped_messages;
    }
  };

  if (!request.stream) {
    const ConnectionProbe probe;
    for (const auto& job : jobs) {
      for (bool finished = false; !finished;) {
        job->Take(std::chrono::milliseconds(50), &finished);
        if (!finished && probe.Closed()) {
          cancel_all();  // nobody to answer: free the slots
          return;
        }
      }
    }
    std::vector<std::unique_lock<std::mutex>> hold;
    for (const auto& job : jobs) hold.emplace_back(job->lock);
    json choices = json::array();
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Job& job = *jobs[i];
      if (job.stopped) {  // queued or generating when the server was stopped
        SendError(res, kShuttingDown);
        return;
      }
      if (!job.error.empty()) {
        SendError(res, {500, job.error, "", "server_error"});
        return;
      }
      json c = choice(i, request.echo[i] + job.result.text, FinishReason(job), false);
      if (request.logprobs >= 0) {
        c["logprobs"] = chat_api ? ChatLogprobs(job)
                                 : CompletionLogprobs(job, request.echo[i], request.skip[i]);
      }
      choices.push_back(std::move(c));
    }
    json answer = {{"id", id},          {"object", object},   {"created", created},
                   {"model", model_id}, {"choices", choices}, {"usage", Usage(jobs)}};
    extras(answer);
    res.set_content(answer.dump(-1, ' ', false, json::error_handler_t::replace),
                    "application/json");
    return;
  }

  const std::string chunk_object = chat_api ? "chat.completion.chunk" : "text_completion";
  auto probe = std::make_shared<ConnectionProbe>();
  auto started = std::make_shared<bool>(false);
  auto ended = std::make_shared<std::vector<bool>>(jobs.size(), false);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        const auto send = [&](const json& j) {
          const std::string event =
              "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
          return sink.write(event.data(), event.size());
        };
        const auto chunk = [&](size_t index, const std::string& text, const json& finish) {
          return json{{"id", id},
                      {"object", chunk_object},
                      {"created", created},
                      {"model", model_id},
                      {"choices", json::array({choice(index, text, finish, true)})}};
        };
        if (!*started) {
          *started = true;
          // Chat streams open with the assistant's role; echoed completions with the prompt.
          for (size_t i = 0; i < jobs.size(); ++i) {
            if (chat_api && !send(chunk(i, "", nullptr))) return false;
            if (!request.echo[i].empty() && !send(chunk(i, request.echo[i], nullptr))) return false;
          }
        }
        // One wait shared among the choices still running.
        const auto wait =
            std::chrono::milliseconds(std::max<int64_t>(5, 50 / int64_t(jobs.size())));
        bool all_ended = true;
        for (size_t i = 0; i < jobs.size(); ++i) {
          if ((*ended)[i]) continue;
          bool finished = false;
          const std::string text = jobs[i]->Take(wait, &finished);
          if (!text.empty() && !send(chunk(i, text, nullptr))) return false;
          if (!finished) {
            all_ended = false;
            continue;
          }
          (*ended)[i] = true;
          std::lock_guard<std::mutex> hold(jobs[i]->lock);
          if (!jobs[i]->error.empty()) {
            send({{"error",
                   {{"message", jobs[i]->error}, {"type", "server_error"}, {"code", nullptr}}}});
            cancel_all();
            const std::string done = "data: [DONE]\n\n";
            sink.write(done.data(), done.size());
            sink.done();
            return true;
          }
          if (jobs.size() > 1) {  // one choice alone ends in the last event
            json last = chunk(i, "", FinishReason(*jobs[i]));
            if (chat_api) last["choices"][0]["delta"] = json::object();
            if (!send(last)) return false;
          }
        }
        if (!all_ended) return !probe->Closed();
        // The last event: one choice's end with the request's usage and timings.
        std::vector<std::unique_lock<std::mutex>> hold;
        for (const auto& job : jobs) hold.emplace_back(job->lock);
        json last = jobs.size() > 1 ? json{{"id", id},
                                           {"object", chunk_object},
                                           {"created", created},
                                           {"model", model_id},
                                           {"choices", json::array()}}
                                    : chunk(0, "", FinishReason(*jobs[0]));
        if (chat_api && jobs.size() == 1) last["choices"][0]["delta"] = json::object();
        extras(last);
        if (request.include_usage) last["usage"] = Usage(jobs);
        send(last);
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      },
      [cancel_all](bool success) {
        if (!success) cancel_all();  // the client went away mid-stream
      });
}

// The Prometheus text exposition format (version 0.0.4): HELP and TYPE before each family.
std::string Server::Impl::Metrics() {
  const serve::SchedulerStatus s = scheduler.Status();
  const serve::ConnectionStats c = http.Stats();
  std::string out;
  const auto family = [&out](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  const auto sample = [&out](const std::string& name, auto value) {
    char number[32];
    if constexpr (std::is_floating_point_v<decltype(value)>) {
      std::snprintf(number, sizeof(number), "%.9g", value);
    } else {
      std::snprintf(number, sizeof(number), "%lld", static_cast<long long>(value));
    }
    out += name + " " + number + "\n";
  };
  const auto metric = [&](const char* name, const char* type, auto value, const char* help) {
    family(name, type, help);
    sample(name, value);
  };
  family("zeroskip_requests_total", "counter",
         "Answers by endpoint and HTTP status (counted as each is sent).");
  {
    std::lock_guard<std::mutex> hold(answers_lock);
    for (const auto& [key, count] : answers) {
      sample("zeroskip_requests_total{endpoint=\"" + key.first + "\",status=\"" +
                 std::to_string(key.second) + "\"}",
             count);
    }
  }
  metric("zeroskip_prompt_tokens_total", "counter", s.prompt_tokens,
         "Prompt tokens of finished generations.");
  metric("zeroskip_generated_tokens_total", "counter", s.generated_tokens, "Tokens generated.");
  metric("zeroskip_decode_steps_total", "counter", s.decode_steps,
         "Decode passes; each ran one token of every generating slot.");
  metric("zeroskip_decoded_tokens_total", "counter", s.decoded_tokens,
         "Tokens the decode passes ran.");
  metric("zeroskip_queue_depth", "gauge", s.queued, "Requests waiting for a slot.");
  metric("zeroskip_slots_busy", "gauge", s.busy, "Slots running a request.");
  metric("zeroskip_slots", "gauge", s.slots, "Slots (--parallel).");
  metric("zeroskip_connections_open", "gauge", c.open, "Open client connections.");
  metric("zeroskip_connections_accepted_total", "counter", c.accepted,
         "Connections given a thread.");
  metric("zeroskip_connections_refused_total", "counter", c.refused,
         "Connections answered 503 and closed: --max-connections were open.");
  metric("zeroskip_connections_timed_out_total", "counter", c.timed_out,
         "Connections closed because a request's headers or body missed their deadline.");
  metric("zeroskip_ffn_neurons_total", "counter", s.ffn.neurons,
         "FFN neurons evaluated (tokens x FFN width x layers) for finished generations.");
  metric("zeroskip_ffn_zero_neurons_total", "counter", s.ffn.zero_neurons,
         "Those whose activation was exactly zero: their up and down rows were skipped.");
  metric("zeroskip_ffn_zero_fraction", "gauge", s.ffn.zero_fraction(),
         "zeroskip_ffn_zero_neurons_total / zeroskip_ffn_neurons_total (0 before any).");
  return out;
}

void Server::Impl::Routes() {
  http.set_payload_max_length(options.max_body_bytes);
  http.OnAnswer([this](const httplib::Request& req, const httplib::Response& res) {
    std::lock_guard<std::mutex> hold(answers_lock);
    ++answers[{EndpointLabel(req.path), res.status}];
  });
  if (!options.cors_origin.empty()) {
    // On every answer (errors too: a browser shows its page nothing without it), and the
    // preflight of a request with an Authorization or Content-Type header answered.
    httplib::Headers cors = {{"Access-Control-Allow-Origin", options.cors_origin}};
    if (options.cors_origin != "*") cors.emplace("Vary", "Origin");
    http.set_default_headers(cors);
    http.Options(".*", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      const std::string asked = req.get_header_value("Access-Control-Request-Headers");
      res.set_header("Access-Control-Allow-Headers",
                     asked.empty() ? "Authorization, Content-Type" : asked);
      res.set_header("Access-Control-Max-Age", "86400");
    });
  }
  // Errors cpp-httplib answers itself (413, 404, 400 for a malformed request line) get a body.
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const char* message = res.status == 413   ? "the request body is too large"
                          : res.status == 404 ? "no such endpoint"
                          : res.status == 405 ? "method not allowed"
                                              : "bad request";
    SendError(res, {res.status, message});
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                                std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    SendError(res, {500, what, "", "server_error"});
  });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(serve::kChatPage, "text/html; charset=utf-8");
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const serve::SchedulerStatus s = scheduler.Status();
    res.set_content(json{{"status", "ok"},
                         {"slots_idle", s.slots - s.busy},
                         {"slots_processing", s.busy},
                         {"queued", s.queued},
                         {"decode_steps", s.decode_steps},
                         {"decoded_tokens", s.decoded_tokens}}
                        .dump(),
                    "application/json");
  });
  // Open like /health: what a monitor scrapes (no request or model content in it).
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(Metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const auto model_object = [this] {
    const ModelConfig& c = model.config();
    json meta = {{"n_ctx", context},      {"n_vocab", c.vocab},  {"n_layer", c.layers},
                 {"n_embd", c.hidden},    {"n_ffn", c.ffn},      {"chat_template", chat.name()},
                 {"slots", options.parallel}};
    return json{{"id", model_id},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "zeroskip"},
                {"meta", meta}};
  };
  http.Get("/v1/models", [this, model_object](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    res.set_content(json{{"object", "list"}, {"data", json::array({model_object()})}}.dump(),
                    "application/json");
  });
  http.Get(R"(/v1/models/(.+))", [this, model_object](const httplib::Request& req,
                                                      httplib::Response& res) {
    if (!Authorized(req, res)) return;
    if (req.matches[1] != model_id) {
      SendError(res, {404, "the model '" + std::string(req.matches[1]) + "' does not exist",
                      "model", "invalid_request_error", "model_not_found"});
      return;
    }
    res.set_content(model_object().dump(), "application/json");
  });
  // With a content reader the body is read by Complete, after the API key is checked and under
  // the --max-body cap (cpp-httplib caps only bodies that declare a Content-Length).
  http.Post("/v1/completions",
            [this](const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& content) { Complete(req, res, content, false); });
  http.Post("/v1/chat/completions",
            [this](const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& content) { Complete(req, res, content, true); });
}

Server::Server(const Model& model, const ServeOptions& options)
    : impl_(std::make_unique<Impl>(model, options)) {
  Impl& s = *impl_;
  s.Routes();
  int listener = -1;
  s.http.set_socket_options([&listener](socket_t fd) {
    listener = fd;
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.port = options.port == 0 ? s.http.bind_to_any_port(options.host)
                             : (s.http.bind_to_port(options.host, options.port) ? options.port : -1);
  // cpp-httplib 0.11 listens with a backlog of 5, so a burst of clients overflows it and some
  // get their connection reset; listening again on the bound socket raises it.
  if (s.port >= 0 && listener >= 0) ::listen(listener, SOMAXCONN);
  if (s.port < 0) {
    throw Error("", "cannot listen on " + options.host + ":" + std::to_string(options.port) +
                        " (in use, or not an address of this machine)");
  }
}

Server::~Server() { Stop(); }

int Server::port() const { return impl_->port; }

void Server::Run() { impl_->http.listen_after_bind(); }

void Server::Stop() {
  // Every queued and running job fails first, so each open request is answered (503, or a
  // stream's error event and [DONE]) within moments; the drain bounds clients that do not read.
  impl_->scheduler.Stop();
  impl_->http.Shutdown(std::chrono::seconds(5));
}

}  // namespace zeroskip
