// The model and session contracts that end-to-end tests cannot see: Model::Load refusing
// well-formed files that do not describe the model their config implies, the session's context
// guard at exactly its boundary, and RMSNorm against its definition.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "checkpoint_edit.h"
#include "engine/sequence.h"
#include "ops/norm.h"
#include "test_util.h"
#include "zeroskip/convert.h"
#include "zeroskip/error.h"
#include "zeroskip/session.h"

namespace zeroskip {
namespace {

const std::string kModel = "llama_gqa_hd64_relu_f32";  // hidden 256, ffn 200, kv_dim 128, ctx 64

// ------------------------------------------------------------------------ hostile .zsk files

// A .zsk image edited through the byte layout of docs/FORMAT.md (not through the reader's own
// decoder), with the header checksum recomputed so only Model::Load's checks stand in the way.
class ZskImage {
 public:
  explicit ZskImage(const std::string& path) : bytes_(testing::ReadFile(path)) {}

  uint64_t U64(uint64_t at) const {
    uint64_t v;
    std::memcpy(&v, bytes_.data() + at, 8);  // little-endian host, as the format
    return v;
  }
  void Put32(uint64_t at, uint32_t v) { std::memcpy(bytes_.data() + at, &v, 4); }
  void Put64(uint64_t at, uint64_t v) { std::memcpy(bytes_.data() + at, &v, 8); }

  // Offset of the 192-byte record of tensor `name`.
  uint64_t Record(const std::string& name) const {
    const uint64_t table = U64(56), count = U64(64);
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t r = table + 192 * i;
      if (name == bytes_.c_str() + r) return r;
    }
    ADD_FAILURE() << "no tensor " << name;
    return 0;
  }
  void SetDType(const std::string& name, uint32_t code, uint64_t nbytes) {
    Put32(Record(name) + 96, code);
    Put64(Record(name) + 152, nbytes);  // must stay dtype size x shape, or the table is refused
  }
  void SetLayout(const std::string& name, uint32_t code) { Put32(Record(name) + 100, code); }
  void SetShape(const std::string& name, uint64_t rows, uint64_t cols) {
    Put64(Record(name) + 112, rows);
    Put64(Record(name) + 120, cols);
  }
  void Rename(const std::string& name, const std::string& to) {
    const uint64_t r = Record(name);
    std::memset(bytes_.data() + r, 0, 96);
    std::memcpy(bytes_.data() + r, to.data(), to.size());
  }

  // xxh64 of header[0, 80) ‖ metadata ‖ tokenizer ‖ table, stored at offset 80.
  void WriteTo(const std::string& path) {
    XXH64_state_t* s = XXH64_createState();
    XXH64_reset(s, 0);
    XXH64_update(s, bytes_.data(), 80);
    XXH64_update(s, bytes_.data() + U64(24), U64(32));
    XXH64_update(s, bytes_.data() + U64(40), U64(48));
    XXH64_update(s, bytes_.data() + U64(56), U64(64) * 192);
    Put64(80, XXH64_digest(s));
    XXH64_freeState(s);
    testing::WriteFile(path, bytes_);
  }

  std::string bytes_;
};

// Loads the edited image; returns the Error's reason ("" if it loaded).
std::string LoadReason(ZskImage image) {
  testing::TempDir dir;
  image.WriteTo(dir / "m.zsk");
  try {
    Model::Load(dir / "m.zsk");
  } catch (const Error& e) {
    EXPECT_EQ(e.path(), dir / "m.zsk");
    return e.reason();
  }
  return "";
}

ZskImage Original() { return ZskImage(testing::ConvertedModel(kModel)); }

TEST(ModelLoad, AnUneditedImageLoads) { EXPECT_EQ(LoadReason(Original()), ""); }

TEST(ModelLoad, RefusesAWrongLayout) {
  ZskImage down = Original();
  down.SetLayout("layers.0.ffn_down", 0);  // must be transposed: [ffn, hidden]
  EXPECT_EQ(LoadReason(down), "tensor 'layers.0.ffn_down' has the wrong layout");
  ZskImage q = Original();
  q.SetLayout("layers.1.attn_q", 1);  // must be row-major
  EXPECT_EQ(LoadReason(q), "tensor 'layers.1.attn_q' has the wrong layout");
}

TEST(ModelLoad, RefusesASwappedNonSquareShape) {
  // Same element count, so every format check passes; only the config says it is wrong.
  ZskImage gate = Original();
  gate.SetShape("layers.0.ffn_gate", 256, 200);
  EXPECT_EQ(LoadReason(gate),
            "tensor 'layers.0.ffn_gate' has shape [256, 200] but the config implies [200, 256]");
  ZskImage k = Original();
  k.SetShape("layers.1.attn_k", 256, 128);
  EXPECT_EQ(LoadReason(k),
            "tensor 'layers.1.attn_k' has shape [256, 128] but the config implies [128, 256]");
  ZskImage down = Original();
  down.SetShape("layers.1.ffn_down", 256, 200);  // the HF orientation, not the stored one
  EXPECT_EQ(LoadReason(down),
            "tensor 'layers.1.ffn_down' has shape [256, 200] but the config implies [200, 256]");
}

TEST(ModelLoad, RefusesANormInAnotherDType) {
  ZskImage attn = Original();
  attn.SetDType("layers.0.attn_norm", 2, 256 * 2);  // bf16
  EXPECT_EQ(LoadReason(attn), "tensor 'layers.0.attn_norm' must be f32");
  ZskImage out = Original();
  out.SetDType("output_norm", 1, 256 * 2);  // f16
  EXPECT_EQ(LoadReason(out), "tensor 'output_norm' must be f32");
  ZskImage q8 = Original();
  q8.SetDType("layers.1.ffn_norm", 3, 256 / 32 * 34);  // q8: 8 blocks of 34 bytes
  EXPECT_EQ(LoadReason(q8), "tensor 'layers.1.ffn_norm' must be f32");
}

// Each FFN matrix may have its own weight type (llama.cpp's Q4_K_M mixes q4k and q6k in one
// layer); the bytes' size must still be the type's. Catches the loader refusing a mix again.
TEST(ModelLoad, LoadsFfnMatricesOfDifferentDTypes) {
  ZskImage up = Original();
  up.SetDType("layers.1.ffn_up", 2, 200 * 256 * 2);
  EXPECT_EQ(LoadReason(up), "");
  ZskImage down = Original();
  down.SetDType("layers.0.ffn_down", 1, 200 * 256 * 2);
  EXPECT_EQ(LoadReason(down), "");
  ZskImage q8 = Original();
  q8.SetDType("layers.0.ffn_gate", 3, 200 * 256 / 32 * 34);
  EXPECT_EQ(LoadReason(q8), "");
  ZskImage q6k = Original();
  q6k.SetDType("layers.1.ffn_down", 6, 200 * 256 / 256 * 210);
  EXPECT_EQ(LoadReason(q6k), "");
}

// A quantized matrix's byte size counts its blocks' scales: the element count alone (or the
// other quantized type's size) is refused before the model looks at it.
TEST(ModelLoad, RefusesQuantizedByteSizesWithoutTheScales) {
  for (uint64_t nbytes : {uint64_t{128 * 256}, uint64_t{128 * 256 / 32 * 18}}) {
    ZskImage k = Original();
    k.SetDType("layers.0.attn_k", 3, nbytes);
    EXPECT_EQ(LoadReason(k), "tensor 'layers.0.attn_k': byte size " + std::to_string(nbytes) +
                                 " does not match dtype x shape");
  }
  ZskImage k = Original();
  k.SetDType("layers.0.attn_k", 3, 128 * 256 / 32 * 34);  // the f32 data read as q8 blocks
  EXPECT_EQ(LoadReason(k), "");
}

TEST(ModelLoad, RefusesMissingAndMiscountedTensors) {
  ZskImage renamed = Original();
  renamed.Rename("output", "outputs");
  EXPECT_EQ(LoadReason(renamed), "missing tensor 'output'");
  ZskImage fewer = Original();
  fewer.Put64(64, fewer.U64(64) - 1);  // drop the last record from the table
  EXPECT_EQ(LoadReason(fewer), "holds 20 tensors but the config implies 21");
}

// The format checks behind Model::Load, on files that are otherwise intact.
TEST(ZskHostile, NonZeroReservedHeaderBytesAreRefused) {
  for (uint64_t at : {88, 95, 96, 127}) {  // the reserved bytes are [88, 128)
    ZskImage image = Original();
    image.bytes_[at] = 1;
    EXPECT_EQ(LoadReason(image), "reserved header bytes are not zero") << "byte " << at;
  }
}

TEST(ZskHostile, UnknownDTypeAndLayoutCodesAreRefused) {
  ZskImage code = Original();
  code.Put32(code.Record("layers.0.ffn_up") + 96, 7);  // after q6k
  EXPECT_EQ(LoadReason(code), "tensor 'layers.0.ffn_up': unknown dtype code 7");
  ZskImage layout = Original();
  layout.SetLayout("layers.0.ffn_up", 2);
  EXPECT_EQ(LoadReason(layout), "tensor 'layers.0.ffn_up': unknown layout code 2");
}

// ------------------------------------------------------------------------ context guard

SessionOptions WithContext(int64_t context, FfnMode ffn) { return {.context = context, .ffn = ffn}; }

// One two-thread engine per model, shared by the sessions of these tests.
Engine& TwoThreads(const Model& m) {
  static std::map<const Model*, std::unique_ptr<Engine>> engines;
  auto& engine = engines[&m];
  if (!engine) engine = std::make_unique<Engine>(m, EngineOptions{.threads = 2});
  return *engine;
}

std::vector<int> Tokens(size_t n) {
  std::vector<int> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int>(1 + (i * 37) % 380);
  return ids;
}

void ExpectAllFinite(std::span<const float> logits) {
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

// Exactly `context` tokens fit; one more throws (before touching the KV cache, which has no room
// for it: the sanitizer build would report the overflow if it did not).
TEST(ContextGuard, BatchOfExactlyTheContextRunsAndOneMoreThrows) {
  const Model& m = testing::LoadedModel(kModel);
  for (FfnMode ffn : {FfnMode::kAuto, FfnMode::kDense}) {
    Session s(TwoThreads(m), WithContext(8, ffn));
    ExpectAllFinite(s.Forward(Tokens(8)));
    EXPECT_EQ(s.position(), 8);
    const int one = 5;
    EXPECT_THROW(s.Forward({&one, 1}), Error);
    EXPECT_EQ(s.position(), 8);
    s.Reset();
    EXPECT_THROW(s.Forward(Tokens(9)), Error);
    EXPECT_EQ(s.position(), 0);
  }
}

TEST(ContextGuard, TokenByTokenStopsAtTheContext) {
  const Model& m = testing::LoadedModel(kModel);
  for (FfnMode ffn : {FfnMode::kSparse, FfnMode::kDense}) {
    Session s(TwoThreads(m), WithContext(4, ffn));
    for (int id : Tokens(4)) ExpectAllFinite(s.Forward({&id, 1}));
    const int id = 9;
    EXPECT_THROW(s.Forward({&id, 1}), Error) << FfnModeName(ffn);
    // Prefill of context - 1, then exactly one decode step fits.
    s.Reset();
    ExpectAllFinite(s.Forward(Tokens(3)));
    ExpectAllFinite(s.Forward({&id, 1}));
    EXPECT_THROW(s.Forward({&id, 1}), Error) << FfnModeName(ffn);
  }
}

TEST(ContextGuard, TheModelsFullContextFits) {
  const Model& m = testing::LoadedModel(kModel);
  Session s(TwoThreads(m), WithContext(0, FfnMode::kAuto));  // 0: the model's 64
  ASSERT_EQ(s.context(), 64);
  ExpectAllFinite(s.Forward(Tokens(64)));
  const int id = 3;
  EXPECT_THROW(s.Forward({&id, 1}), Error);
  EXPECT_THROW(Session(TwoThreads(m), WithContext(65, FfnMode::kAuto)), Error);
}

TEST(ContextGuard, CliEvalOneTokenPastTheContextIsAClearError) {
  const std::string model = testing::ConvertedModel(kModel);
  const auto ok = testing::RunCli(
      {"eval", "-m", model, "--ctx", "4", "--ffn", "sparse", "--tokens", "1,5,9,12", "--json"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  for (const char* ffn : {"sparse", "auto"}) {
    const auto r = testing::RunCli(
        {"eval", "-m", model, "--ctx", "4", "--ffn", ffn, "--tokens", "1,5,9,12,14"});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err, "zeroskip: error: " + model + ": 5 tokens do not fit the context of 4\n");
  }
}

// ------------------------------------------------------------------------ mixed weight types

// Models whose layers mix weight types, decoded in DecodeBatch passes of three sessions at
// different positions and FFN paths: each session gets what it gets decoding alone. A GGUF mixed
// as llama.cpp's Q4_K_M (q4k gate and up beside an f32 down; q6k attn_v in layer 1; quantized
// weights run each session in a pass of its own) bit for bit; a float mix (layer 0's down and
// layer 1's up bf16, the rest f32: the two sparse sessions share one batched pass, up and down
// neuron by neuron) within f32 rounding. Catches a batched or decode FFN reading a layer's
// matrices with one type's kernels.
TEST(DecodeBatchMixed, EachSessionGetsWhatItGetsAlone) {
  testing::TempDir dir;
  std::filesystem::copy(testing::TestDataDir() + "/" + kModel, dir / "hf");
  testing::StoreAsBf16(dir / "hf/model.safetensors", {"model.layers.0.mlp.down_proj.weight",
                                                      "model.layers.1.mlp.up_proj.weight"});
  ConvertOptions opt;
  opt.hf_dir = dir / "hf";
  opt.out_path = dir / "mixed.zsk";
  ConvertHfCheckpoint(opt);
  const auto float_mix = Model::Load(opt.out_path);
  ASSERT_EQ(float_mix->layer(0).ffn.down_t.dtype, DType::kBF16);
  ASSERT_EQ(float_mix->layer(0).ffn.up.dtype, DType::kF32);
  opt.hf_dir = testing::TestDataDir() + "/gguf/" + kModel + "_q4_k_m.gguf";
  opt.out_path = dir / "q4km.zsk";
  ConvertHfCheckpoint(opt);
  const auto q4km = Model::Load(opt.out_path);
  ASSERT_EQ(q4km->layer(0).ffn.gate.dtype, DType::kQ4K);
  ASSERT_EQ(q4km->layer(0).ffn.down_t.dtype, DType::kF32);
  ASSERT_EQ(q4km->layer(1).v.dtype, DType::kQ6K);
  for (const Model* m : {q4km.get(), float_mix.get()}) {
    const bool exact = m == q4km.get();
    Engine engine(*m, {.threads = 2});
    const SessionOptions kinds[] = {
        {.ffn = FfnMode::kSparse}, {.ffn = FfnMode::kSparse}, {.ffn = FfnMode::kDense}};
    std::vector<std::unique_ptr<Session>> batched, alone;
    for (int k = 0; k < 3; ++k) {
      batched.push_back(std::make_unique<Session>(engine, kinds[k]));
      alone.push_back(std::make_unique<Session>(engine, kinds[k]));
      if (k > 0) {
        batched[k]->Forward(Tokens(2 * k + 1));
        alone[k]->Forward(Tokens(2 * k + 1));
      }
    }
    for (int step = 0; step < 4; ++step) {
      const std::vector<int> tokens = {5 + step, 77 + step, 300 - step};
      const std::vector<Session*> sessions = {batched[0].get(), batched[1].get(), batched[2].get()};
      Session::DecodeBatch(sessions, tokens);
      for (int k = 0; k < 3; ++k) {
        const std::vector<float> got(batched[k]->logits().begin(), batched[k]->logits().end());
        const auto l = alone[k]->Forward({&tokens[k], 1});
        const std::string where = std::string(exact ? "q4_k_m" : "f32/bf16") + " session " +
                                  std::to_string(k) + " step " + std::to_string(step);
        if (exact) {
          ASSERT_EQ(got, std::vector<float>(l.begin(), l.end())) << where;
        } else {
          testing::ExpectNearReference(got, nlohmann::json(std::vector<float>(l.begin(), l.end())),
                                       where);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------ batched decode guards

constexpr int kVocab = 384;  // VOCAB in tests/data/make_checkpoints.py

// The reason DecodeBatch refuses `tokens` on `sessions` with ("" if it runs them).
std::string DecodeBatchRefusal(std::vector<Session*> sessions, std::vector<int> tokens) {
  try {
    Session::DecodeBatch(sessions, tokens);
  } catch (const Error& e) {
    return e.reason();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// A session's position and logits, to see that a refused step ran nothing on it.
std::pair<int64_t, std::vector<float>> StateOf(const Session& s) {
  return {s.position(), {s.logits().begin(), s.logits().end()}};
}

// DecodeBatch checks every session before it runs any: the last session of a batch one past its
// context, or the second one's id one past either end of [0, vocab), is refused and no session
// moves (neither those before it nor those of another FFN pass). At the edges (the last position
// of a context; ids 0 and vocab - 1) the step runs, and gives what a lone decode step gives.
// Catches a guard off by one (it would write past the KV cache or the embedding table) and a
// guard that looks at the first session or token instead of each.
TEST(DecodeBatchGuard, EachSessionsContextAndTokenAreCheckedAtTheirEdges) {
  const Model& m = testing::LoadedModel(kModel);
  ASSERT_EQ(m.config().vocab, kVocab);
  Engine& engine = TwoThreads(m);
  // a: sparse, one position left of 4; b: dense (its own pass), empty; c: sparse, context 8.
  Session a(engine, WithContext(4, FfnMode::kSparse)), b(engine, WithContext(4, FfnMode::kDense)),
      c(engine, WithContext(8, FfnMode::kSparse));
  a.Forward(Tokens(3));
  c.Forward(Tokens(3));
  EXPECT_EQ(DecodeBatchRefusal({&b, &c, &a}, {kVocab - 1, 0, 7}), "");
  EXPECT_EQ(a.position(), 4);
  EXPECT_EQ(b.position(), 1);
  EXPECT_EQ(c.position(), 4);
  // The same steps alone (each copied before the next overwrites the engine's logits).
  const auto alone = [](Session& s, std::vector<int> ids) {
    const int last = ids.back();
    ids.pop_back();
    if (!ids.empty()) s.Forward(ids);
    const auto l = s.Forward({&last, 1});
    return nlohmann::json(std::vector<float>(l.begin(), l.end()));
  };
  Session lone_a(engine, WithContext(4, FfnMode::kSparse));
  Session lone_b(engine, WithContext(4, FfnMode::kDense));
  auto prompt = Tokens(3);
  prompt.push_back(7);
  testing::ExpectNearReference(a.logits(), alone(lone_a, prompt), "a");
  testing::ExpectNearReference(b.logits(), alone(lone_b, {kVocab - 1}), "b");

  const auto before = std::vector{StateOf(a), StateOf(b), StateOf(c)};
  const auto unmoved = [&](const std::string& where) {
    EXPECT_EQ((std::vector{StateOf(a), StateOf(b), StateOf(c)}), before) << where;
  };
  const std::string full = "5 tokens do not fit the context of 4";
  EXPECT_EQ(DecodeBatchRefusal({&b, &c, &a}, {5, 5, 5}), full);
  unmoved("a full, last");
  EXPECT_EQ(DecodeBatchRefusal({&a, &b}, {5, 5}), full);
  unmoved("a full, first");
  const std::string outside = " is outside the vocabulary [0, 384)";
  EXPECT_EQ(DecodeBatchRefusal({&b, &c}, {5, kVocab}), "token id 384" + outside);
  unmoved("id vocab, second");
  EXPECT_EQ(DecodeBatchRefusal({&b, &c}, {5, -1}), "token id -1" + outside);
  unmoved("id -1, second");
  EXPECT_EQ(DecodeBatchRefusal({&c, &b}, {kVocab, 5}), "token id 384" + outside);
  unmoved("id vocab, first");

  // A token per session, one engine, and each session once (twice would run two rows at one
  // position and advance it by two: past the context from its last position).
  EXPECT_EQ(DecodeBatchRefusal({&b, &c}, {5}), "DecodeBatch: one token per session");
  EXPECT_EQ(DecodeBatchRefusal({&b}, {5, 5}), "DecodeBatch: one token per session");
  Engine other(m, {.threads = 1});
  Session d(other, WithContext(8, FfnMode::kSparse));
  EXPECT_EQ(DecodeBatchRefusal({&b, &d}, {5, 5}), "DecodeBatch: sessions of two engines");
  EXPECT_EQ(DecodeBatchRefusal({&c, &b, &c}, {5, 5, 5}), "DecodeBatch: a session twice");
  unmoved("two engines, a session twice");
  EXPECT_EQ(d.position(), 0);

  // Both edges of the vocabulary in one step, on the second session too.
  EXPECT_EQ(DecodeBatchRefusal({&b, &c}, {0, kVocab - 1}), "");
  EXPECT_EQ(b.position(), 2);
  EXPECT_EQ(c.position(), 5);
}

// ------------------------------------------------------------------------ chunked prefill

TEST(SequenceState, AKvCacheTakesMemoryOnlyForThePositionsWritten) {
  // A model's whole context of keys and values must not be touched up front: at 7B under a 6 GiB
  // limit, 4 GiB of zeroed f32 KV cache for 4096 positions pushed the weights out of memory.
  ModelConfig c = testing::TinyConfig();
  c.layers = 2, c.hidden = 256, c.heads = 4, c.kv_heads = 4, c.head_dim = 64, c.context = 4096;
  SequenceState s(c, c.context, 1, FfnSettings{}, DType::kF32);
  const size_t bytes = c.layers * s.layer_bytes;  // 2 layers x 4096 positions x 1 KiB
  ASSERT_EQ(bytes, size_t{8} << 20);
  EXPECT_EQ(testing::ResidentPagesOf(s.k_cache.data(), bytes), 0u);
  EXPECT_EQ(testing::ResidentPagesOf(s.v_cache.data(), bytes), 0u);
  // A first position's key for every (layer, head): one page each, and it reads as zero before.
  const size_t head_block = static_cast<size_t>(c.context) * c.head_dim * sizeof(float);
  for (int64_t b = 0; b < c.layers * c.kv_heads; ++b) {
    uint8_t* at = s.k_cache.data() + b * head_block;
    EXPECT_EQ(*at, 0);
    *at = 1;
  }
  EXPECT_EQ(testing::ResidentPagesOf(s.k_cache.data(), bytes),
            static_cast<uint64_t>(c.layers * c.kv_heads));
}

// A prompt longer than max_batch runs in chunks; the logits are the last chunk's last row, equal
// to the float64 reference (tests/data/golden/scoring.json holds every position).
TEST(Session, ChunkedPrefillMatchesReference) {
  const auto fixture = nlohmann::json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  const Model& m = testing::LoadedModel(fixture["checkpoint"]);
  const auto& sequence = fixture["sequences"][0];
  const auto ids = sequence["ids"].get<std::vector<int>>();
  const auto& want = sequence["logits"];
  for (int64_t max_batch : {1, 4, 7, 64}) {
    Engine engine(m, {.threads = 2, .max_batch = max_batch});
    Session s(engine);
    // The whole sequence at once, then again as two calls (the second starting mid-chunk).
    for (size_t split : {ids.size(), size_t{5}}) {
      s.Reset();
      if (split < ids.size()) s.Forward(std::span<const int>(ids).first(split));
      const auto logits =
          s.Forward(std::span<const int>(ids).subspan(split == ids.size() ? 0 : split));
      testing::ExpectNearReference(
          logits, want[ids.size() - 1],
          "max_batch " + std::to_string(max_batch) + " split " + std::to_string(split));
    }
    if (max_batch < static_cast<int64_t>(ids.size())) {
      s.Reset();
      EXPECT_THROW(s.Forward(ids, /*all_logits=*/true), Error) << "max_batch " << max_batch;
    }
  }
}

// Sessions on one engine share its buffers but not their sequences: three sessions decoding
// the fixture's three sequences interleaved token by token, then the same from three threads
// at once, each match the float64 reference at every position. A KV cache, position or FFN
// state leaking between sessions (or two forward passes overlapping in the shared workspace)
// changes some logit by far more than the tolerance.
TEST(Session, SessionsSharingAnEngineKeepTheirOwnSequences) {
  const auto fixture = nlohmann::json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  const Model& m = testing::LoadedModel(fixture["checkpoint"]);
  const auto& sequences = fixture["sequences"];
  ASSERT_GE(sequences.size(), 2u);
  Engine engine(m, {.threads = 2});
  auto expect_row = [&](size_t seq, size_t pos, std::span<const float> logits) {
    testing::ExpectNearReference(logits, sequences[seq]["logits"][pos],
                                 "sequence " + std::to_string(seq) + " position " +
                                     std::to_string(pos));
  };
  auto ids = [&](size_t seq) { return sequences[seq]["ids"].get<std::vector<int>>(); };

  std::vector<std::unique_ptr<Session>> sessions;
  for (size_t i = 0; i < sequences.size(); ++i) {
    sessions.push_back(std::make_unique<Session>(engine, SessionOptions{.ffn = FfnMode::kSparse}));
  }
  for (size_t pos = 0;; ++pos) {
    bool any = false;
    for (size_t i = 0; i < sessions.size(); ++i) {
      const auto seq = ids(i);
      if (pos >= seq.size()) continue;
      any = true;
      expect_row(i, pos, sessions[i]->Forward({&seq[pos], 1}));
    }
    if (!any) break;
  }

  // From threads at once: the engine runs one pass at a time, and each session's last-token
  // logits are its own.
  std::vector<std::vector<std::vector<float>>> got(sessions.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < sessions.size(); ++i) {
    sessions[i]->Reset();
    threads.emplace_back([&, i] {
      const auto seq = ids(i);
      for (const int id : seq) {
        const auto logits = sessions[i]->Forward({&id, 1});
        got[i].emplace_back(logits.begin(), logits.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < sessions.size(); ++i) {
    for (size_t pos = 0; pos < got[i].size(); ++pos) expect_row(i, pos, got[i][pos]);
  }
}

// A session that copies another's prompt continues it as if it had run it: its logits, and its
// next tokens, are the reference's (a request's n choices share one prefill this way). Its own
// earlier sequence, longer than the copy, must not leak into what follows.
TEST(Session, CopyFromContinuesTheOtherSessionsSequence) {
  const auto fixture = nlohmann::json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  const Model& m = testing::LoadedModel(fixture["checkpoint"]);
  const auto& sequence = fixture["sequences"][0];
  const auto ids = sequence["ids"].get<std::vector<int>>();
  ASSERT_GE(ids.size(), 4u);
  const size_t k = ids.size() / 2;
  Engine engine(m, {.threads = 2});
  Session leader(engine), follower(engine);
  const auto other = fixture["sequences"][1]["ids"].get<std::vector<int>>();
  follower.Forward(other);
  // All logits of the prompt: logits() is still the last row's.
  leader.Forward(std::span<const int>(ids).first(k), /*all_logits=*/true);
  testing::ExpectNearReference(leader.logits(), sequence["logits"][k - 1], "leader");
  follower.CopyFrom(leader);
  EXPECT_EQ(follower.position(), static_cast<int64_t>(k));
  testing::ExpectNearReference(follower.logits(), sequence["logits"][k - 1], "copied");
  for (size_t pos = k; pos < ids.size(); ++pos) {
    testing::ExpectNearReference(follower.Forward({&ids[pos], 1}), sequence["logits"][pos],
                                 "follower position " + std::to_string(pos));
  }
}

// A KV cache of f16 or bf16 rounds keys and values when they are stored; the logits stay near
// the float64 reference (measured worst |Δlogit| / max |logit| over the fixture: see the
// tolerances) but are not those of the f32 cache, so the narrow type is really in use.
TEST(Session, NarrowKvCachesStayNearTheReference) {
  const auto fixture = nlohmann::json::parse(
      testing::ReadFile(testing::SourceDir() + "/tests/data/golden/scoring.json"));
  const Model& m = testing::LoadedModel(fixture["checkpoint"]);
  const auto& sequence = fixture["sequences"][0];
  const auto ids = sequence["ids"].get<std::vector<int>>();
  Engine engine(m, {.threads = 2});
  struct Want {
    DType kv;
    double tolerance;  // of the row's max |logit|
  };
  std::vector<std::vector<float>> f32_rows;
  for (const Want w : {Want{DType::kF32, 1e-4}, Want{DType::kF16, 2e-3}, Want{DType::kBF16, 2e-2}}) {
    Session s(engine, {.kv_type = w.kv});
    EXPECT_EQ(s.kv_type(), w.kv);
    double worst = 0;
    bool differs = false;
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      const auto logits = s.Forward({&ids[pos], 1});
      worst = std::max(worst, testing::MaxRelativeError(logits, sequence["logits"][pos]));
      if (w.kv == DType::kF32) {
        f32_rows.emplace_back(logits.begin(), logits.end());
      } else {
        differs |= !std::equal(logits.begin(), logits.end(), f32_rows[pos].begin());
      }
    }
    EXPECT_LE(worst, w.tolerance) << DTypeName(w.kv);
    if (w.kv != DType::kF32) {
      EXPECT_TRUE(differs) << DTypeName(w.kv) << " gave the f32 logits";
    }
    std::printf("KV %s: worst |dlogit| / max |logit| %.2e\n", std::string(DTypeName(w.kv)).c_str(),
                worst);
  }
  EXPECT_THROW(Session(engine, {.kv_type = DType(7)}), Error);
}

// ------------------------------------------------------------------------ RMSNorm

TEST(RmsNorm, MatchesTheDefinitionWithEpsInsideTheRoot) {
  // Two rows with a large eps, so eps inside or outside the square root differ by ~10%.
  const float x[] = {3.0f, 4.0f, -1.0f, 0.5f};
  const float w[] = {1.0f, 2.0f};
  float out[4];
  RmsNorm(x, 2, 2, w, 0.5f, out);
  const double s0 = 1 / std::sqrt((9.0 + 16.0) / 2 + 0.5),
               s1 = 1 / std::sqrt((1.0 + 0.25) / 2 + 0.5);
  const double want[] = {3 * s0, 8 * s0, -1 * s1, 1.0 * s1};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], want[i], 1e-6 * std::abs(want[i])) << i;
}

TEST(RmsNorm, MatchesADoublePrecisionReferenceAtModelSizes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 0.05f);  // small rms: eps (1e-5) matters at 1e-3
  const int64_t n = 3, dim = 256;
  std::vector<float> x(n * dim), w(dim), out(n * dim);
  for (auto& v : x) v = dist(rng);
  for (auto& v : w) v = 1.0f + dist(rng);
  const float eps = 1e-5f;
  RmsNorm(x.data(), n, dim, w.data(), eps, out.data());
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1 / std::sqrt(ss / dim + double(eps));
    for (int64_t i = 0; i < dim; ++i) {
      const double want = x[r * dim + i] * scale * w[i];
      ASSERT_NEAR(out[r * dim + i], want, 1e-6 * std::abs(want) + 1e-12) << r << ", " << i;
    }
  }
}

}  // namespace
}  // namespace zeroskip
