#include "format/dtype.h"

#include <Eigen/Core>
#include <cmath>
#include <cstring>

#include "format/file_io.h"

namespace zeroskip {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}

std::optional<DType> ParseDTypeName(std::string_view name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  return std::nullopt;
}

namespace {

float LoadElement(const uint8_t* p, DType type) {
  switch (type) {
    case DType::kF32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::kF16: {
      uint16_t bits;
      std::memcpy(&bits, p, 2);
      return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
    }
    case DType::kBF16: {
      uint16_t bits;
      std::memcpy(&bits, p, 2);
      return static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits));
    }
  }
  return 0.0f;
}

// Stores v; returns true if a finite v became infinite.
bool StoreElement(float v, uint8_t* p, DType type) {
  switch (type) {
    case DType::kF32:
      std::memcpy(p, &v, 4);
      return false;
    case DType::kF16: {
      const Eigen::half h(v);
      const auto bits = Eigen::numext::bit_cast<uint16_t>(h);
      std::memcpy(p, &bits, 2);
      return std::isfinite(v) && !Eigen::numext::isfinite(h);
    }
    case DType::kBF16: {
      const Eigen::bfloat16 b(v);
      const auto bits = Eigen::numext::bit_cast<uint16_t>(b);
      std::memcpy(p, &bits, 2);
      return std::isfinite(v) && !Eigen::numext::isfinite(b);
    }
  }
  return false;
}

}  // namespace

uint64_t ConvertMatrix(const uint8_t* src, DType src_type, uint64_t rows, uint64_t cols,
                       bool transpose, uint8_t* dst, DType dst_type) {
  const size_t in = DTypeSize(src_type), out = DTypeSize(dst_type);
  uint64_t overflows = 0;
  if (!transpose) {
    if (src_type == dst_type) {
      std::memcpy(dst, src, rows * cols * in);
      return 0;
    }
    for (uint64_t i = 0; i < rows * cols; ++i) {
      overflows += StoreElement(LoadElement(src + i * in, src_type), dst + i * out, dst_type);
    }
    return overflows;
  }
  // Blocked so both sides stay cache-friendly on 100+ MB matrices.
  constexpr uint64_t kBlock = 64;
  for (uint64_t r0 = 0; r0 < rows; r0 += kBlock) {
    for (uint64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const uint64_t r1 = std::min(rows, r0 + kBlock), c1 = std::min(cols, c0 + kBlock);
      for (uint64_t r = r0; r < r1; ++r) {
        for (uint64_t c = c0; c < c1; ++c) {
          overflows += StoreElement(LoadElement(src + (r * cols + c) * in, src_type),
                                    dst + (c * rows + r) * out, dst_type);
        }
      }
    }
  }
  return overflows;
}

uint64_t CountNonFinite(const uint8_t* data, DType type, uint64_t n) {
  // An all-ones exponent is Inf or NaN in every IEEE-style format.
  uint64_t count = 0;
  switch (type) {
    case DType::kF32:
      for (uint64_t i = 0; i < n; ++i)
        count += (LoadLe32(data + 4 * i) & 0x7f800000u) == 0x7f800000u;
      break;
    case DType::kF16:
    case DType::kBF16: {
      const uint16_t exponent = type == DType::kF16 ? 0x7c00 : 0x7f80;
      for (uint64_t i = 0; i < n; ++i) {
        const uint16_t bits = static_cast<uint16_t>(data[2 * i] | data[2 * i + 1] << 8);
        count += (bits & exponent) == exponent;
      }
      break;
    }
  }
  return count;
}

}  // namespace zeroskip
