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

void DenseMatmul::OneDnn(const float* w, bool w_is_out_in, int64_t n, int64_t in, int64_t out,
                         const float* x, float* y) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::desc src_md({n, in}, dt::f32, tag::ab);
  // Weights are logically [in, out]; stored [out, in] that is the transposed ("ba") layout.
  const dnnl::memory::desc w_md({in, out}, dt::f32, w_is_out_in ? tag::ba : tag::ab);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  const auto key = std::make_tuple(n, in, out, w_is_out_in);
  auto it = primitives_.find(key);
  if (it == primitives_.end()) {
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, w_md, dst_md), engine_);
    it = primitives_.emplace(key, dnnl::matmul(pd)).first;
  }
  dnnl::memory src(src_md, engine_, const_cast<float*>(x));
  dnnl::memory wei(w_md, engine_, const_cast<float*>(w));
  dnnl::memory dst(dst_md, engine_, y);
  it->second.execute(stream_, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  stream_.wait();
}

void DenseMatmul::Linear(const WeightView& w, const float* x, int64_t n, float* y) {
  if (n > 1) {
    OneDnn(AsF32(w), /*w_is_out_in=*/true, n, w.cols, w.rows, x, y);
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
  OneDnn(AsF32(w), /*w_is_out_in=*/false, n, w.rows, w.cols, x, y);
}

}  // namespace zeroskip
