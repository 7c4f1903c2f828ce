// The SIMD kernels' drivers, written once for every ISA: row blocking (rows that share each load
// of x or y), gathering rows, tails and prefetch, over a vector-traits struct V that a per-ISA file
// supplies (see VectorTraits). The arithmetic order is fixed here, so every ISA adds the same
// terms in the same order up to its vector width.
//
// Quantized weights (q8, q4, q4k, q6k) take the same drivers: their x is quantized per block first
// (Activations), and a block of 32 weights is one 256-bit integer vector on every SIMD ISA here
// (each has AVX2), so the block arithmetic below is written with AVX2 intrinsics once; V
// supplies what differs, the u8 x s8 dot product (maddubs or vpdpbusd) and int8 to f32.
//
// Include only from a per-ISA .cpp compiled with that ISA's flags. Everything here sits in an
// unnamed namespace: code compiled for one ISA must never be linked into another's callers.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <concepts>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "kernels/kernels.h"
#include "kernels/ref/kernels_ref.h"

namespace zeroskip::simd {
namespace {

// One ISA's vectors of f32. Half is a vector of kLanes 16-bit values (bf16 or f16 bits); Tail
// says how many of the last elements of a row are read (fewer than kLanes; reads are
// zero-filled, stores leave the rest of memory alone).
template <typename V>
concept VectorTraits = requires(typename V::Vec v, typename V::Half h, typename V::Tail t,
                                const float* pf, float* f, const uint16_t* ph, int64_t n, __m256i b,
                                const int8_t* pb, const uint8_t* pu) {
  { V::kLanes } -> std::convertible_to<int64_t>;
  { V::kPrefetchLines } -> std::convertible_to<int>;  // lines at each next row start; 0: none
  { V::Zero() } -> std::same_as<typename V::Vec>;
  { V::Broadcast(1.0f) } -> std::same_as<typename V::Vec>;
  { V::Fma(v, v, v) } -> std::same_as<typename V::Vec>;  // a * b + c, one rounding
  { V::Sum(v) } -> std::same_as<float>;
  V::Sum4(&v, f);  // f[k] = Sum(v[k]) for the four vectors at &v, bit for bit
  { V::Load(pf) } -> std::same_as<typename V::Vec>;
  V::Store(f, v);
  { V::TailOf(n) } -> std::same_as<typename V::Tail>;
  { V::LoadTail(pf, t) } -> std::same_as<typename V::Vec>;
  V::StoreTail(f, t, v);
  { V::LoadHalf(ph) } -> std::same_as<typename V::Half>;
  { V::LoadHalfTail(ph, t) } -> std::same_as<typename V::Half>;
  { V::Bf16ToF32(h) } -> std::same_as<typename V::Vec>;  // exact: bits shifted up by 16
  { V::F16ToF32(h) } -> std::same_as<typename V::Vec>;   // exact
  // 8 int32 lanes, lane i the sum of the 4 products u[4i..4i+3] * s[4i..4i+3] of unsigned bytes
  // u <= 128 and signed bytes s in [-127, 127] (exact: no saturation at these ranges).
  V::DotU8S8(b, b);  // -> __m256i (a vector type cannot be a concept's template argument)
  { V::I8ToF32(pb) } -> std::same_as<typename V::Vec>;  // kLanes int8 at pb, exactly
  // kLanes bytes at pu as f32: their low nibbles - 8 to *low, their high nibbles - 8 to *high.
  V::NibblesToF32(pu, &v, &v);
};

// DotU8S8 for ISAs without VNNI: maddubs adds pairs into int16 (at most 2·128·127: no
// saturation), madd adds pairs of those. Vector traits inherit it.
struct MaddubsDot {
  static __m256i DotU8S8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
};

// The 8 lanes of v added (the same order on every ISA that calls it).
inline float SumLanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Where element `elements` of a row starts, in WeightElem<T> units (bytes for quantized types,
// where `elements` is whole blocks).
template <DType T>
constexpr int64_t ElementOffset(int64_t elements) {
  if constexpr (IsQuantized(T)) {
    return static_cast<int64_t>(DTypeBytes(T, static_cast<uint64_t>(elements)));
  } else {
    return elements;
  }
}

// ---------------------------------------------------------------- quantized blocks

// A block's f16 scale.
inline float BlockScale(const uint8_t* block) {
  uint16_t bits;
  std::memcpy(&bits, block, 2);
  return _cvtsh_ss(bits);
}

// The 32 nibbles of a q4 block as bytes, in element order (byte j of the block holds element j
// in its low nibble and element j + 16 in its high one): the 16 bytes in both halves, the upper
// half shifted right by 4 (across bytes; the mask keeps each byte's own nibble).
inline __m256i BlockNibbles(const uint8_t* block) {
  const __m256i bytes =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
  const __m256i shifted = _mm256_srlv_epi64(bytes, _mm256_setr_epi64x(0, 0, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(15));
}

// ref::QuantizeActivations, bit for bit: the same f32 operations in the same rounding mode.
inline void QuantizeActivations(const float* x, int64_t blocks, int8_t* q, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f), largest = _mm256_set1_ps(FLT_MAX);
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 v[4], amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + b * kQuantBlock + 8 * i);
      const __m256 a = _mm256_andnot_ps(sign, v[i]);
      amax = _mm256_max_ps(amax, a);
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, largest, _CMP_NLE_UQ));  // Inf or NaN
    }
    auto* out = reinterpret_cast<__m256i*>(q + b * kQuantBlock);
    _mm256_storeu_si256(out, _mm256_setzero_si256());
    if (_mm256_movemask_ps(bad) != 0) {
      d[b] = __builtin_nanf("");
      continue;
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float block_max = _mm_cvtss_f32(m);
    d[b] = block_max / 127.0f;
    if (block_max < ref::kMinActivationScale) continue;
    const __m256 inv = _mm256_set1_ps(127.0f / block_max);
    __m256i n[4];
    for (int i = 0; i < 4; ++i) n[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
    // Packing works within 128-bit lanes; the permutation restores element order.
    const __m256i packed =
        _mm256_packs_epi16(_mm256_packs_epi32(n[0], n[1]), _mm256_packs_epi32(n[2], n[3]));
    _mm256_storeu_si256(
        out, _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
}

// x as the dot products with weights of type T read it, kChunk columns at a time: float types
// read x itself (one chunk); quantized types its blocks quantized (the buffer sits on the stack
// of the kernel that prepares it: 66 KiB for the largest hidden size the config allows, 74 KiB
// with q4's and q4k's block sums, 130 KiB with q6k's offsets).
template <DType T, bool = IsQuantized(T)>
struct Activations {
  static constexpr int64_t kChunk = int64_t{1} << 62;
  const float* x = nullptr;
  void Prepare(const float* from, int64_t /*cols*/) { x = from; }
};

// The 8 int32 lanes of each of v[0..7] added: lane k of the result is v[k]'s sum (exact).
inline __m256i SumLanes8(const __m256i (&v)[8]) {
  // hadd adds neighbours within 128-bit halves: u0 holds v0..v3's sums over lanes 0-3 in its low
  // half and over lanes 4-7 in its high half, u1 the same for v4..v7.
  const __m256i u0 =
      _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i u1 =
      _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                          _mm256_permute2x128_si256(u0, u1, 0x31));
}

// Σx of each of the 8 blocks of activation levels from block b on (blocks past `blocks`: 0).
inline __m256i BlockSums8(const int8_t* q, int64_t b, int64_t blocks) {
  __m256i v[8];
  for (int k = 0; k < 8; ++k) {
    v[k] = b + k < blocks ? MaddubsDot::DotU8S8(
                                _mm256_set1_epi8(1),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q) + b + k))
                          : _mm256_setzero_si256();
  }
  return SumLanes8(v);
}

// What a block of activations' levels xv contributes to a q6k unit's dot product besides the
// u8 x s8 products, per lane: the levels' offset 32·Σx, which comes off (exact integers, so the
// same from every ISA's DotU8S8).
inline __m256i Q6KOffset(__m256i xv) { return MaddubsDot::DotU8S8(_mm256_set1_epi8(32), xv); }

template <DType T>
struct Activations<T, true> {
  static constexpr int64_t kChunk = 1 << 16;
  static constexpr int64_t kBlocks = kChunk / kQuantBlock;
  // Computed once per x, not once per row that reads it: q4 and q4k Σx per block (q4's nibble
  // offset, q4k's mins multiply it), q6k its offsets per lane; q8 needs neither.
  static constexpr bool kSums = T == DType::kQ4 || T == DType::kQ4K, kOffsets = T == DType::kQ6K;
  alignas(32) int8_t q[kChunk];
  float d[kBlocks];
  alignas(32) int32_t sums[kSums ? kBlocks + 8 : 1];
  __m256i offsets[kOffsets ? kBlocks : 1];
  void Prepare(const float* from, int64_t cols) {
    const int64_t blocks = cols / static_cast<int64_t>(kQuantBlock);
    QuantizeActivations(from, blocks, q, d);
    if constexpr (kSums) {
      for (int64_t b = 0; b < blocks; b += 8) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(sums + b), BlockSums8(q, b, blocks));
      }
    }
    if constexpr (kOffsets) {
      for (int64_t b = 0; b < blocks; ++b) {
        offsets[b] = Q6KOffset(_mm256_load_si256(reinterpret_cast<const __m256i*>(q) + b));
      }
    }
  }
  const int32_t* block_sums() const { return kSums ? sums : nullptr; }
  const __m256i* q6k_offsets() const { return kOffsets ? offsets : nullptr; }
};

// A weight block as the u8 x s8 product takes it. q8: u = |level|, with the levels kept to move
// their signs onto x (so u <= 128, q8's -128 included); q4: u = the nibbles 0..15 (level + 8),
// whose offset 8·Σx comes off the block's sum afterwards.
template <DType T>
struct BlockLevels {
  __m256i u, levels;
};

template <DType T>
BlockLevels<T> LoadBlockLevels(const uint8_t* block) {
  if constexpr (T == DType::kQ8) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
    return {_mm256_abs_epi8(w), w};
  } else {
    static_assert(T == DType::kQ4);
    return {BlockNibbles(block), _mm256_setzero_si256()};
  }
}

// The u8 x s8 products of a block's levels with the activations' levels xv, as 8 int32 lanes
// (lane i: elements 4i..4i+3; exact, no saturation at these ranges). q4's nibble offset is not
// taken off here.
template <VectorTraits V, DType T>
__m256i BlockProducts(const BlockLevels<T>& w, __m256i xv) {
  if constexpr (T == DType::kQ8) {
    return V::DotU8S8(w.u, _mm256_sign_epi8(xv, w.levels));
  } else {
    return V::DotU8S8(w.u, xv);
  }
}

// The f16 scales of 8 consecutive blocks.
template <DType T>
__m256 GroupScales(const uint8_t* first) {
  constexpr int64_t kBytes = DTypeBlockBytes(T);
  uint16_t bits[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&bits[i], first + i * kBytes, 2);
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bits)));
}

// Dot products of RM quantized rows with RN tokens' quantized activations (levels q[j], block
// scales d[j], block sums sums[j] or null to compute them), each (row, token) into
// out[j * ldo + i]: every weight block is loaded (and a q4 block unpacked) once for the RN tokens.
// Blocks go 8 at a time (the last group padded with empty blocks): their exact integer dot
// products reduced to one int32 per block (q4: less the nibbles' offset 8·Σx), converted to f32
// once, times the 8 scale products, added to the row's accumulator by one FMA. (One FMA per
// block chained on the accumulator was bound by the FMA's latency for a single streamed row.)
// The order depends on the block index only, never on RM or RN, so every row blocking gives the
// same bits.
template <VectorTraits V, DType T, int RM, int RN>
void QuantDotTile(const uint8_t* const (&r)[RM], const int8_t* const (&q)[RN],
                  const float* const (&d)[RN], const int32_t* const (&sums)[RN], int64_t blocks,
                  float* out, int64_t ldo) {
  constexpr int64_t kBytes = DTypeBlockBytes(T);
  __m256 acc[RM][RN];
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; b += 8) {
    const int n = static_cast<int>(std::min<int64_t>(8, blocks - b));
    __m256 dw[RM], dx[RN];
    __m256i offset[RN];  // q4: 8·Σx per block
    if (n == 8) {
      for (int i = 0; i < RM; ++i) dw[i] = GroupScales<T>(r[i] + b * kBytes);
      for (int j = 0; j < RN; ++j) dx[j] = _mm256_loadu_ps(d[j] + b);
    } else {
      alignas(32) float w_scale[RM][8] = {}, x_scale[RN][8] = {};
      for (int k = 0; k < n; ++k) {
        for (int i = 0; i < RM; ++i) w_scale[i][k] = BlockScale(r[i] + (b + k) * kBytes);
        for (int j = 0; j < RN; ++j) x_scale[j][k] = d[j][b + k];
      }
      for (int i = 0; i < RM; ++i) dw[i] = _mm256_load_ps(w_scale[i]);
      for (int j = 0; j < RN; ++j) dx[j] = _mm256_load_ps(x_scale[j]);
    }
    if constexpr (T == DType::kQ4) {
      for (int j = 0; j < RN; ++j) {
        const __m256i s = sums[j] ? _mm256_load_si256(reinterpret_cast<const __m256i*>(sums[j] + b))
                                  : BlockSums8(q[j], b, blocks);
        offset[j] = _mm256_slli_epi32(s, 3);
      }
    }
    for (int i = 0; i < RM; ++i) {
      BlockLevels<T> w[8];
      for (int k = 0; k < n; ++k) w[k] = LoadBlockLevels<T>(r[i] + (b + k) * kBytes);
      for (int j = 0; j < RN; ++j) {
        __m256i p[8];
        for (int k = 0; k < 8; ++k) {
          p[k] = k < n
                     ? BlockProducts<V, T>(
                           w[k], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[j]) + b + k))
                     : _mm256_setzero_si256();
        }
        __m256i total = SumLanes8(p);
        if constexpr (T == DType::kQ4) total = _mm256_sub_epi32(total, offset[j]);
        acc[i][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(dw[i], dx[j]), acc[i][j]);
      }
    }
  }
  for (int i = 0; i < RM; ++i)
    for (int j = 0; j < RN; ++j) out[j * ldo + i] = SumLanes(acc[i][j]);
}

// Dot products of R quantized rows with prepared activations: a tile of one token.
template <VectorTraits V, DType T, int R>
void QuantDotBlock(const uint8_t* const* r, int64_t cols, const Activations<T>& a, float* out) {
  const uint8_t* rows[R];
  std::copy(r, r + R, rows);
  const int8_t* const q[1] = {a.q};
  const float* const d[1] = {a.d};
  const int32_t* const sums[1] = {a.block_sums()};
  QuantDotTile<V, T, R, 1>(rows, q, d, sums, cols / static_cast<int64_t>(kQuantBlock), out, 0);
}

// y += sum_j coef[j] * row_j for R quantized rows: each block's levels widened to f32 and
// multiplied by coef * scale, one load/store of y per R rows.
template <VectorTraits V, DType T, int R>
void QuantAxpyBlock(const uint8_t* const* r, const float* coef, int64_t cols, float* y) {
  constexpr int64_t kBytes = DTypeBlockBytes(T), kHalf = kQuantBlock / 2;
  for (int64_t b = 0; b < cols / static_cast<int64_t>(kQuantBlock); ++b) {
    typename V::Vec cv[R];
    for (int j = 0; j < R; ++j) cv[j] = V::Broadcast(coef[j] * BlockScale(r[j] + b * kBytes));
    float* yb = y + b * kQuantBlock;
    if constexpr (T == DType::kQ8) {
      for (int64_t c = 0; c < int64_t{kQuantBlock}; c += V::kLanes) {
        typename V::Vec yv = V::Load(yb + c);
        for (int j = 0; j < R; ++j) {
          const auto* levels = reinterpret_cast<const int8_t*>(r[j] + b * kBytes + 2);
          yv = V::Fma(cv[j], V::I8ToF32(levels + c), yv);
        }
        V::Store(yb + c, yv);
      }
    } else {
      // Byte c of a q4 block: element c (low nibble) and c + 16 (high).
      for (int64_t c = 0; c < kHalf; c += V::kLanes) {
        typename V::Vec low = V::Load(yb + c), high = V::Load(yb + kHalf + c), l, h;
        for (int j = 0; j < R; ++j) {
          V::NibblesToF32(r[j] + b * kBytes + 2 + c, &l, &h);
          low = V::Fma(cv[j], l, low);
          high = V::Fma(cv[j], h, high);
        }
        V::Store(yb + c, low);
        V::Store(yb + kHalf + c, high);
      }
    }
  }
}

// ---------------------------------------------------------------- K-quant blocks

// K-quants (q4k, q6k) are blocks of 256: eight units of 32 elements, unit u lined up with one
// block of the activations. Unit u of a block as the u8 x s8 product takes it: q4k its nibbles
// 0..15 (the min comes off separately), q6k its 6-bit levels 0..63 (level + 32, whose offset
// 32·Σx comes off each lane afterwards). Layouts: docs/FORMAT.md.
template <DType T>
__m256i KUnitLevels(const uint8_t* block, int u) {
  const __m256i nibble = _mm256_set1_epi8(15);
  auto load = [](const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  };
  // Shifts within 16-bit lanes; the masks keep each byte's own bits.
  auto low_nibbles = [&](__m256i v) { return _mm256_and_si256(v, nibble); };
  auto high_nibbles = [&](__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble); };
  if constexpr (T == DType::kQ4K) {
    const __m256i bytes = load(block + 16 + 32 * (u / 2));
    return u % 2 == 0 ? low_nibbles(bytes) : high_nibbles(bytes);
  } else {
    static_assert(T == DType::kQ6K);
    const int h = u / 4, k = u % 4;
    const __m256i bytes = load(block + 64 * h + 32 * (k % 2));
    const __m256i low = k < 2 ? low_nibbles(bytes) : high_nibbles(bytes);
    const __m256i high =
        _mm256_and_si256(_mm256_srl_epi16(load(block + 128 + 32 * h), _mm_cvtsi32_si128(2 * k)),
                         _mm256_set1_epi8(3));
    return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
  }
}

// A K-quant block's scales in f32 (exact): q4k d·sc of its 8 units, then dmin·m of them; q6k
// d·sc of its 16 groups of 16.
template <DType T>
void KBlockScales(const uint8_t* block, float (&scale)[16]) {
  if constexpr (T == DType::kQ4K) {
    const float d = BlockScale(block), dmin = BlockScale(block + 2);
    for (int u = 0; u < 8; ++u) {
      int sc, m;
      Q4KScaleMin(block + 4, u, &sc, &m);
      scale[u] = d * static_cast<float>(sc);
      scale[8 + u] = dmin * static_cast<float>(m);
    }
  } else {
    const float d = BlockScale(block + 208);
    for (int g = 0; g < 16; ++g)
      scale[g] = d * static_cast<float>(static_cast<int8_t>(block[192 + g]));
  }
}

// Dot products of R K-quant rows with quantized activations (levels q, scales d; sums: Σx per
// block for q4k, offsets: Q6KOffset per block for q6k, each null to compute them here), a
// super-block at a time: the exact integer products of its 8 units (unit u lined up with
// activation block u) reduced to one int32 per unit (q4k) or per group of 16 (q6k), converted to
// f32 once and multiplied by the scale products, so the row's accumulator takes one or two FMAs
// per 256 weights. q4k adds Σn·q·(d·sc·d_x) and takes Σq·(dmin·m·d_x) off per unit; q6k's group g
// is Σ(n − 32)·q times d·sc_g·d_x.
template <VectorTraits V, DType T, int R>
void KQuantDotBlock(const uint8_t* const* r, int64_t cols, const int8_t* q, const float* d,
                    const int32_t* sums, const __m256i* offsets, float* out) {
  constexpr int64_t kBytes = DTypeBlockBytes(T);
  __m256 acc[R];
  for (int j = 0; j < R; ++j) acc[j] = _mm256_setzero_ps();
  const int64_t superblocks = cols / static_cast<int64_t>(kSuperBlock);
  for (int64_t s = 0; s < superblocks; ++s) {
    const int64_t b = 8 * s;
    const __m256 dx = _mm256_loadu_ps(d + b);
    __m256i xv[8];
    for (int u = 0; u < 8; ++u) {
      xv[u] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q) + b + u);
    }
    [[maybe_unused]] __m256 sum_x;
    [[maybe_unused]] __m256i offset[8];
    if constexpr (T == DType::kQ4K) {
      sum_x =
          _mm256_cvtepi32_ps(sums ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + b))
                                  : BlockSums8(q, b, b + 8));
    } else {
      for (int u = 0; u < 8; ++u) offset[u] = offsets ? offsets[b + u] : Q6KOffset(xv[u]);
    }
    for (int j = 0; j < R; ++j) {
      const uint8_t* block = r[j] + s * kBytes;
      alignas(32) float scale[16];
      KBlockScales<T>(block, scale);
      __m256i p[8];
      for (int u = 0; u < 8; ++u) {
        p[u] = V::DotU8S8(KUnitLevels<T>(block, u), xv[u]);
        if constexpr (T == DType::kQ6K) p[u] = _mm256_sub_epi32(p[u], offset[u]);
      }
      if constexpr (T == DType::kQ4K) {
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(SumLanes8(p)),
                                 _mm256_mul_ps(_mm256_load_ps(scale), dx), acc[j]);
        acc[j] = _mm256_fnmadd_ps(sum_x, _mm256_mul_ps(_mm256_load_ps(scale + 8), dx), acc[j]);
      } else {
        // Lanes 0-3 of each unit are its first group of 16, lanes 4-7 its second: halves[h]
        // holds units 4h..4h+3's first groups in its low half and their second groups in its
        // high half, so groups 8h + (0, 2, 4, 6, 1, 3, 5, 7) and the units' scales 4h + (0-3).
        const __m256i halves[2] = {
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3])),
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]))};
        const __m256i groups = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for (int h = 0; h < 2; ++h) {
          const __m256 group_scale =
              _mm256_permutevar8x32_ps(_mm256_load_ps(scale + 8 * h), groups);
          const __m256 unit_dx = _mm256_permutevar8x32_ps(
              dx, _mm256_add_epi32(_mm256_set1_epi32(4 * h),
                                   _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3)));
          acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(halves[h]),
                                   _mm256_mul_ps(group_scale, unit_dx), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < R; ++j) out[j] = SumLanes(acc[j]);
}

// y += sum_j coef[j] * row_j for R K-quant rows, unit by unit: q4k's values d·sc·n − dmin·m (one
// rounding, the dequantized value exactly) times coef; q6k's levels times coef·d·sc.
template <VectorTraits V, DType T, int R>
void KQuantAxpyBlock(const uint8_t* const* r, const float* coef, int64_t cols, float* y) {
  static_assert(V::kLanes <= 16);  // a vector never straddles two of q6k's groups
  constexpr int64_t kBytes = DTypeBlockBytes(T);
  for (int64_t s = 0; s < cols / static_cast<int64_t>(kSuperBlock); ++s) {
    float scale[R][16];
    for (int j = 0; j < R; ++j) KBlockScales<T>(r[j] + s * kBytes, scale[j]);
    for (int u = 0; u < 8; ++u) {
      alignas(32) int8_t levels[R][32];
      for (int j = 0; j < R; ++j) {
        __m256i l = KUnitLevels<T>(r[j] + s * kBytes, u);
        if constexpr (T == DType::kQ6K) l = _mm256_sub_epi8(l, _mm256_set1_epi8(32));
        _mm256_store_si256(reinterpret_cast<__m256i*>(levels[j]), l);
      }
      float* yb = y + s * int64_t{kSuperBlock} + 32 * u;
      for (int64_t c = 0; c < 32; c += V::kLanes) {
        typename V::Vec yv = V::Load(yb + c);
        for (int j = 0; j < R; ++j) {
          const typename V::Vec n = V::I8ToF32(levels[j] + c);
          if constexpr (T == DType::kQ4K) {
            const typename V::Vec value =
                V::Fma(V::Broadcast(scale[j][u]), n, V::Broadcast(-scale[j][8 + u]));
            yv = V::Fma(V::Broadcast(coef[j]), value, yv);
          } else {
            yv = V::Fma(V::Broadcast(coef[j] * scale[j][2 * u + c / 16]), n, yv);
          }
        }
        V::Store(yb + c, yv);
      }
    }
  }
}

// ---------------------------------------------------------------- the drivers

// kLanes 16-bit weights of type T widened exactly to f32.
template <VectorTraits V, DType T>
typename V::Vec Widen(typename V::Half h) {
  if constexpr (T == DType::kBF16) {
    return V::Bf16ToF32(h);
  } else {
    static_assert(T == DType::kF16);
    return V::F16ToF32(h);
  }
}

// kLanes weights of type T as f32; the Tail version reads only the tail's elements.
template <VectorTraits V, DType T>
typename V::Vec LoadWeights(const WeightElem<T>* p) {
  if constexpr (T == DType::kF32) {
    return V::Load(p);
  } else {
    return Widen<V, T>(V::LoadHalf(p));
  }
}

template <VectorTraits V, DType T>
typename V::Vec LoadWeightsTail(const WeightElem<T>* p, typename V::Tail tail) {
  if constexpr (T == DType::kF32) {
    return V::LoadTail(p, tail);
  } else {
    return Widen<V, T>(V::LoadHalfTail(p, tail));
  }
}

// Dot products of R rows of a float type with x, sharing each load of x.
template <VectorTraits V, DType T, int R>
void FloatDotBlock(const WeightElem<T>* const* r, int64_t cols, const float* x, float* out) {
  typename V::Vec acc[R];
  for (int j = 0; j < R; ++j) acc[j] = V::Zero();
  int64_t c = 0;
  for (; c + V::kLanes <= cols; c += V::kLanes) {
    const typename V::Vec xv = V::Load(x + c);
    for (int j = 0; j < R; ++j) acc[j] = V::Fma(LoadWeights<V, T>(r[j] + c), xv, acc[j]);
  }
  if (c < cols) {
    const typename V::Tail tail = V::TailOf(cols - c);
    const typename V::Vec xv = V::LoadTail(x + c, tail);
    for (int j = 0; j < R; ++j) acc[j] = V::Fma(LoadWeightsTail<V, T>(r[j] + c, tail), xv, acc[j]);
  }
  for (int j = 0; j < R; ++j) out[j] = V::Sum(acc[j]);
}

// y += sum_j coef[j] * row_j, one load/store of y per R rows.
template <VectorTraits V, DType T, int R>
void FloatAxpyBlock(const WeightElem<T>* const* r, const float* coef, int64_t cols, float* y) {
  typename V::Vec cv[R];
  for (int j = 0; j < R; ++j) cv[j] = V::Broadcast(coef[j]);
  int64_t c = 0;
  for (; c + V::kLanes <= cols; c += V::kLanes) {
    typename V::Vec yv = V::Load(y + c);
    for (int j = 0; j < R; ++j) yv = V::Fma(cv[j], LoadWeights<V, T>(r[j] + c), yv);
    V::Store(y + c, yv);
  }
  if (c < cols) {
    const typename V::Tail tail = V::TailOf(cols - c);
    typename V::Vec yv = V::LoadTail(y + c, tail);
    for (int j = 0; j < R; ++j) yv = V::Fma(cv[j], LoadWeightsTail<V, T>(r[j] + c, tail), yv);
    V::StoreTail(y + c, tail, yv);
  }
}

// Dot products of R rows with the prepared activations.
template <VectorTraits V, DType T, int R>
void DotBlock(const WeightElem<T>* const* r, int64_t cols, const Activations<T>& a, float* out) {
  if constexpr (IsKQuant(T)) {
    KQuantDotBlock<V, T, R>(r, cols, a.q, a.d, a.block_sums(), a.q6k_offsets(), out);
  } else if constexpr (IsQuantized(T)) {
    QuantDotBlock<V, T, R>(r, cols, a, out);
  } else {
    FloatDotBlock<V, T, R>(r, cols, a.x, out);
  }
}

// y[0:cols] += sum_j coef[j] * row_j.
template <VectorTraits V, DType T, int R>
void AxpyBlock(const WeightElem<T>* const* r, const float* coef, int64_t cols, float* y) {
  if constexpr (IsKQuant(T)) {
    KQuantAxpyBlock<V, T, R>(r, coef, cols, y);
  } else if constexpr (IsQuantized(T)) {
    QuantAxpyBlock<V, T, R>(r, coef, cols, y);
  } else {
    FloatAxpyBlock<V, T, R>(r, coef, cols, y);
  }
}

// Rows a block of the drivers works on together (sharing each load of x or y). Contiguous
// quantized and 16-bit rows go one at a time: interleaving four rows' streams halves the DRAM
// throughput the hardware prefetcher sustains (their x is a cheap L1 read); f32 rows, with twice
// the bytes per FMA, stream as fast either way and keep four (measured: docs/BENCHMARKS.md,
// "Weight types" and "Sparse prefill"). Rows gathered by index (the sparse FFN, a batch's active
// rows) go several at a time, so that the latency of their streams' starts overlaps and cached
// rows share each load of x or y; quantized ones, with more work per byte, eight.
template <DType T>
constexpr int kContiguousBlockRows = T == DType::kF32 ? 4 : 1;
template <DType T>
constexpr int kScatteredBlockRows = IsQuantized(T) ? 8 : 4;

// Calls block(k, std::integral_constant<int, R>) for the rows [k, k + R) of [0, n): blocks of
// kRows, then the rest one row at a time.
template <int kRows, typename Block>
void ForEachRowBlock(int64_t n, Block&& block) {
  int64_t k = 0;
  for (; k + kRows <= n; k += kRows) block(k, std::integral_constant<int, kRows>());
  for (; k < n; ++k) block(k, std::integral_constant<int, 1>());
}

// Calls block(k, std::integral_constant<int, R>) for the items [k, k + R) of [0, n): blocks of
// kMax, then the rest as one narrower block.
template <int kMax, typename Block>
void ForEachBlockThenRest(int64_t n, Block&& block) {
  int64_t k = 0;
  for (; k + kMax <= n; k += kMax) block(k, std::integral_constant<int, kMax>());
  [&]<int... R>(std::integer_sequence<int, R...>) {
    (void)((n - k == R + 1 && (block(k, std::integral_constant<int, R + 1>()), true)) || ...);
  }
  (std::make_integer_sequence<int, kMax - 1>());
}

// ForEachRowBlock with the block size for rows of T that are contiguous (rows null: streams from
// memory) or gathered by index (rows given: scattered, or cached rows of a batch).
template <DType T, typename Block>
void ForEachRowBlockOf(const int32_t* rows, int64_t n, Block&& block) {
  if (rows != nullptr) {
    ForEachRowBlock<kScatteredBlockRows<T>>(n, block);
  } else {
    ForEachRowBlock<kContiguousBlockRows<T>>(n, block);
  }
}

// r[j] = element c0 of row rows[k + j] of w (row k + j when rows is null).
template <DType T, int R>
void RowStarts(WeightRows w, const int32_t* rows, int64_t k, int64_t c0,
               const WeightElem<T>* (&r)[R]) {
  const auto* base = static_cast<const WeightElem<T>*>(w.data);
  for (int j = 0; j < R; ++j)
    r[j] = base + ElementOffset<T>((rows ? rows[k + j] : k + j) * w.ld + c0);
}

template <VectorTraits V, DType T>
void DotRows(WeightRows w, const int32_t* rows, int64_t n, int64_t cols, const float* x,
             float* out) {
  // Quantized activations are prepared once per chunk of columns (one chunk up to the largest
  // hidden size; float types always one), then each chunk's sums are added up.
  Activations<T> a;
  int64_t c0 = 0;
  do {
    const int64_t width = std::min(Activations<T>::kChunk, cols - c0);
    a.Prepare(x + c0, width);
    ForEachRowBlockOf<T>(rows, n, [&](int64_t k, auto block) {
      constexpr int R = decltype(block)::value;
      const WeightElem<T>* r[R];
      RowStarts<T>(w, rows, k, c0, r);
      float part[R];
      DotBlock<V, T, R>(r, width, a, part);
      for (int j = 0; j < R; ++j) out[k + j] = c0 == 0 ? part[j] : out[k + j] + part[j];
    });
    c0 += width;
  } while (c0 < cols);
}

template <VectorTraits V, DType T>
void AxpyRows(WeightRows w, const int32_t* rows, const float* coef, int64_t n, int64_t cols,
              float* y) {
  ForEachRowBlockOf<T>(rows, n, [&](int64_t k, auto block) {
    const WeightElem<T>* r[decltype(block)::value];
    RowStarts<T>(w, rows, k, 0, r);
    AxpyBlock<V, T, decltype(block)::value>(r, coef + k, cols, y);
  });
}

// ---------------------------------------------------------------- batches of vectors (attention)

// How far ahead of the row in use the batch kernels ask for rows, in bytes of rows (the memory's
// latency is a number of bytes in flight, whatever the element type): 4 KiB ahead into L1, 16 KiB
// into L2. A chunk of the KV cache is one sequential stream per thread, which the hardware
// prefetcher alone runs well below the memory's bandwidth. BM_AttentionDecode, 2 threads, 5
// interleaved runs, medians: f32 cache 19.1 GB/s with 4 KiB into L1 alone, 26.2 with both (and
// 16.8 with neither); an f16 cache, more compute per byte, 24.6 and 23.4 (within noise).
constexpr int64_t kBatchPrefetchBytes = 4 << 10, kBatchPrefetchL2Bytes = 16 << 10;

// Prefetches of rows ahead: the first `bytes` bytes of the rows kBatchPrefetchBytes and
// kBatchPrefetchL2Bytes after a row (rows of 128 f32: 8 and 32 rows), for a matrix of `ld`
// elements a row. Past the last row too: a prefetch never faults, and in attention the lines
// after a chunk's rows are the next chunk's (stopping at the chunk's end left every chunk to begin
// cold).
template <DType T>
struct RowsAhead {
  int64_t near, far, bytes;  // elements ahead, elements ahead, bytes of each row
  RowsAhead(int64_t ld, int64_t row_bytes) : bytes(row_bytes) {
    const int64_t ld_bytes = std::max<int64_t>(1, ld * int64_t{sizeof(WeightElem<T>)});
    near = kBatchPrefetchBytes / ld_bytes * ld;
    far = kBatchPrefetchL2Bytes / ld_bytes * ld;
  }
  void Fetch(const WeightElem<T>* row) const {
    const char* n = reinterpret_cast<const char*>(row + near);
    const char* f = reinterpret_cast<const char*>(row + far);
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(n + b, _MM_HINT_T0);
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(f + b, _MM_HINT_T1);
  }
};

// A tile of dot_rows_batch: kBatchDotRows rows against Q vectors, Q x kBatchDotRows accumulators
// in registers, each row's load serving Q vectors and each vector's kBatchDotRows rows. Per
// (vector, row) the arithmetic is FloatDotBlock's (the same FMAs into one vector, the same final
// sum, four sums reduced at once).
constexpr int kBatchDotRows = 4;
template <VectorTraits V>
constexpr int kBatchDotVectors = V::kLanes >= 16 ? 4 : 2;  // AVX2 has 16 registers, not 32

template <VectorTraits V, DType T, int Q>
void DotRowsBatchTile(const WeightElem<T>* const (&r)[kBatchDotRows], const float* const (&x)[Q],
                      int64_t cols, float (&out)[Q][kBatchDotRows]) {
  using Vec = typename V::Vec;
  Vec acc[Q][kBatchDotRows];
  for (auto& a : acc)
    for (auto& v : a) v = V::Zero();
  int64_t c = 0;
  for (; c + V::kLanes <= cols; c += V::kLanes) {
    Vec w[kBatchDotRows];
    for (int j = 0; j < kBatchDotRows; ++j) w[j] = LoadWeights<V, T>(r[j] + c);
    for (int i = 0; i < Q; ++i) {
      const Vec xv = V::Load(x[i] + c);
      for (int j = 0; j < kBatchDotRows; ++j) acc[i][j] = V::Fma(w[j], xv, acc[i][j]);
    }
  }
  if (c < cols) {
    const typename V::Tail tail = V::TailOf(cols - c);
    Vec w[kBatchDotRows];
    for (int j = 0; j < kBatchDotRows; ++j) w[j] = LoadWeightsTail<V, T>(r[j] + c, tail);
    for (int i = 0; i < Q; ++i) {
      const Vec xv = V::LoadTail(x[i] + c, tail);
      for (int j = 0; j < kBatchDotRows; ++j) acc[i][j] = V::Fma(w[j], xv, acc[i][j]);
    }
  }
  static_assert(kBatchDotRows == 4);
  for (int i = 0; i < Q; ++i) V::Sum4(acc[i], out[i]);
}

template <VectorTraits V, DType T>
void DotRowsBatch(WeightRows w, int64_t n, int64_t cols, const float* x, int64_t nx, int64_t ld_x,
                  float* out, int64_t ld_out) {
  const auto* base = static_cast<const WeightElem<T>*>(w.data);
  const RowsAhead<T> ahead(w.ld, cols * int64_t{sizeof(WeightElem<T>)});
  for (int64_t k0 = 0; k0 < n; k0 += kBatchDotRows) {
    // The last tile of rows repeats row n - 1 and keeps only the real rows' sums.
    const WeightElem<T>* r[kBatchDotRows];
    for (int j = 0; j < kBatchDotRows; ++j) r[j] = base + std::min(k0 + j, n - 1) * w.ld;
    for (int64_t j = k0; j < k0 + kBatchDotRows; ++j) ahead.Fetch(base + j * w.ld);
    const int64_t rows = std::min<int64_t>(kBatchDotRows, n - k0);
    ForEachBlockThenRest<kBatchDotVectors<V>>(nx, [&](int64_t i0, auto vectors) {
      constexpr int Q = decltype(vectors)::value;
      const float* xs[Q];
      for (int i = 0; i < Q; ++i) xs[i] = x + (i0 + i) * ld_x;
      float sums[Q][kBatchDotRows];
      DotRowsBatchTile<V, T, Q>(r, xs, cols, sums);
      for (int i = 0; i < Q; ++i)
        for (int64_t j = 0; j < rows; ++j) out[(i0 + i) * ld_out + k0 + j] = sums[i][j];
    });
  }
}

// A tile of axpy_rows_batch: D vectors of columns (or, kTail, the last partial one) of Q ys held
// in registers while all n rows are added, in order, as FloatAxpyBlock adds them.
constexpr int kBatchAxpyVectors = 4;
template <VectorTraits V>
constexpr int kBatchAxpyColumnVectors = V::kLanes >= 16 ? 4 : 2;

template <VectorTraits V, DType T, int Q, int D, bool kTail>
void AxpyRowsBatchTile(const WeightElem<T>* w, int64_t ld, int64_t n, const float* const (&coef)[Q],
                       float* const (&y)[Q], typename V::Tail tail, const RowsAhead<T>* ahead) {
  static_assert(!kTail || D == 1);
  using Vec = typename V::Vec;
  Vec acc[Q][D];
  for (int i = 0; i < Q; ++i)
    for (int d = 0; d < D; ++d)
      acc[i][d] = kTail ? V::LoadTail(y[i], tail) : V::Load(y[i] + d * V::kLanes);
  for (int64_t k = 0; k < n; ++k) {
    const WeightElem<T>* row = w + k * ld;
    if (ahead != nullptr) ahead->Fetch(row);
    Vec wv[D];
    for (int d = 0; d < D; ++d)
      wv[d] = kTail ? LoadWeightsTail<V, T>(row, tail) : LoadWeights<V, T>(row + d * V::kLanes);
    for (int i = 0; i < Q; ++i) {
      const Vec cv = V::Broadcast(coef[i][k]);
      for (int d = 0; d < D; ++d) acc[i][d] = V::Fma(cv, wv[d], acc[i][d]);
    }
  }
  for (int i = 0; i < Q; ++i) {
    for (int d = 0; d < D; ++d) {
      if constexpr (kTail) {
        V::StoreTail(y[i], tail, acc[i][d]);
      } else {
        V::Store(y[i] + d * V::kLanes, acc[i][d]);
      }
    }
  }
}

template <VectorTraits V, DType T>
void AxpyRowsBatch(WeightRows w, const float* coef, int64_t ld_coef, int64_t n, int64_t cols,
                   int64_t ny, float* y, int64_t ld_y) {
  constexpr int D = kBatchAxpyColumnVectors<V>;
  const auto* base = static_cast<const WeightElem<T>*>(w.data);
  const RowsAhead<T> ahead(w.ld, cols * int64_t{sizeof(WeightElem<T>)});
  ForEachBlockThenRest<kBatchAxpyVectors>(ny, [&](int64_t i0, auto vectors) {
    constexpr int Q = decltype(vectors)::value;
    const float* coefs[Q];
    for (int i = 0; i < Q; ++i) coefs[i] = coef + (i0 + i) * ld_coef;
    auto columns = [&]<int kD, bool kTail>(int64_t c, typename V::Tail tail) {
      float* ys[Q];
      for (int i = 0; i < Q; ++i) ys[i] = y + (i0 + i) * ld_y + c;
      // The first pass over the rows fetches them whole: the later ones find them in L2.
      AxpyRowsBatchTile<V, T, Q, kD, kTail>(base + c, w.ld, n, coefs, ys, tail,
                                            c == 0 ? &ahead : nullptr);
    };
    const typename V::Tail none = V::TailOf(0);
    int64_t c = 0;
    for (; c + D * V::kLanes <= cols; c += D * V::kLanes)
      columns.template operator()<D, false>(c, none);
    for (; c + V::kLanes <= cols; c += V::kLanes) columns.template operator()<1, false>(c, none);
    if (c < cols) columns.template operator()<1, true>(c, V::TailOf(cols - c));
  });
}

// Active rows are scattered, so the hardware prefetcher must find each new row afresh. Asking for
// the first lines of the next block's rows while this block streams hides that start-up latency.
template <int kLines, DType T>
void PrefetchRowStarts(const WeightElem<T>* up, int64_t up_ld, const WeightElem<T>* down,
                       int64_t down_ld, const int32_t* rows, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const auto* u = reinterpret_cast<const char*>(up + ElementOffset<T>(rows[j] * up_ld));
    const auto* d = reinterpret_cast<const char*>(down + ElementOffset<T>(rows[j] * down_ld));
    for (int l = 0; l < kLines; ++l) {
      _mm_prefetch(u + 64 * l, _MM_HINT_T0);
      _mm_prefetch(d + 64 * l, _MM_HINT_T0);
    }
  }
}

// The fused sparse step with the up dot products of each block from `up_dots(r, h)` (r: the R up
// rows, h: their R dots with x): the ISA's DotBlock over x in f32, or a dot that reads x in another
// form (the AVX512-BF16 table's, over x rounded to bf16). The down half is this ISA's AxpyBlock.
template <VectorTraits V, DType T, typename UpDots>
void SparseUpDownWith(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                      const float* gate_act, int64_t n, float* y, UpDots&& up_dots) {
  using Elem = WeightElem<T>;
  const auto* up = static_cast<const Elem*>(w_up.data);
  const auto* down = static_cast<const Elem*>(w_down_t.data);
  ForEachRowBlock<kScatteredBlockRows<T>>(n, [&](int64_t k, auto block) {
    constexpr int R = decltype(block)::value;
    const Elem* ru[R];
    const Elem* rd[R];
    RowStarts<T>(w_up, rows, k, 0, ru);
    RowStarts<T>(w_down_t, rows, k, 0, rd);
    if constexpr (R == kScatteredBlockRows<T> && V::kPrefetchLines > 0) {
      if (k + 2 * R <= n) {
        PrefetchRowStarts<V::kPrefetchLines, T>(up, w_up.ld, down, w_down_t.ld, rows + k + R, R);
      }
    }
    float h[R];
    up_dots(ru, h);
    for (int j = 0; j < R; ++j) h[j] *= gate_act[k + j];
    AxpyBlock<V, T, R>(rd, h, hidden, y);
  });
}

template <VectorTraits V, DType T>
void SparseUpDown(WeightRows w_up, WeightRows w_down_t, int64_t hidden, const int32_t* rows,
                  const float* gate_act, int64_t n, const float* x, float* y) {
  if (n == 0) return;
  // One chunk: the config limits hidden to what Activations holds.
  if (hidden > Activations<T>::kChunk) std::abort();
  Activations<T> a;
  a.Prepare(x, hidden);
  SparseUpDownWith<V, T>(w_up, w_down_t, hidden, rows, gate_act, n, y,
                         [&]<int R>(const WeightElem<T>* const (&r)[R], float (&h)[R]) {
                           DotBlock<V, T, R>(r, hidden, a, h);
                         });
}

// ---------------------------------------------------------------- batched quantized products

// Rows per tile, tokens per tile, and rows per band (a band's weights stay in L2 while every
// tile of tokens passes over them).
constexpr int kTileRows = 4, kTileTokens = 4;
constexpr int64_t kBandBytes = 128 << 10;

template <VectorTraits V, DType T>
void QuantMatmul(WeightRows w, int64_t rows, int64_t cols, const int8_t* q, const float* d,
                 int64_t n, float* y, int64_t ldy) {
  // One chunk, as in dot_rows: the config limits the width of every batched product to it.
  if (cols > Activations<T>::kChunk) std::abort();
  const int64_t blocks = cols / static_cast<int64_t>(kQuantBlock);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const int64_t band = std::max<int64_t>(
      kTileRows, kBandBytes / static_cast<int64_t>(DTypeBytes(T, static_cast<uint64_t>(cols))) /
                     kTileRows * kTileRows);
  for (int64_t r0 = 0; r0 < rows; r0 += band) {
    const int64_t r1 = std::min(rows, r0 + band);
    // Every weight block is unpacked and read once per kTileTokens tokens (2 or 3 tokens left
    // are one pass, not two or three).
    ForEachBlockThenRest<kTileTokens>(n, [&](int64_t t, auto tokens) {
      constexpr int RN = decltype(tokens)::value;
      const int8_t* qt[RN];
      const float* dt[RN];
      const int32_t* const no_sums[RN] = {};  // computed per tile: amortized over its rows
      for (int j = 0; j < RN; ++j) {
        qt[j] = q + (t + j) * cols;
        dt[j] = d + (t + j) * blocks;
      }
      ForEachRowBlock<kTileRows>(r1 - r0, [&](int64_t k, auto tile) {
        constexpr int RM = decltype(tile)::value;
        const uint8_t* rt[RM];
        for (int i = 0; i < RM; ++i) rt[i] = base + DTypeBytes(T, (r0 + k + i) * w.ld);
        QuantDotTile<V, T, RM, RN>(rt, qt, dt, no_sums, blocks, y + t * ldy + r0 + k, ldy);
      });
    });
  }
}

// quant_matmul for the K-quants: dot_rows' arithmetic row by row and token by token (so bit for
// bit its results), each row read from L1 by every token. Not tiled yet.
template <VectorTraits V, DType T>
void KQuantMatmul(WeightRows w, int64_t rows, int64_t cols, const int8_t* q, const float* d,
                  int64_t n, float* y, int64_t ldy) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const int64_t blocks = cols / static_cast<int64_t>(kQuantBlock);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row[1] = {base + DTypeBytes(T, static_cast<uint64_t>(r * w.ld))};
    for (int64_t t = 0; t < n; ++t) {
      KQuantDotBlock<V, T, 1>(row, cols, q + t * cols, d + t * blocks, nullptr, nullptr,
                              y + t * ldy + r);
    }
  }
}

// The weight ops of one ISA, for MakeWeightOps.
template <VectorTraits V>
struct SimdKernels {
  template <DType T>
  static constexpr WeightOps Ops() {
    if constexpr (IsKQuant(T)) {
      return {DotRows<V, T>, AxpyRows<V, T>, SparseUpDown<V, T>, KQuantMatmul<V, T>};
    } else if constexpr (IsQuantized(T)) {
      return {DotRows<V, T>, AxpyRows<V, T>, SparseUpDown<V, T>, QuantMatmul<V, T>};
    } else {
      return {DotRows<V, T>,      AxpyRows<V, T>,      SparseUpDown<V, T>, nullptr,
              DotRowsBatch<V, T>, AxpyRowsBatch<V, T>};
    }
  }
};

}  // namespace
}  // namespace zeroskip::simd
