#include "ops/norm.h"

#include <cmath>

namespace zeroskip {

void RmsNorm(const float* x, int64_t n, int64_t dim, const float* weight, float eps, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = xr[i] * scale * weight[i];
  }
}

void LayerNorm(const float* x, int64_t n, int64_t dim, const float* weight, const float* bias,
               float eps, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean = sum / dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const auto mean_f = static_cast<float>(mean);
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) {
      out[r * dim + i] = (xr[i] - mean_f) * scale * weight[i] + bias[i];
    }
  }
}

void AddBias(float* x, const float* bias, int64_t n, int64_t dim) {
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] += bias[i];
  }
}

void AddInPlace(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace zeroskip
