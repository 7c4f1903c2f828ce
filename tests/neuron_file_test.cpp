// A model decoded with less memory than it needs (docs/FORMAT.md, "Neuron file"): the neuron
// file's bytes against the Hugging Face checkpoint it came from, its refusals, the memory budget's
// refusal, and decode from the neuron cache against decode in memory, bit for bit, on every ISA.
#include "format/neuron_file.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "engine/sequence.h"
#include "ffn/neuron_cache.h"
#include "serve/scheduler.h"
#include "test_util.h"
#include "zeroskip/convert.h"
#include "zeroskip/engine.h"
#include "zeroskip/error.h"
#include "zeroskip/session.h"

namespace zeroskip {
namespace {

using testing::ConvertedModel;
using testing::ReadFile;
using testing::SourceDir;
using testing::TempDir;
using testing::VmFlagsOf;
using testing::WriteFile;

// `zsk` copied into `dir` with its neuron file beside it; returns the copy's path.
std::string WithNeuronFile(const TempDir& dir, const std::string& zsk, const std::string& name) {
  const std::string path = dir / name;
  std::filesystem::copy_file(zsk, path);
  WriteNeuronFile(*ZskFile::Open(path), {.out_path = NeuronFilePath(path)});
  return path;
}

using testing::ErrorText;

NeuronLayout ReadNeuronLayout(const std::string& path) {
  const auto zsk = ZskFile::Open(path);
  const std::string neurons = NeuronFilePath(path);
  const int fd = ::open(neurons.c_str(), O_RDONLY | O_CLOEXEC);
  const NeuronLayout l =
      ReadNeuronFileHeader(neurons, fd, std::filesystem::file_size(neurons), *zsk);
  ::close(fd);
  return l;
}

// The smallest budget that loads `path` from its neuron file (its resident part and one layer's
// neurons), as the refusal of a budget of 1 byte states it.
uint64_t LeastBudget(const std::string& path) {
  const std::string error =
      ErrorText([&] { Model::Load(path, {.mem_budget = 1, .always_offload = true}); });
  const std::string says = "it needs at least ";
  const size_t at = error.find(says);
  EXPECT_NE(at, std::string::npos) << error;
  return at == std::string::npos ? 0 : std::stoull(error.substr(at + says.size()));
}

// The HF checkpoint's tensor `name` as raw bytes and shape, read with nothing of zeroskip's.
struct RawTensor {
  std::string dtype;
  std::vector<uint64_t> shape;
  std::string bytes;
};
RawTensor ReadHfTensor(const std::string& file, const std::string& name) {
  const std::string data = ReadFile(file);
  uint64_t n = 0;
  std::memcpy(&n, data.data(), 8);
  const auto header = nlohmann::json::parse(data.substr(8, n));
  const auto& t = header.at(name);
  const uint64_t begin = t["data_offsets"][0], end = t["data_offsets"][1];
  return {t["dtype"], t["shape"], data.substr(8 + n + begin, end - begin)};
}

TEST(NeuronFile, BundlesHoldTheCheckpointsRowsNeuronByNeuron) {
  TempDir dir;
  const std::string path = WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16"), "m.zsk");
  const std::string hf = SourceDir() + "/models/relu-ft/model.safetensors";
  const std::string file = ReadFile(NeuronFilePath(path));
  // 4 layers of 704 neurons after a 4 KiB header; a bundle is the gate, up and down rows (512
  // bytes of bf16 each, so every part is whole blocks of 512 already).
  ASSERT_EQ(file.size(), 4096u + 4u * 704u * 1536u);
  EXPECT_EQ(file.substr(0, 8), "ZSKNEURN");
  for (int layer = 0; layer < 4; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".mlp.";
    const RawTensor up = ReadHfTensor(hf, prefix + "up_proj.weight");
    const RawTensor down = ReadHfTensor(hf, prefix + "down_proj.weight");
    const RawTensor gate = ReadHfTensor(hf, prefix + "gate_proj.weight");
    ASSERT_EQ(up.dtype, "BF16");
    ASSERT_EQ(down.shape, (std::vector<uint64_t>{256, 704}));
    for (int i = 0; i < 704; ++i) {
      const char* bundle = file.data() + 4096 + (layer * 704 + i) * 1536;
      ASSERT_EQ(std::memcmp(bundle, gate.bytes.data() + i * 512, 512), 0) << layer << " " << i;
      ASSERT_EQ(std::memcmp(bundle + 512, up.bytes.data() + i * 512, 512), 0);
      // The down row is column i of the HF [hidden, ffn] matrix.
      for (int c = 0; c < 256; ++c) {
        ASSERT_EQ(std::memcmp(bundle + 1024 + 2 * c, down.bytes.data() + (c * 704 + i) * 2, 2), 0)
            << layer << " " << i << " " << c;
      }
    }
  }
}

TEST(NeuronFile, PartsArePaddedToWholeBlocks) {
  // hd56: f32 rows of 224 elements (896 bytes): the gate part rounds up to 1,024 bytes, up and
  // down (1,792) to 2,048; the padding is zeros.
  TempDir dir;
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("prosparse_gqa_hd56_fatrelu_f32"), "m.zsk");
  const std::string file = ReadFile(NeuronFilePath(path));
  ASSERT_EQ(file.size(), 4096u + 2u * 328u * 3072u);
  const auto zsk = ZskFile::Open(path);
  const auto* gate = static_cast<const char*>(zsk->data(*zsk->Find("layers.1.ffn_gate")));
  const auto* down = static_cast<const char*>(zsk->data(*zsk->Find("layers.1.ffn_down")));
  const char* bundle = file.data() + 4096 + (328 + 5) * 3072;
  EXPECT_EQ(std::memcmp(bundle, gate + 5 * 896, 896), 0);
  EXPECT_EQ(std::string(bundle + 896, 128), std::string(128, '\0'));
  EXPECT_EQ(std::memcmp(bundle + 1024 + 896, down + 5 * 896, 896), 0);
  EXPECT_EQ(std::string(bundle + 1024 + 1792, 256), std::string(256, '\0'));
}

TEST(NeuronFile, DamagedOrForeignFilesAreRefused) {
  TempDir dir;
  const std::string path = WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16"), "m.zsk");
  const std::string good = ReadFile(NeuronFilePath(path));
  const uint64_t budget = std::filesystem::file_size(path) - 1;
  const auto load_with = [&](const std::string& bytes) {
    WriteFile(NeuronFilePath(path), bytes);
    return ErrorText([&] { Model::Load(path, {.mem_budget = budget}); });
  };
  std::string bad = good;
  bad[3] = 'X';
  EXPECT_NE(load_with(bad).find("not a neuron file (bad magic)"), std::string::npos);
  bad = good;
  bad[20] ^= 1;  // the layer count, under the header checksum
  EXPECT_NE(load_with(bad).find("header checksum mismatch"), std::string::npos);
  EXPECT_NE(load_with(good.substr(0, good.size() - 1536)).find("its header implies"),
            std::string::npos);
  EXPECT_NE(load_with(good.substr(0, 40)).find("too short for its header"), std::string::npos);
  // Another model's neuron file beside this one: the SiLU demo model has the same shapes and
  // types, so only the digest of the FFN checksums tells them apart; and one of other types.
  for (const char* other : {"models/silu@bf16", "models/relu-ft@f16"}) {
    const std::string copy = WithNeuronFile(dir, ConvertedModel(other), "other.zsk");
    EXPECT_NE(load_with(ReadFile(NeuronFilePath(copy))).find("was written for another model"),
              std::string::npos)
        << other;
    std::filesystem::remove(copy);
    std::filesystem::remove(NeuronFilePath(copy));
  }
  std::filesystem::remove(NeuronFilePath(path));
  EXPECT_NE(
      ErrorText([&] { Model::Load(path, {.mem_budget = budget}); }).find("has no neuron file"),
      std::string::npos);
  // The automatic budget never refuses a model for lacking one: it maps it as a whole.
  EXPECT_FALSE(Model::Load(path)->memory().offloaded);
}

TEST(NeuronFile, QuantizedAndUngatedFfnsCannotBeBundled) {
  TempDir dir;
  EXPECT_NE(ErrorText([&] {
              WriteNeuronFile(*ZskFile::Open(ConvertedModel("models/relu-ft@q8")),
                              {.out_path = dir / "q8.neurons"});
            }).find("is q8; a neuron file bundles f32, f16 and bf16 FFN rows only"),
            std::string::npos);
  EXPECT_NE(ErrorText([&] {
              WriteNeuronFile(*ZskFile::Open(ConvertedModel("opt_prenorm_f32")),
                              {.out_path = dir / "opt.neurons"});
            }).find("ungated FFN"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "q8.neurons"));
}

TEST(MemoryBudget, TooSmallABudgetSaysWhatItNeeds) {
  TempDir dir;
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16+shadow"), "m.zsk");
  const uint64_t least = LeastBudget(path);
  // Resident: everything but up, down and the shadowed gates (3 x 4 x 704 x 256 x 2 bytes);
  // the cache: 704 bundles of 1,536 bytes.
  const uint64_t resident = std::filesystem::file_size(path) - 3u * 4 * 704 * 256 * 2;
  EXPECT_EQ(least, resident + 704u * 1536);
  const std::string error = ErrorText([&] { Model::Load(path, {.mem_budget = least - 1}); });
  EXPECT_NE(error.find("a memory budget of " + std::to_string(least - 1) +
                       " bytes is too small: it needs at least " + std::to_string(least)),
            std::string::npos)
      << error;
  const auto model = Model::Load(path, {.mem_budget = least});
  EXPECT_TRUE(model->memory().offloaded);
  EXPECT_EQ(model->memory().cache_slots, 704u);
  // A budget the whole file fits in maps it all, neuron file or not.
  EXPECT_FALSE(
      Model::Load(path, {.mem_budget = std::filesystem::file_size(path)})->memory().offloaded);
}

// The whole pages of `view`'s bytes: [begin, end) page-aligned.
std::pair<uintptr_t, uintptr_t> WholePages(const WeightView& view) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<uintptr_t>(view.data);
  return {(start + page - 1) / page * page,
          (start + DTypeBytes(view.dtype, view.rows * view.cols)) / page * page};
}
int64_t PagesOf(const WeightView& view) {
  const auto [begin, end] = WholePages(view);
  return static_cast<int64_t>((end - begin) / static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE)));
}
// How many of them are in memory (mincore: the page cache, for a mapping).
int64_t ResidentPages(const WeightView& view) {
  const auto [begin, end] = WholePages(view);
  std::vector<unsigned char> in_core(static_cast<size_t>(PagesOf(view)));
  EXPECT_EQ(::mincore(reinterpret_cast<void*>(begin), end - begin, in_core.data()), 0);
  return std::count_if(in_core.begin(), in_core.end(), [](unsigned char c) { return c & 1; });
}

// What a memory limit leaves beside a budget the model does not fit: the engine's sessions share
// it.
struct LimitedEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<Engine> engine;
};
LimitedEngine LoadLimited(const std::string& path, uint64_t memory_limit, uint64_t more_slots = 0) {
  LimitedEngine e;
  const uint64_t budget = LeastBudget(path) + more_slots * ReadNeuronLayout(path).stride;
  e.model = Model::Load(
      path, {.mem_budget = budget, .always_offload = true, .memory_limit = memory_limit});
  e.engine = std::make_unique<Engine>(*e.model, EngineOptions{.threads = 2});
  return e;
}

TEST(MemoryBudget, SessionsGetWhatTheBudgetLeavesOfTheMemoryLimit) {
  TempDir dir;
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("llama_gqa_hd64_relu_f32+shadow"), "m.zsk");
  // Under a limit with plenty to spare, the engine says what its own scratch took of it.
  constexpr uint64_t kPlenty = uint64_t{1} << 40;
  const LimitedEngine roomy = LoadLimited(path, kPlenty);
  const MemoryPlan& plan = roomy.model->memory();
  ASSERT_TRUE(plan.offloaded);
  EXPECT_EQ(plan.limit, kPlenty);
  const uint64_t weights = plan.resident_bytes + plan.cache_slots * plan.bundle_bytes;
  const uint64_t scratch = kPlenty - weights - roomy.engine->session_memory_left();
  EXPECT_GT(scratch, 0u);
  // A larger neuron cache leaves as much less.
  const LimitedEngine cached = LoadLimited(path, kPlenty, 64);
  ASSERT_EQ(cached.model->memory().cache_slots, plan.cache_slots + 64);
  EXPECT_EQ(roomy.engine->session_memory_left() - cached.engine->session_memory_left(),
            64 * plan.bundle_bytes);
  const int64_t context = roomy.model->config().context, half = context / 2;
  const auto session_bytes = [&](int64_t positions) {
    return SequenceState::Bytes(roomy.model->config(), positions, 2, DType::kF32, path);
  };
  {
    Session whole(*roomy.engine, {});
    EXPECT_EQ(whole.context(), context);
    EXPECT_EQ(roomy.engine->session_memory_left(),
              kPlenty - weights - scratch - session_bytes(context));
  }
  EXPECT_EQ(roomy.engine->session_memory_left(), kPlenty - weights - scratch);

  // A limit that leaves a session half the model's context (and a byte less than one more).
  const uint64_t left = session_bytes(half + 1) - 1;
  const LimitedEngine tight = LoadLimited(path, weights + scratch + left);
  ASSERT_EQ(tight.engine->session_memory_left(), left);
  {
    Session shortened(*tight.engine, {});  // the model's context: the longest that fits
    EXPECT_EQ(shortened.context(), half);
    EXPECT_EQ(tight.engine->session_memory_left(), left - session_bytes(half));
    // A second session finds the rest too small for one position, and says so.
    const std::string error = ErrorText([&] { Session second(*tight.engine, {}); });
    EXPECT_THAT(error, ::testing::HasSubstr("room for 0 tokens")) << error;
    // Decoding fills the shortened context to its end.
    std::vector<int> tokens(static_cast<size_t>(half), 7);
    shortened.Forward(tokens);
    EXPECT_EQ(shortened.position(), half);
  }
  // Sessions that share the room get equal contexts: a server's slots.
  int64_t two = half;
  while (2 * session_bytes(two) > left) --two;
  EXPECT_EQ(Session::ContextThatFits(*tight.engine, {}, 2), two);
  EXPECT_EQ(Session::ContextThatFits(*tight.engine, {.context = 5}, 2), 5);
  EXPECT_EQ(Session::ContextThatFits(*roomy.engine, {}, 2), context);
  {
    serve::Scheduler slots(*tight.engine, {}, 2, 4);
    EXPECT_EQ(slots.context(), two);
  }
  // Given back: a context asked for that does not fit is refused, naming what would.
  EXPECT_EQ(tight.engine->session_memory_left(), left);
  const std::string error = ErrorText([&] { Session asked(*tight.engine, {.context = half + 1}); });
  EXPECT_THAT(error, ::testing::HasSubstr(path + ": a context of " + std::to_string(half + 1) +
                                          " tokens needs "))
      << error;
  EXPECT_THAT(error, ::testing::HasSubstr("room for " + std::to_string(half) + " tokens")) << error;
  Session asked(*tight.engine, {.context = half});
  EXPECT_EQ(asked.context(), half);

  // A limit the resident weights and the cache fill leaves nothing.
  const LimitedEngine full = LoadLimited(path, weights);
  EXPECT_EQ(full.engine->session_memory_left(), 0u);
  EXPECT_THAT(ErrorText([&] { Session none(*full.engine, {}); }),
              ::testing::HasSubstr("room for 0 tokens"));
}

// A prompt's batched pass reads an offloaded model's FFN through the .zsk's mapping (decode reads
// the neuron file): each layer's up, down and shadowed gate leave memory right after it, or a
// 7B's prompt would push the resident weights out of a memory limit (docs/BENCHMARKS.md, issue
// 33). The same prompt on the model in memory keeps them: the control that this file system's
// page cache shows in mincore. Page-cache folios that straddle a matrix's first or last page
// stay (ext4 caches files in folios of up to 2 MiB: a few pages of these 88-page matrices, none
// worth counting in a 7B's), so the test asks for most pages gone, not all. Catches the release
// left out (every page stays), releasing only some layers, or releasing the resident shadow.
TEST(MemoryBudget, APromptLeavesTheOffloadedFfnOutOfMemory) {
  TempDir dir;
  struct statfs fs {};
  ASSERT_EQ(::statfs(dir.path().c_str(), &fs), 0);
  if (fs.f_type == TMPFS_MAGIC) GTEST_SKIP() << "tmpfs keeps released pages: " << dir.path();
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16+shadow"), "m.zsk");
  {
    // Written back first, as a model on disk is: the page cache keeps dirty pages.
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  const std::vector<int> prompt = {1, 17, 30, 42, 5, 9, 11, 3};
  for (const bool offload : {false, true}) {
    const auto model = Model::Load(
        path, {.mem_budget = offload ? LeastBudget(path) : 0, .always_offload = offload});
    ASSERT_EQ(model->memory().offloaded, offload);
    Engine engine(*model, {.threads = 2});
    Session session(engine, {});
    session.Forward(prompt);
    for (int64_t l = 0; l < model->config().layers; ++l) {
      const FfnWeights& ffn = model->layer(l).ffn;
      for (const WeightView* offloaded : {&ffn.up, &ffn.down_t, &ffn.gate}) {
        const int64_t pages = ResidentPages(*offloaded), all = PagesOf(*offloaded);
        if (offload) {
          EXPECT_LT(pages, all / 2) << "layer " << l;
        } else {
          EXPECT_EQ(pages, all) << "layer " << l;
        }
      }
      // The shadow stays: decode reads it every token.
      EXPECT_EQ(ResidentPages(ffn.gate_shadow), PagesOf(ffn.gate_shadow)) << "layer " << l;
    }
  }
}

// The demo model (bf16) with its neuron file, that file's bytes, and a cache of `slots` on it.
struct DemoModelCache {
  TempDir dir;
  std::string path = WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16"), "m.zsk");
  std::string neurons = NeuronFilePath(path);
  std::string file = ReadFile(neurons);
  NeuronLayout l = ReadNeuronLayout(path);
  std::unique_ptr<NeuronCache> cache;

  explicit DemoModelCache(uint64_t slots) {
    const int fd = ::open(neurons.c_str(), O_RDONLY | O_CLOEXEC);
    cache = std::make_unique<NeuronCache>(l, neurons, fd, slots, true, true);
    ::close(fd);
  }
};

TEST(NeuronCache, KeepsFrequentNeuronsAndPassesOneOffsThroughScratch) {
  const DemoModelCache demo(704 + 64);
  NeuronCache& cache = *demo.cache;
  const NeuronLayout& l = demo.l;
  const std::string& file = demo.file;
  // Each token, every layer asks for 150 of its neurons 100-703 in turn (each comes back every
  // fourth token; the misses the cache does not admit fit in scratch, 176 slots), and layer 2
  // first for its 32 hot neurons 0-31 (back every token).
  const auto fetch_and_check = [&](int layer, const std::vector<int32_t>& ask) {
    std::vector<int32_t> slots(ask.size());
    const std::vector<NeuronCache::Part> parts(ask.size(), NeuronCache::kUpDown);
    cache.Fetch(layer, ask.data(), parts.data(), static_cast<int64_t>(ask.size()), slots.data());
    // Every slot holds its neuron's up and down rows as the file has them.
    for (size_t k = 0; k < ask.size(); ++k) {
      const uint8_t* slot = cache.pool() + slots[k] * l.stride;
      ASSERT_EQ(
          std::memcmp(slot + l.gate_read, file.data() + l.BundleOffset(layer, ask[k]) + l.gate_read,
                      l.up_down_read),
          0)
          << "layer " << layer << " neuron " << ask[k];
    }
  };
  uint64_t hot_hits_late = 0;
  int32_t turn[4] = {};
  for (int token = 0; token < 24; ++token) {
    for (int layer = 0; layer < 4; ++layer) {
      cache.StartLayer();
      if (layer == 2) {
        std::vector<int32_t> hot(32);
        std::iota(hot.begin(), hot.end(), 0);
        const uint64_t hits = cache.stats().hits;
        fetch_and_check(layer, hot);
        if (token >= 16) hot_hits_late += cache.stats().hits - hits;
      }
      std::vector<int32_t> ask;
      for (int k = 0; k < 150; ++k) ask.push_back(100 + (turn[layer]++ % 604));
      std::sort(ask.begin(), ask.end());
      fetch_and_check(layer, ask);
    }
  }
  // The hot neurons are in the cache well before token 16, and the others never evict them.
  EXPECT_EQ(hot_hits_late, 8u * 32u);
  // Gate rows too, into the same slots.
  std::vector<int32_t> ask = {0, 5, 700}, slots(3);
  cache.StartLayer();
  const NeuronCache::Part gates[] = {NeuronCache::kGate, NeuronCache::kGate, NeuronCache::kGate};
  cache.Fetch(3, ask.data(), gates, 3, slots.data());
  for (size_t k = 0; k < ask.size(); ++k) {
    EXPECT_EQ(std::memcmp(cache.pool() + slots[k] * l.stride,
                          file.data() + l.BundleOffset(3, ask[k]), l.gate_read),
              0);
  }
  // Parts per neuron, as a step with a shadow gate asks for them: 0 and 5 have their gate rows
  // (0 now wants up and down, 5 nothing more: a hit), 701 wants its whole bundle.
  const NeuronCache::Stats before = cache.stats();
  ask = {0, 5, 701};
  const NeuronCache::Part parts[] = {NeuronCache::kBundle, NeuronCache::kGate,
                                     NeuronCache::kBundle};
  cache.Fetch(3, ask.data(), parts, 3, slots.data());
  EXPECT_EQ(cache.stats().hits - before.hits, 1u);
  EXPECT_EQ(cache.stats().misses - before.misses, 2u);
  EXPECT_EQ(cache.stats().bytes_read - before.bytes_read,
            l.up_down_read + l.gate_read + l.up_down_read);
  for (const size_t k : {size_t{0}, size_t{2}}) {
    EXPECT_EQ(std::memcmp(cache.pool() + slots[k] * l.stride,
                          file.data() + l.BundleOffset(3, ask[k]), l.gate_read + l.up_down_read),
              0)
        << "neuron " << ask[k];
  }
}

// A step that misses more neurons than scratch holds and the cache admits (the smallest pool, one
// layer's neurons: 176 scratch, 528 cache, full of another layer's neurons as frequent as these):
// every neuron still gets a slot of its own with its bytes. Catches a spare slot taken from those
// the same step uses.
TEST(NeuronCache, AStepMissingMoreThanScratchHoldsGetsASlotForEveryNeuron) {
  const DemoModelCache demo(704);
  NeuronCache& cache = *demo.cache;
  const NeuronLayout& l = demo.l;
  std::vector<int32_t> all(704), slots(704);
  std::iota(all.begin(), all.end(), 0);
  const std::vector<NeuronCache::Part> gates(704, NeuronCache::kGate);
  for (const int layer : {0, 3}) {
    cache.StartLayer();
    cache.Fetch(layer, all.data(), gates.data(), 704, slots.data());
    std::vector<int32_t> distinct = slots;
    std::sort(distinct.begin(), distinct.end());
    EXPECT_EQ(std::unique(distinct.begin(), distinct.end()), distinct.end()) << "layer " << layer;
    for (int k = 0; k < 704; ++k) {
      ASSERT_EQ(std::memcmp(cache.pool() + slots[k] * l.stride,
                            demo.file.data() + l.BundleOffset(layer, k), l.gate_read),
                0)
          << "layer " << layer << " neuron " << k;
    }
  }
  EXPECT_EQ(cache.stats().misses, 2u * 704u);
}

// The smallest pool there is: a layer of one neuron and one slot, all of it scratch, no cache to
// sample from. Catches a cache slot drawn modulo an empty cache (a division by zero).
TEST(NeuronCache, APoolOfOneSlotHasNoCacheToSampleFrom) {
  TempDir dir;
  NeuronLayout l;
  l.layers = 2;
  l.ffn = 1;
  l.hidden = 128;
  l.gate_bytes = l.up_bytes = l.down_bytes = 128 * 4;
  l.gate_read = kBundleAlign;
  l.up_down_read = 2 * kBundleAlign;
  l.stride = l.gate_read + l.up_down_read;
  std::string file(l.FileBytes(), '\0');
  for (size_t i = kNeuronHeaderBytes; i < file.size(); ++i) file[i] = static_cast<char>(i * 7);
  const std::string path = dir / "one.neurons";
  WriteFile(path, file);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  NeuronCache cache(l, path, fd, 1, true, true);
  ::close(fd);
  const NeuronCache::Part whole = NeuronCache::kBundle;
  for (int token = 0; token < 3; ++token) {
    for (int layer = 0; layer < 2; ++layer) {
      const int32_t neuron = 0;
      int32_t slot = -1;
      cache.StartLayer();
      cache.Fetch(layer, &neuron, &whole, 1, &slot);
      ASSERT_EQ(slot, 0);
      EXPECT_EQ(std::memcmp(cache.pool(), file.data() + l.BundleOffset(layer, 0), l.stride), 0);
    }
  }
  EXPECT_EQ(cache.stats().misses, 6u);
}

// Requests before one Wait, as a decode step makes them while it certifies its rows piece by
// piece: more reads than the ring holds at once (64), then the up and down rows of some of the
// same neurons, and every slot holding the file's bytes once Wait returns. Catches a Request that
// drops the reads an earlier one queued, reads left unsubmitted past the ring's depth, and a Wait
// that returns before they are done.
TEST(NeuronCache, RequestsBeforeOneWaitAllArrive) {
  const DemoModelCache demo(704 + 400);
  NeuronCache& cache = *demo.cache;
  const NeuronLayout& l = demo.l;
  cache.StartLayer();
  std::vector<int32_t> neurons(300);
  std::iota(neurons.begin(), neurons.end(), 100);
  std::vector<int32_t> slots(neurons.size());
  const std::vector<NeuronCache::Part> gates(neurons.size(), NeuronCache::kGate);
  for (int piece = 0; piece < 3; ++piece) {
    cache.Request(1, neurons.data() + piece * 100, gates.data(), 100, slots.data() + piece * 100);
  }
  cache.Wait();
  // The active ones among them: up and down too, into the slots their gate rows went to.
  std::vector<int32_t> active = {100, 250, 399}, active_slots(3);
  const std::vector<NeuronCache::Part> up_down(3, NeuronCache::kUpDown);
  cache.Request(1, active.data(), up_down.data(), 3, active_slots.data());
  cache.Wait();
  for (size_t k = 0; k < neurons.size(); ++k) {
    ASSERT_EQ(std::memcmp(cache.pool() + slots[k] * l.stride,
                          demo.file.data() + l.BundleOffset(1, neurons[k]), l.gate_read),
              0)
        << "neuron " << neurons[k];
  }
  for (size_t k = 0; k < active.size(); ++k) {
    EXPECT_EQ(active_slots[k], slots[active[k] - 100]) << "the slot its gate row went to";
    EXPECT_EQ(std::memcmp(cache.pool() + active_slots[k] * l.stride,
                          demo.file.data() + l.BundleOffset(1, active[k]), l.stride),
              0)
        << "neuron " << active[k];
  }
  EXPECT_EQ(cache.stats().misses, 303u);
  EXPECT_EQ(cache.stats().bytes_read, 300 * l.gate_read + 3 * l.up_down_read);
}

// The pool starts on a huge page boundary and asks for huge pages before anything touches it:
// decode reads slots at random over the pool, a TLB miss every 4 KiB page otherwise (at 7B under
// a 5 GiB budget: docs/BENCHMARKS.md, issue 33).
TEST(NeuronCache, PoolIsInHugePages) {
  if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage")) {
    GTEST_SKIP() << "this kernel has no transparent huge pages";
  }
  const DemoModelCache demo(704 + 64);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(demo.cache->pool()) % (uintptr_t{2} << 20), 0u);
  EXPECT_THAT(VmFlagsOf(demo.cache->pool()), ::testing::HasSubstr(" hg"));
}

// What a prompt's batched pass leaves in the cache (NeuronCache::Warm): the neurons active for
// the most tokens, at most the layer's share of the cache (here the smallest pool, 704 slots:
// 176 scratch, 528 cache, 132 a layer), ties to the lower index, each slot holding the file's
// whole bundle, assembled from the rows in memory; decode then fetches them without a read.
// Catches the wrong rows or padding copied, a part of the bundle left out, the order or the share
// ignored, and slots of one layer's warm taken back by the next.
TEST(NeuronCache, WarmTakesTheMostActiveNeuronsFromTheRowsInMemory) {
  const DemoModelCache demo(704);
  NeuronCache& cache = *demo.cache;
  const NeuronLayout& l = demo.l;
  const std::string& file = demo.file;
  const auto model = Model::Load(demo.path, {.mem_budget = std::filesystem::file_size(demo.path)});
  // Multiples of 7 were active for 3 tokens, other multiples of 5 for 1, the rest for none.
  std::vector<int32_t> counts(704, 0), hot, rest;
  for (int i = 0; i < 704; ++i) {
    counts[i] = i % 7 == 0 ? 3 : i % 5 == 0 ? 1 : 0;
    if (counts[i] > 0) (counts[i] == 3 ? hot : rest).push_back(i);
  }
  // The share: the 101 multiples of 7, then the first 31 other multiples of 5.
  constexpr int kShare = (704 - 704 / 4) / 4;
  const int32_t next = rest[kShare - hot.size()];
  hot.insert(hot.end(), rest.begin(), rest.begin() + (kShare - hot.size()));
  const auto warm = [&](int layer) {
    const FfnWeights& w = model->layer(layer).ffn;
    return cache.Warm(layer, counts.data(), static_cast<const uint8_t*>(w.gate.data),
                      static_cast<const uint8_t*>(w.up.data),
                      static_cast<const uint8_t*>(w.down_t.data));
  };
  const std::vector<NeuronCache::Part> whole(kShare, NeuronCache::kBundle);
  for (const int layer : {1, 2}) {
    EXPECT_EQ(warm(layer), kShare) << "layer " << layer;
    EXPECT_EQ(warm(layer), 0) << "layer " << layer << ": cached already";
  }
  EXPECT_EQ(cache.stats().warmed, 2u * kShare);
  for (const int layer : {1, 2}) {
    std::vector<int32_t> slots(kShare);
    cache.StartLayer();
    cache.Fetch(layer, hot.data(), whole.data(), kShare, slots.data());
    for (int k = 0; k < kShare; ++k) {
      EXPECT_GE(slots[k], 704 / 4) << "a cache slot, not scratch";
      EXPECT_EQ(std::memcmp(cache.pool() + slots[k] * l.stride,
                            file.data() + l.BundleOffset(layer, hot[k]), l.stride),
                0)
          << "layer " << layer << " neuron " << hot[k];
    }
  }
  EXPECT_EQ(cache.stats().hits, 2u * kShare);
  EXPECT_EQ(cache.stats().bytes_read, 0u);
  // The next most active neuron was not warmed: it is read.
  int32_t slot = -1;
  cache.StartLayer();
  cache.Fetch(1, &next, whole.data(), 1, &slot);
  EXPECT_EQ(cache.stats().misses, 1u);
}

// A prompt's batched pass leaves its most active neurons in the cache, so the first decode step
// after it reads far fewer bundle parts than a first step with an empty cache (which still finds
// some: a neuron's gate read brings its up and down rows for the same step's second fetch).
// relu-ft's neurons fire unevenly (models/README.md), as a trained model's do. Catches warming
// left out, or warming the least active neurons.
TEST(MemoryBudget, APromptWarmsTheCacheForTheFirstDecodeStep) {
  TempDir dir;
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("models/relu-ft@bf16+shadow"), "m.zsk");
  const uint64_t bundle = ReadNeuronLayout(path).stride;
  const auto model = Model::Load(
      path, {.mem_budget = LeastBudget(path) + 4 * 120 * bundle, .always_offload = true});
  const std::vector<int> prompt = {1, 17, 30, 42, 5, 9, 11, 3, 250, 61, 77, 100, 402, 8, 19, 23};
  uint64_t reads[2] = {}, warmed[2] = {};
  for (const bool with_prompt : {false, true}) {
    Engine engine(*model, {.threads = 2});  // a cache of its own, empty
    Session session(engine, {});
    if (with_prompt) session.Forward(prompt);
    const FfnLayerStats before = session.ffn_total();
    const int next = 45;
    session.Forward(std::span<const int>(&next, 1));
    reads[with_prompt] = session.ffn_total().neuron_reads - before.neuron_reads;
    warmed[with_prompt] = before.neuron_warmed;
  }
  // Measured: 402 parts read cold; 225 bundles warmed, then 233 read.
  EXPECT_EQ(warmed[0], 0u);
  EXPECT_GT(warmed[1], 100u);
  EXPECT_GT(reads[0], 200u);
  EXPECT_LT(4 * reads[1], 3 * reads[0]) << "cold " << reads[0] << ", warmed " << reads[1];
}

// A neuron file cut short while a model decodes from it: the step that reads past its end fails
// with one error naming the file, and once the file is whole again a new session on the same
// engine (the same cache) decodes exactly as in memory: the failed step's slots were forgotten and
// none of its reads lands later. Catches a failure that hangs or crashes, and slots that claim
// bytes never read.
TEST(MemoryBudget, ANeuronFileCutShortFailsTheStepAndTheCacheRecovers) {
  TempDir dir;
  const std::string path =
      WithNeuronFile(dir, ConvertedModel("llama_gqa_hd64_relu_f32+shadow"), "m.zsk");
  const std::string neurons = NeuronFilePath(path);
  const std::string whole = ReadFile(neurons);
  const uint64_t first_bundle = ReadNeuronLayout(path).BundleOffset(0, 0);
  const auto in_memory = Model::Load(path, {.mem_budget = std::filesystem::file_size(path)});
  const auto offloaded =
      Model::Load(path, {.mem_budget = LeastBudget(path), .always_offload = true});
  Engine engine(*offloaded, {.threads = 2});
  const std::vector<int> prompt = {1, 17, 30, 42, 5};
  const int next = 9;
  {
    Session session(engine, {});
    session.Forward(prompt);
    std::filesystem::resize_file(neurons, first_bundle);
    const std::string error = ErrorText([&] { session.Forward(std::span<const int>(&next, 1)); });
    EXPECT_THAT(error, ::testing::HasSubstr(neurons + ": read failed")) << error;
  }
  const int fd = ::open(neurons.c_str(), O_WRONLY | O_CLOEXEC);  // the same file, whole again
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, whole.data(), whole.size(), 0), static_cast<ssize_t>(whole.size()));
  ::close(fd);
  Engine reference(*in_memory, {.threads = 2});
  Session want(reference, {}), got(engine, {});
  std::vector<int> tokens = prompt;
  for (int step = 0; step < 6; ++step) {
    const auto w = want.Forward(tokens);
    const std::vector<float> expected(w.begin(), w.end());
    const auto g = got.Forward(tokens);
    ASSERT_EQ(std::memcmp(g.data(), expected.data(), expected.size() * sizeof(float)), 0)
        << "step " << step;
    tokens = {
        static_cast<int>(std::max_element(expected.begin(), expected.end()) - expected.begin())};
  }
  EXPECT_GT(got.ffn_total().neuron_reads, 0u);
}

struct DecodeCase {
  std::string model;  // a ConvertedModel name
  // Whether a cache of one layer's neurons must evict in this run: the test checkpoints' random
  // gates activate about half of the neurons, the demo model's a few percent (its cache of one
  // layer then holds every neuron the run uses).
  bool evicts = true;
  FfnActivation act = FfnActivation::kModel;
  bool direct_io = true, io_uring = true;
  // Slots beyond the least pool, one layer's neurons (a quarter of them scratch, the rest a cache
  // that admits the more frequent neurons and evicts the others).
  uint64_t cache_slots = 0;
};

void PrintTo(const DecodeCase& c, std::ostream* os) {
  *os << c.model << (c.act == FfnActivation::kStochastic ? " stoch" : "")
      << (c.direct_io ? "" : " cached") << (c.io_uring ? "" : " pread");
  if (c.cache_slots > 0) *os << " cache " << c.cache_slots;
}

struct Decoded {
  std::vector<std::vector<float>> logits;  // every step's
  FfnLayerStats ffn;
  std::string neuron_io;
};

// Greedy decode of `steps` tokens after a prompt.
Decoded Decode(const Model& model, Isa isa, FfnActivation act, int steps) {
  Engine engine(model, {.threads = 2, .isa = std::string(IsaName(isa))});
  SessionOptions options;
  options.activation.kind = act;
  options.activation.seed = 7;
  Session session(engine, options);
  Decoded out;
  std::vector<int> tokens = {1, 17, 30, 42, 5};
  for (int step = 0; step < steps; ++step) {
    const auto logits = session.Forward(tokens);
    out.logits.emplace_back(logits.begin(), logits.end());
    tokens = {static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin())};
  }
  out.ffn = session.ffn_total();
  out.neuron_io = engine.neuron_io();
  return out;
}

class NeuronCacheDecodeTest : public ::testing::TestWithParam<std::tuple<Isa, DecodeCase>> {};

TEST_P(NeuronCacheDecodeTest, DecodesBitForBitAsInMemoryWithACacheOfOneLayer) {
  const auto& [isa, c] = GetParam();
  if (KernelsFor(isa) == nullptr) GTEST_SKIP() << "this CPU cannot run " << IsaName(isa);
  TempDir dir;
  const std::string path = WithNeuronFile(dir, ConvertedModel(c.model), "m.zsk");
  const auto in_memory = Model::Load(path, {.mem_budget = std::filesystem::file_size(path)});
  const uint64_t bundle = ReadNeuronLayout(path).stride;
  const auto offloaded =
      Model::Load(path, {.mem_budget = LeastBudget(path) + c.cache_slots * bundle,
                         .direct_io = c.direct_io,
                         .io_uring = c.io_uring,
                         .always_offload = true});
  ASSERT_TRUE(offloaded->memory().offloaded);
  ASSERT_EQ(offloaded->memory().cache_slots,
            static_cast<uint64_t>(offloaded->config().ffn) + c.cache_slots);
  constexpr int kSteps = 40;
  const Decoded want = Decode(*in_memory, isa, c.act, kSteps);
  const Decoded got = Decode(*offloaded, isa, c.act, kSteps);
  for (int step = 0; step < kSteps; ++step) {
    ASSERT_EQ(std::memcmp(got.logits[step].data(), want.logits[step].data(),
                          want.logits[step].size() * sizeof(float)),
              0)
        << "step " << step;
  }
  EXPECT_EQ(want.ffn.neuron_fetches, 0u);
  EXPECT_GT(got.ffn.neuron_reads, 0u);
  // The prompt warms the cache, the pool beyond its scratch of a quarter of a layer's neurons (and
  // these decodes then use what it copied: the logits above).
  EXPECT_GT(got.ffn.neuron_warmed, 0u);
  EXPECT_LE(got.ffn.neuron_warmed, offloaded->memory().cache_slots - offloaded->config().ffn / 4);
  if (c.evicts) {
    // More bundles were read than the pool holds: slots were taken back and filled again.
    EXPECT_GT(got.ffn.neuron_reads, offloaded->memory().cache_slots);
  } else {
    EXPECT_LT(got.ffn.neuron_reads, got.ffn.neuron_fetches);  // the cache served some
  }
  EXPECT_EQ(got.neuron_io, std::string(c.io_uring ? "io_uring" : "pread") +
                               (c.direct_io ? ", O_DIRECT" : ", page cache"));
}

INSTANTIATE_TEST_SUITE_P(
    Models, NeuronCacheDecodeTest,
    ::testing::Combine(
        ::testing::ValuesIn(testing::AllIsaValues()),
        ::testing::Values(
            DecodeCase{"models/relu-ft@bf16+shadow", false},  // gate rows from the cache
            DecodeCase{"models/relu-ft@bf16", false},         // the gate resident
            DecodeCase{"models/relu-ft@bf16", true, FfnActivation::kStochastic},
            DecodeCase{"llama_gqa_hd64_relu_f32+shadow"},   // f32 rows, the shadow evicting
            DecodeCase{"llama_gqa_hd64_relu_f16_sharded"},  // f16 rows
            DecodeCase{"prosparse_gqa_hd56_fatrelu_f32"},   // FATReLU's threshold
            DecodeCase{"bamboo_gqa_drelu_f32"},             // dReLU: up, then down
            DecodeCase{"llama_gqa_hd64_relu_f32+shadow", true, FfnActivation::kModel, false, false},
            DecodeCase{"llama_gqa_hd64_relu_f32+shadow", true, FfnActivation::kModel, true, true,
                       64},
            DecodeCase{"models/relu-ft@bf16", true, FfnActivation::kStochastic, true, true, 500})));

}  // namespace
}  // namespace zeroskip
