#include "bench/onednn_gemv.h"

#include "format/dtype.h"

namespace zeroskip {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

OneDnnGemv::OneDnnGemv(int64_t in, int64_t out, DType dtype)
    : in_(in), out_(out), dtype_(dtype), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  const dt type = dtype == DType::kBF16 ? dt::bf16 : dt::f32;
  const dnnl::memory::desc src({1, in}, type, tag::ab);
  const dnnl::memory::desc weights({in, out}, type, tag::any);
  const dnnl::memory::desc dst({1, out}, dt::f32, tag::ab);
  pd_ = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), engine_);
  primitive_ = dnnl::matmul(pd_);
  x_bf16_.resize(in);
}

dnnl::memory OneDnnGemv::Prepare(const WeightView& w, bool out_in) {
  const dt type = dtype_ == DType::kBF16 ? dt::bf16 : dt::f32;
  const dnnl::memory::desc given({in_, out_}, type, out_in ? tag::ba : tag::ab);
  dnnl::memory src(given, engine_, const_cast<void*>(w.data));
  dnnl::memory packed(pd_.weights_desc(), engine_);
  dnnl::reorder(src, packed).execute(stream_, src, packed);
  stream_.wait();
  return packed;
}

void OneDnnGemv::Run(const dnnl::memory& weights, const float* x, float* y) {
  const void* src = x;
  if (dtype_ == DType::kBF16) {
    ConvertMatrix(reinterpret_cast<const uint8_t*>(x), DType::kF32, 1, in_, false,
                  reinterpret_cast<uint8_t*>(x_bf16_.data()), DType::kBF16);
    src = x_bf16_.data();
  }
  dnnl::memory src_mem(pd_.src_desc(), engine_, const_cast<void*>(src));
  dnnl::memory dst_mem(pd_.dst_desc(), engine_, y);
  primitive_.execute(stream_, {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, weights},
                               {DNNL_ARG_DST, dst_mem}});
  stream_.wait();
}

}  // namespace zeroskip
