// run, eval, perplexity: the commands that execute a model.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "progress.h"
#include "zeroskip/error.h"
#include "zeroskip/files.h"
#include "zeroskip/generate.h"
#include "zeroskip/kl_divergence.h"
#include "zeroskip/sampler.h"
#include "zeroskip/score.h"
#include "zeroskip/session.h"

namespace zeroskip::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

constexpr uint64_t kMaxTextBytes = 256u << 20;

std::string ReadTextFile(const std::string& path) {
  std::string text = ReadSmallFile(path, kMaxTextBytes);
  if (!IsValidUtf8(text)) throw Error(path, "is not valid UTF-8");
  return text;
}

}  // namespace

std::vector<int> WithBos(const Model& model, const std::vector<int>& ids) {
  std::vector<int> out;
  if (model.config().bos_id >= 0) out.push_back(static_cast<int>(model.config().bos_id));
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

namespace {

json LayerStatsJson(const Session& session) {
  json layers = json::array();
  for (size_t l = 0; l < session.ffn_stats().size(); ++l) {
    const FfnLayerStats& s = session.ffn_stats()[l];
    layers.push_back({{"layer", l},
                      {"zero_fraction", s.zero_fraction()},
                      {"flops_done", s.flops_done},
                      {"flops_dense", s.flops_dense},
                      {"weight_bytes_read", s.weight_bytes_read},
                      {"gate_shadow_rows", s.shadow_rows},
                      {"gate_uncertain_rows", s.uncertain_rows()},
                      {"gate_certified_fraction", s.certified_fraction()}});
  }
  return layers;
}

void PrintLayerTable(const Session& session) {
  std::fprintf(stderr,
               "layer  zeros%%  FLOPs done/dense  weight MB read  certified%%  uncertain rows\n");
  for (size_t l = 0; l < session.ffn_stats().size(); ++l) {
    const FfnLayerStats& s = session.ffn_stats()[l];
    std::fprintf(
        stderr, "%5zu  %6.2f  %15.3f  %14.2f  %10.2f  %14llu\n", l, 100 * s.zero_fraction(),
        s.flops_dense ? double(s.flops_done) / s.flops_dense : 0.0, s.weight_bytes_read / 1e6,
        100 * s.certified_fraction(), static_cast<unsigned long long>(s.uncertain_rows()));
  }
}

}  // namespace

void AddComputeFlags(CLI::App* cmd, ComputeFlags* f) {
  cmd->add_option("-m,--model", f->model, ".zsk model file")->required();
  cmd->add_option("-t,--threads", f->threads, "threads (default: physical cores)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--ctx", f->ctx, "context length (default: the model's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 22));
  cmd->add_option("--ffn", f->ffn, "FFN path: auto|sparse|dense")
      ->check(CLI::IsMember({"auto", "sparse", "dense"}));
  cmd->add_option("--gate", f->gate,
                  "how decode finds the gate's zeros: auto (the shadow gate where the file has "
                  "one and it pays)|dense|shadow (exact; needs `zeroskip shadow`)")
      ->check(CLI::IsMember({"auto", "dense", "shadow"}));
  AddIsaOption(cmd, &f->isa);
  cmd->add_option("--act", f->act,
                  "FFN activation: model (default)|relu|silu|stoch (stochastic, see --stoch-p)")
      ->check(CLI::IsMember({"model", "relu", "silu", "stoch"}));
  cmd->add_option("--stoch-p", f->stoch_p, "--act stoch: probability of SiLU for a negative gate")
      ->check(FiniteRange(0, 1));
  cmd->add_option("--kv-type", f->kv_type,
                  "KV cache elements: f32 (exact, default)|f16|bf16 (half the memory)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->add_option("--seed", f->seed, "random seed (sampling and stochastic activations)")
      ->check(Unsigned64());
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->add_option("--mem-budget", f->mem_budget,
                  "bytes the weights may take (suffix K, M, G, T: powers of 1024); a larger model "
                  "reads its FFN rows from its neuron file (`zeroskip neurons`). Default: 85% of "
                  "the memory available to this process")
      ->transform(ByteSize());
  cmd->add_option("--neuron-io", f->neuron_io,
                  "with a neuron file: direct (O_DIRECT, default)|cached (through the page cache)")
      ->check(CLI::IsMember({"direct", "cached"}));
}

std::unique_ptr<Model> LoadModel(const ComputeFlags& f) {
  LoadOptions options;
  options.mem_budget = f.mem_budget;
  options.direct_io = f.neuron_io == "direct";
  auto model = Model::Load(f.model, options);
  if (const MemoryPlan& m = model->memory(); m.offloaded) {
    const auto mb = [](uint64_t bytes) { return std::to_string((bytes + (1 << 19)) >> 20); };
    std::fprintf(stderr,
                 "zeroskip: memory budget %s MiB: %s MiB resident, FFN rows from %s into a cache "
                 "of %llu neurons (%s MiB)\n",
                 mb(m.budget).c_str(), mb(m.resident_bytes).c_str(), m.neuron_file.c_str(),
                 static_cast<unsigned long long>(m.cache_slots),
                 mb(m.cache_slots * m.bundle_bytes).c_str());
  }
  return model;
}

std::unique_ptr<Session> StartSession(Engine& engine, const SessionOptions& options) {
  auto session = std::make_unique<Session>(engine, options);
  const int64_t model_context = engine.model().config().context;
  if (options.context == 0 && session->context() < model_context) {
    std::fprintf(stderr,
                 "zeroskip: context %lld tokens: the KV cache of the model's %lld does not fit "
                 "beside the memory budget (--ctx, --kv-type bf16, a smaller --mem-budget)\n",
                 static_cast<long long>(session->context()), static_cast<long long>(model_context));
  }
  return session;
}

void AddIsaOption(CLI::App* cmd, std::string* isa) {
  std::vector<std::string> names;
  std::string list;
  for (const std::string_view name : IsaNames()) {
    names.emplace_back(name);
    list += (list.empty() ? "" : "|") + names.back();
  }
  cmd->add_option("--isa", *isa, "kernels: " + list + " (default: the best this CPU runs)")
      ->check(CLI::IsMember(names));
}

ComputeOptions ApplyComputeFlags(const ComputeFlags& f, const Model& model) {
  if (!f.isa.empty() && !IsaSupported(f.isa)) {
    throw Error("", "--isa " + f.isa + " is not supported by this CPU");
  }
  if (f.ctx > model.config().context) {
    throw Error("", "--ctx " + std::to_string(f.ctx) + " exceeds the model's context length " +
                        std::to_string(model.config().context));
  }
  ComputeOptions o;
  o.engine.threads = f.threads;
  o.engine.isa = f.isa;
  o.session.context = f.ctx;
  ParseFfnMode(f.ffn, &o.session.ffn);
  ParseGateMode(f.gate, &o.session.gate);
  ParseFfnActivation(f.act, &o.session.activation.kind);
  o.session.activation.stoch_p = f.stoch_p;
  o.session.activation.seed = f.seed;
  o.session.kv_type = *ParseDTypeName(f.kv_type);
  return o;
}

void AddSamplerFlags(CLI::App* cmd, SamplerOptions* s) {
  cmd->add_option("--temp", s->temperature, "temperature (0: greedy)")
      ->check(FiniteRange(0, 100));
  cmd->add_option("--top-k", s->top_k, "top-k (0: off)")->check(CLI::Range(0, 1 << 22));
  cmd->add_option("--top-p", s->top_p, "top-p (1: off)")->check(FiniteRange(0, 1));
  cmd->add_option("--min-p", s->min_p, "min-p (0: off)")->check(FiniteRange(0, 1));
  cmd->add_option("--repeat-penalty", s->repeat_penalty, "repetition penalty (1: off)")
      ->check(FiniteRange(0.01, 100));
  cmd->add_option("--repeat-last-n", s->repeat_last_n,
                  "how many recent tokens the repetition penalty looks at (0: off)")
      ->check(CLI::Range(0, 1 << 22));
}

void AddRun(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    std::string prompt, prompt_file;
    int n = 128;
    SamplerOptions sampler;
    bool ignore_eos = false, stats_layers = false, echo = true;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("run", "Generate text from a prompt");
  AddComputeFlags(cmd, &f->compute);
  auto* p = cmd->add_option("-p,--prompt", f->prompt, "prompt text");
  auto* pf = cmd->add_option("-f,--file", f->prompt_file, "read the prompt from a UTF-8 file");
  p->excludes(pf);
  cmd->add_option("-n,--n-predict", f->n, "tokens to generate")->check(CLI::Range(0, 1 << 22));
  AddSamplerFlags(cmd, &f->sampler);
  cmd->add_flag("--echo,!--no-echo", f->echo,
                "print the prompt before its continuation (default, as llama-cli)");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "keep generating after the end-of-text token");
  cmd->add_flag("--stats-layers", f->stats_layers, "print per-layer FFN statistics on stderr");
  cmd->callback([f] {
    f->sampler.seed = f->compute.seed;
    const auto model = LoadModel(f->compute);
    const ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    const std::string prompt = f->prompt_file.empty() ? f->prompt : ReadTextFile(f->prompt_file);
    const std::string prompt_source = f->prompt_file.empty() ? "--prompt" : f->prompt_file;
    if (!IsValidUtf8(prompt)) throw Error(prompt_source, "is not valid UTF-8");
    Engine engine(*model, co.engine);
    const std::unique_ptr<Session> started = StartSession(engine, co.session);
    Session& session = *started;
    const auto too_long = [&](const std::string& tokens) {
      return Error(prompt_source, "the prompt is " + tokens + " tokens but the context is " +
                                      std::to_string(session.context()));
    };
    // Bounded before tokenizing: megabytes of prompt would take seconds to tokenize.
    if (const int64_t least = model->tokenizer().MinTokens(prompt); least > session.context()) {
      throw too_long("at least " + std::to_string(least));
    }
    const std::vector<int> prompt_ids = WithBos(*model, model->tokenizer().Encode(prompt));
    if (prompt_ids.empty()) throw Error("", "the prompt is empty and the model has no BOS token");
    if (static_cast<int64_t>(prompt_ids.size()) > session.context()) {
      throw too_long(std::to_string(prompt_ids.size()));
    }
    Sampler sampler(f->sampler, model->config().vocab);
    const bool stream_out = !f->compute.json;
    // As llama-cli: the prompt, then its continuation, so stdout is the whole text.
    if (stream_out && f->echo) WriteStdout(prompt);
    GenerateConfig gc;
    gc.max_tokens = f->n;
    gc.stop_at_eos = !f->ignore_eos;
    gc.drop_leading_space = prompt.empty();
    if (stream_out) {
      gc.on_token = [](int, std::string_view text) {
        WriteStdout(text);
        return true;
      };
    }
    const GenerateResult r = Generate(session, sampler, prompt_ids, gc);
    if (stream_out) WriteStdout("\n");  // before the stats line on stderr

    const FfnLayerStats total = session.ffn_total();
    const std::string isa(engine.isa());
    const std::string ffn_path = session.sparse_decode() ? "sparse" : "dense";
    const std::string act(FfnActivationName(session.activation()));
    const std::string gate = total.shadow_rows > 0 ? "shadow" : "dense";
    if (f->compute.json) {
      json j = {
          {"prompt_tokens", prompt_ids},
          {"prompt", prompt},
          {"tokens", r.tokens},
          {"text", r.text},
          {"stop", std::string(StopReasonName(r.stop))},
          {"prefill_tok_s", r.prefill_tok_s()},
          {"decode_tok_s", r.decode_tok_s()},
          {"ffn_zero_fraction", total.zero_fraction()},
          {"ffn_flops_done", total.flops_done},
          {"ffn_flops_dense", total.flops_dense},
          {"ffn_weight_bytes_read", total.weight_bytes_read},
          {"ffn_path", ffn_path},
          {"gate", gate},
          {"gate_certified_fraction", total.certified_fraction()},
          {"gate_uncertain_rows", total.uncertain_rows()},
          {"act", act},
          {"stoch_p", f->compute.stoch_p},
          {"picked_negative_fraction",
           total.negative_gates ? double(total.picked_negatives) / total.negative_gates : 0.0},
          {"isa", isa},
          {"threads", session.threads()},
          {"kv_type", std::string(DTypeName(session.kv_type()))}};
      if (!engine.neuron_io().empty()) {
        j["neuron_io"] = engine.neuron_io();
        j["neuron_fetches"] = total.neuron_fetches;
        j["neuron_reads"] = total.neuron_reads;
        j["neuron_bytes_read"] = total.neuron_bytes_read;
        j["neuron_warmed"] = total.neuron_warmed;
      }
      if (f->stats_layers) j["layers"] = LayerStatsJson(session);
      std::cout << j.dump() << "\n";
    }
    std::fprintf(stderr,
                 "zeroskip: prompt %zu tok | prefill %.1f tok/s | decode %.2f tok/s | ffn zeros "
                 "%.1f%% | ffn %s, act %s, gate %s | isa %s | threads %d\n",
                 prompt_ids.size(), r.prefill_tok_s(), r.decode_tok_s(),
                 100 * total.zero_fraction(), ffn_path.c_str(), act.c_str(), gate.c_str(),
                 isa.c_str(), session.threads());
    if (!engine.neuron_io().empty()) {
      std::fprintf(
          stderr,
          "zeroskip: neurons fetched %llu, read %llu (%.1f MB, %s); %.1f%% without a read; "
          "the prompt left %llu in the cache\n",
          static_cast<unsigned long long>(total.neuron_fetches),
          static_cast<unsigned long long>(total.neuron_reads), total.neuron_bytes_read / 1e6,
          engine.neuron_io().c_str(),
          total.neuron_fetches
              ? 100.0 * (total.neuron_fetches - total.neuron_reads) / total.neuron_fetches
              : 0.0,
          static_cast<unsigned long long>(total.neuron_warmed));
    }
    if (f->stats_layers) PrintLayerTable(session);
  });
}

void AddEval(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    std::string tokens;
    int top = 10;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("eval", "Print the top logits after a list of token ids");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("--tokens", f->tokens, "comma-separated token ids (include BOS yourself)")
      ->required();
  cmd->add_option("--top", f->top, "how many (id, logit) pairs")->check(CLI::Range(1, 1 << 22));
  cmd->callback([f] {
    const std::vector<int> ids = ParseNumberList<int>(f->tokens, "--tokens", 0, INT32_MAX);
    const auto model = LoadModel(f->compute);
    const ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    Engine engine(*model, co.engine);
    const std::unique_ptr<Session> started = StartSession(engine, co.session);
    Session& session = *started;
    // Checked here, not by Forward: token by token it would count only those run so far.
    if (static_cast<int64_t>(ids.size()) > session.context()) {
      throw Error(model->file().path(), std::to_string(ids.size()) +
                                            " tokens do not fit the context of " +
                                            std::to_string(session.context()));
    }
    std::span<const float> logits;
    for (size_t i = 0; i < ids.size(); ++i) {
      // Token by token under --ffn sparse, so the sparse decode path is what gets evaluated.
      if (co.session.ffn == FfnMode::kSparse) {
        logits = session.Forward({&ids[i], 1});
      } else {
        logits = session.Forward(ids);
        break;
      }
    }
    std::vector<int> order(logits.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
    const size_t k = std::min(order.size(), static_cast<size_t>(f->top));
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    json top = json::array();
    for (size_t i = 0; i < k; ++i) top.push_back({{"id", order[i]}, {"logit", logits[order[i]]}});
    if (f->compute.json) {
      std::cout << json{{"top", top}}.dump() << "\n";
    } else {
      for (const auto& e : top) std::cout << e["id"] << " " << e["logit"] << "\n";
    }
  });
}

namespace {

json KlJson(const KlDivergenceSummary& k) {
  return {{"positions", k.positions},
          {"kld_mean", k.kld_mean},
          {"kld_mean_se", k.kld_mean_se},
          {"kld_median", k.kld_median},
          {"kld_p99", k.kld_p99},
          {"kld_p999", k.kld_p999},
          {"kld_max", k.kld_max},
          {"same_top", k.same_top},
          {"same_top_se", k.same_top_se},
          {"ppl_base", k.ppl_base},
          {"ppl_ratio", k.ppl_ratio},
          {"ln_ppl_ratio", k.ln_ppl_ratio},
          {"ln_ppl_ratio_se", k.ln_ppl_ratio_se},
          {"delta_p_mean", k.delta_p_mean},
          {"delta_p_mean_se", k.delta_p_mean_se},
          {"delta_p_rms", k.delta_p_rms}};
}

// As llama-perplexity's summary, in its units (nats; percentages for probabilities).
void PrintKl(const std::string& base, const KlDivergenceSummary& k) {
  std::printf("KL divergence against %s over %lld positions:\n", base.c_str(),
              static_cast<long long>(k.positions));
  std::printf("  mean KLD      %10.6f ± %.6f\n", k.kld_mean, k.kld_mean_se);
  std::printf("  median KLD    %10.6f\n", k.kld_median);
  std::printf("  99.0%% KLD     %10.6f\n", k.kld_p99);
  std::printf("  99.9%% KLD     %10.6f\n", k.kld_p999);
  std::printf("  max KLD       %10.6f\n", k.kld_max);
  std::printf("  same top      %10.3f ± %.3f %%\n", 100 * k.same_top, 100 * k.same_top_se);
  std::printf("  PPL(base)     %10.4f\n", k.ppl_base);
  std::printf("  PPL ratio     %10.6f (ln %.6f ± %.6f)\n", k.ppl_ratio, k.ln_ppl_ratio,
              k.ln_ppl_ratio_se);
  std::printf("  mean Δp       %10.3f ± %.3f %%\n", 100 * k.delta_p_mean, 100 * k.delta_p_mean_se);
  std::printf("  RMS Δp        %10.3f %%\n", 100 * k.delta_p_rms);
}

}  // namespace

void AddPerplexity(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    std::string file, kl_base, kl_divergence;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("perplexity", "Perplexity of a text over non-overlapping windows");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("-f,--file", f->file, "UTF-8 text file")->required();
  auto* base = cmd->add_option("--kl-base", f->kl_base,
                               "write this model's next-token distributions at every scored "
                               "position to FILE (the reference of --kl-divergence)");
  cmd->add_option("--kl-divergence", f->kl_divergence,
                  "compare with the distributions in FILE (written by --kl-base on the same "
                  "text, --ctx and vocabulary): KL divergence, same top token, Δp")
      ->excludes(base);
  cmd->callback([f] {
    const auto model = LoadModel(f->compute);
    ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    const std::vector<int> text_ids = model->tokenizer().Encode(ReadTextFile(f->file));
    // Every window runs as one batch, so the batch is the context.
    co.engine.max_batch = f->compute.ctx > 0 ? f->compute.ctx : model->config().context;
    Engine engine(*model, co.engine);
    const std::unique_ptr<Session> started = StartSession(engine, co.session);
    Session& session = *started;
    Progress progress("perplexity", Progress::Unit::kTokens);
    const auto t0 = Clock::now();
    const bool token_by_token = co.session.ffn == FfnMode::kSparse;
    const auto update = [&](size_t done, size_t total) { progress.Update(done, total); };
    PerplexityResult result;
    KlDivergenceSummary kl;
    try {
      if (!f->kl_divergence.empty()) {
        const KlDivergenceResult r =
            PerplexityKlDivergence(session, text_ids, token_by_token, f->kl_divergence, update);
        result = r.perplexity;
        kl = r.kl;
      } else if (!f->kl_base.empty()) {
        result = PerplexityWriteKlBase(session, text_ids, token_by_token, f->kl_base, update);
      } else {
        result = Perplexity(session, text_ids, token_by_token, update);
      }
    } catch (const Error& e) {
      if (!e.path().empty()) throw;
      throw Error(f->file, e.reason());  // what was too short: the file
    }
    progress.Done();
    const double ppl = result.perplexity;
    const int64_t counted = result.tokens;
    const double seconds = Seconds(t0, Clock::now());
    const double tok_s = counted / seconds;
    const double zeros = session.ffn_total().zero_fraction();
    if (f->compute.json) {
      json j = {
          {"perplexity", ppl}, {"tokens", counted}, {"tok_s", tok_s}, {"ffn_zero_fraction", zeros}};
      if (!f->kl_divergence.empty()) j["kl_divergence"] = KlJson(kl);
      std::cout << j.dump() << "\n";
    } else {
      std::printf("perplexity %.4f over %lld tokens (%.1f tok/s, ffn zeros %.1f%%)\n", ppl,
                  static_cast<long long>(counted), tok_s, 100 * zeros);
      if (!f->kl_divergence.empty()) PrintKl(f->kl_divergence, kl);
    }
    if (!f->kl_base.empty()) {
      std::fprintf(stderr, "zeroskip: wrote the distributions at %lld positions to %s\n",
                   static_cast<long long>(counted), f->kl_base.c_str());
    }
  });
}

void AddScore(CLI::App& app) {
  struct Flags {
    ComputeFlags compute;
    std::string tokens;
    int from = 1;
  };
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand(
      "score", "Log-likelihood of token ids[from..] given the ids before them (quality proxy)");
  AddComputeFlags(cmd, &f->compute);
  cmd->add_option("--tokens", f->tokens, "comma-separated token ids (include BOS yourself)")
      ->required();
  cmd->add_option("--from", f->from, "score the tokens from this index on")
      ->check(CLI::Range(1, 1 << 22));
  cmd->callback([f] {
    const std::vector<int> ids = ParseNumberList<int>(f->tokens, "--tokens", 0, INT32_MAX);
    if (static_cast<size_t>(f->from) >= ids.size()) {
      throw Error("", "--from leaves nothing to score");
    }
    const auto model = LoadModel(f->compute);
    ComputeOptions co = ApplyComputeFlags(f->compute, *model);
    co.engine.max_batch = static_cast<int64_t>(ids.size());
    Engine engine(*model, co.engine);
    const std::unique_ptr<Session> started = StartSession(engine, co.session);
    Session& session = *started;
    Progress progress("scoring", Progress::Unit::kTokens);
    const std::vector<double> log_probs =
        NextTokenLogProbs(session, ids, co.session.ffn == FfnMode::kSparse,
                          [&](size_t done, size_t total) { progress.Update(done, total); });
    progress.Done();
    double log_likelihood = 0;
    for (size_t i = static_cast<size_t>(f->from); i < ids.size(); ++i) {
      log_likelihood += log_probs[i - 1];
    }
    const size_t n = ids.size() - static_cast<size_t>(f->from);
    const json j = {{"log_likelihood", log_likelihood},
                    {"tokens", n},
                    {"mean_log_likelihood", log_likelihood / n}};
    if (f->compute.json) {
      std::cout << j.dump() << "\n";
    } else {
      std::printf("log-likelihood %.4f over %zu tokens (mean %.4f)\n", log_likelihood, n,
                  log_likelihood / n);
    }
  });
}

}  // namespace zeroskip::cli
