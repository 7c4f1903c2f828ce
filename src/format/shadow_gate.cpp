#include "format/shadow_gate.h"

#include <cmath>
#include <limits>

#include "arch/tensor_table.h"
#include "format/dtype.h"
#include "zeroskip/error.h"

namespace zeroskip {
namespace {

// A norm computed in double, as an f32 no smaller than the true value: the double sum of at most
// 2^16 squares and its square root are within 2^-35 relative of exact, which the factor covers
// before the conversion rounds up.
float NormRoundedUp(double sum_of_squares) {
  const double norm = std::sqrt(sum_of_squares) * (1.0 + 0x1p-30);
  float f = static_cast<float>(norm);
  if (static_cast<double>(f) < norm) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

}  // namespace

std::vector<TensorSpec> ShadowGateSpecs(int64_t layer, uint64_t ffn, uint64_t hidden) {
  return {{LayerTensorName(layer, kShadowRole), DType::kQ8, Layout::kRowMajor, {ffn, hidden}},
          {LayerTensorName(layer, kShadowNormsRole), DType::kF32, Layout::kRowMajor, {2, ffn}}};
}

void CheckShadowable(const ModelConfig& config, const std::string& path) {
  if (!config.gated_ffn) {
    // The bound certifies fc1·x <= 0; OPT's fc1 bias moves the threshold per neuron.
    throw Error(path, config.hf_architecture + "'s FFN has no bias-free gate, so it cannot have "
                                               "a shadow gate");
  }
  if (config.hidden % static_cast<int64_t>(kQuantBlock) != 0) {
    throw Error(path, "hidden size " + std::to_string(config.hidden) +
                          " is not a multiple of 32, so the gate cannot have a shadow");
  }
}

bool IsShadowGateTensor(std::string_view name) {
  return name.starts_with("layers.") && (name.ends_with("." + std::string(kShadowRole)) ||
                                         name.ends_with("." + std::string(kShadowNormsRole)));
}

uint64_t BuildShadowGate(const uint8_t* gate, DType dtype, uint64_t rows, uint64_t cols,
                         uint8_t* shadow, float* norms) {
  const uint64_t row_bytes = DTypeBytes(dtype, cols), shadow_row = DTypeBytes(DType::kQ8, cols);
  std::vector<float> w(cols), w_hat(kQuantBlock);
  uint64_t overflows = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    ConvertMatrix(gate + r * row_bytes, dtype, 1, cols, false, reinterpret_cast<uint8_t*>(w.data()),
                  DType::kF32);  // exact widening
    double error_sq = 0, row_sq = 0;
    for (uint64_t c = 0; c < cols; c += kQuantBlock) {
      uint8_t* block = shadow + r * shadow_row + DTypeBytes(DType::kQ8, c);
      overflows += QuantizeBlock(w.data() + c, DType::kQ8, block);
      DequantizeBlock(block, DType::kQ8, w_hat.data());
      for (uint64_t i = 0; i < kQuantBlock; ++i) {
        const double e = double(w[c + i]) - double(w_hat[i]);
        error_sq += e * e;
        row_sq += double(w[c + i]) * double(w[c + i]);
      }
    }
    norms[r] = NormRoundedUp(error_sq);
    norms[rows + r] = NormRoundedUp(row_sq);
  }
  return overflows;
}

void WriteShadowGate(ZskWriter& writer, const uint8_t* gate, DType dtype, uint64_t rows,
                     uint64_t cols, const std::string& path, const std::string& gate_name) {
  std::vector<uint8_t> shadow(rows * DTypeBytes(DType::kQ8, cols));
  std::vector<float> norms(2 * rows);
  if (BuildShadowGate(gate, dtype, rows, cols, shadow.data(), norms.data()) > 0) {
    throw Error(path, "tensor '" + gate_name +
                          "': values overflow the shadow gate's q8 scales (beyond ~8e6)");
  }
  writer.WriteNext(shadow);
  writer.WriteNext({reinterpret_cast<const uint8_t*>(norms.data()), norms.size() * sizeof(float)});
}

}  // namespace zeroskip
