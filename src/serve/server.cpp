// The HTTP half of `zeroskip serve`: requests in, OpenAI-shaped JSON and server-sent events out.
// Generation itself happens in the Scheduler's thread; a handler thread validates a request,
// submits it and relays the job's text as it arrives.
#include "zeroskip/server.h"

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <httplib.h>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

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
};

void SendError(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  json error = {{"message", e.message}, {"type", e.type}, {"code", e.status}};
  error["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  // The message may quote the client's bytes (a JSON parse error does): invalid UTF-8 in them
  // is replaced, or dumping would throw and the answer become a 500.
  res.set_content(json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

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

// Whether the client of a request has gone. cpp-httplib 0.11 (Debian 12) tells a handler nothing
// of its connection, so this finds the socket by the request's two endpoints and peeks at it: a
// peer that closed reads as end-of-stream. Without it a non-streaming request would generate to
// its end for nobody, holding a slot.
class ConnectionProbe {
 public:
  explicit ConnectionProbe(const httplib::Request& req) {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (const dirent* entry = readdir(dir)) {
      const int fd = std::atoi(entry->d_name);
      if (fd <= 2) continue;
      sockaddr_storage local{}, peer{};
      socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
          getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
        continue;
      }
      if (Port(local) == req.local_port && Port(peer) == req.remote_port) {
        fd_ = fd;
        break;
      }
    }
    closedir(dir);
  }

  bool Closed() const {
    if (fd_ < 0) return false;
    char byte;
    const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

 private:
  static int Port(const sockaddr_storage& a) {
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
    return -1;
  }
  int fd_ = -1;
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

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

struct Server::Impl {
  Impl(const Model& m, const ServeOptions& o)
      : model(m),
        options(o),
        engine(m, WithBatch(o.engine, o)),
        scheduler(engine, o.session, o.parallel, o.queue),
        chat(o.chat_template.empty() ? ChatTemplate::ForModel(m) : Template(o.chat_template)) {
    const std::string& path = m.file().path();
    const size_t slash = path.find_last_of('/');
    model_id = path.substr(slash == std::string::npos ? 0 : slash + 1);
    if (model_id.size() > 4 && model_id.ends_with(".zsk")) model_id.resize(model_id.size() - 4);
    context = o.session.context > 0 ? o.session.context : m.config().context;
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
  JobRequest Parse(const json& body, bool chat_api, std::string* prompt_text, bool* stream,
                   bool* include_usage, uint64_t* seed) const;
  // "response_format": null for text, else what makes each generation's JSON constraint.
  std::function<std::shared_ptr<TokenConstraint>()> ResponseFormat(const json& format) const;
  // "fit_context": drops the oldest turns until the prompt leaves room for the reply; returns
  // how many messages went.
  int64_t FitContext(const json& body, std::vector<ChatMessage>* messages) const;
  json Usage(const Job& job) const;
  json Timings(const Job& job) const;

  const Model& model;
  ServeOptions options;
  Engine engine;
  serve::Scheduler scheduler;
  ChatTemplate chat;
  std::string model_id;
  int64_t context;
  httplib::Server http;
  int port = -1;
  std::atomic<uint64_t> next_id{1};
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
                  "authentication_error"});
  return false;
}

JobRequest Server::Impl::Parse(const json& body, bool chat_api, std::string* prompt_text,
                               bool* stream, bool* include_usage, uint64_t* seed) const {
  if (!body.is_object()) throw HttpError{400, "the request body must be a JSON object"};
  JobRequest r;
  std::string text;
  if (chat_api) {
    const json* messages = Field(body, "messages");
    if (!messages || !messages->is_array() || messages->empty()) {
      throw HttpError{400, "'messages' must be a non-empty array", "messages"};
    }
    std::vector<ChatMessage> conversation;
    for (const json& m : *messages) {
      if (!m.is_object() || !m.contains("role") || !m.contains("content")) {
        throw HttpError{400, "each message needs a 'role' and a 'content'", "messages"};
      }
      ChatMessage message{Text(m["role"], "role"), ""};
      if (message.role != "system" && message.role != "user" && message.role != "assistant") {
        throw HttpError{400, "a message's role must be system, user or assistant", "messages"};
      }
      const json& content = m["content"];
      if (content.is_array()) {  // content parts: only text ones
        for (const json& part : content) {
          if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text")) {
            throw HttpError{400, "only text content parts are supported", "messages"};
          }
          message.content += Text(part["text"], "text");
        }
      } else {
        message.content = Text(content, "content");
      }
      conversation.push_back(std::move(message));
    }
    if (Boolean(body, "fit_context", false)) r.dropped_messages = FitContext(body, &conversation);
    text = chat.Render(conversation, /*add_generation_prompt=*/true);
    r.stop_strings = chat.stop_strings();
  } else {
    const json* p = Field(body, "prompt");
    if (!p) throw HttpError{400, "'prompt' is required", "prompt"};
    if (p->is_array()) {
      if (p->size() != 1) throw HttpError{400, "'prompt' must be one string", "prompt"};
      text = Text((*p)[0], "prompt");
    } else {
      text = Text(*p, "prompt");
    }
    r.drop_leading_space = text.empty();
  }
  if (Integer(body, "n", 1, 1, 1) != 1) throw HttpError{400, "'n' must be 1", "n"};
  if (const json* lp = Field(body, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>())) {
    throw HttpError{400, "'logprobs' is not supported", "logprobs"};
  }
  if (const json* format = Field(body, "response_format")) {
    r.constraint = ResponseFormat(*format);
    // The JSON value's end ends the reply; the template's stop strings could cut a string in it.
    if (r.constraint) r.stop_strings.clear();
  }
  for (auto& s : StopStrings(body)) r.stop_strings.push_back(std::move(s));

  // The prompt must leave room for at least one token; bounded before tokenizing (megabytes of
  // prompt would take seconds to tokenize).
  const auto too_long = [&](const std::string& tokens) {
    return HttpError{400,
                     "the prompt is " + tokens + " tokens but the context is " +
                         std::to_string(context),
                     chat_api ? "messages" : "prompt", "context_length_exceeded"};
  };
  if (const int64_t least = model.tokenizer().MinTokens(text); least >= context) {
    throw too_long("at least " + std::to_string(least));
  }
  if (model.config().bos_id >= 0) r.prompt.push_back(static_cast<int>(model.config().bos_id));
  for (int id : model.tokenizer().Encode(text)) r.prompt.push_back(id);
  if (r.prompt.empty()) throw HttpError{400, "the prompt is empty and the model has no BOS token"};
  if (static_cast<int64_t>(r.prompt.size()) >= context) {
    throw too_long(std::to_string(r.prompt.size()));
  }
  const int64_t room = context - static_cast<int64_t>(r.prompt.size());
  // OpenAI's newer name for it wins where both are given.
  const char* budget = Field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  r.max_tokens = std::min(room, Integer(body, budget, 0, INT64_MAX, room));

  const SamplerOptions& d = options.sampler;
  r.sampler.temperature = static_cast<float>(Number(body, "temperature", 0, 100, d.temperature));
  r.sampler.top_p = static_cast<float>(Number(body, "top_p", 0, 1, d.top_p));
  r.sampler.top_k = static_cast<int>(Integer(body, "top_k", 0, 1 << 22, d.top_k));
  r.sampler.min_p = static_cast<float>(Number(body, "min_p", 0, 1, d.min_p));
  r.sampler.repeat_penalty =
      static_cast<float>(Number(body, "repeat_penalty", 0.01, 100, d.repeat_penalty));
  r.sampler.repeat_last_n =
      static_cast<int>(Integer(body, "repeat_last_n", 0, 1 << 22, d.repeat_last_n));
  // No seed: a fresh one, reported in the answer so the request can be repeated exactly.
  if (const json* v = Field(body, "seed")) {
    if (!v->is_number_integer()) throw HttpError{400, "'seed' must be an integer", "seed"};
    *seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  } else {
    *seed = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  }
  r.sampler.seed = *seed;
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
  r.activation.seed = *seed;

  *stream = Boolean(body, "stream", false);
  *include_usage = false;
  if (const json* so = Field(body, "stream_options")) {
    if (!so->is_object()) throw HttpError{400, "'stream_options' must be an object", "stream_options"};
    *include_usage = Boolean(*so, "include_usage", false);
  }
  if (Boolean(body, "echo", false)) {
    if (chat_api) throw HttpError{400, "'echo' applies to completions only", "echo"};
    *prompt_text = text;
  }
  return r;
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

json Server::Impl::Usage(const Job& job) const {
  const auto prompt = job.result.prompt_tokens;
  const auto completion = static_cast<int64_t>(job.result.tokens.size());
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
  std::string echo;
  bool stream = false, include_usage = false;
  uint64_t seed = 0;
  std::shared_ptr<Job> job;
  try {
    const json body = json::parse(*raw);  // throws on malformed JSON
    JobRequest request = Parse(body, chat_api, &echo, &stream, &include_usage, &seed);
    job = scheduler.Submit(std::move(request));
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
  if (!job) {
    res.set_header("Retry-After", "1");
    SendError(res, {503, "every slot is busy and the queue is full; retry later", "",
                    "server_busy"});
    return;
  }
  const std::string id = (chat_api ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
  const auto created = static_cast<int64_t>(std::time(nullptr));
  const std::string object = chat_api ? "chat.completion" : "text_completion";
  const auto choice = [chat_api](const std::string& text, const json& finish, bool delta) {
    json c = {{"index", 0}, {"finish_reason", finish}};
    if (!chat_api) {
      c["text"] = text;
      c["logprobs"] = nullptr;
    } else if (delta) {
      c["delta"] = text.empty() && finish.is_null() ? json{{"role", "assistant"}, {"content", ""}}
                   : text.empty()                   ? json::object()
                                                    : json{{"content", text}};
    } else {
      c["message"] = {{"role", "assistant"}, {"content", text}};
    }
    return c;
  };

  if (!stream) {
    const ConnectionProbe probe(req);
    bool finished = false;
    while (!finished) {
      job->Take(std::chrono::milliseconds(50), &finished);
      if (!finished && probe.Closed()) {
        job->cancel = true;  // nobody to answer: free the slot
        return;
      }
    }
    std::lock_guard<std::mutex> hold(job->lock);
    if (!job->error.empty()) {
      SendError(res, {500, job->error, "", "server_error"});
      return;
    }
    json answer = {{"id", id},
                   {"object", object},
                   {"created", created},
                   {"model", model_id},
                   {"choices", json::array({choice(echo + job->result.text,
                                                   FinishReason(*job), false)})},
                   {"usage", Usage(*job)},
                   {"timings", Timings(*job)},
                   {"seed", seed}};
    if (job->request.dropped_messages > 0) {
      answer["dropped_messages"] = job->request.dropped_messages;
    }
    res.set_content(answer.dump(), "application/json");
    return;
  }

  const std::string chunk_object = chat_api ? "chat.completion.chunk" : "text_completion";
  auto probe = std::make_shared<ConnectionProbe>(req);
  auto started = std::make_shared<bool>(false);
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        const auto send = [&](const json& j) {
          const std::string event = "data: " + j.dump() + "\n\n";
          return sink.write(event.data(), event.size());
        };
        const auto chunk = [&](const std::string& text, const json& finish) {
          return json{{"id", id},
                      {"object", chunk_object},
                      {"created", created},
                      {"model", model_id},
                      {"choices", json::array({choice(text, finish, true)})}};
        };
        if (!*started) {
          *started = true;
          // Chat streams open with the assistant's role; echoed completions with the prompt.
          if (chat_api && !send(chunk("", nullptr))) return false;
          if (!echo.empty() && !send(chunk(echo, nullptr))) return false;
        }
        bool finished = false;
        const std::string text = job->Take(std::chrono::milliseconds(50), &finished);
        if (!text.empty() && !send(chunk(text, nullptr))) return false;
        if (!finished) return !probe->Closed();
        std::lock_guard<std::mutex> hold(job->lock);
        if (!job->error.empty()) {
          send({{"error", {{"message", job->error}, {"type", "server_error"}, {"code", 500}}}});
        } else {
          json last = chunk("", FinishReason(*job));
          if (chat_api) last["choices"][0]["delta"] = json::object();
          last["timings"] = Timings(*job);
          last["seed"] = seed;
          if (job->request.dropped_messages > 0) {
            last["dropped_messages"] = job->request.dropped_messages;
          }
          if (include_usage) last["usage"] = Usage(*job);
          send(last);
        }
        const std::string done = "data: [DONE]\n\n";
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      },
      [job](bool success) {
        if (!success) job->cancel = true;  // the client went away mid-stream
      });
}

void Server::Impl::Routes() {
  http.set_payload_max_length(options.max_body_bytes);
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
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    const ModelConfig& c = model.config();
    json meta = {{"n_ctx", context},      {"n_vocab", c.vocab},  {"n_layer", c.layers},
                 {"n_embd", c.hidden},    {"n_ffn", c.ffn},      {"chat_template", chat.name()},
                 {"slots", options.parallel}};
    res.set_content(json{{"object", "list"},
                         {"data", json::array({{{"id", model_id},
                                                {"object", "model"},
                                                {"created", 0},
                                                {"owned_by", "zeroskip"},
                                                {"meta", meta}}})}}
                        .dump(),
                    "application/json");
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
  // Every slot and queued request holds a handler thread while it waits; a few more answer
  // /health, errors and 503s meanwhile.
  const size_t threads = static_cast<size_t>(options.parallel + options.queue + 8);
  s.http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
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
  impl_->scheduler.Stop();
  impl_->http.stop();
}

}  // namespace zeroskip
