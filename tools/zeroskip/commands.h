// Subcommands of the zeroskip CLI. Each Add* registers its flags and a callback that calls the
// library; errors propagate as zeroskip::Error and main() prints them as one line.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <string>
#include <vector>

#include "zeroskip/error.h"

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

// Parses a comma-separated list of numbers in [lo, hi] ("1,5,9", "0,0.5,0.9"); anything else
// throws Error naming the flag.
template <typename T>
std::vector<T> ParseNumberList(const std::string& text, const std::string& flag, T lo, T hi) {
  std::vector<T> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    T value{};
    const auto [ptr, ec] = std::from_chars(text.data() + begin, text.data() + end, value);
    if (ec != std::errc() || ptr != text.data() + end || begin == end || !(value >= lo) ||
        !(value <= hi)) {
      throw Error("", flag + ": '" + text.substr(begin, end - begin) + "' is not a number in [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    out.push_back(value);
    begin = end + 1;
  }
  return out;
}

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
