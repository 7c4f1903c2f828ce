// serve: the OpenAI-compatible HTTP server (docs/SERVER.md).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "commands.h"
#include "zeroskip/chat.h"
#include "zeroskip/server.h"

namespace zeroskip::cli {

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
  SamplerOptions& sampler = f->serve.sampler;
  AddSamplerFlags(cmd, &sampler);
  cmd->callback([f] {
    // SIGINT and SIGTERM end the server cleanly: every thread blocks them, and one waits for them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    const auto model = Model::Load(f->compute.model);
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
