#include "model/matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "format/dtype.h"
#include "kernels/kernels.h"

namespace zeroskip {

DenseMatmul::DenseMatmul(const KernelTable& kernels, int threads)
    : kernels_(kernels),
      threads_(threads),
      pool_(threads),
      engine_(dnnl::engine::kind::cpu, 0),
      stream_(engine_) {}

void DenseMatmul::ReserveWiden(uint64_t elements) {
  if (widened_.size() < elements) widened_.resize(elements);
}

void DenseMatmul::ReserveBf16Inputs(uint64_t elements) {
  if (bf16_inputs_.size() < elements) bf16_inputs_.resize(elements);
}

void DenseMatmul::ReserveQuantInputs(uint64_t elements) {
  if (quant_levels_.size() < elements) {
    quant_levels_.resize(elements);
    quant_scales_.resize(elements / kQuantBlock);
  }
}

const std::string& DenseMatmul::OneDnnBf16Impl() {
  // A property of the CPU and the oneDNN build: asked once, for a prefill-like shape.
  static const std::string impl = [] {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    try {
      const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
      const dnnl::memory::desc src({64, 512}, dt::bf16, tag::ab);
      const dnnl::memory::desc w({512, 512}, dt::bf16, tag::ba);
      const dnnl::memory::desc dst({64, 512}, dt::f32, tag::ab);
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, w, dst), engine);
      const std::string name = pd.impl_info_str();
      return name.find("ref") == std::string::npos ? name : std::string();
    } catch (const dnnl::error&) {
      return std::string();  // no bf16 matmul at all on this CPU
    }
  }();
  return impl;
}

bool DenseMatmul::Bf16Batches(const KernelTable& kernels, DType dtype) {
  return dtype == DType::kBF16 && kernels.bf16_products && !OneDnnBf16Impl().empty();
}

const float* DenseMatmul::AsF32(const WeightView& w) {
  if (w.dtype == DType::kF32) return static_cast<const float*>(w.data);
  ReserveWiden(static_cast<uint64_t>(w.rows * w.cols));
  // Split by rows over the threads: on one thread this pass alone cost most of a long prefill.
  const uint64_t row_bytes = DTypeBytes(w.dtype, w.cols);
  pool_.Run(threads_, [&](int64_t chunk, int) {
    const auto [begin, end] = ThreadSlice(w.rows, static_cast<int>(chunk), threads_);
    ConvertMatrix(static_cast<const uint8_t*>(w.data) + begin * row_bytes, w.dtype, end - begin,
                  w.cols, false, reinterpret_cast<uint8_t*>(widened_.data() + begin * w.cols),
                  DType::kF32);
  });
  return widened_.data();
}

const uint16_t* DenseMatmul::AsBf16(const float* x, int64_t n, int64_t in) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  ReserveBf16Inputs(static_cast<uint64_t>(n * in));
  const dnnl::memory::desc from({n, in}, dt::f32, tag::ab), to({n, in}, dt::bf16, tag::ab);
  auto it = to_bf16_.find({n, in});
  if (it == to_bf16_.end()) {
    // oneDNN rounds to nearest even, as the bf16_products kernels do.
    it = to_bf16_.emplace(std::pair{n, in}, dnnl::reorder(dnnl::reorder::primitive_desc(
                                                engine_, from, engine_, to))).first;
  }
  dnnl::memory src(from, engine_, const_cast<float*>(x));
  dnnl::memory dst(to, engine_, bf16_inputs_.data());
  it->second.execute(stream_, src, dst);
  stream_.wait();
  return bf16_inputs_.data();
}

void DenseMatmul::OneDnn(const void* w, bool bf16, bool w_is_out_in, int64_t n, int64_t in,
                         int64_t out, const float* x, float* y) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  // oneDNN's OpenMP runtime takes its thread count from the calling thread's OpenMP setting (a
  // per-thread value, so other engines on other threads are untouched), and fixes it when a
  // primitive is created: set it before that, and give the caller its own setting back.
  const int callers_threads = omp_get_max_threads();
  omp_set_num_threads(threads_);
  pool_.Park();
  const dt wt = bf16 ? dt::bf16 : dt::f32;  // weights and activations
  const void* src_data = bf16 ? static_cast<const void*>(AsBf16(x, n, in)) : x;
  const dnnl::memory::desc src_md({n, in}, wt, tag::ab);
  // Weights are logically [in, out]; stored [out, in] that is the transposed ("ba") layout.
  const dnnl::memory::desc w_md({in, out}, wt, w_is_out_in ? tag::ba : tag::ab);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  const auto key = std::make_tuple(n, in, out, w_is_out_in, bf16);
  auto it = primitives_.find(key);
  if (it == primitives_.end()) {
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_md, dst_md), engine_);
    it = primitives_.emplace(key, dnnl::matmul(pd)).first;
  }
  dnnl::memory src(src_md, engine_, const_cast<void*>(src_data));
  dnnl::memory wei(w_md, engine_, const_cast<void*>(w));
  dnnl::memory dst(dst_md, engine_, y);
  it->second.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  stream_.wait();
  omp_set_num_threads(callers_threads);
}

int64_t DenseMatmul::small_batch_env_ = [] {
  const char* env = std::getenv("ZEROSKIP_SMALL_BATCH");  // for measuring the crossover
  return env ? std::max(1L, std::atol(env)) : 0L;
}();

int64_t DenseMatmul::SmallBatch(const WeightView& w) const {
  if (small_batch_env_ > 0) return small_batch_env_;
  if (w.dtype == DType::kF32) return kSmallBatchF32;
  return Bf16Batches(kernels_, w.dtype) ? kSmallBatchBf16 : kSmallBatch;
}

namespace {

// Rows per cache block: a block is read from memory once and then from cache by every token.
int64_t BlockRows(int64_t row_bytes) { return std::max<int64_t>(1, kCacheBlockBytes / row_bytes); }

}  // namespace

void DenseMatmul::QuantLinear(const WeightView& w, const float* x, int64_t n, float* y) {
  const int64_t blocks = w.cols / static_cast<int64_t>(kQuantBlock);
  ReserveQuantInputs(static_cast<uint64_t>(n * w.cols));
  int8_t* q = quant_levels_.data();
  float* d = quant_scales_.data();
  const auto matmul = kernels_.ops(w.dtype).quant_matmul;
  pool_.Run(threads_, [&](int64_t chunk, int) {
    const auto [t0, t1] = ThreadSlice(n, static_cast<int>(chunk), threads_);
    for (int64_t i = t0; i < t1; ++i) {
      kernels_.quantize_activations(x + i * w.cols, blocks, q + i * w.cols, d + i * blocks);
    }
  });
  pool_.Run(threads_, [&](int64_t chunk, int) {
    const auto [r0, r1] = ThreadSlice(w.rows, static_cast<int>(chunk), threads_);
    if (r1 > r0) {
      matmul({static_cast<const uint8_t*>(w.data) + DTypeBytes(w.dtype, r0 * w.cols), w.cols},
             r1 - r0, w.cols, q, d, n, y + r0, w.rows);
    }
  });
}

bool DenseMatmul::RunsAsGemv(const WeightView& w, int64_t n) const {
  if (!IsQuantized(w.dtype)) return n <= SmallBatch(w);
  if (small_batch_env_ > 0) return n <= small_batch_env_;
  return n <= (w.dtype == DType::kQ4 ? kSmallBatchQ4 : kSmallBatchQ8);
}

void DenseMatmul::GemvSlice(const WeightView& w, const float* x, int64_t n, float* y,
                            int chunk) const {
  const auto dot = kernels_.ops(w.dtype).dot_rows;
  const auto row_bytes = static_cast<int64_t>(DTypeBytes(w.dtype, w.cols));
  const auto [begin, end] = ThreadSlice(w.rows, chunk, threads_);
  // One token reads each row once whatever the blocking: one call over the whole slice, so a
  // quantized type prepares (quantizes) x once per thread, not once per block.
  const int64_t block = n == 1 ? std::max<int64_t>(1, end - begin) : BlockRows(row_bytes);
  for (int64_t r0 = begin; r0 < end; r0 += block) {
    const int64_t r1 = std::min(end, r0 + block);
    const auto* rows = static_cast<const uint8_t*>(w.data) + r0 * row_bytes;
    for (int64_t t = 0; t < n; ++t) {
      dot({rows, w.cols}, nullptr, r1 - r0, w.cols, x + t * w.cols, y + t * w.rows + r0);
    }
  }
}

void DenseMatmul::Linear(const WeightView& w, const float* x, int64_t n, float* y) {
  if (RunsAsGemv(w, n)) {
    // Decode and short prompts: the decode kernel on each block of rows for every token, so the
    // weights stream once in their stored type (no widening, no oneDNN repacking) and each
    // token's outputs are bit-identical to running it alone.
    pool_.Run(threads_,
              [&](int64_t chunk, int) { GemvSlice(w, x, n, y, static_cast<int>(chunk)); });
  } else if (IsQuantized(w.dtype)) {
    QuantLinear(w, x, n, y);
  } else if (Bf16Batches(kernels_, w.dtype)) {
    OneDnn(w.data, /*bf16=*/true, /*w_is_out_in=*/true, n, w.cols, w.rows, x, y);
  } else {
    OneDnn(AsF32(w), /*bf16=*/false, /*w_is_out_in=*/true, n, w.cols, w.rows, x, y);
  }
}

void DenseMatmul::LinearSameInput(std::span<const WeightView* const> ws, const float* x,
                                  int64_t n, std::span<float* const> ys) {
  const bool gemvs =
      std::all_of(ws.begin(), ws.end(), [&](const WeightView* w) { return RunsAsGemv(*w, n); });
  if (!gemvs) {
    for (size_t i = 0; i < ws.size(); ++i) Linear(*ws[i], x, n, ys[i]);
    return;
  }
  // One phase: chunk c takes slice c of every matrix (the slices Linear would give it).
  pool_.Run(threads_, [&](int64_t chunk, int) {
    for (size_t i = 0; i < ws.size(); ++i) GemvSlice(*ws[i], x, n, ys[i], static_cast<int>(chunk));
  });
}

void DenseMatmul::LinearTransposed(const WeightView& w, const float* x, int64_t n, float* y) {
  if (n > SmallBatch(w)) {
    if (Bf16Batches(kernels_, w.dtype)) {
      OneDnn(w.data, /*bf16=*/true, /*w_is_out_in=*/false, n, w.rows, w.cols, x, y);
    } else {
      OneDnn(AsF32(w), /*bf16=*/false, /*w_is_out_in=*/false, n, w.rows, w.cols, x, y);
    }
    return;
  }
  // y[t] = sum_r x[t, r] * w[r, :]: threads own column slices of y (no reduction), and each
  // block of rows is read once for every token.
  const auto axpy = kernels_.ops(w.dtype).axpy_rows;
  const auto row_bytes = static_cast<int64_t>(DTypeBytes(w.dtype, w.cols));
  std::fill(y, y + n * w.cols, 0.0f);
  pool_.Run(threads_, [&](int64_t chunk, int) {
    // Column slices aligned to 16 floats (whole vectors, and no two threads share a cache line)
    // and to whole blocks of a quantized type.
    const auto align = static_cast<int64_t>(std::max<uint64_t>(16, DTypeBlockElements(w.dtype)));
    const auto [c0, c1] = ThreadSlice(w.cols, static_cast<int>(chunk), threads_, align);
    const int64_t block =
        BlockRows(std::max<int64_t>(1, static_cast<int64_t>(DTypeBytes(w.dtype, c1 - c0))));
    for (int64_t r0 = 0; r0 < w.rows && c0 < c1; r0 += block) {
      const int64_t r1 = std::min(w.rows, r0 + block);
      const auto* rows =
          static_cast<const uint8_t*>(w.data) + r0 * row_bytes + DTypeBytes(w.dtype, c0);
      for (int64_t t = 0; t < n; ++t) {
        axpy({rows, w.cols}, nullptr, x + t * w.rows + r0, r1 - r0, c1 - c0, y + t * w.cols + c0);
      }
    }
  });
}

}  // namespace zeroskip
