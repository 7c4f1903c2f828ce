#include "model/matmul.h"

#include <omp.h>

#include <cstring>

#include "format/dtype.h"
#include "kernels/kernels.h"

namespace zeroskip {

DenseMatmul::DenseMatmul(int threads)
    : threads_(threads), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

void DenseMatmul::ReserveWiden(uint64_t elements) {
  if (widened_.size() < elements) widened_.resize(elements);
}

const float* DenseMatmul::AsF32(const WeightView& w) {
  if (w.dtype == DType::kF32) return static_cast<const float*>(w.data);
  ReserveWiden(static_cast<uint64_t>(w.rows * w.cols));
  ConvertMatrix(static_cast<const uint8_t*>(w.data), w.dtype, w.rows, w.cols, false,
                reinterpret_cast<uint8_t*>(widened_.data()), DType::kF32);
  return widened_.data();
}

void DenseMatmul::OneDnn(const void* w, dnnl::memory::data_type type, bool w_is_out_in, int64_t n,
                         int64_t in, int64_t out, const void* x, float* y) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::desc src_md({n, in}, type, tag::ab);
  // Weights are logically [in, out]; stored [out, in] that is the transposed ("ba") layout.
  const dnnl::memory::desc w_md({in, out}, type, w_is_out_in ? tag::ba : tag::ab);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  const auto key = std::make_tuple(n, in, out, w_is_out_in, static_cast<int>(type));
  auto it = primitives_.find(key);
  if (it == primitives_.end()) {
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_md, dst_md), engine_);
    it = primitives_.emplace(key, dnnl::matmul(pd)).first;
  }
  dnnl::memory src(src_md, engine_, const_cast<void*>(x));
  dnnl::memory wei(w_md, engine_, const_cast<void*>(w));
  dnnl::memory dst(dst_md, engine_, y);
  it->second.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  stream_.wait();
}

void DenseMatmul::OneDnnLinear(const WeightView& w, bool w_is_out_in, const float* x, int64_t n,
                               float* y) {
  const int64_t in = w_is_out_in ? w.cols : w.rows, out = w_is_out_in ? w.rows : w.cols;
  if (w.dtype != DType::kBF16) {
    OneDnn(AsF32(w), dnnl::memory::data_type::f32, w_is_out_in, n, in, out, x, y);
    return;
  }
  bf16_src_.resize(static_cast<size_t>(n * in));
  ConvertMatrix(reinterpret_cast<const uint8_t*>(x), DType::kF32, 1, n * in, false,
                reinterpret_cast<uint8_t*>(bf16_src_.data()), DType::kBF16);
  OneDnn(w.data, dnnl::memory::data_type::bf16, w_is_out_in, n, in, out, bf16_src_.data(), y);
}

void DenseMatmul::Linear(const WeightView& w, const float* x, int64_t n, float* y) {
  if (n > 1) {
    OneDnn(AsF32(w), dnnl::memory::data_type::f32, /*w_is_out_in=*/true, n, w.cols, w.rows, x, y);
    return;
  }
  const auto dot = Kernels().dot_rows[static_cast<int>(w.dtype)];
  const size_t elem = DTypeSize(w.dtype);
#pragma omp parallel num_threads(threads_)
  {
    const auto [begin, end] = ThreadSlice(w.rows, omp_get_thread_num(), omp_get_num_threads());
    dot(static_cast<const uint8_t*>(w.data) + begin * w.cols * elem, w.cols, nullptr, end - begin,
        w.cols, x, y + begin);
  }
}

void DenseMatmul::LinearTransposed(const WeightView& w, const float* x, int64_t n, float* y) {
  OneDnn(AsF32(w), dnnl::memory::data_type::f32, /*w_is_out_in=*/false, n, w.rows, w.cols, x, y);
}

}  // namespace zeroskip
