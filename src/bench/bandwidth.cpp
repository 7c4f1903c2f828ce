#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "model/matmul.h"
#include "zeroskip/bench.h"

namespace zeroskip {
namespace {

// The probe's inner loop, compiled once per ISA and picked at load time (ifunc), so it reads
// with the widest vectors the CPU has, like the kernels it is the yardstick for.
__attribute__((target_clones("avx512f", "avx2", "default"))) float SumRange(const float* p,
                                                                           int64_t n) {
  // Sixteen independent sums: the loop is bound by loads, not by add latency.
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) acc[k] += p[i + k];
  }
  for (; i < n; ++i) acc[0] += p[i];
  float total = 0;
  for (float a : acc) total += a;
  return total;
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

double MeasureReadBandwidth(int threads, uint64_t bytes, int repeats) {
  const size_t n = bytes / sizeof(float);
  std::unique_ptr<float[]> data(new float[n]);
  // First touch by the threads that will read it, as the model weights are touched by mmap.
#pragma omp parallel num_threads(threads)
  {
    const auto [b, e] = ThreadSlice(static_cast<int64_t>(n), omp_get_thread_num(), omp_get_num_threads());
    for (int64_t i = b; i < e; ++i) data[i] = 1.0f;
  }
  std::vector<double> gb_s;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const auto [b, e] = ThreadSlice(static_cast<int64_t>(n), omp_get_thread_num(),
                                      omp_get_num_threads(), 16);
      total += SumRange(data.get() + b, e - b);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    gb_s.push_back(bytes / s / 1e9);
  }
  return Median(gb_s);
}

}  // namespace zeroskip
