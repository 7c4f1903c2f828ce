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
    case DType::kQ4K:
      return "q4k";
    case DType::kQ6K:
      return "q6k";
  }
  return "?";
}

std::optional<DType> ParseDTypeName(std::string_view name) {
  if (name == "f32") return DType::kF32;
  if (name == "f16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  if (name == "q8") return DType::kQ8;
  if (name == "q4") return DType::kQ4;
  if (name == "q4k") return DType::kQ4K;
  if (name == "q6k") return DType::kQ6K;
  return std::nullopt;
}

float HalfToFloat(uint16_t bits) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
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
    case DType::kQ4K:
    case DType::kQ6K:
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
    case DType::kQ4K:
    case DType::kQ6K:
      break;  // blocks, not elements: see QuantizeBlock
  }
  return false;
}

// Quantizes `rows` rows of `cols` f32 values (cols whole blocks of `type`) into blocks.
uint64_t QuantizeRows(const float* v, uint64_t rows, uint64_t cols, uint8_t* dst, DType type) {
  uint64_t overflows = 0;
  const uint64_t block = DTypeBlockElements(type), block_bytes = DTypeBlockBytes(type);
  for (uint64_t b = 0; b < rows * cols / block; ++b) {
    overflows += QuantizeBlock(v + b * block, type, dst + b * block_bytes) ? block : 0;
  }
  return overflows;
}

// Stores f16(v) little-endian at p; returns that f16 widened.
float StoreHalf(float v, uint8_t* p) {
  const auto bits = Eigen::numext::bit_cast<uint16_t>(Eigen::half(v));
  p[0] = static_cast<uint8_t>(bits);
  p[1] = static_cast<uint8_t>(bits >> 8);
  return HalfToFloat(bits);
}

float Level(float x, float lo, float hi) { return std::clamp(std::nearbyint(x), lo, hi); }

// Below this a group of values is all zero (as llama.cpp's K-quants decide it).
constexpr float kZeroGroup = 1e-15f;

// q4k's fit of one sub-block of 32 to `scale · L − min` (L in 0..15, min >= 0), minimizing
// Σ w·err²: a grid of 21 level spacings over [lo, hi], each followed by the weighted
// least-squares scale and offset of the levels it rounds to (docs/FORMAT.md). Returns the scale;
// `min` gets the offset to subtract.
float FitScaleMin(const float* x, const float* w, float* min) {
  constexpr int n = 32;
  constexpr float kMax = 15.0f;
  float lo = x[0], hi = x[0], sum_w = 0.0f, sum_x = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the offset only ever subtracts
  if (hi == lo) {
    *min = -lo;
    return 0.0f;
  }
  auto error = [&](float scale, float offset, const float* levels) {
    float e = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * levels[i] + offset - x[i];
      e += w[i] * diff * diff;
    }
    return e;
  };
  float levels[n];
  const float inv0 = kMax / (hi - lo);
  float scale = 1.0f / inv0;
  for (int i = 0; i < n; ++i) levels[i] = Level(inv0 * (x[i] - lo), 0.0f, kMax);
  float best = error(scale, lo, levels);
  // `lo` is also the origin of the grid: a kept fit moves it to its offset for the spacings after
  // it, as llama.cpp's search does (its results depend on it).
  for (int step = 0; step <= 20; ++step) {
    const float inv = (-1.0f + 0.1f * static_cast<float>(step) + kMax) / (hi - lo);
    float trial[n], sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      trial[i] = Level(inv * (x[i] - lo), 0.0f, kMax);
      sum_l += w[i] * trial[i];
      sum_l2 += w[i] * trial[i] * trial[i];
      sum_xl += w[i] * trial[i] * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0.0f) continue;
    float s = (sum_w * sum_xl - sum_x * sum_l) / det;
    float o = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (o > 0.0f) {  // an offset that adds: refit through zero instead
      o = 0.0f;
      s = sum_xl / sum_l2;
    }
    const float e = error(s, o, trial);
    if (e < best) {
      best = e;
      scale = s;
      lo = o;
    }
  }
  *min = -lo;
  return scale;
}

// q6k's fit of one group of 16 to `scale · l` (l in -32..31), weights x²: the spacing that puts
// the value of largest magnitude on level -32, and 18 spacings around it, each followed by the
// weighted least-squares scale of its levels; the one of least weighted error wins.
float FitScale(const float* x) {
  constexpr int n = 16;
  float extreme = 0.0f;  // the first value of largest magnitude
  for (int i = 0; i < n; ++i) {
    if (std::abs(x[i]) > std::abs(extreme)) extreme = x[i];
  }
  if (std::abs(extreme) < kZeroGroup) return 0.0f;
  float scale = 0.0f, best = 0.0f;
  for (int step = 0; step <= 18; ++step) {
    // step 0 is the plain spacing; then -0.9 .. +0.9 levels around it, skipping 0
    const int offset = step == 0 ? 0 : step <= 9 ? step - 10 : step - 9;
    const float inv = -(32.0f + 0.1f * static_cast<float>(offset)) / extreme;
    float sum_lx = 0.0f, sum_l2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float l = Level(inv * x[i], -32.0f, 31.0f);
      const float w = x[i] * x[i];
      sum_lx += w * x[i] * l;
      sum_l2 += w * l * l;
    }
    if (step == 0) {
      scale = sum_l2 > 0.0f ? sum_lx / sum_l2 : 0.0f;
      best = scale * sum_lx;
    } else if (sum_l2 > 0.0f && sum_lx * sum_lx > best * sum_l2) {
      scale = sum_lx / sum_l2;
      best = scale * sum_lx;
    }
  }
  return scale;
}

// q4k: 256 values -> {d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit q}.
bool QuantizeQ4K(const float* v, uint8_t* out) {
  float scales[8], mins[8], max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float* x = v + 32 * j;
    float sum_x2 = 0.0f;
    for (int i = 0; i < 32; ++i) sum_x2 += x[i] * x[i];
    // Weights favour large values over the sub-block's rms (llama.cpp's choice).
    const float rms = std::sqrt(sum_x2 / 32.0f);
    float w[32];
    for (int i = 0; i < 32; ++i) w[i] = rms + std::abs(x[i]);
    scales[j] = FitScaleMin(x, w, &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float d = StoreHalf(max_scale / 63.0f, out);
  const float dmin = StoreHalf(max_min / 63.0f, out + 2);
  if (!std::isfinite(d) || !std::isfinite(dmin)) return true;  // refused: no levels to round
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  uint8_t* packed = out + 4;
  std::memset(packed, 0, 12);
  uint8_t levels[256];
  for (int j = 0; j < 8; ++j) {
    const auto sc = static_cast<uint8_t>(Level(inv_scale * scales[j], 0.0f, 63.0f));
    const auto m = static_cast<uint8_t>(Level(inv_min * mins[j], 0.0f, 63.0f));
    // The levels again, against the scale and min as stored.
    const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
    for (int i = 0; i < 32; ++i) {
      levels[32 * j + i] =
          ds == 0.0f ? 0 : static_cast<uint8_t>(Level((v[32 * j + i] + dm) / ds, 0.0f, 15.0f));
    }
    if (j < 4) {
      packed[j] |= sc;
      packed[j + 4] |= m;
    } else {  // low 4 bits in bytes 8..11, high 2 bits on top of bytes j-4 (sc) and j (m)
      packed[j + 4] = static_cast<uint8_t>((sc & 15) | (m & 15) << 4);
      packed[j - 4] |= static_cast<uint8_t>(sc >> 4 << 6);
      packed[j] |= static_cast<uint8_t>(m >> 4 << 6);
    }
  }
  for (int c = 0; c < 4; ++c) {  // 64 values per 32 bytes: low nibbles, then high nibbles
    for (int i = 0; i < 32; ++i) {
      out[16 + 32 * c + i] =
          static_cast<uint8_t>(levels[64 * c + i] | levels[64 * c + 32 + i] << 4);
    }
  }
  return false;
}

// q6k: 256 values -> {ql[128], qh[64], int8 scales[16], d}.
bool QuantizeQ6K(const float* v, uint8_t* out) {
  float scales[16], extreme = 0.0f;  // extreme: the first group scale of largest magnitude
  for (int g = 0; g < 16; ++g) {
    scales[g] = FitScale(v + 16 * g);
    if (std::abs(scales[g]) > std::abs(extreme)) extreme = scales[g];
  }
  std::memset(out, 0, DTypeBlockBytes(DType::kQ6K));
  if (std::abs(extreme) < kZeroGroup) return false;  // all zero: d = 0
  const float inv = -128.0f / extreme;
  const float d = StoreHalf(1.0f / inv, out + 208);
  if (!std::isfinite(d)) return true;  // refused: no levels to round
  uint8_t levels[256];
  for (int g = 0; g < 16; ++g) {
    const auto sc = static_cast<int8_t>(Level(inv * scales[g], -128.0f, 127.0f));
    out[192 + g] = static_cast<uint8_t>(sc);
    const float ds = d * static_cast<float>(sc);
    for (int i = 0; i < 16; ++i) {
      levels[16 * g + i] =
          ds == 0.0f ? 32 : static_cast<uint8_t>(Level(v[16 * g + i] / ds, -32.0f, 31.0f) + 32.0f);
    }
  }
  // Each half of 128 values: 64 bytes of low nibbles (values c, c+64 and c+32, c+96 share a
  // byte), 32 bytes holding the top 2 bits of values c, c+32, c+64, c+96.
  for (int h = 0; h < 2; ++h) {
    const uint8_t* l = levels + 128 * h;
    for (int c = 0; c < 32; ++c) {
      out[64 * h + c] = static_cast<uint8_t>((l[c] & 15) | (l[c + 64] & 15) << 4);
      out[64 * h + 32 + c] = static_cast<uint8_t>((l[c + 32] & 15) | (l[c + 96] & 15) << 4);
      out[128 + 32 * h + c] = static_cast<uint8_t>(l[c] >> 4 | l[c + 32] >> 4 << 2 |
                                                   l[c + 64] >> 4 << 4 | l[c + 96] >> 4 << 6);
    }
  }
  return false;
}

}  // namespace

bool QuantizeBlock(const float* v, DType type, uint8_t* out) {
  if (type == DType::kQ4K) return QuantizeQ4K(v, out);
  if (type == DType::kQ6K) return QuantizeQ6K(v, out);
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
  if (type == DType::kQ4K) {
    const float d = HalfToFloat(LoadLe16(in)), dmin = HalfToFloat(LoadLe16(in + 2));
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      Q4KScaleMin(in + 4, j, &sc, &m);
      const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(m);
      const uint8_t* qs = in + 16 + 32 * (j / 2);
      for (int i = 0; i < 32; ++i) {
        const int q = j % 2 == 0 ? qs[i] & 15 : qs[i] >> 4;
        v[32 * j + i] = ds * static_cast<float>(q) - dm;
      }
    }
    return;
  }
  if (type == DType::kQ6K) {
    const float d = HalfToFloat(LoadLe16(in + 208));
    for (int i = 0; i < 256; ++i) {
      const int h = i / 128, k = i % 128 / 32, c = i % 32;
      const int low = in[64 * h + 32 * (k % 2) + c] >> 4 * (k / 2) & 15;
      const int high = in[128 + 32 * h + c] >> 2 * k & 3;
      const float ds = d * static_cast<float>(static_cast<int8_t>(in[192 + i / 16]));
      v[i] = ds * static_cast<float>((low | high << 4) - 32);
    }
    return;
  }
  const float d = HalfToFloat(LoadLe16(in));
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
    float block[kSuperBlock];
    const uint64_t n = DTypeBlockElements(src_type);
    const uint64_t in = DTypeBlockBytes(src_type), out = DTypeBytes(dst_type, 1);
    for (uint64_t b = 0; b < rows * cols / n; ++b) {
      DequantizeBlock(src + b * in, src_type, block);
      for (uint64_t i = 0; i < n; ++i) {
        overflows += StoreElement(block[i], dst + (b * n + i) * out, dst_type);
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
    case DType::kQ4:
    case DType::kQ4K:
    case DType::kQ6K: {
      // A GGUF's quantized blocks: every value of a block with an f16 scale (d; q4k's dmin too)
      // that is Inf or NaN.
      const uint64_t block = DTypeBlockBytes(type), elements = DTypeBlockElements(type);
      const uint64_t at = type == DType::kQ6K ? 208 : 0, scales = type == DType::kQ4K ? 2 : 1;
      for (uint64_t b = 0; b < n / elements; ++b) {
        bool bad = false;
        for (uint64_t k = 0; k < scales; ++k) {
          bad = bad || (LoadLe16(data + b * block + at + 2 * k) & 0x7c00) == 0x7c00;
        }
        count += bad ? elements : 0;
      }
      break;
    }
  }
  return count;
}

}  // namespace zeroskip
