// bench ffn | decode | bandwidth: the measurements behind docs/BENCHMARKS.md.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "format/file_io.h"
#include "kernels/kernels.h"
#include "zeroskip/bench.h"
#include "zeroskip/error.h"
#include "zeroskip/session.h"

namespace zeroskip::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Speedup against sparsity, drawn by gnuplot into `png` (created before the benchmark ran, so an
// unwritable path fails first, in one line).
void PlotSpeedup(const std::vector<FfnBenchResult>& results, AtomicOutput& png_file,
                 const std::string& title) {
  const std::string& png = png_file.path();
  for (const char c : png_file.tmp_path() + title) {
    if (c == '\'' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      throw Error(png,
                  "--plot: the path may not contain quotes, backslashes or control characters");
    }
  }
  // gnuplot falls back to writing the PNG on stdout when it cannot open its output: never ours.
  FILE* gp = popen("gnuplot >/dev/null 2>&1", "w");
  if (gp == nullptr) throw Error(png, "cannot run gnuplot (apt-get install gnuplot-nox)");
  std::fprintf(gp,
               "set terminal pngcairo size 900,560 font ',11'\nset output '%s'\n"
               "set title '%s'\nset xlabel 'zero fraction of the FFN hidden vector'\n"
               "set ylabel 'speedup over oneDNN dense (x)'\nset grid\nset key top left\n"
               "set yrange [0:*]\nset xrange [0:1]\n"
               "plot '-' using 1:2 with linespoints lw 2 pt 7 title 'zeroskip sparse', "
               "'-' using 1:2 with lines dt 2 lw 2 title 'ideal, dense gate: 3/(1+2(1-s))', "
               "1 with lines lc 'gray' notitle\n",
               png_file.tmp_path().c_str(), title.c_str());
  for (const auto& r : results) std::fprintf(gp, "%f %f\n", r.zero_fraction, r.speedup);
  std::fprintf(gp, "e\n");
  for (int i = 0; i <= 100; ++i) {
    const double s = i / 100.0;
    std::fprintf(gp, "%f %f\n", s, 3.0 / (1.0 + 2.0 * (1.0 - s)));
  }
  std::fprintf(gp, "e\n");
  struct stat st;
  if (pclose(gp) != 0 || ::fstat(png_file.fd(), &st) != 0 || st.st_size == 0) {
    throw Error(png, "gnuplot failed to write the plot (is gnuplot installed?)");
  }
  png_file.Commit();
}

void AddBenchFfn(CLI::App* bench) {
  struct Flags {
    FfnBenchOptions opt;
    std::string sparsity = "0,0.5,0.8,0.9,0.95,0.99", dtype = "f32", plot, isa;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  f->opt.threads = PhysicalCores();
  auto* cmd = bench->add_subcommand("ffn", "One decode FFN step: sparse vs oneDNN dense");
  cmd->add_option("--d", f->opt.hidden, "hidden size")->check(CLI::Range(2, 1 << 16));
  cmd->add_option("--f", f->opt.ffn, "FFN size")->check(CLI::Range(1, 1 << 18));
  cmd->add_option("--sparsity", f->sparsity, "comma-separated zero fractions");
  cmd->add_option("--dtype", f->dtype, "f32|bf16")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("-t,--threads", f->opt.threads, "threads")->check(CLI::Range(1, 1024));
  cmd->add_option("--steps", f->opt.steps, "timed steps per sparsity")
      ->check(CLI::Range(1, 100000));
  AddIsaFlag(cmd, &f->isa);
  cmd->add_flag("--json", f->json, "print one JSON object");
  cmd->add_option("--plot", f->plot, "write a PNG of speedup against sparsity");
  cmd->callback([f] {
    ComputeFlags cf;
    cf.isa = f->isa;
    ApplyComputeFlags(cf);
    f->opt.sparsity = ParseNumberList<double>(f->sparsity, "--sparsity", 0.0, 1.0);
    f->opt.dtype = *ParseDTypeName(f->dtype);
    std::unique_ptr<AtomicOutput> plot;
    if (!f->plot.empty()) plot = std::make_unique<AtomicOutput>(f->plot);
    const double bandwidth = MeasureReadBandwidth(f->opt.threads);
    auto log = [](const std::string& line) { std::cerr << line << "\n"; };
    const auto results = RunFfnBench(f->opt, log);
    const std::string isa(IsaName(Kernels().isa));
    if (f->json) {
      json rows = json::array();
      for (const auto& r : results) {
        rows.push_back({{"sparsity", r.sparsity},
                        {"zero_fraction", r.zero_fraction},
                        {"dtype", r.dtype},
                        {"threads", r.threads},
                        {"dense_ms", r.dense_ms},
                        {"sparse_ms", r.sparse_ms},
                        {"own_dense_ms", r.own_dense_ms},
                        {"speedup", r.speedup},
                        {"dense_gflop", r.dense_gflop},
                        {"sparse_gflop", r.sparse_gflop},
                        {"dense_gb_s", r.dense_gb_s},
                        {"gb_s", r.gb_s},
                        {"bandwidth_share", r.gb_s / bandwidth}});
      }
      std::cout << json{{"hidden", f->opt.hidden},
                        {"ffn", f->opt.ffn},
                        {"isa", isa},
                        {"layers", results.empty() ? 0 : results[0].layers},
                        {"read_bandwidth_gb_s", bandwidth},
                        {"results", rows}}
                       .dump(2)
                << "\n";
    } else {
      std::printf("read bandwidth %.1f GB/s (%d threads), isa %s\n", bandwidth, f->opt.threads,
                  isa.c_str());
      std::printf(
          "sparsity  zeros  dense ms  sparse ms  speedup  own dense ms  GFLOP d/s    "
          "GB/s d/s    BW share s\n");
      for (const auto& r : results) {
        std::printf(
            "%8.2f  %5.3f  %8.3f  %9.3f  %6.2fx  %12.3f  %5.3f/%5.3f  %5.1f/%5.1f  %9.0f%%\n",
            r.sparsity, r.zero_fraction, r.dense_ms, r.sparse_ms, r.speedup, r.own_dense_ms,
            r.dense_gflop, r.sparse_gflop, r.dense_gb_s, r.gb_s, 100 * r.gb_s / bandwidth);
      }
    }
    if (plot) {
      PlotSpeedup(results, *plot,
                  "FFN decode step, d=" + std::to_string(f->opt.hidden) +
                      " f=" + std::to_string(f->opt.ffn) + ", " + f->dtype + ", " +
                      std::to_string(f->opt.threads) + " threads, " + isa);
    }
  });
}

void AddBenchDecode(CLI::App* bench) {
  struct Flags {
    ComputeFlags compute;
    int n = 64;
    std::string prompt = "The";
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = bench->add_subcommand("decode", "End-to-end decode, sparse vs dense FFN, one run");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("-n", f->n, "tokens to decode")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-p,--prompt", f->prompt, "prompt");
  cmd->callback([f] {
    SessionOptions so = ApplyComputeFlags(f->compute);
    const auto model = Model::Load(f->compute.model);
    so.ffn = FfnMode::kSparse;
    Session sparse(*model, so);
    so.ffn = FfnMode::kDense;
    Session dense(*model, so);
    std::vector<int> prompt = model->tokenizer().Encode(f->prompt);
    if (model->config().bos_id >= 0)
      prompt.insert(prompt.begin(), static_cast<int>(model->config().bos_id));
    if (static_cast<int64_t>(prompt.size()) + f->n > sparse.context()) {
      throw Error(f->compute.model, "prompt + -n exceed the context; lower -n or raise --ctx");
    }
    auto ls = sparse.Forward(prompt);
    dense.Forward(prompt);
    std::vector<double> sparse_ms, dense_ms;
    for (int i = 0; i < f->n; ++i) {
      // Both sessions decode the same greedy token, alternating which runs first.
      const int id = static_cast<int>(std::max_element(ls.begin(), ls.end()) - ls.begin());
      for (int k = 0; k < 2; ++k) {
        const bool run_sparse = (k == 0) == (i % 2 == 0);
        const auto t0 = Clock::now();
        if (run_sparse) {
          ls = sparse.Forward({&id, 1});
        } else {
          dense.Forward({&id, 1});
        }
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        (run_sparse ? sparse_ms : dense_ms).push_back(ms);
      }
    }
    uint64_t weight_bytes = 0;  // read per decoded token by the dense path
    for (const auto& t : model->file().tensors()) {
      if (t.name != "tok_embeddings" || model->config().tied_embeddings) weight_bytes += t.nbytes;
    }
    const double sparse_tok_s = 1e3 / Median(sparse_ms), dense_tok_s = 1e3 / Median(dense_ms);
    const double bandwidth = MeasureReadBandwidth(sparse.threads());
    const double dense_gb_s = weight_bytes * dense_tok_s / 1e9;
    const double zeros = sparse.ffn().total_stats().zero_fraction();
    const json j = {{"model", f->compute.model},
                    {"tokens", f->n},
                    {"threads", sparse.threads()},
                    {"isa", std::string(IsaName(Kernels().isa))},
                    {"sparse_tok_s", sparse_tok_s},
                    {"dense_tok_s", dense_tok_s},
                    {"speedup", sparse_tok_s / dense_tok_s},
                    {"ffn_zero_fraction", zeros},
                    {"dense_weight_bytes_per_token", weight_bytes},
                    {"dense_gb_s", dense_gb_s},
                    {"read_bandwidth_gb_s", bandwidth},
                    {"dense_bandwidth_share", dense_gb_s / bandwidth}};
    if (f->compute.json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::printf("decode %d tokens, %d threads, isa %s, ffn zeros %.1f%%\n", f->n,
                  sparse.threads(), std::string(IsaName(Kernels().isa)).c_str(), 100 * zeros);
      std::printf("sparse %.2f tok/s, dense %.2f tok/s (median per token): %.2fx\n", sparse_tok_s,
                  dense_tok_s, sparse_tok_s / dense_tok_s);
      std::printf("dense reads %.2f GB/token: %.1f GB/s = %.0f%% of measured %.1f GB/s\n",
                  weight_bytes / 1e9, dense_gb_s, 100 * dense_gb_s / bandwidth, bandwidth);
    }
  });
}

void AddBenchBandwidth(CLI::App* bench) {
  auto threads = std::make_shared<int>(PhysicalCores());
  auto* cmd = bench->add_subcommand(
      "bandwidth", "Memory read bandwidth probe (1 GiB), checked against the dense GEMV");
  cmd->add_option("-t,--threads", *threads, "threads")->check(CLI::Range(1, 1024));
  cmd->callback([threads] {
    const BandwidthMeasurement m = MeasureBandwidth(*threads);
    std::printf(
        "read bandwidth %.2f GB/s with %d threads (medians of 7 passes over %.2f GiB: %.2f with "
        "%d rows in flight per thread, %.2f as one stream per thread)\n",
        m.probe_gb_s, *threads, m.bytes / double(1 << 30), m.rows_in_flight_gb_s, m.rows_in_flight,
        m.sequential_gb_s);
    const double best_gemv = std::max(m.gemv_gb_s, m.onednn_gemv_gb_s);
    std::printf(
        "dense f32 GEMV over a [%lld, %lld] matrix: zeroskip %.2f GB/s (isa %s), oneDNN %.2f "
        "GB/s\n",
        static_cast<long long>(m.rows), static_cast<long long>(m.cols), m.gemv_gb_s,
        std::string(IsaName(Kernels().isa)).c_str(), m.onednn_gemv_gb_s);
    std::printf("best GEMV / probe = %.2f%s\n", best_gemv / m.probe_gb_s,
                best_gemv > m.probe_gb_s ? " (above 1: the probe under-reads this machine)" : "");
  });
}

}  // namespace

void AddBench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (see docs/BENCHMARKS.md)");
  bench->require_subcommand(1);
  AddBenchFfn(bench);
  AddBenchDecode(bench);
  AddBenchBandwidth(bench);
}

}  // namespace zeroskip::cli
