#include "ops/rope.h"

#include <cmath>

namespace zeroskip {

RopeTable::RopeTable(int64_t context, int64_t head_dim, float theta) : half_(head_dim / 2) {
  const auto size = static_cast<size_t>(context * half_);
  cos_.resize(size);
  sin_.resize(size);
  for (int64_t i = 0; i < half_; ++i) {
    const double inv_freq = std::pow(double(theta), -2.0 * i / head_dim);
    for (int64_t p = 0; p < context; ++p) {
      cos_[p * half_ + i] = static_cast<float>(std::cos(p * inv_freq));
      sin_[p * half_ + i] = static_cast<float>(std::sin(p * inv_freq));
    }
  }
}

void RopeTable::Apply(float* v, int64_t n, int64_t heads, int64_t pos0) const {
  const int64_t head_dim = 2 * half_;
  for (int64_t r = 0; r < n; ++r) {
    const float* c = cos_.data() + (pos0 + r) * half_;
    const float* s = sin_.data() + (pos0 + r) * half_;
    for (int64_t h = 0; h < heads; ++h) {
      float* x = v + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half_; ++i) {
        const float x1 = x[i], x2 = x[i + half_];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half_] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

}  // namespace zeroskip
