// The shared half of inference: one loaded model, the kernels chosen for this CPU, the thread
// count, dense-matmul primitives and the scratch a forward pass works in, all sized once.
//
// Sessions (one per sequence: a KV cache and a position) run their forward passes through an
// Engine, so N sessions cost N KV caches, not N copies of this. An Engine runs one forward pass
// at a time (sessions take its lock), so sessions may be driven from different threads. It
// holds no process-wide state: two Engines with different ISAs or thread counts can coexist.
// It does not tokenize, sample or keep any sequence's state.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "zeroskip/model.h"

namespace zeroskip {

struct EngineOptions {
  int threads = 0;          // 0: physical cores
  std::string isa{};        // "": the best this CPU runs; else one of IsaNames()
  int64_t max_batch = 256;  // longest batch one pass runs (longer inputs are chunked)
};

struct Workspace;  // the engine's compute state (src/engine/workspace.h)

class Engine {
 public:
  // Throws Error if the ISA is unknown or the CPU cannot run it, or the scratch does not fit
  // in the memory this machine has free. `model` must outlive the Engine.
  Engine(const Model& model, const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Model& model() const { return model_; }
  int threads() const { return threads_; }
  int64_t max_batch() const { return max_batch_; }
  std::string_view isa() const;  // the kernels in use, e.g. "avx512"
  // How FFN rows are read from the model's neuron file ("io_uring, O_DIRECT"); "" when the
  // model is all in memory.
  std::string neuron_io() const;

  Workspace& workspace() { return *workspace_; }  // for sessions and architectures

  // With a model larger than its memory budget: the bytes its sessions may still take (the
  // process's memory limit less the resident weights, the neuron cache and this engine's
  // scratch): past that, KV caches filling up would push the weights out of memory. Otherwise
  // no limit here (it starts at UINT64_MAX): sessions are checked against the machine's free
  // memory.
  uint64_t session_memory_left() const { return session_memory_left_.load(); }
  // A session's: takes `bytes` of session_memory_left if that many are left (false if not), and
  // gives them back.
  bool TakeSessionMemory(uint64_t bytes);
  void ReturnSessionMemory(uint64_t bytes);

 private:
  const Model& model_;
  int threads_;
  int64_t max_batch_;
  std::unique_ptr<Workspace> workspace_;
  std::atomic<uint64_t> session_memory_left_{UINT64_MAX};
};

// Every ISA compiled into this build, from the most portable to the fastest.
std::vector<std::string_view> IsaNames();
// Whether this CPU can run `name` (false for an unknown name).
bool IsaSupported(std::string_view name);
// The fastest ISA this CPU runs: what an Engine uses by default.
std::string_view BestIsaName();
// The CPU features the kernels look for that this CPU has, e.g. "avx2 fma f16c avx512f ...".
std::string CpuFeatures();

// Physical cores of this machine (OpenMP's default counts hyperthreads).
int PhysicalCores();
// Physical memory of this machine in bytes.
uint64_t PhysicalMemoryBytes();
// What can be allocated without swapping or the OOM killer: MemAvailable, else all of RAM.
uint64_t AvailableMemoryBytes();
// What this process may use: AvailableMemoryBytes, or less where its memory cgroup (v1 or v2)
// sets a lower limit.
uint64_t ProcessMemoryLimitBytes();

}  // namespace zeroskip
