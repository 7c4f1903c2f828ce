// Benchmarks that back the performance claims: a memory read-bandwidth probe, and one decode FFN
// step at a controlled ReLU sparsity, sparse runtime against the oneDNN dense baseline, both in
// the same run. Timings are medians; nothing here asserts anything about time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "zeroskip/format.h"

namespace zeroskip {

// The read-bandwidth probe: a [rows, 4096] f32 matrix of about `bytes` (far beyond the last-level
// cache), each thread summing its slice of rows with the widest vectors the CPU has, both eight
// rows at a time (the load pattern of the dense GEMV, with more streams in flight) and as one
// sequential stream; the probe is the better median of the two. With `with_gemv`,
// the dense f32 GEMVs also run over a matrix of that size, interleaved pass by pass, as a check
// (a probe slower than a GEMV is measuring itself): zeroskip's (DenseMatmul::Linear, one token)
// on the same memory, and oneDNN's on its packed copy.
struct BandwidthMeasurement {
  int64_t rows = 0, cols = 0;
  int rows_in_flight = 0;          // per thread, in the probe
  uint64_t bytes = 0;              // rows * cols * 4, read per pass
  double probe_gb_s = 0;           // max of the two medians below
  double rows_in_flight_gb_s = 0;  // median over the passes, rows_in_flight rows per thread
  double sequential_gb_s = 0;      // median over the passes, one stream per thread
  double gemv_gb_s = 0;            // zeroskip's GEMV, median over the passes; 0 without with_gemv
  double onednn_gemv_gb_s = 0;     // oneDNN's GEMV, likewise
};
// `isa` picks zeroskip's GEMV kernels ("": the best this CPU runs).
BandwidthMeasurement MeasureBandwidth(int threads, uint64_t bytes = uint64_t{1} << 30,
                                      int repeats = 7, bool with_gemv = true,
                                      const std::string& isa = "");

// The probe's median GB/s alone (MeasureBandwidth without the GEMV).
double MeasureReadBandwidth(int threads, uint64_t bytes = uint64_t{1} << 30, int repeats = 7);

// The median of a sample (the middle element; upper middle for an even count).
double Median(std::vector<double> values);

// Size of the last-level cache in bytes (0 if unknown).
uint64_t LastLevelCacheBytes();

struct FfnBenchOptions {
  int64_t hidden = 4096;
  int64_t ffn = 11008;
  std::vector<double> sparsity = {0, 0.5, 0.8, 0.9, 0.95, 0.99};
  DType dtype = DType::kF32;
  int threads = 2;
  std::string isa;  // "": the best this CPU runs
  int steps = 40;  // timed steps per sparsity (after warm-up)
  uint64_t seed = 1;
  bool shadow_gate = false;  // also time the sparse step with the shadow gate (--gate shadow)
};

struct FfnBenchResult {
  double sparsity = 0;       // requested
  double zero_fraction = 0;  // measured by the runtime over the timed steps
  std::string dtype;
  int threads = 0;
  int layers = 0;           // distinct layers cycled through (working set > last-level cache)
  double dense_ms = 0;      // oneDNN dense step, median
  double sparse_ms = 0;     // zeroskip sparse step, median
  double own_dense_ms = 0;  // zeroskip's dense path, median
  double shadow_ms = 0;     // zeroskip sparse step with the shadow gate, median (shadow_gate)
  double certified_fraction = 0;  // of the zeros, certified by the shadow
  double speedup = 0;       // dense_ms / sparse_ms
  double shadow_speedup = 0;  // dense_ms / shadow_ms
  double dense_gflop = 0;
  double sparse_gflop = 0;
  double dense_gb_s = 0;  // weight bytes of the dense step / dense time
  double gb_s = 0;        // weight bytes the sparse step read / sparse time
};

std::vector<FfnBenchResult> RunFfnBench(const FfnBenchOptions& options,
                                        const std::function<void(const std::string&)>& log = {});

}  // namespace zeroskip
