// `zeroskip serve`: an OpenAI-compatible HTTP server over one model (docs/SERVER.md).
//
// POST /v1/completions and /v1/chat/completions (with "stream": true as server-sent events),
// GET /v1/models, GET /health, GET /metrics (Prometheus), and a chat page at /. Up to `parallel`
// requests generate at once, their decode steps batched into one forward pass; more wait in a
// bounded queue, and past it the server answers 503 with Retry-After. Each open connection has a
// thread of its own up to `max_connections` (503 past it) and read deadlines, so idle or slow
// clients never keep a request, /health or /metrics waiting.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "zeroskip/engine.h"
#include "zeroskip/sampler.h"
#include "zeroskip/session.h"

namespace zeroskip {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (Server::port() tells which)
  int parallel = 4;        // slots: requests generating at once
  int64_t queue = 16;      // requests waiting for a slot before the server answers 503
  std::string api_key;     // non-empty: /v1/* need "Authorization: Bearer <key>"
  std::string chat_template;  // "": the model's (ChatTemplate::ForModel)
  size_t max_body_bytes = 1 << 20;
  int64_t max_connections = 512;  // open at once; past them a connection gets 503 and is closed
  double idle_timeout = 5;        // seconds a connection may wait for its next request
  double header_timeout = 10;     // seconds for a request's line and headers, from the first byte
  double body_timeout = 60;       // seconds for a request's body, from the end of its headers
  std::string cors_origin;        // non-empty: the Access-Control-Allow-Origin of every answer
  EngineOptions engine;
  SessionOptions session;  // each slot's context and KV type, and the FFN requests default to
  SamplerOptions sampler;  // what requests default to
};

class Server {
 public:
  // Loads nothing: `model` must outlive the server. Throws Error for an unknown chat template,
  // an address it cannot bind, or slots that do not fit in memory.
  Server(const Model& model, const ServeOptions& options);
  ~Server();
  int port() const;  // the port it listens on
  // Serves until Stop(); returns once every connection has been answered or dropped.
  void Run();
  // From any thread (a signal-waiting thread): stops accepting, ends running generations.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zeroskip
