// The oneDNN dense baseline for one token: y = W·x with the weights reordered once, at set-up,
// into the layout oneDNN's primitive prefers (format_tag::any), as a real oneDNN user would do.
// Without that reorder oneDNN repacks the matrix on every call and the baseline would be unfairly
// slow. bf16 runs oneDNN's bf16 matmul (activations rounded to bf16, accumulation in f32).
#pragma once

#include <dnnl.hpp>
#include <vector>

#include "zeroskip/model.h"

namespace zeroskip {

class OneDnnGemv {
 public:
  // A product [1, in] x [in, out]; dtype f32 or bf16.
  OneDnnGemv(int64_t in, int64_t out, DType dtype);

  // Weights in oneDNN's preferred layout. `w` is stored [out, in] when out_in, else [in, out].
  dnnl::memory Prepare(const WeightView& w, bool out_in);
  void Run(const dnnl::memory& weights, const float* x, float* y);

 private:
  int64_t in_, out_;
  DType dtype_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::matmul::primitive_desc pd_;
  dnnl::matmul primitive_;
  std::vector<uint16_t> x_bf16_;  // [in] activations rounded for the bf16 product
};

}  // namespace zeroskip
