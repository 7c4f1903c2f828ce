// End-to-end behaviour of the CLI contract: generation edge cases, JSON output, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "kernels/kernels.h"
#include "test_util.h"
#include "zeroskip/config.h"
#include "zeroskip/format.h"
#include "zeroskip/tokenizer.h"

namespace zeroskip {
namespace {

using nlohmann::json;
using testing::RunCli;

const std::string kModel = "llama_gqa_hd64_relu_f32";  // context 64, BOS 1, EOS 2

json RunJson(std::vector<std::string> args) {
  args.insert(args.begin(), {"run", "-m", testing::ConvertedModel(kModel), "--json"});
  const auto r = RunCli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json();
}

void ExpectOneErrorLine(const testing::CliResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1);
  const auto lines = testing::Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.err;
  EXPECT_EQ(lines[0].rfind("zeroskip: error: ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(needle), std::string::npos) << lines[0];
}

TEST(Cli, EmptyPromptRunsFromBosOnly) {
  const json j = RunJson({"-p", "", "-n", "5", "--temp", "0", "--ignore-eos"});
  EXPECT_EQ(j["prompt_tokens"], json::array({1}));
  EXPECT_EQ(j["tokens"].size(), 5u);
}

// As llama-cli: stdout is the prompt followed by exactly the continuation (--echo, the default),
// or the continuation alone (--no-echo); the continuation is what --json reports as "text".
TEST(Cli, EchoPrintsThePromptThenTheContinuation) {
  const std::string prompt = "Anna reads";
  const std::vector<std::string> common = {"-p", prompt, "-n", "8", "--temp", "0", "--ignore-eos"};
  const std::string continuation = RunJson(common)["text"];
  ASSERT_FALSE(continuation.empty());
  std::vector<std::string> args = {"run", "-m", testing::ConvertedModel(kModel)};
  args.insert(args.end(), common.begin(), common.end());
  const auto echoed = RunCli(args);
  ASSERT_EQ(echoed.exit_code, 0) << echoed.err;
  EXPECT_EQ(echoed.out, prompt + continuation + "\n");
  args.push_back("--no-echo");
  const auto plain = RunCli(args);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, continuation + "\n");
}

// What a bug report needs, in three lines; the kernels line names the ISA the CPU gets.
TEST(Cli, VersionNamesCommitBuildKernelsAndCpu) {
  const auto r = RunCli({"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = testing::Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0].rfind("zeroskip 0.1.0 (commit ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(" build)"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[1].rfind("kernels: scalar avx2", 0), 0u) << lines[1];
  EXPECT_NE(lines[1].find("-> using " + std::string(IsaName(BestIsa()))), std::string::npos);
  EXPECT_EQ(lines[2].rfind("cpu features:", 0), 0u) << lines[2];
}

// oneDNN's OpenMP team waits as the engine's pool does, a brief spin and then sleep (issue 29):
// the CLI runs itself again with GOMP_SPINCOUNT=1000 before libgomp reads its settings, unless
// the user chose a spin count or a wait policy. libgomp itself reports what it read
// (OMP_DISPLAY_ENV=verbose prints GOMP_SPINCOUNT on stderr at start-up).
TEST(Cli, OpenMpSpinsBrieflyUnlessTheUserChose) {
  struct Restore {
    ~Restore() {
      unsetenv("OMP_DISPLAY_ENV");
      unsetenv("GOMP_SPINCOUNT");
      unsetenv("OMP_WAIT_POLICY");
    }
  } restore;
  unsetenv("GOMP_SPINCOUNT");
  unsetenv("OMP_WAIT_POLICY");
  setenv("OMP_DISPLAY_ENV", "verbose", 1);
  const auto spin_read = [](const std::string& err) {
    const auto at = err.rfind("GOMP_SPINCOUNT = '");  // the last start-up's (the re-run's)
    return at == std::string::npos ? std::string("none")
                                   : err.substr(at + 18, err.find('\'', at + 18) - at - 18);
  };
  auto r = RunCli({"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(spin_read(r.err), "1000") << r.err;
  setenv("GOMP_SPINCOUNT", "5000", 1);
  r = RunCli({"--version"});
  EXPECT_EQ(spin_read(r.err), "5000") << r.err;
  unsetenv("GOMP_SPINCOUNT");
  setenv("OMP_WAIT_POLICY", "passive", 1);
  r = RunCli({"--version"});
  EXPECT_EQ(spin_read(r.err), "0") << r.err;  // libgomp's passive: no spin at all
}

// `shadow` writes the file `convert --shadow` writes, byte for byte; runs with --gate shadow
// generate what --gate dense generates and report the shadow's statistics, per layer too; a file
// without shadows refuses --gate shadow in one line.
TEST(Cli, ShadowCommandAndGateFlag) {
  testing::TempDir dir;
  const std::string plain = testing::ConvertedModel(kModel), out = dir / "shadowed.zsk";
  const auto r = RunCli({"shadow", plain, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      testing::ReadFile(out),
      testing::ReadFile(testing::ConvertedModel(kModel + std::string(testing::kShadowSuffix))));
  const std::vector<std::string> common = {
      "run", "-m",     out, "-p",           "Anna reads", "-n",
      "8",   "--temp", "0", "--ignore-eos", "--json",     "--stats-layers"};
  json got[2];
  for (int k = 0; k < 2; ++k) {
    std::vector<std::string> args = common;
    args.insert(args.end(), {"--gate", k == 0 ? "dense" : "shadow"});
    const auto run = RunCli(args);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    got[k] = json::parse(run.out);
  }
  EXPECT_EQ(got[0]["text"], got[1]["text"]);
  EXPECT_EQ(got[0]["gate"], "dense");
  EXPECT_EQ(got[1]["gate"], "shadow");
  EXPECT_GT(got[1]["gate_certified_fraction"].get<double>(), 0.5);
  EXPECT_LT(got[1]["ffn_weight_bytes_read"].get<double>(),
            got[0]["ffn_weight_bytes_read"].get<double>());
  for (const auto& layer : got[1]["layers"]) {
    EXPECT_GT(layer["gate_shadow_rows"].get<uint64_t>(), 0u);
    EXPECT_LT(layer["gate_uncertain_rows"].get<uint64_t>(), layer["gate_shadow_rows"]);
  }
  ExpectOneErrorLine(RunCli({"run", "-m", plain, "-p", "Anna", "-n", "1", "--gate", "shadow"}),
                     "has no shadow gate for layer 0");
  // The benchmarks' dense session reads the whole gate whatever --gate says: they run with it.
  for (const char* bench : {"decode", "prefill"}) {
    const auto b = RunCli({"bench", bench, "-m", out, "--gate", "shadow", "-t", "1", "--json",
                           std::string(bench) == "decode" ? "-n" : "--lengths", "2"});
    EXPECT_EQ(b.exit_code, 0) << bench << ": " << b.err;
  }
}

TEST(Cli, NeuronsCommandAndMemoryBudget) {
  testing::TempDir dir;
  const std::string model = dir / "m.zsk";
  std::filesystem::copy_file(testing::ConvertedModel(kModel + std::string(testing::kShadowSuffix)),
                             model);
  const auto wrote = RunCli({"neurons", model});
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  // 2 layers x 200 neurons of three f32 rows of 256 (1 KiB each), after a 4 KiB header.
  EXPECT_EQ(wrote.out, "wrote " + model + ".neurons: 2 layers x 200 neurons, " +
                           std::to_string(4096 + 2 * 200 * 3072) + " bytes\n");
  // The smallest budget, as the refusal of a smaller one states it.
  const auto small = RunCli({"run", "-m", model, "-p", "Anna", "-n", "1", "--mem-budget", "1K"});
  ExpectOneErrorLine(small, "a memory budget of 1024 bytes is too small: it needs at least ");
  const std::string least = small.err.substr(small.err.find("at least ") + 9);
  const std::vector<std::string> common = {
      "run", "-m", model, "-p", "Anna reads", "-n", "12", "--temp", "0", "--ignore-eos", "--json"};
  const auto in_memory = RunCli(common);
  ASSERT_EQ(in_memory.exit_code, 0) << in_memory.err;
  for (const char* io : {"direct", "cached"}) {
    std::vector<std::string> args = common;
    args.insert(args.end(), {"--mem-budget", least.substr(0, least.find(' ')), "--neuron-io", io});
    const auto r = RunCli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json got = json::parse(r.out), want = json::parse(in_memory.out);
    EXPECT_EQ(got["tokens"], want["tokens"]) << io;
    EXPECT_EQ(got["neuron_io"], std::string("io_uring, ") +
                                    (std::string(io) == "direct" ? "O_DIRECT" : "page cache"));
    EXPECT_GT(got["neuron_reads"].get<uint64_t>(), 0u);
    EXPECT_FALSE(want.contains("neuron_reads"));
    EXPECT_NE(r.err.find("zeroskip: memory budget "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("into a cache of 200 neurons"), std::string::npos) << r.err;
  }
  ExpectOneErrorLine(RunCli({"neurons", testing::ConvertedModel(kModel + std::string("@q8"))}),
                     "a neuron file bundles f32, f16 and bf16 FFN rows only");
  std::filesystem::remove(model + ".neurons");
  ExpectOneErrorLine(RunCli({"run", "-m", model, "-p", "Anna", "-n", "1", "--mem-budget", "1M"}),
                     "has no neuron file " + model + ".neurons to read its FFN from");
}

TEST(Cli, ZeroTokensGeneratesNothing) {
  const json j = RunJson({"-p", "Anna reads", "-n", "0"});
  EXPECT_TRUE(j["tokens"].empty());
  EXPECT_EQ(j["text"], "");
}

TEST(Cli, PromptOfExactlyTheContextLengthGeneratesOneToken) {
  const json probe = RunJson({"-p", "Anna reads a long letter", "-n", "0"});
  const auto n = probe["prompt_tokens"].size();
  const json j = RunJson({"-p", "Anna reads a long letter", "-n", "5", "--temp", "0",
                          "--ignore-eos", "--ctx", std::to_string(n)});
  EXPECT_EQ(j["tokens"].size(), 1u);
  EXPECT_EQ(j["stop"], "context");
}

TEST(Cli, PromptLongerThanTheContextIsAClearError) {
  const auto r = RunCli({"run", "-m", testing::ConvertedModel(kModel), "-p",
                         "Anna reads a long letter", "--ctx", "3"});
  ExpectOneErrorLine(r, "tokens but the context is 3");
}

TEST(Cli, StopsAtEndOfText) {
  // Make the third greedy token the end-of-text id by editing config.json, then convert again.
  const json free_run = RunJson({"-p", "Anna reads", "-n", "6", "--temp", "0", "--ignore-eos"});
  const int eos = free_run["tokens"][2];
  testing::TempDir dir;
  const std::string src = testing::TestDataDir() + "/" + kModel;
  for (const char* f : {"model.safetensors", "tokenizer.model"}) {
    testing::WriteFile(dir / f, testing::ReadFile(src + "/" + f));
  }
  json config = json::parse(testing::ReadFile(src + "/config.json"));
  config["eos_token_id"] = eos;
  testing::WriteFile(dir / "config.json", config.dump());
  ASSERT_EQ(RunCli({"convert", dir.path(), "-o", dir / "m.zsk"}).exit_code, 0);
  const auto r = RunCli({"run", "-m", dir / "m.zsk", "-p", "Anna reads", "-n", "6", "--temp",
                         "0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["stop"], "eos");
  // Stops before the EOS token (unless it appeared earlier in the free run).
  const auto first = std::find(free_run["tokens"].begin(), free_run["tokens"].end(), eos) -
                     free_run["tokens"].begin();
  EXPECT_EQ(j["tokens"].size(), static_cast<size_t>(first));
}

// Non-ASCII prompts tokenize exactly as Python's sentencepiece does (BOS first), and whatever
// bytes the model generates come out as valid UTF-8.
TEST(Cli, NonAsciiPromptsTokenizeLikeSentencepiece) {
  const json fixture = json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/tokenizer.json"));
  int checked = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"];
    if (IsValidUtf8(text) && std::all_of(text.begin(), text.end(),
                                         [](char ch) { return static_cast<unsigned char>(ch) < 0x80; })) {
      continue;
    }
    const json j = RunJson({"-p", text, "-n", "8", "--temp", "1.5", "--seed", "3", "--ignore-eos"});
    json want = json::array({1});
    for (const auto& id : c["ids"]) want.push_back(id);
    EXPECT_EQ(j["prompt_tokens"], want) << text;
    EXPECT_TRUE(IsValidUtf8(j["text"].get<std::string>())) << text;
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST(Cli, InvalidUtf8PromptFileIsAClearError) {
  testing::TempDir dir;
  testing::WriteFile(dir / "bad.txt", "abc\xff\xfe def");
  const auto r = RunCli({"run", "-m", testing::ConvertedModel(kModel), "-f", dir / "bad.txt"});
  ExpectOneErrorLine(r, "bad.txt: is not valid UTF-8");
}

TEST(Cli, SameSeedSameOutputDifferentSeedDifferentOutput) {
  auto sample = [](const std::string& seed) {
    return RunJson({"-p", "Anna", "-n", "24", "--temp", "1.5", "--top-k", "0", "--top-p", "1",
                    "--min-p", "0", "--seed", seed, "--ignore-eos"})["tokens"];
  };
  EXPECT_EQ(sample("7"), sample("7"));
  EXPECT_NE(sample("7"), sample("8"));
}

TEST(Cli, SparseAndDenseGreedyAgree) {
  const auto a = RunJson({"-p", "Anna reads", "-n", "16", "--temp", "0", "--ffn", "sparse",
                          "--ignore-eos"});
  const auto b = RunJson({"-p", "Anna reads", "-n", "16", "--temp", "0", "--ffn", "dense",
                          "--ignore-eos"});
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_GT(a["ffn_zero_fraction"].get<double>(), 0.2);
  EXPECT_LT(a["ffn_flops_done"].get<double>(), b["ffn_flops_done"].get<double>());
}

TEST(Cli, EvalPrintsTopLogitsAsJson) {
  const auto r = RunCli({"eval", "-m", testing::ConvertedModel(kModel), "--tokens", "1,5,9",
                         "--top", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["top"].size(), 3u);
  EXPECT_GE(j["top"][0]["logit"].get<double>(), j["top"][1]["logit"].get<double>());
}

TEST(Cli, EvalRejectsBadTokenIds) {
  ExpectOneErrorLine(RunCli({"eval", "-m", testing::ConvertedModel(kModel), "--tokens", "1,x"}),
                     "is not a number");
  ExpectOneErrorLine(RunCli({"eval", "-m", testing::ConvertedModel(kModel), "--tokens", "1,999"}),
                     "outside the vocabulary");
}

TEST(Cli, PerplexityJson) {
  testing::TempDir dir;
  std::string text;
  for (int i = 0; i < 20; ++i) text += "Anna reads a long letter at the café. ";
  testing::WriteFile(dir / "t.txt", text);
  const auto dense = RunCli({"perplexity", "-m", testing::ConvertedModel(kModel), "-f",
                             dir / "t.txt", "--ctx", "32", "--json"});
  ASSERT_EQ(dense.exit_code, 0) << dense.err;
  const json d = json::parse(dense.out);
  EXPECT_GT(d["perplexity"].get<double>(), 1.0);
  EXPECT_GT(d["tokens"].get<int>(), 100);
  // Token-by-token through the sparse path gives the same perplexity.
  const auto sparse = RunCli({"perplexity", "-m", testing::ConvertedModel(kModel), "-f",
                              dir / "t.txt", "--ctx", "32", "--json", "--ffn", "sparse"});
  ASSERT_EQ(sparse.exit_code, 0) << sparse.err;
  EXPECT_NEAR(json::parse(sparse.out)["perplexity"].get<double>(), d["perplexity"].get<double>(),
              1e-3 * d["perplexity"].get<double>());
}

// bench prefill: one row per requested length, in order, with positive times and tok/s that
// are the length over the time, and the model's weight types; a length past the context is one
// clear error.
TEST(Cli, BenchPrefillReportsEveryLength) {
  const auto r = RunCli({"bench", "prefill", "-m", testing::ConvertedModel(kModel), "--lengths",
                         "1,5,20", "--reps", "2", "-t", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["reps"].get<int>(), 2);
  ASSERT_EQ(j["prompts"].size(), 3u);
  const int want[] = {1, 5, 20};
  for (size_t i = 0; i < 3; ++i) {
    const json& p = j["prompts"][i];
    EXPECT_EQ(p["prompt_tokens"].get<int>(), want[i]);
    for (const char* path : {"sparse", "dense"}) {
      const double ttft = p[std::string(path) + "_ttft_s"].get<double>();
      EXPECT_GT(ttft, 0.0) << path;
      EXPECT_GT(p[std::string(path) + "_first_ttft_s"].get<double>(), 0.0) << path;
      EXPECT_NEAR(p[std::string(path) + "_prompt_tok_s"].get<double>(), want[i] / ttft,
                  1e-6 * want[i] / ttft)
          << path;
    }
  }
  ExpectOneErrorLine(RunCli({"bench", "prefill", "-m", testing::ConvertedModel(kModel),
                             "--lengths", "65"}),
                     "exceeds the context of 64");
  // "weights" names every matrix type, most parameters first: q4k's recipe keeps the vocabulary
  // matrices, layer 0's ffn_down and both attn_v in q6k (313,344 of 897,024 matrix parameters).
  EXPECT_EQ(j["weights"], "f32");
  const auto q4k = RunCli({"bench", "prefill", "-m", testing::ConvertedModel(kModel + "@q4k"),
                           "--lengths", "1", "--reps", "1", "--json"});
  ASSERT_EQ(q4k.exit_code, 0) << q4k.err;
  EXPECT_EQ(json::parse(q4k.out)["weights"], "q4k+q6k");
}

TEST(Cli, ScoreSumsLogLikelihoodFromTheGivenIndex) {
  // Every term is a log-probability (<= 0), so scoring fewer tokens gives a larger sum.
  const auto r = RunCli({"score", "-m", testing::ConvertedModel(kModel), "--tokens",
                         "1,281,342,342,343,292", "--from", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json s = json::parse(r.out);
  EXPECT_EQ(s["tokens"], 5);
  EXPECT_LT(s["log_likelihood"].get<double>(), 0.0);
  const auto tail = RunCli({"score", "-m", testing::ConvertedModel(kModel), "--tokens",
                            "1,281,342,342,343,292", "--from", "3", "--json"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_GT(json::parse(tail.out)["log_likelihood"].get<double>(),
            s["log_likelihood"].get<double>());  // fewer terms, each <= 0
}

TEST(Cli, InfoAndVerify) {
  const auto info = RunCli({"info", testing::ConvertedModel(kModel), "--json"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  const json j = json::parse(info.out);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["intermediate_size"], 200);
  const auto verify = RunCli({"verify", testing::ConvertedModel(kModel)});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
}

// Every config field goes config.json -> .zsk metadata -> `info --json` unchanged.
TEST(Cli, InfoShowsEveryConfigField) {
  for (const std::string name : {"llama_mqa_hd128_silu_tied_f32", "mistral_headdim_relu_f32"}) {
    const std::string hf_config = testing::TestDataDir() + "/" + name + "/config.json";
    const ModelConfig c = ParseHfConfig(testing::ReadFile(hf_config), hf_config);
    EXPECT_EQ(ZskFile::Open(testing::ConvertedModel(name))->config(), c) << name;
    const auto info = RunCli({"info", testing::ConvertedModel(name), "--json"});
    ASSERT_EQ(info.exit_code, 0) << info.err;
    const json shown = json::parse(info.out);
    const json stored = json::parse(ConfigToJson(c));
    for (const auto& [key, value] : stored.items()) {
      EXPECT_EQ(shown[key], value) << name << ": " << key;
    }
  }
}

// The streamed text is what sentencepiece decodes from the whole sequence, after the prompt's own
// decoding (a space between prompt and continuation stays; only text starting from BOS alone
// drops sentencepiece's dummy-prefix space).
TEST(Cli, GeneratedTextIsTheDecodedContinuation) {
  const Tokenizer& tok = testing::LoadedModel(kModel).tokenizer();
  // After "The cat" the first greedy piece is " old": its space must survive.
  for (const std::string prompt : {"The cat", "Anna reads", ""}) {
    const json j = RunJson({"-p", prompt, "-n", "12", "--temp", "0", "--ignore-eos"});
    if (prompt == "The cat") {
      EXPECT_EQ(j["text"].get<std::string>().rfind(" old", 0), 0u);
    }
    std::vector<int> ids = j["prompt_tokens"].get<std::vector<int>>();
    const std::string before = tok.Decode(ids);
    for (const auto& id : j["tokens"]) ids.push_back(id);
    EXPECT_EQ(before + j["text"].get<std::string>(), tok.Decode(ids))
        << "prompt '" << prompt << "'";
  }
}

// --dtype converts every weight matrix; norms stay f32 (5 of 256 in this 2-layer model); q4
// keeps the vocabulary matrices (embeddings and LM head, 384 x 256 each) q8. Quantized models
// run, sparse and dense alike.
TEST(Cli, ConvertDtypeFlagConvertsTheWeights) {
  testing::TempDir dir;
  const std::string hf = testing::TestDataDir() + "/" + kModel;
  for (const std::string dtype : {"bf16", "f16", "q8", "q4"}) {
    ASSERT_EQ(RunCli({"convert", hf, "-o", dir / "m.zsk", "--dtype", dtype}).exit_code, 0);
    const auto info = RunCli({"info", dir / "m.zsk", "--json"});
    ASSERT_EQ(info.exit_code, 0) << info.err;
    const json j = json::parse(info.out);
    const uint64_t vocab_q8 = dtype == "q4" ? 2 * 384 * 256 : 0;
    EXPECT_EQ(j["dtypes"]["f32"], 5 * 256) << dtype;
    EXPECT_EQ(j["dtypes"][dtype].get<uint64_t>() + vocab_q8 + 5 * 256,
              j["parameters"].get<uint64_t>());
    if (vocab_q8) {
      EXPECT_EQ(j["dtypes"]["q8"].get<uint64_t>(), vocab_q8);
    }
    if (dtype != "q8" && dtype != "q4") continue;
    std::string out[2];
    for (int i = 0; i < 2; ++i) {
      const auto run = RunCli({"run", "-m", dir / "m.zsk", "-p", "The cat", "-n", "8", "--temp",
                               "0", "--ffn", i ? "dense" : "sparse"});
      ASSERT_EQ(run.exit_code, 0) << run.err;
      out[i] = run.out;
    }
    EXPECT_EQ(out[0], out[1]) << dtype;
  }
}

// --tensor-type reaches the converter from the command line, one NAME=DTYPE per flag (a second
// value after it would swallow HF_DIR), and a malformed or inapplicable one is one error line with
// no file left behind. Catches the flag dropped between the parser and ConvertOptions.
TEST(Cli, ConvertTensorTypeFlag) {
  testing::TempDir dir;
  const std::string hf = testing::TestDataDir() + "/" + kModel;
  ASSERT_EQ(RunCli({"convert", "--tensor-type", "ffn_down=q8", hf, "-o", dir / "m.zsk",
                    "--tensor-type", "layers.1.ffn_down=bf16"})
                .exit_code,
            0);
  const json j = json::parse(RunCli({"info", dir / "m.zsk", "--json"}).out);
  EXPECT_EQ(j["dtypes"]["q8"], 256 * 200);  // layer 0's ffn_down only: a later flag wins
  EXPECT_EQ(j["dtypes"]["bf16"], 256 * 200);
  for (const auto& [flag, needle] : std::vector<std::pair<std::string, std::string>>{
           {"ffn_down", "expected NAME=DTYPE"},
           {"ffn_down=q5", "expected NAME=DTYPE"},
           {"ffn_dwn=q8", "names no tensor of this model"}}) {
    ExpectOneErrorLine(RunCli({"convert", hf, "-o", dir / "bad.zsk", "--tensor-type", flag}),
                       needle);
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.zsk")) << flag;
  }
}

TEST(Cli, SparseFfnOnSiluModelIsRefused) {
  ExpectOneErrorLine(RunCli({"run", "-m", testing::ConvertedModel("llama_mqa_hd128_silu_tied_f32"),
                             "-p", "a", "--ffn", "sparse"}),
                     "which has no zeros");
}

}  // namespace
}  // namespace zeroskip
