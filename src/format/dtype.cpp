#include "format/dtype.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "format/file_io.h"

namespace zeroskip {

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kQ8:
      return "q8";
    case DType::kQ4:
      return "q4";
  }
  return "?";
}

std::optional<DType> ParseDTypeName(std::string_view name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  if (name == "q8") return DType::kQ8;
  if (name == "q4") return DType::kQ4;
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
    case DType::kQ8:
    case DType::kQ4:
      break;  // blocks, not elements: see QuantizeBlock
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
    case DType::kQ8:
    case DType::kQ4:
      break;  // blocks, not elements: see QuantizeBlock
  }
  return false;
}

// Quantizes `rows` rows of `cols` f32 values (cols a multiple of kQuantBlock) into blocks.
uint64_t QuantizeRows(const float* v, uint64_t rows, uint64_t cols, uint8_t* dst, DType type) {
  uint64_t overflows = 0;
  const uint64_t block_bytes = DTypeBlockBytes(type);
  for (uint64_t b = 0; b < rows * cols / kQuantBlock; ++b) {
    overflows += QuantizeBlock(v + b * kQuantBlock, type, dst + b * block_bytes) ? kQuantBlock : 0;
  }
  return overflows;
}

}  // namespace

bool QuantizeBlock(const float* v, DType type, uint8_t* out) {
  // The scale maps the largest magnitude onto the end of the integer range: q8 symmetric
  // (|q| <= 127); q4 puts the element of largest magnitude, with its sign, at -8 (its 16 levels
  // are -8..7), as llama.cpp's q4_0 does.
  float extreme = 0.0f;  // the first element of largest magnitude
  for (uint64_t i = 0; i < kQuantBlock; ++i) {
    if (std::abs(v[i]) > std::abs(extreme)) extreme = v[i];
  }
  const bool q8 = type == DType::kQ8;
  const Eigen::half d(q8 ? std::abs(extreme) / 127.0f : extreme / -8.0f);
  const auto d_bits = Eigen::numext::bit_cast<uint16_t>(d);
  out[0] = static_cast<uint8_t>(d_bits);
  out[1] = static_cast<uint8_t>(d_bits >> 8);
  const float df = static_cast<float>(d);
  // A scale that rounds to 0 (|values| below ~4e-6) stores the block as zeros.
  auto level = [df](float x, float lo, float hi) {
    return df == 0.0f ? 0.0f : std::clamp(std::nearbyint(x / df), lo, hi);
  };
  if (q8) {
    for (uint64_t i = 0; i < kQuantBlock; ++i) {
      out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(level(v[i], -127.0f, 127.0f)));
    }
  } else {
    for (uint64_t i = 0; i < kQuantBlock / 2; ++i) {
      const auto lo = static_cast<uint8_t>(level(v[i], -8.0f, 7.0f) + 8.0f);
      const auto hi = static_cast<uint8_t>(level(v[i + kQuantBlock / 2], -8.0f, 7.0f) + 8.0f);
      out[2 + i] = static_cast<uint8_t>(lo | hi << 4);
    }
  }
  return !Eigen::numext::isfinite(d);
}

void DequantizeBlock(const uint8_t* in, DType type, float* v) {
  const float d = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(LoadLe16(in)));
  if (type == DType::kQ8) {
    for (uint64_t i = 0; i < kQuantBlock; ++i) v[i] = d * static_cast<int8_t>(in[2 + i]);
  } else {
    for (uint64_t i = 0; i < kQuantBlock / 2; ++i) {
      v[i] = d * static_cast<float>((in[2 + i] & 15) - 8);
      v[i + kQuantBlock / 2] = d * static_cast<float>((in[2 + i] >> 4) - 8);
    }
  }
}

uint64_t ConvertMatrix(const uint8_t* src, DType src_type, uint64_t rows, uint64_t cols,
                       bool transpose, uint8_t* dst, DType dst_type) {
  uint64_t overflows = 0;
  if (IsQuantized(src_type)) {
    // Dequantizing (the engine widening a matrix or an embedding row): never transposed.
    float block[kQuantBlock];
    const uint64_t in = DTypeBlockBytes(src_type), out = DTypeBytes(dst_type, 1);
    for (uint64_t b = 0; b < rows * cols / kQuantBlock; ++b) {
      DequantizeBlock(src + b * in, src_type, block);
      for (uint64_t i = 0; i < kQuantBlock; ++i) {
        overflows += StoreElement(block[i], dst + (b * kQuantBlock + i) * out, dst_type);
      }
    }
    return overflows;
  }
  const size_t in = DTypeBytes(src_type, 1);
  if (IsQuantized(dst_type)) {
    // Quantization runs along the stored rows, so a transposed matrix is gathered a band of
    // stored rows at a time into f32 (the band stays small next to the matrix).
    const uint64_t out_rows = transpose ? cols : rows, out_cols = transpose ? rows : cols;
    const uint64_t band = transpose ? 64 : 1;
    std::vector<float> values(band * out_cols);
    for (uint64_t r0 = 0; r0 < out_rows; r0 += band) {
      const uint64_t n = std::min(band, out_rows - r0);
      for (uint64_t c = 0; c < out_cols; ++c) {
        for (uint64_t r = r0; r < r0 + n; ++r) {
          const uint64_t at = transpose ? c * cols + r : r * cols + c;
          values[(r - r0) * out_cols + c] = LoadElement(src + at * in, src_type);
        }
      }
      overflows += QuantizeRows(values.data(), n, out_cols,
                                dst + DTypeBytes(dst_type, r0 * out_cols), dst_type);
    }
    return overflows;
  }
  const size_t out = DTypeBytes(dst_type, 1);
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
    case DType::kQ8:
    case DType::kQ4: {
      // A GGUF's q8_0/q4_0: every value of a block whose f16 scale is Inf or NaN.
      const uint64_t block = DTypeBlockBytes(type);
      for (uint64_t b = 0; b < n / kQuantBlock; ++b) {
        const uint16_t d = static_cast<uint16_t>(data[b * block] | data[b * block + 1] << 8);
        count += (d & 0x7c00) == 0x7c00 ? kQuantBlock : 0;
      }
      break;
    }
  }
  return count;
}

}  // namespace zeroskip
