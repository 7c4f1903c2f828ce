// Golden tests: logits and greedy continuations of the generated checkpoints against fixtures
// produced by the independent float64 PyTorch reference (tools/reference/make_golden.py).
// Tolerance: |Δlogit| <= 1e-4 * max|logit| at every checked position, for f32 weights and for
// bf16/f16 weights alike (both sides widen them exactly; computation is f32 here). Greedy
// continuations must be identical (the fixtures guarantee a top-1 margin > 1e-3 * max|logit|).
//
// bf16 weights under a kernel table with bf16_products (AVX512-BF16) are the exception: every
// matmul input is rounded to bf16 (unit roundoff 2⁻⁸) before it meets the weights, in decode and
// in prefill alike, so the logits move by far more than f32 rounding: measured at most
// 1.4e-2 * max|logit| on the random test checkpoints (whose dots cancel heavily) and 1.9e-3 on
// the trained relu-ft (stocha_ft, before issue 15). Those cases allow 2.5e-2 * max|logit| (5e-2
// for FATReLU, whose step at the threshold turns a rounding into a jump; ToleranceOf); a wrong
// row or index still moves a logit by O(max|logit|). The fixtures' top-1 margin no longer
// decides their greedy picks (a 12-token prompt through oneDNN's bf16 matmul flips a near-tie of
// llama_gqa_hd128_relu_tied_bf16): there the reference's token must be within the tolerance of
// the top logit, and greedy decoding is teacher-forced with the reference's tokens.
//
// Quantized weights (q8, q4) allow 2e-2 * max|logit|: their fixtures model the activations'
// quantization, but activations in f32 (here) and f64 (there) may round to either side of a tie,
// moving one activation by a whole step (amax/127); measured worst 9e-3 over the fixtures, every
// ISA and path. Their greedy picks must still be the reference's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kernels/kernels.h"
#include "test_util.h"
#include "zeroskip/error.h"
#include "zeroskip/session.h"

namespace zeroskip {
namespace {

using nlohmann::json;
using testing::LoadedModel;

// Generated test checkpoints, and the shipped demo model (a trained bf16 ReLU-FT checkpoint).
// prosparse_*: FATReLU (tools/reference/prosparse_ref.py); bamboo_*: dReLU (bamboo_ref.py);
// opt_*: OPT (opt_ref.py), pre-norm, and post-norm with project_in/out.
const char* const kCheckpoints[] = {"llama_gqa_hd64_relu_f32",
                                    "llama_mqa_hd128_silu_tied_f32",
                                    "llama_mha_hd64_relu_bf16",
                                    "llama_gqa_hd64_relu_f16_sharded",
                                    "mistral_headdim_relu_f32",
                                    "llama_gqa_hd128_relu_tied_bf16",
                                    "prosparse_gqa_hd56_fatrelu_f32",
                                    "bamboo_gqa_drelu_f32",
                                    "models/relu-ft",
                                    "llama_gqa_hd64_relu_f32@q8",
                                    "llama_mqa_hd128_silu_tied_f32@q8",
                                    "models/relu-ft@q8",
                                    "llama_gqa_hd64_relu_f32@q4",
                                    "models/relu-ft@q4",
                                    "prosparse_gqa_hd56_fatrelu_f32@q8",
                                    "prosparse_gqa_hd56_fatrelu_f32@q4",
                                    "prosparse_gqa_hd56_fatrelu_f32@bf16",
                                    "bamboo_gqa_drelu_f32@q8",
                                    "bamboo_gqa_drelu_f32@q4",
                                    "bamboo_gqa_drelu_f32@bf16",
                                    "opt_prenorm_f32",
                                    "opt_postnorm_projected_f32"};

// Fixture file of a checkpoint: its name, or for "models/relu-ft" the name "relu_ft"; converted
// to a quantized type ("models/relu-ft@q8"), the fixture of the reference on the weights as
// converted ("relu_ft_q8").
json Golden(const std::string& checkpoint) {
  std::string name = checkpoint.substr(checkpoint.rfind('/') + 1);
  std::replace(name.begin(), name.end(), '-', '_');
  std::replace(name.begin(), name.end(), '@', '_');
  return json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/" + name + ".json"));
}

struct Case {
  std::string checkpoint;
  Isa isa;
  FfnMode ffn;
  int threads;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.checkpoint << " isa=" << IsaName(c.isa) << " ffn=" << FfnModeName(c.ffn)
      << " threads=" << c.threads;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.checkpoint;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name + "_" + std::string(IsaName(info.param.isa)) + "_" +
         std::string(FfnModeName(info.param.ffn)) + "_t" + std::to_string(info.param.threads);
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* c : kCheckpoints) {
    // Every ISA, whether or not this CPU has it: SetUp reports a missing one as skipped.
    for (Isa isa : testing::AllIsaValues()) {
      for (FfnMode ffn : {FfnMode::kAuto, FfnMode::kDense}) {
        for (int threads : {1, 2}) cases.push_back({c, isa, ffn, threads});
      }
    }
  }
  return cases;
}

EngineOptions OnEngine(const Case& c) {
  return {.threads = c.threads, .isa = std::string(IsaName(c.isa))};
}

class GoldenTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (KernelsFor(GetParam().isa) == nullptr) {
      GTEST_SKIP() << "this CPU cannot run " << IsaName(GetParam().isa) << " kernels";
    }
  }
};

// How close a case must come to the reference (see the top of the file): the largest
// |Δlogit| relative to max|logit|, and whether greedy picks must be the reference's exactly.
struct Tolerance {
  double logits;
  bool exact_picks;
};

Tolerance ToleranceOf(const Case& c, const Model& model) {
  const bool bf16_weights = model.layer(0).ffn.gate.dtype == DType::kBF16;
  if (bf16_weights && KernelsFor(c.isa)->bf16_products) {
    // FATReLU steps at its threshold: a gate that bf16 rounding carries across it switches the
    // neuron's output between 0 and threshold x up at once, and a batch through oneDNN's bf16
    // matmul rounds differently from the decode kernels. Measured 3.0e-2 on
    // prosparse_gqa_hd56_fatrelu_f32@bf16 (dense batch against token by token, in the
    // RelWithDebInfo build only).
    return {model.config().activation_threshold > 0 ? 5e-2 : 2.5e-2, false};
  }
  if (IsQuantized(model.layer(0).ffn.gate.dtype)) return {2e-2, true};
  return {1e-4, true};
}

int Argmax(std::span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// The greedy pick after `logits` is the reference's `want`: exactly where the tolerance says so
// (the fixtures' top-1 margin exceeds it), else within the tolerance of the top logit.
void ExpectPicks(std::span<const float> logits, int want, Tolerance tolerance,
                 const std::string& where) {
  const int top = Argmax(logits);
  if (tolerance.exact_picks) {
    EXPECT_EQ(top, want) << where;
    return;
  }
  double max_abs = 0;
  for (float v : logits) max_abs = std::max(max_abs, double(std::abs(v)));
  EXPECT_GE(logits[want], logits[top] - tolerance.logits * max_abs)
      << where << ": picked " << top << ", the reference " << want;
}

// Logits at the fixture positions, token by token: every position runs the decode path the
// session would use (sparse FFN for ReLU models under auto).
TEST_P(GoldenTest, DecodeLogitsMatchReference) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  const Model& model = LoadedModel(c.checkpoint);
  Engine engine(model, OnEngine(c));
  Session session(engine, {.ffn = c.ffn});
  const auto ids = g["prompt_ids"].get<std::vector<int>>();
  for (const auto& expected : g["logits"]) {
    const int64_t pos = expected["pos"].get<int64_t>();
    while (session.position() <= pos) {
      const int id = ids[session.position()];
      const auto logits = session.Forward({&id, 1});
      if (session.position() == pos + 1) {
        testing::ExpectNearReference(logits, expected["values"], "position " + std::to_string(pos),
                                     ToleranceOf(c, model).logits);
      }
    }
  }
}

// The whole prompt in one batched pass (oneDNN prefill), logits of every position.
TEST_P(GoldenTest, PrefillLogitsMatchReference) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  const Model& model = LoadedModel(c.checkpoint);
  Engine engine(model, OnEngine(c));
  Session session(engine, {.ffn = c.ffn});
  const auto ids = g["prompt_ids"].get<std::vector<int>>();
  const auto all = session.Forward(ids, /*all_logits=*/true);
  const size_t vocab = static_cast<size_t>(model.config().vocab);
  for (const auto& expected : g["logits"]) {
    const size_t pos = expected["pos"].get<size_t>();
    testing::ExpectNearReference(all.subspan(pos * vocab, vocab), expected["values"],
                                 "position " + std::to_string(pos), ToleranceOf(c, model).logits);
  }
}

TEST_P(GoldenTest, GreedyContinuationMatchesReference) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  const Model& model = LoadedModel(c.checkpoint);
  Engine engine(model, OnEngine(c));
  Session session(engine, {.ffn = c.ffn});
  const auto prompt = g["greedy"]["prompt_ids"].get<std::vector<int>>();
  const auto want = g["greedy"]["continuation"].get<std::vector<int>>();
  const Tolerance tolerance = ToleranceOf(c, model);
  auto logits = session.Forward(prompt);
  std::vector<int> got;
  for (size_t i = 0; i < want.size(); ++i) {
    if (tolerance.exact_picks) {
      got.push_back(Argmax(logits));
    } else {
      // The reference's token must be a near-top pick; decoding goes on with it (teacher
      // forcing), so one near-tie does not derail the rest of the comparison.
      ExpectPicks(logits, want[i], tolerance, "step " + std::to_string(i));
      got.push_back(want[i]);
    }
    if (i + 1 < want.size()) logits = session.Forward({&got.back(), 1});
  }
  EXPECT_EQ(got, want);
}

// Prompts longer than kSmallBatch (kSmallBatchF32 for f32, kSmallBatchBf16 under bf16_products)
// run the batched matmuls through oneDNN (f32, or bf16 under bf16_products; quantized weights
// through quant_matmul) instead of the decode kernels: the greedy prompt with its continuation in
// one pass must pick the reference's continuation at every position (ExpectPicks), and its
// logits must match those of the same tokens fed one at a time (the decode kernels) within the
// case's tolerance.
TEST_P(GoldenTest, LongBatchMatchesGreedyReferenceAndTokenByToken) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  const Model& model = LoadedModel(c.checkpoint);
  Engine engine(model, OnEngine(c));
  Session batched(engine, {.ffn = c.ffn}), stepped(engine, {.ffn = c.ffn});
  auto ids = g["greedy"]["prompt_ids"].get<std::vector<int>>();
  const size_t prompt = ids.size();
  for (int id : g["greedy"]["continuation"]) ids.push_back(id);
  ids.pop_back();  // the last token is only ever predicted
  ASSERT_GT(ids.size(), 16u) << "too short to leave the small-batch path";
  const auto all = batched.Forward(ids, /*all_logits=*/true);
  const size_t vocab = static_cast<size_t>(model.config().vocab);
  for (size_t pos = 0; pos < ids.size(); ++pos) {
    const auto row = all.subspan(pos * vocab, vocab);
    const auto one = stepped.Forward({&ids[pos], 1});
    testing::ExpectNearReference(row, json(std::vector<float>(one.begin(), one.end())),
                                 "position " + std::to_string(pos), ToleranceOf(c, model).logits);
    if (pos + 1 >= prompt) {
      ExpectPicks(row, g["greedy"]["continuation"][pos + 1 - prompt].get<int>(),
                  ToleranceOf(c, model), "position " + std::to_string(pos));
    }
  }
}

// One decode step of several sequences in one pass (what the server runs): each sequence must get
// what the reference gives it, whatever else shares its pass. Three sessions at different
// positions: A decodes the reference's greedy continuation after its prompt, B steps through the
// fixture prompt from position 0 (its logits checked at the fixture positions), C is A under the
// other FFN path (so it cannot share A's pass and runs in one of its own). Catches a row of one
// sequence attending to another's cache or positions, logits handed to the wrong session, and
// one session's zeros counted as another's.
TEST_P(GoldenTest, DecodeBatchMatchesReference) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  const Model& model = LoadedModel(c.checkpoint);
  Engine engine(model, OnEngine(c));
  const FfnMode other = c.ffn == FfnMode::kDense ? FfnMode::kAuto : FfnMode::kDense;
  Session a(engine, {.ffn = c.ffn}), b(engine, {.ffn = c.ffn}), cc(engine, {.ffn = other});
  const auto prompt = g["greedy"]["prompt_ids"].get<std::vector<int>>();
  const auto want = g["greedy"]["continuation"].get<std::vector<int>>();
  const auto ids = g["prompt_ids"].get<std::vector<int>>();
  const Tolerance tolerance = ToleranceOf(c, model);
  a.Forward(prompt);
  cc.Forward(prompt);
  a.ResetFfnStats();
  cc.ResetFfnStats();
  std::vector<FfnLayerStats> batch;
  size_t step = 0;  // continuation tokens A and C have been checked against
  while (step < want.size() || b.position() < static_cast<int64_t>(ids.size())) {
    std::vector<Session*> sessions;
    std::vector<int> tokens;
    if (step < want.size()) {
      for (Session* s : {&a, &cc}) {
        ExpectPicks(s->logits(), want[step], tolerance, "step " + std::to_string(step));
      }
      if (step + 1 < want.size()) {
        sessions = {&a, &cc};
        tokens = {want[step], want[step]};
      }
      ++step;
    }
    const int64_t pos = b.position();
    if (pos < static_cast<int64_t>(ids.size())) {
      sessions.push_back(&b);
      tokens.push_back(ids[pos]);
    }
    if (sessions.empty()) continue;
    Session::DecodeBatch(sessions, tokens, &batch);
    for (const auto& expected : g["logits"]) {
      if (pos < static_cast<int64_t>(ids.size()) && expected["pos"].get<int64_t>() == pos) {
        testing::ExpectNearReference(b.logits(), expected["values"],
                                     "position " + std::to_string(pos), tolerance.logits);
      }
    }
  }
  EXPECT_EQ(b.position(), static_cast<int64_t>(ids.size()));
  EXPECT_EQ(a.position(), static_cast<int64_t>(prompt.size() + want.size() - 1));
  // Every token's zeros are its own session's, and the passes' statistics hold them all.
  uint64_t zeros = 0, tokens = 0;
  for (const Session* s : {&a, &b, &cc}) {
    zeros += s->ffn_total().zero_neurons;
    tokens += s->ffn_total().tokens;
  }
  FfnLayerStats total;
  for (const FfnLayerStats& l : batch) total.Add(l);
  EXPECT_EQ(total.zero_neurons, zeros);
  EXPECT_EQ(total.tokens, tokens);
  if (model.config().relu_family()) {
    EXPECT_GT(zeros, 0u);
  }
}

// The shadow gate is exact: decoding with it gives logits bit-identical to the dense gate's, at
// every position, for every checkpoint, weight type and ISA (docs/SHADOW_GATE.md), while it does
// certify rows (else this would compare the dense gate with itself). Catches a bound that is too
// small (a certified neuron that fires changes the logits), compaction out of row order (the
// down projection sums in another order), and full-gate rows read at the wrong index. Where the
// shadow cannot apply (SiLU, the dense FFN) asking for it is refused.
TEST_P(GoldenTest, ShadowGateLogitsAreBitIdenticalToDenseGate) {
  const Case& c = GetParam();
  const json g = Golden(c.checkpoint);
  if (!LoadedModel(c.checkpoint).config().gated_ffn) {
    // OPT's fc1 has a bias the shadow's bound does not cover: converting with one is refused.
    EXPECT_THROW(LoadedModel(c.checkpoint + std::string(testing::kShadowSuffix)), Error);
    return;
  }
  const Model& model = LoadedModel(c.checkpoint + std::string(testing::kShadowSuffix));
  Engine engine(model, OnEngine(c));
  const SessionOptions shadow_options{.ffn = c.ffn, .gate = GateMode::kShadow};
  if (!model.config().relu_family() || c.ffn == FfnMode::kDense) {
    EXPECT_THROW(Session(engine, shadow_options), Error);
    return;
  }
  Session dense(engine, {.ffn = c.ffn, .gate = GateMode::kDense});
  Session shadow(engine, shadow_options);
  const auto ids = g["prompt_ids"].get<std::vector<int>>();
  for (size_t pos = 0; pos < ids.size(); ++pos) {
    const auto want = dense.Forward({&ids[pos], 1});
    const auto got = shadow.Forward({&ids[pos], 1});
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size_bytes()), 0) << "position " << pos;
  }
  const FfnLayerStats st = shadow.ffn_total();
  EXPECT_EQ(st.shadow_rows, st.neurons);
  EXPECT_EQ(st.zero_neurons, dense.ffn_total().zero_neurons);
  EXPECT_GT(st.certified_fraction(), 0.5);
  EXPECT_LE(st.certified_rows, st.zero_neurons);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, GoldenTest, ::testing::ValuesIn(AllCases()), CaseName);

}  // namespace
}  // namespace zeroskip
