// Subcommands of the zeroskip CLI. Each Add* registers its flags and a callback that calls the
// library; errors propagate as zeroskip::Error and main() prints them as one line.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/error.h"
#include "zeroskip/model.h"
#include "zeroskip/sampler.h"
#include "zeroskip/session.h"

namespace zeroskip::cli {

void AddConvert(CLI::App& app);
void AddShadow(CLI::App& app);
void AddNeurons(CLI::App& app);
void AddInfo(CLI::App& app);
void AddVerify(CLI::App& app);
void AddRun(CLI::App& app);
void AddEval(CLI::App& app);
void AddPerplexity(CLI::App& app);
void AddBench(CLI::App& app);
void AddScore(CLI::App& app);
void AddChat(CLI::App& app);
void AddServe(CLI::App& app);

// Thrown when the reader of stdout has gone (EPIPE, e.g. `| head`): the command stops quietly and
// zeroskip exits 0, since the reader took all it wanted.
struct StdoutClosed {};

// Writes and flushes to stdout now (generated text streams token by token). Throws StdoutClosed
// when the reader has gone and Error("stdout", ...) on any other failed write (a full disk).
void WriteStdout(std::string_view text);
// Flushes std::cout and stdout with the same rules; main() calls it after every command.
void FlushStdout();

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

// A real number in [lo, hi]. CLI::Range lets "nan" through (it fails no comparison) and
// accepts "inf" for an open bound; this refuses both.
inline CLI::Validator FiniteRange(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        double value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(value) ||
            !(value >= lo && value <= hi)) {
          return "'" + text + "' is not a number in [" + CLI::detail::to_string(lo) + ", " +
                 CLI::detail::to_string(hi) + "]";
        }
        return {};
      },
      "in [" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) + "]");
}

// A decimal integer in [0, 2^64 - 1], digits only: CLI11 alone turns "-1" and 2^64 into
// 2^64 - 1.
inline CLI::Validator Unsigned64() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || ptr != text.data() + text.size() || text.empty()) {
          return "'" + text + "' is not an integer in [0, 18446744073709551615]";
        }
        return {};
      },
      "0..2^64-1");
}

// A byte count: digits with an optional K, M, G or T (powers of 1024; "6G", "512M"), turned into
// the plain number of bytes; 0, overflow and anything else are refused.
inline CLI::Validator ByteSize() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        const std::string_view suffix(ptr, text.data() + text.size() - ptr);
        int shift = -1;
        if (suffix.empty()) shift = 0;
        for (int k = 0; k < 4; ++k) {
          if (suffix.size() == 1 && (suffix[0] == "KMGT"[k] || suffix[0] == "kmgt"[k])) {
            shift = 10 * (k + 1);
          }
        }
        if (ec != std::errc() || ptr == text.data() || shift < 0 || value == 0 ||
            value > (~uint64_t{0} >> shift)) {
          return "'" + text + "' is not a size in bytes (a positive integer, or with K, M, G, T)";
        }
        text = std::to_string(value << shift);
        return {};
      },
      "SIZE");
}

// Flags shared by every command that runs a model.
struct ComputeFlags {
  std::string model;
  int threads = 0;
  int64_t ctx = 0;
  std::string ffn = "auto";
  std::string gate = "auto";
  std::string isa;  // empty: best available
  std::string act = "model";
  std::string kv_type = "f32";
  float stoch_p = 0.5f;
  uint64_t seed = 0;  // sampling and stochastic activations
  bool json = false;
  uint64_t mem_budget = 0;  // 0: automatic
  std::string neuron_io = "direct";
};
void AddComputeFlags(CLI::App* cmd, ComputeFlags* flags);
// --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n.
void AddSamplerFlags(CLI::App* cmd, SamplerOptions* sampler);
// BOS (when the model has one) followed by `ids`.
std::vector<int> WithBos(const Model& model, const std::vector<int>& ids);

// Loads --model under --mem-budget and --neuron-io; when its FFN is read from its neuron file,
// says so on stderr (the budget, what stays resident, the cache and how it reads).
std::unique_ptr<Model> LoadModel(const ComputeFlags& flags);
// A session of `engine` with `options`, saying on stderr when the model's context did not fit
// beside its memory budget and the session runs a shorter one.
std::unique_ptr<Session> StartSession(Engine& engine, const SessionOptions& options);

// What the compute flags ask for: the engine (threads, kernels) and each session on it.
struct ComputeOptions {
  EngineOptions engine;
  SessionOptions session;
};
// Throws Error naming the flag if --isa names kernels this CPU cannot run or --ctx exceeds the
// model's context.
ComputeOptions ApplyComputeFlags(const ComputeFlags& flags, const Model& model);

// The --isa option: one of the ISAs compiled in, listed in its help.
void AddIsaOption(CLI::App* cmd, std::string* isa);

}  // namespace zeroskip::cli
