#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "bench/onednn_gemv.h"
#include "engine/workspace.h"
#include "zeroskip/bench.h"

namespace zeroskip {
namespace {

// The probe reads a row-major matrix the way the dense GEMV does: each thread takes a contiguous
// slice of rows and streams kRowsInFlight of them at once. One sequential stream per core leaves
// memory-level parallelism unused on some CPUs (a 2-core EPYC read 21-24 GB/s that way while the
// GEMV, with its four rows in flight, read 47 GB/s), so a probe with fewer streams than the
// kernels it judges measures the probe, not the memory.
constexpr int kRowsInFlight = 8;
// Row length of the probe matrix: a Llama-7B hidden size, like the FFN rows the kernels read.
constexpr int64_t kProbeCols = 4096;

// 16 floats: one zmm with AVX-512, two ymm with AVX2, four xmm otherwise.
typedef float Vec16 __attribute__((vector_size(64)));

// Sum of rows [0, rows) of a [rows, ld] matrix, kRowsInFlight rows at a time, each with its own
// vector accumulator (the loop is bound by loads, not by add latency; the sum is returned so
// nothing can be optimised away). Compiled once per ISA and picked at load time (ifunc), so it
// reads with the widest vectors the CPU has, like the kernels it is the yardstick for.
// `cols` is a multiple of 16.
__attribute__((target_clones("avx512f", "avx2", "default"))) float SumRows(const float* m,
                                                                           int64_t ld, int64_t rows,
                                                                           int64_t cols) {
  Vec16 acc[kRowsInFlight] = {};
  int64_t r = 0;
  for (; r + kRowsInFlight <= rows; r += kRowsInFlight) {
    const float* block = m + r * ld;
    for (int64_t c = 0; c < cols; c += 16) {
      for (int j = 0; j < kRowsInFlight; ++j) {
        Vec16 v;
        std::memcpy(&v, block + j * ld + c, sizeof v);
        acc[j] += v;
      }
    }
  }
  for (; r < rows; ++r) {
    for (int64_t c = 0; c < cols; c += 16) {
      Vec16 v;
      std::memcpy(&v, m + r * ld + c, sizeof v);
      acc[0] += v;
    }
  }
  float total = 0;
  for (const Vec16& a : acc) {
    for (int k = 0; k < 16; ++k) total += a[k];
  }
  return total;
}

double GbPerSecond(uint64_t bytes, std::chrono::steady_clock::time_point t0) {
  return bytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9;
}

}  // namespace

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

uint64_t LastLevelCacheBytes() {
  for (int index = 3; index >= 2; --index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string size;
    if (in >> size && !size.empty()) {
      uint64_t n = std::stoull(size);
      if (size.back() == 'K') n <<= 10;
      if (size.back() == 'M') n <<= 20;
      return n;
    }
  }
  const long n = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return n > 0 ? static_cast<uint64_t>(n) : 0;
}

BandwidthMeasurement MeasureBandwidth(int threads, uint64_t bytes, int repeats, bool with_gemv,
                                      const std::string& isa) {
  BandwidthMeasurement out;
  out.cols = kProbeCols;
  out.rows_in_flight = kRowsInFlight;
  out.rows = std::max<int64_t>(1, static_cast<int64_t>(bytes / (kProbeCols * sizeof(float))));
  out.bytes = static_cast<uint64_t>(out.rows * out.cols) * sizeof(float);
  const int64_t rows = out.rows, cols = out.cols;
  std::unique_ptr<float[]> data(new float[rows * cols]);
  // First touch by the threads that will read it, as the model weights are touched by mmap.
#pragma omp parallel num_threads(threads)
  {
    const auto [b, e] = ThreadSlice(rows, omp_get_thread_num(), omp_get_num_threads());
    for (int64_t i = b * cols; i < e * cols; ++i) data[i] = 1.0f;
  }
  std::vector<float> x(cols, 1.0f), y(rows);
  volatile float sink = 0;  // the sums, so no pass can be optimised away
  DenseMatmul gemv(ChooseKernels(isa), threads);
  const WeightView matrix{.data = data.get(), .rows = rows, .cols = cols};
  // oneDNN reads its own packed copy (same size), prepared once as in `bench ffn`.
  std::unique_ptr<OneDnnGemv> onednn;
  dnnl::memory packed;
  if (with_gemv) {
    omp_set_num_threads(threads);  // oneDNN follows OpenMP's thread count
    onednn = std::make_unique<OneDnnGemv>(cols, rows, DType::kF32);
    packed = onednn->Prepare(matrix, /*out_in=*/true);
  }

  // One probe pass. Rows in flight: each thread's slice as kRowsInFlight row streams. Sequential:
  // the same slice as one stream (some CPUs, this EPYC among them, prefetch one stream at least as
  // well as eight); the probe reports the better of the two.
  auto probe_pass = [&](bool rows_in_flight) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      // Slices aligned to whole row blocks, as the GEMV splits rows.
      const auto [b, e] =
          ThreadSlice(rows, omp_get_thread_num(), omp_get_num_threads(), kRowsInFlight);
      const float* slice = data.get() + b * cols;
      total +=
          rows_in_flight ? SumRows(slice, cols, e - b, cols) : SumRows(slice, 0, 1, (e - b) * cols);
    }
    const double gb_s = GbPerSecond(out.bytes, t0);
    sink = sink + total;
    return gb_s;
  };

  std::vector<double> rows_gb_s, sequential_gb_s, gemv_gb_s, onednn_gb_s;
  for (int r = 0; r < repeats; ++r) {
    // Interleaved, so all see the same machine state; each pass evicts the others' lines.
    rows_gb_s.push_back(probe_pass(true));
    sequential_gb_s.push_back(probe_pass(false));
    if (with_gemv) {
      auto t0 = std::chrono::steady_clock::now();
      gemv.Linear(matrix, x.data(), 1, y.data());
      gemv_gb_s.push_back(GbPerSecond(out.bytes, t0));
      sink = sink + y[rows - 1];
      t0 = std::chrono::steady_clock::now();
      onednn->Run(packed, x.data(), y.data());
      onednn_gb_s.push_back(GbPerSecond(out.bytes, t0));
      sink = sink + y[rows - 1];
    }
  }
  out.rows_in_flight_gb_s = Median(rows_gb_s);
  out.sequential_gb_s = Median(sequential_gb_s);
  out.probe_gb_s = std::max(out.rows_in_flight_gb_s, out.sequential_gb_s);
  out.gemv_gb_s = Median(gemv_gb_s);
  out.onednn_gemv_gb_s = Median(onednn_gb_s);
  return out;
}

double MeasureReadBandwidth(int threads, uint64_t bytes, int repeats) {
  return MeasureBandwidth(threads, bytes, repeats, /*with_gemv=*/false).probe_gb_s;
}

}  // namespace zeroskip
