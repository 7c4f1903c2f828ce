// serve: the OpenAI-compatible HTTP server (docs/SERVER.md).
#include <pthread.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "commands.h"
#include "zeroskip/chat.h"
#include "zeroskip/server.h"

namespace zeroskip::cli {

namespace {

// Each connection holds a descriptor, and the usual soft limit (1024) is below what
// --max-connections may ask for: raised up to the hard limit, refused past it.
void RaiseOpenFileLimit(int64_t connections) {
  const rlim_t need = static_cast<rlim_t>(connections) + 64;  // the model, logs, listener
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY ||
      limit.rlim_cur >= need) {
    return;
  }
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < need) {
    throw Error("", "--max-connections " + std::to_string(connections) + " needs " +
                        std::to_string(need) + " open files but the limit is " +
                        std::to_string(limit.rlim_max) + " (ulimit -Hn)");
  }
  limit.rlim_cur = need;
  setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace

void AddServe(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    ServeOptions serve;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  AddComputeFlags(cmd, &f->compute);
  // Per request instead: a request's "seed"; and the answers are JSON already.
  cmd->remove_option(cmd->get_option("--seed"));
  cmd->remove_option(cmd->get_option("--json"));
  cmd->add_option("--host", f->serve.host, "address to listen on (default 127.0.0.1: this machine only)");
  cmd->add_option("--port", f->serve.port, "port (0: any free one; default 8080)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", f->serve.parallel,
                  "requests generating at once, their decode steps batched (default 4)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--queue", f->serve.queue,
                  "requests waiting for a slot before the server answers 503 (default 16)")
      ->check(CLI::Range(int64_t{0}, int64_t{4096}));
  cmd->add_option("--api-key", f->serve.api_key,
                  "require 'Authorization: Bearer KEY' on /v1/* (default: none)");
  std::string names;
  for (const auto n : ChatTemplate::Names()) names += (names.empty() ? "" : "|") + std::string(n);
  cmd->add_option("--chat-template", f->serve.chat_template,
                  "chat template: " + names + " (default: the model's)");
  cmd->add_option("--max-body", f->serve.max_body_bytes,
                  "largest request body in bytes, 413 past it (default 1 MiB)")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  cmd->add_option("--max-connections", f->serve.max_connections,
                  "open connections at once; past them a connection gets 503 (default 512)")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->add_option("--idle-timeout", f->serve.idle_timeout,
                  "seconds a connection may wait for its next request (default 5)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--header-timeout", f->serve.header_timeout,
                  "seconds for a request's line and headers, from the first byte (default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--body-timeout", f->serve.body_timeout,
                  "seconds for a request's body, from the end of its headers (default 60)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--cors", f->serve.cors_origin,
                  "allow browser pages from ORIGIN ('*': any) to call the API (default: none)")
      ->type_name("ORIGIN")
      ->check([](const std::string& origin) -> std::string {
        // It goes into a header line as it is.
        for (const char c : origin) {
          if (c <= ' ' || c == 0x7f) return "an origin is printable ASCII without spaces";
        }
        return origin.empty() ? "an origin such as https://example.org, or '*'" : "";
      });
  SamplerOptions& sampler = f->serve.sampler;
  AddSamplerFlags(cmd, &sampler);
  cmd->callback([f] {
    // SIGINT and SIGTERM end the server cleanly: every thread blocks them, and one waits for them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    RaiseOpenFileLimit(f->serve.max_connections);
    const auto model = LoadModel(f->compute);
    const ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    ServeOptions options = f->serve;
    options.engine = co.engine;
    options.session = co.session;
    Server server(*model, options);
    std::fprintf(stderr, "zeroskip: serving %s on http://%s:%d (%d slots; Ctrl-C stops)\n",
                 f->compute.model.c_str(), options.host.c_str(), server.port(), options.parallel);
    std::fflush(stderr);
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      server.Stop();
    });
    server.Run();
    pthread_kill(waiter.native_handle(), SIGTERM);  // wakes the waiter if Run ended otherwise
    waiter.join();
    std::fprintf(stderr, "zeroskip: server stopped\n");
  });
}

}  // namespace zeroskip::cli
