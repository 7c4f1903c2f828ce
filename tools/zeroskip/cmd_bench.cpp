// bench ffn | decode | prefill | bandwidth: the measurements behind docs/BENCHMARKS.md.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "zeroskip/bench.h"
#include "zeroskip/error.h"
#include "zeroskip/files.h"
#include "zeroskip/session.h"

namespace zeroskip::cli {
namespace {

// The model's matrix types, most parameters first ("q4k+q6k" for the q4k recipe): a model may
// mix types, so no single tensor's type names it.
std::string WeightTypes(const Model& model) {
  std::map<DType, uint64_t> params;
  for (const TensorInfo& t : model.file().tensors()) {
    if (t.shape.size() == 2) params[t.dtype] += t.elements();
  }
  std::vector<std::pair<uint64_t, DType>> order;
  for (const auto& [type, n] : params) order.emplace_back(n, type);
  std::sort(order.rbegin(), order.rend());
  std::string label;
  for (const auto& [n, type] : order) {
    label += (label.empty() ? "" : "+") + std::string(DTypeName(type));
  }
  return label;
}

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct PlotSeries {
  std::string title, style;  // style: gnuplot's "with ..." words
  std::vector<std::pair<double, double>> points;
};

// Draws `series` with gnuplot into `png_file` (created before the benchmark ran, so an
// unwritable path fails first, in one line). `setup`: extra gnuplot settings (ranges, keys).
void Plot(AtomicOutput& png_file, const std::string& title, const std::string& xlabel,
          const std::string& ylabel, const std::string& setup,
          const std::vector<PlotSeries>& series) {
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
               "set title '%s'\nset xlabel '%s'\nset ylabel '%s'\nset grid\n%s\nplot ",
               png_file.tmp_path().c_str(), title.c_str(), xlabel.c_str(), ylabel.c_str(),
               setup.c_str());
  for (size_t i = 0; i < series.size(); ++i) {
    std::fprintf(gp, "%s'-' using 1:2 with %s title '%s'", i ? ", " : "",
                 series[i].style.c_str(), series[i].title.c_str());
  }
  std::fprintf(gp, "\n");
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) std::fprintf(gp, "%f %f\n", x, y);
    std::fprintf(gp, "e\n");
  }
  struct stat st;
  if (pclose(gp) != 0 || ::fstat(png_file.fd(), &st) != 0 || st.st_size == 0) {
    throw Error(png, "gnuplot failed to write the plot (is gnuplot installed?)");
  }
  png_file.Commit();
}

// Speedup against sparsity, with the dense-gate ceiling 3 / (1 + 2(1 - s)).
void PlotSpeedup(const std::vector<FfnBenchResult>& results, AtomicOutput& png_file,
                 const std::string& title) {
  PlotSeries measured{"zeroskip sparse", "linespoints lw 2 pt 7", {}};
  for (const auto& r : results) measured.points.emplace_back(r.zero_fraction, r.speedup);
  PlotSeries ideal{"ideal, dense gate: 3/(1+2(1-s))", "lines dt 2 lw 2", {}};
  for (int i = 0; i <= 100; ++i) {
    const double s = i / 100.0;
    ideal.points.emplace_back(s, 3.0 / (1.0 + 2.0 * (1.0 - s)));
  }
  PlotSeries one{"", "lines lc 'gray'", {{0, 1}, {1, 1}}};
  Plot(png_file, title, "zero fraction of the FFN hidden vector", "speedup over oneDNN dense (x)",
       "set key top left\nset yrange [0:*]\nset xrange [0:1]", {measured, ideal, one});
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
  AddIsaOption(cmd, &f->isa);
  cmd->add_flag("--shadow", f->opt.shadow_gate,
                "also time the sparse step with the int8 shadow gate (--gate shadow)");
  cmd->add_flag("--json", f->json, "print one JSON object");
  cmd->add_option("--plot", f->plot, "write a PNG of speedup against sparsity");
  cmd->callback([f] {
    if (!f->isa.empty() && !IsaSupported(f->isa)) {
      throw Error("", "--isa " + f->isa + " is not supported by this CPU");
    }
    f->opt.isa = f->isa;
    f->opt.sparsity = ParseNumberList<double>(f->sparsity, "--sparsity", 0.0, 1.0);
    f->opt.dtype = *ParseDTypeName(f->dtype);
    std::unique_ptr<AtomicOutput> plot;
    if (!f->plot.empty()) plot = std::make_unique<AtomicOutput>(f->plot);
    const double bandwidth = MeasureReadBandwidth(f->opt.threads);
    auto log = [](const std::string& line) { std::cerr << line << "\n"; };
    const auto results = RunFfnBench(f->opt, log);
    const std::string isa(f->isa.empty() ? BestIsaName() : f->isa);
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
                        {"shadow_ms", r.shadow_ms},
                        {"shadow_speedup", r.shadow_speedup},
                        {"certified_fraction", r.certified_fraction},
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

// Median per-token decode time of two sessions decoding the same greedy tokens, alternating
// which runs first, from where each stands.
std::pair<double, double> DecodeMedians(Session& sparse, Session& dense, std::span<const float> ls,
                                        int n) {
  std::vector<float> logits(ls.begin(), ls.end());
  std::vector<double> sparse_ms, dense_ms;
  for (int i = 0; i < n; ++i) {
    const int id = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    for (int k = 0; k < 2; ++k) {
      const bool run_sparse = (k == 0) == (i % 2 == 0);
      const auto t0 = Clock::now();
      if (run_sparse) {
        const auto next = sparse.Forward({&id, 1});
        logits.assign(next.begin(), next.end());
      } else {
        dense.Forward({&id, 1});
      }
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      (run_sparse ? sparse_ms : dense_ms).push_back(ms);
    }
  }
  return {Median(sparse_ms), Median(dense_ms)};
}

// The benchmarks compare a sparse and a dense session on one engine (weights and kernels shared,
// a KV cache each), both with the user's other settings.
SessionOptions SparseOptions(SessionOptions o) {
  o.ffn = FfnMode::kSparse;
  return o;
}

SessionOptions DenseOptions(SessionOptions o) {
  o.ffn = FfnMode::kDense;
  o.gate = GateMode::kDense;  // the dense FFN reads every gate row anyway
  return o;
}

// The prompt's ids (BOS first when the model has one), then `fill` filler tokens spread over the
// vocabulary (valid for any vocab_size >= 1).
std::vector<int> PromptAndFiller(const Model& model, const std::string& prompt, int64_t fill) {
  std::vector<int> ids = model.tokenizer().Encode(prompt);
  if (model.config().bos_id >= 0) ids.insert(ids.begin(), static_cast<int>(model.config().bos_id));
  for (int64_t i = 0; i < fill; ++i) ids.push_back(static_cast<int>((i * 7919) % model.config().vocab));
  return ids;
}

void AddBenchDecode(CLI::App* bench) {
  struct Flags {
    ComputeFlags compute;
    int n = 64;
    std::string prompt = "The", ctx_fill = "0", plot;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = bench->add_subcommand("decode", "End-to-end decode, sparse vs dense FFN, one run");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("-n", f->n, "tokens to decode")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-p,--prompt", f->prompt, "prompt");
  cmd->add_option("--ctx-fill", f->ctx_fill,
                  "comma-separated counts of cached positions to decode after (e.g. "
                  "0,512,1024,2048; filled by a batched prefill)");
  cmd->add_option("--plot", f->plot, "write a PNG of decode tok/s against --ctx-fill");
  cmd->callback([f] {
    const auto model = LoadModel(f->compute);
    ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    const std::vector<int64_t> fills =
        ParseNumberList<int64_t>(f->ctx_fill, "--ctx-fill", 0, int64_t{1} << 22);
    std::unique_ptr<AtomicOutput> plot;
    if (!f->plot.empty()) plot = std::make_unique<AtomicOutput>(f->plot);
    Engine engine(*model, co.engine);
    Session sparse(engine, SparseOptions(co.session)), dense(engine, DenseOptions(co.session));
    const std::vector<int> prompt = PromptAndFiller(*model, f->prompt, 0);
    const int64_t most = *std::max_element(fills.begin(), fills.end());
    if (static_cast<int64_t>(prompt.size()) + most + f->n > sparse.context()) {
      throw Error("", "the prompt, --ctx-fill " + std::to_string(most) + " and -n " +
                          std::to_string(f->n) + " exceed the context of " +
                          std::to_string(sparse.context()) + "; lower them or raise --ctx");
    }
    json runs = json::array();
    for (const int64_t fill : fills) {
      const std::vector<int> ids = PromptAndFiller(*model, f->prompt, fill);
      sparse.Reset();
      dense.Reset();
      sparse.ResetFfnStats();
      const auto ls = sparse.Forward(ids);
      dense.Forward(ids);
      const auto [sparse_ms, dense_ms] = DecodeMedians(sparse, dense, ls, f->n);
      runs.push_back({{"ctx_fill", fill},
                      {"sparse_tok_s", 1e3 / sparse_ms},
                      {"dense_tok_s", 1e3 / dense_ms},
                      {"speedup", dense_ms / sparse_ms},
                      {"ffn_zero_fraction", sparse.ffn_total().zero_fraction()},
                      {"gate_certified_fraction", sparse.ffn_total().certified_fraction()}});
      if (!f->compute.json) {
        std::printf(
            "after %lld cached positions: sparse %.2f tok/s, dense %.2f tok/s: %.2fx (gate %s, "
            "%.1f%% of zeros certified)\n",
            static_cast<long long>(ids.size()), 1e3 / sparse_ms, 1e3 / dense_ms,
            dense_ms / sparse_ms, sparse.ffn_total().shadow_rows ? "shadow" : "dense",
            100 * sparse.ffn_total().certified_fraction());
      }
    }
    uint64_t weight_bytes = 0;  // read per decoded token by the dense path
    for (const auto& t : model->file().tensors()) {
      if (t.name != "tok_embeddings" || model->config().tied_embeddings) weight_bytes += t.nbytes;
    }
    const json& first = runs[0];
    const double sparse_tok_s = first["sparse_tok_s"], dense_tok_s = first["dense_tok_s"];
    const double bandwidth = MeasureReadBandwidth(sparse.threads());
    const double dense_gb_s = weight_bytes * dense_tok_s / 1e9;
    const double zeros = first["ffn_zero_fraction"];
    const json j = {{"model", f->compute.model},
                    {"tokens", f->n},
                    {"threads", sparse.threads()},
                    {"isa", std::string(engine.isa())},
                    {"kv_type", std::string(DTypeName(sparse.kv_type()))},
                    {"sparse_tok_s", sparse_tok_s},
                    {"dense_tok_s", dense_tok_s},
                    {"speedup", sparse_tok_s / dense_tok_s},
                    {"ffn_zero_fraction", zeros},
                    {"dense_weight_bytes_per_token", weight_bytes},
                    {"dense_gb_s", dense_gb_s},
                    {"read_bandwidth_gb_s", bandwidth},
                    {"dense_bandwidth_share", dense_gb_s / bandwidth},
                    {"ctx_fill", runs}};
    if (plot) {
      PlotSeries s{"sparse FFN", "linespoints lw 2 pt 7", {}}, d{"dense FFN", "linespoints lw 2 pt 5", {}};
      for (const auto& r : runs) {
        s.points.emplace_back(r["ctx_fill"].get<double>(), r["sparse_tok_s"].get<double>());
        d.points.emplace_back(r["ctx_fill"].get<double>(), r["dense_tok_s"].get<double>());
      }
      Plot(*plot,
           "decode after N cached positions (" + std::to_string(sparse.threads()) + " threads, " +
               std::string(engine.isa()) + ", KV " + std::string(DTypeName(sparse.kv_type())) + ")",
           "cached positions before decoding", "decode tok/s (median per token)",
           "set key top right\nset yrange [0:*]", {s, d});
    }
    if (f->compute.json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::printf("decode %d tokens, %d threads, isa %s, ffn zeros %.1f%%\n", f->n,
                  sparse.threads(), std::string(engine.isa()).c_str(), 100 * zeros);
      std::printf("sparse %.2f tok/s, dense %.2f tok/s (median per token): %.2fx\n", sparse_tok_s,
                  dense_tok_s, sparse_tok_s / dense_tok_s);
      std::printf("dense reads %.2f GB/token: %.1f GB/s = %.0f%% of measured %.1f GB/s\n",
                  weight_bytes / 1e9, dense_gb_s, 100 * dense_gb_s / bandwidth, bandwidth);
    }
  });
}

// Time to first token: the prompt's forward pass from an empty cache, per prompt length, sparse
// and dense sessions alternating, `reps` rounds. The first round at a length also pays for what a
// new batch shape costs (oneDNN creates its primitives per shape), as a real prompt of a new
// length does; it is reported apart from the median over the rounds.
void AddBenchPrefill(CLI::App* bench) {
  struct Flags {
    ComputeFlags compute;
    std::string lengths = "1,3,16,64,256", plot;
    int reps = 3;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = bench->add_subcommand("prefill", "Time to first token per prompt length, sparse vs dense FFN");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("--lengths", f->lengths, "comma-separated prompt lengths in tokens");
  cmd->add_option("--reps", f->reps, "rounds per length (medians)")->check(CLI::Range(1, 1000));
  cmd->add_option("--plot", f->plot, "write a PNG of prompt tok/s against the prompt length");
  cmd->callback([f] {
    const auto model = LoadModel(f->compute);
    ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    const std::vector<int64_t> lengths =
        ParseNumberList<int64_t>(f->lengths, "--lengths", 1, int64_t{1} << 22);
    std::unique_ptr<AtomicOutput> plot;
    if (!f->plot.empty()) plot = std::make_unique<AtomicOutput>(f->plot);
    const int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    Engine engine(*model, co.engine);  // prompts longer than its max_batch run in chunks, as in run
    Session sparse(engine, SparseOptions(co.session)), dense(engine, DenseOptions(co.session));
    if (longest > sparse.context()) {
      throw Error("", "--lengths " + std::to_string(longest) +
                          " exceeds the context of " + std::to_string(sparse.context()) +
                          "; lower it or raise --ctx");
    }
    // Rounds outermost, so a slow phase of a shared machine hits every length alike.
    std::map<int64_t, std::vector<double>> sparse_s, dense_s;
    for (int rep = 0; rep < f->reps; ++rep) {
      for (const int64_t n : lengths) {
        // n tokens: BOS (if any) and filler.
        std::vector<int> ids = PromptAndFiller(*model, "", n);
        ids.resize(static_cast<size_t>(n));
        for (int k = 0; k < 2; ++k) {
          Session& s = (k == 0) == (rep % 2 == 0) ? sparse : dense;
          s.Reset();
          const auto t0 = Clock::now();
          s.Forward(ids);
          const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
          (&s == &sparse ? sparse_s : dense_s)[n].push_back(sec);
        }
      }
    }
    json rows = json::array();
    PlotSeries ps{"sparse FFN", "linespoints lw 2 pt 7", {}}, pd{"dense FFN", "linespoints lw 2 pt 5", {}};
    for (const int64_t n : lengths) {
      const double ts = Median(sparse_s[n]), td = Median(dense_s[n]);
      rows.push_back({{"prompt_tokens", n},
                      {"sparse_ttft_s", ts},
                      {"dense_ttft_s", td},
                      {"sparse_first_ttft_s", sparse_s[n][0]},
                      {"dense_first_ttft_s", dense_s[n][0]},
                      {"sparse_prompt_tok_s", n / ts},
                      {"dense_prompt_tok_s", n / td}});
      ps.points.emplace_back(double(n), n / ts);
      pd.points.emplace_back(double(n), n / td);
      if (!f->compute.json) {
        std::printf("%5lld tokens: sparse %.4f s (%.1f tok/s; first %.4f s), dense %.4f s (%.1f "
                    "tok/s; first %.4f s)\n",
                    static_cast<long long>(n), ts, n / ts, sparse_s[n][0], td, n / td,
                    dense_s[n][0]);
      }
    }
    const std::string what = std::to_string(sparse.threads()) + " threads, " +
                             std::string(engine.isa()) + ", " +
                             WeightTypes(*model);
    if (plot) {
      Plot(*plot, "prompt processing (" + what + ")", "prompt tokens",
           "prompt tok/s (median of " + std::to_string(f->reps) + ")",
           "set key top left\nset logscale x 2\nset yrange [0:*]", {ps, pd});
    }
    if (f->compute.json) {
      std::cout << json{{"model", f->compute.model},
                        {"threads", sparse.threads()},
                        {"isa", std::string(engine.isa())},
                        {"weights", WeightTypes(*model)},
                        {"reps", f->reps},
                        {"prompts", rows}}
                       .dump(2)
                << "\n";
    } else {
      std::printf("time to first token, %s, medians of %d rounds\n", what.c_str(), f->reps);
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
        std::string(BestIsaName()).c_str(), m.onednn_gemv_gb_s);
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
  AddBenchPrefill(bench);
  AddBenchBandwidth(bench);
}

}  // namespace zeroskip::cli
