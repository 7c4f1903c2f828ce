#include "zeroskip/engine.h"

#include <sched.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <set>
#include <thread>

#include "engine/workspace.h"
#include "format/file_io.h"
#include "zeroskip/error.h"

namespace zeroskip {

int PhysicalCores() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, physical = "0";
  while (std::getline(cpuinfo, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (line.rfind("physical id", 0) == 0) physical = value;
    if (line.rfind("core id", 0) == 0) cores.emplace(physical, value);
  }
  int n = cores.empty() ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))
                        : static_cast<int>(cores.size());
  // Never more than the CPUs this process may run on (taskset, containers).
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) n = std::min(n, CPU_COUNT(&allowed));
  return std::max(1, n);
}

uint64_t PhysicalMemoryBytes() {
  return static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
         static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

uint64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) return std::stoull(line.substr(13)) * 1024;  // kB
  }
  return PhysicalMemoryBytes();
}

namespace {

// The first line of a small file, or "" if it cannot be read.
std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// This process's memory cgroup limit in bytes, or 0 where none is set or none can be read.
uint64_t CgroupMemoryLimit() {
  std::ifstream cgroups("/proc/self/cgroup");
  std::string line;
  uint64_t limit = 0;
  const auto consider = [&](const std::string& file) {
    const std::string text = FirstLine(file);
    if (text.empty() || text == "max") return;
    uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    // cgroup v1 says "no limit" with a page-rounded 2^63 - 1.
    if (ec == std::errc() && value > 0 && value < (uint64_t{1} << 62)) {
      limit = limit == 0 ? value : std::min(limit, value);
    }
  };
  while (std::getline(cgroups, line)) {
    // "0::/path" (v2) or "N:memory:/path" (v1; the controller list may name several).
    const auto first = line.find(':'), second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string group = line.substr(second + 1);
    if (controllers.empty()) {
      consider("/sys/fs/cgroup" + group + "/memory.max");
    } else if (("," + controllers + ",").find(",memory,") != std::string::npos) {
      consider("/sys/fs/cgroup/memory" + group + "/memory.limit_in_bytes");
    }
  }
  return limit;
}

}  // namespace

uint64_t ProcessMemoryLimitBytes() {
  const uint64_t available = AvailableMemoryBytes(), cgroup = CgroupMemoryLimit();
  return cgroup > 0 ? std::min(available, cgroup) : available;
}

std::vector<std::string_view> IsaNames() {
  std::vector<std::string_view> names;
  for (const IsaInfo& info : AllIsas()) names.push_back(info.name);
  return names;
}

bool IsaSupported(std::string_view name) {
  Isa isa;
  return ParseIsaName(name, &isa) && KernelsFor(isa) != nullptr;
}

std::string_view BestIsaName() { return IsaName(BestIsa()); }

std::string CpuFeatures() {
  std::string text;
  __builtin_cpu_init();
#define ZEROSKIP_FEATURE(name) \
  if (__builtin_cpu_supports(name)) text += text.empty() ? name : " " name;
  ZEROSKIP_FEATURE("avx2")
  ZEROSKIP_FEATURE("fma")
  ZEROSKIP_FEATURE("avx512f")
  ZEROSKIP_FEATURE("avx512bw")
  ZEROSKIP_FEATURE("avx512dq")
  ZEROSKIP_FEATURE("avx512vl")
  ZEROSKIP_FEATURE("avx512vnni")
  ZEROSKIP_FEATURE("avx512bf16")
  ZEROSKIP_FEATURE("avxvnni")
#undef ZEROSKIP_FEATURE
  return text;
}

Workspace::Workspace(const ModelConfig& c, const KernelTable& kernels_in, int threads,
                     int64_t max_batch)
    : kernels(kernels_in),
      matmul(kernels_in, threads),
      ffn(c, kernels_in, matmul, threads, max_batch) {
  const auto b = static_cast<size_t>(max_batch);
  x.resize(b * c.hidden);
  xn.resize(b * c.hidden);
  q.resize(b * c.q_dim());
  k.resize(b * c.kv_dim());
  v.resize(b * c.kv_dim());
  att.resize(b * c.q_dim());
  proj.resize(b * c.hidden);
  logits.resize(b * c.vocab);
}

uint64_t Workspace::Bytes(const ModelConfig& c, int threads, int64_t max_batch,
                          const std::string& path) {
  auto mul = [&](uint64_t a, uint64_t b) { return CheckedMul(a, b, path, "engine size"); };
  const uint64_t per_token = c.vocab + 2 * c.ffn + 4 * c.hidden + 2 * c.q_dim() + 2 * c.kv_dim();
  const uint64_t floats = mul(max_batch, per_token) + mul(threads, c.hidden) + 4 * c.ffn;
  return mul(floats, sizeof(float));
}

namespace {

// Buffers of long batches (DenseMatmul), in elements: one f32 copy of the largest matrix that
// is widened (bf16/f16 unless oneDNN's bf16 matmul takes it as stored), and one bf16 copy of a
// batch's activations for the widest input of the matrices it takes.
struct BatchBuffers {
  uint64_t widened = 0;
  uint64_t bf16_inputs = 0;
  uint64_t quant_inputs = 0;
};

BatchBuffers LongBatchBuffers(const Model& model, const KernelTable& kernels, int64_t max_batch) {
  BatchBuffers need;
  auto add = [&](const WeightView& w, bool transposed) {
    if (w.dtype == DType::kF32) return;
    const uint64_t in = static_cast<uint64_t>(transposed ? w.rows : w.cols);
    if (DenseMatmul::Bf16Batches(kernels, w.dtype)) {
      need.bf16_inputs = std::max<uint64_t>(need.bf16_inputs, max_batch * in);
    } else if (IsQuantized(w.dtype) && !transposed) {
      need.quant_inputs = std::max<uint64_t>(need.quant_inputs, max_batch * in);
    } else {
      need.widened = std::max<uint64_t>(need.widened, w.rows * w.cols);
    }
  };
  add(model.lm_head(), false);
  // OPT's projections (absent ones are empty f32 views, which need nothing).
  add(model.project_in(), false);
  add(model.project_out(), false);
  for (int64_t l = 0; l < model.config().layers; ++l) {
    const LayerWeights& w = model.layer(l);
    for (const WeightView* v : {&w.q, &w.k, &w.v, &w.o, &w.ffn.gate, &w.ffn.up}) add(*v, false);
    add(w.ffn.down_t, true);
  }
  return need;
}

}  // namespace

const KernelTable& ChooseKernels(const std::string& name) {
  if (name.empty()) return *KernelsFor(BestIsa());
  Isa isa;
  if (!ParseIsaName(name, &isa)) throw Error("", "unknown ISA '" + name + "'");
  const KernelTable* table = KernelsFor(isa);
  if (table == nullptr) throw Error("", "this CPU cannot run the " + name + " kernels");
  return *table;
}

Engine::Engine(const Model& model, const EngineOptions& options)
    : model_(model),
      threads_(options.threads > 0 ? options.threads : PhysicalCores()),
      max_batch_(std::max<int64_t>(1, std::min(options.max_batch, model.config().context))) {
  const KernelTable& kernels = ChooseKernels(options.isa);
  const ModelConfig& c = model.config();
  const std::string& path = model.file().path();
  // Sized from the (untrusted) file: add it up with overflow checks and refuse what this machine
  // cannot hold, instead of dying in the allocator.
  const BatchBuffers batch =
      max_batch_ > 1 ? LongBatchBuffers(model, kernels, max_batch_) : BatchBuffers{};
  const uint64_t bytes = Workspace::Bytes(c, threads_, max_batch_, path) +
                         batch.widened * sizeof(float) + batch.bf16_inputs * sizeof(uint16_t) +
                         batch.quant_inputs + batch.quant_inputs / kQuantBlock * sizeof(float);
  const auto too_big = [&] {
    return Error(path, "a batch of " + std::to_string(max_batch_) + " tokens needs " +
                           std::to_string((bytes + (1u << 20) - 1) >> 20) +
                           " MiB of buffers, more than this machine has free");
  };
  if (bytes > AvailableMemoryBytes()) throw too_big();
  try {
    workspace_ = std::make_unique<Workspace>(c, kernels, threads_, max_batch_);
    workspace_->matmul.ReserveWiden(batch.widened);
    workspace_->matmul.ReserveBf16Inputs(batch.bf16_inputs);
    workspace_->matmul.ReserveQuantInputs(batch.quant_inputs);
    if (const MemoryPlan& m = model.memory(); m.offloaded) {
      const uint64_t taken = m.resident_bytes + m.cache_slots * m.bundle_bytes + bytes;
      session_memory_left_ = m.limit > taken ? m.limit - taken : 0;
      workspace_->neurons =
          std::make_unique<NeuronCache>(*model.neuron_layout(), m.neuron_file, model.neuron_fd(),
                                        m.cache_slots, m.direct_io, m.io_uring);
      workspace_->ffn.UseNeuronCache(workspace_->neurons.get());
    }
  } catch (const std::bad_alloc&) {
    throw too_big();  // the estimate above missed: still name the file and the cause
  }
}

Engine::~Engine() = default;

bool Engine::TakeSessionMemory(uint64_t bytes) {
  uint64_t left = session_memory_left_.load();
  do {
    if (bytes > left) return false;
  } while (!session_memory_left_.compare_exchange_weak(left, left - bytes));
  return true;
}

void Engine::ReturnSessionMemory(uint64_t bytes) { session_memory_left_ += bytes; }

std::string_view Engine::isa() const { return IsaName(workspace_->kernels.isa); }

std::string Engine::neuron_io() const {
  return workspace_->neurons ? workspace_->neurons->io_description() : "";
}

}  // namespace zeroskip
