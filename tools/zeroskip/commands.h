// Subcommands of the zeroskip CLI. Each Add* registers its flags and a callback that calls the
// library; errors propagate as zeroskip::Error and main() prints them as one line.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "zeroskip/session.h"

namespace zeroskip::cli {

void AddConvert(CLI::App& app);
void AddInfo(CLI::App& app);
void AddVerify(CLI::App& app);
void AddRun(CLI::App& app);
void AddEval(CLI::App& app);
void AddPerplexity(CLI::App& app);
void AddBench(CLI::App& app);
void AddScore(CLI::App& app);

// Flags shared by every command that runs a model.
struct ComputeFlags {
  std::string model;
  int threads = 0;
  int64_t ctx = 0;
  std::string ffn = "auto";
  std::string isa;  // empty: best available
  std::string act = "model";
  float stoch_p = 0.5f;
  uint64_t seed = 0;  // sampling and stochastic activations
  bool json = false;
};
void AddComputeFlags(CLI::App* cmd, ComputeFlags* flags);
// Applies --isa (throws Error if the CPU lacks it) and returns the session options the flags ask
// for.
SessionOptions ApplyComputeFlags(const ComputeFlags& flags);

}  // namespace zeroskip::cli
