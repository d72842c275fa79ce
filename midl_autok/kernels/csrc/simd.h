// The SIMD layer under the CPU kernels (midl_cpu.cpp, midl_block.cpp): one struct per vector
// width, with the same static members, so that each kernel is written once as a template over
// it. Picked at build time from the CPU (-march=native), as the kernels always were:
//
//   MIDL_AVX512 (``__AVX512F__``): Simd512, 16 floats a register, tails through mask registers;
//   MIDL_AVX2   (``__AVX2__`` and ``__FMA__``, no AVX-512): Simd256, 8 floats a register,
//               tails through vector masks (whole vectors take plain loads and stores);
//   neither: no SIMD struct; the kernels run their generic loops.
//
// Simd256 is also defined in AVX-512 builds (for midl_block.cpp's 8-wide tiles, which it runs
// on both). The members are thin: one intrinsic, or the few that one operation takes on that
// width (a horizontal tree, a masked tail, 2^n, an unsigned compare).
//
//   reg / ireg          a float / 32-bit integer register; W floats in a register
//   zero, set1, load, store, loadn(p, n), storen(p, v, n)   n: lanes left (>= W: a whole one)
//   add, sub, mul, div, max, min, fmadd(a, b, c) = a b + c, fnmadd(a, b, c) = c - a b
//   round(v)            to the nearest integer; ldexp(q, n) = q 2^n for integral n
//   keep_if_pos(y, p)   p where y > 0, else 0 (NaN: 0)
//   sums(v[W])          the sums of W registers, as one register (lane i: the sum of v[i])
//   sums8(v[8])         the sums of 8 registers, as one 8-float register
//   hsum(v)             the sum of one register's lanes
//   order_keys(p, n)    the order keys of min(n, W) floats (larger float, larger unsigned key;
//                       see order_key in midl_cpu.cpp), 0 in the lanes beyond
//   store_keys(p, v) / stored(key): keys are kept in memory in the form this width compares
//                       fastest (Simd256: sign bit flipped, for its signed compare; Simd512: as
//                       they are); stored(key) is one key in that form
//   above(b) / mask_above(p, c): the bit mask of the W stored keys at p that are > b (as
//                       unsigned keys), c = above(b)
//   count_above(p, nv, c): how many of the nv W stored keys at p are > b, c = above(b)
//   compress(m, j, out) the indices j + i of the set bits i of m, as 32-bit integers, at
//                       out[0..n); returns n. Branch-free: it writes W entries (out needs W of
//                       room past out[n), the rest being garbage)
#pragma once

#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define MIDL_AVX512 1
#define MIDL_AVX2 0
#elif defined(__AVX2__) && defined(__FMA__)
#define MIDL_AVX512 0
#define MIDL_AVX2 1
#else
#define MIDL_AVX512 0
#define MIDL_AVX2 0
#endif
#define MIDL_SIMD (MIDL_AVX512 || MIDL_AVX2)

#if defined(__GNUC__) || defined(__clang__)
#define MIDL_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define MIDL_PREFETCH(p) ((void)0)
#endif

namespace midl_simd {

// The members that are one intrinsic of the same name on every width (P: _mm256, _mm512).
#define MIDL_SIMD_SAME_NAME(P)                                                 \
  static reg zero() { return P##_setzero_ps(); }                               \
  static reg set1(float v) { return P##_set1_ps(v); }                          \
  static reg load(const float* p) { return P##_loadu_ps(p); }                  \
  static void store(float* p, reg v) { P##_storeu_ps(p, v); }                  \
  static reg add(reg a, reg b) { return P##_add_ps(a, b); }                    \
  static reg sub(reg a, reg b) { return P##_sub_ps(a, b); }                    \
  static reg mul(reg a, reg b) { return P##_mul_ps(a, b); }                    \
  static reg div(reg a, reg b) { return P##_div_ps(a, b); }                    \
  static reg max(reg a, reg b) { return P##_max_ps(a, b); }                    \
  static reg min(reg a, reg b) { return P##_min_ps(a, b); }                    \
  static reg fmadd(reg a, reg b, reg c) { return P##_fmadd_ps(a, b, c); }      \
  static reg fnmadd(reg a, reg b, reg c) { return P##_fnmadd_ps(a, b, c); }

#if defined(__AVX2__) && defined(__FMA__)
struct Simd256 {
  using reg = __m256;
  using ireg = __m256i;
  static constexpr int W = 8;
  // dot products: inputs up to this many keep two accumulators each (16 registers)
  static constexpr int kPairedInputs = 4;

  // Lanes [0, min(n, 8)) set: the mask of a partial load or store.
  static ireg tail(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n < 8 ? n : 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  MIDL_SIMD_SAME_NAME(_mm256)
  // (masked stores are slow on some CPUs: whole vectors take plain loads and stores)
  static reg loadn(const float* p, int64_t n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail(n));
  }
  static void storen(float* p, reg v, int64_t n) {
    if (n >= 8) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, tail(n), v);
    }
  }
  static reg round(reg v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n built in the exponent field (n in [-127, 127]; 2^-127 flushes to 0)
  static reg ldexp(reg q, reg n) {
    const __m256i p2 =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(q, _mm256_castsi256_ps(p2));
  }
  static reg keep_if_pos(reg y, reg p) {
    return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), p);
  }
  // horizontal adds, then the two 128-bit halves
  static reg sums(const reg* v) {
    const __m256 b0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    const __m256 b1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20),
                         _mm256_permute2f128_ps(b0, b1, 0x31));
  }
  static __m256 sums8(const reg* v) { return sums(v); }
  static float hsum(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static ireg order_keys(const float* p, int64_t n) {
    const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
    const __m256i u = _mm256_castps_si256(loadn(p, n));
    const __m256i key = _mm256_xor_si256(u, _mm256_or_si256(_mm256_srai_epi32(u, 31), sign));
    return n >= 8 ? key : _mm256_and_si256(key, tail(n));
  }
  // an unsigned ``key > b`` is the signed compare of both with the sign bit flipped: the keys
  // are stored flipped, so that a count is one compare and one subtract per 8 keys
  static void store_keys(uint32_t* p, ireg v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm256_xor_si256(v, _mm256_set1_epi32(int(0x80000000u))));
  }
  static uint32_t stored(uint32_t key) { return key ^ 0x80000000u; }
  static ireg above(uint32_t b) { return _mm256_set1_epi32(int(b ^ 0x80000000u)); }
  static __m256i gt(const uint32_t* p, ireg c) {
    return _mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), c);
  }
  static unsigned mask_above(const uint32_t* p, ireg c) {
    return unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(gt(p, c))));
  }
  // two vector counters (a compare is -1 per lane that counts), summed once at the end
  static int64_t count_above(const uint32_t* p, int64_t nv, ireg c) {
    __m256i n0 = _mm256_setzero_si256(), n1 = _mm256_setzero_si256();
    int64_t v = 0;
    for (; v + 2 <= nv; v += 2) {
      n0 = _mm256_sub_epi32(n0, gt(p + 8 * v, c));
      n1 = _mm256_sub_epi32(n1, gt(p + 8 * v + 8, c));
    }
    if (v < nv) n0 = _mm256_sub_epi32(n0, gt(p + 8 * v, c));
    const __m256i n = _mm256_add_epi32(n0, n1);
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(n), _mm256_extracti128_si256(n, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    return _mm_cvtsi128_si32(h);
  }
  // (the lanes of the set bits of each 8-bit mask, one byte each: a loop over the bits took a
  // mispredicted branch about once per 8 keys)
  struct Lanes {
    uint64_t of[256];
    constexpr Lanes() : of() {
      for (unsigned m = 0; m < 256; ++m) {
        int n = 0;
        for (unsigned i = 0; i < 8; ++i)
          if (m & (1u << i)) of[m] |= uint64_t(i) << (8 * n++);
      }
    }
  };
  static int64_t compress(unsigned m, int64_t j, int32_t* out) {
    static constexpr Lanes kLanes{};
    const __m256i ids = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(kLanes.of[m & 0xFF])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm256_add_epi32(ids, _mm256_set1_epi32(int32_t(j))));
    return __builtin_popcount(m & 0xFF);
  }
};
#endif

#if defined(__AVX512F__)
struct Simd512 {
  using reg = __m512;
  using ireg = __m512i;
  static constexpr int W = 16;
  static constexpr int kPairedInputs = 7;  // (32 registers)

  static __mmask16 tail(int64_t n) {
    return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
  }
  MIDL_SIMD_SAME_NAME(_mm512)
  static reg loadn(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(tail(n), p); }
  static void storen(float* p, reg v, int64_t n) { _mm512_mask_storeu_ps(p, tail(n), v); }
  static reg round(reg v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static reg ldexp(reg q, reg n) { return _mm512_scalef_ps(q, n); }
  static reg keep_if_pos(reg y, reg p) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), p);
  }
  // A transpose-and-add tree: n pairs of registers -> n registers of their 2-lane sums, ...
  static void fold32(const reg* v, reg* a, int n) {
    for (int i = 0; i < n; ++i)
      a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                           _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  static void fold64(const reg* a, reg* b, int n) {
    for (int i = 0; i < n; ++i) {
      const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
      b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
  }
  static reg fold128(reg x, reg y) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
  }
  // 45 shuffles/adds instead of sixteen horizontal sums
  static reg sums(const reg* v) {
    reg a[8], b[4];
    fold32(v, a, 8);
    fold64(a, b, 4);
    return fold128(fold128(b[0], b[1]), fold128(b[2], b[3]));
  }
  static __m256 sums8(const reg* v) {
    reg a[4], b[2];
    fold32(v, a, 4);
    fold64(a, b, 2);
    const reg c = fold128(b[0], b[1]);
    const reg e = _mm512_shuffle_f32x4(c, c, 0xD8);
    return _mm256_add_ps(_mm512_castps512_ps256(e), _mm512_extractf32x8_ps(e, 1));
  }
  static float hsum(reg v) { return _mm512_reduce_add_ps(v); }
  static ireg order_keys(const float* p, int64_t n) {
    const __mmask16 m = tail(n);
    const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
    const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, p));
    const __m512i key = _mm512_xor_si512(u, _mm512_or_si512(_mm512_srai_epi32(u, 31), sign));
    return _mm512_maskz_mov_epi32(m, key);
  }
  static void store_keys(uint32_t* p, ireg v) { _mm512_storeu_si512(p, v); }
  static uint32_t stored(uint32_t key) { return key; }
  static ireg above(uint32_t b) { return _mm512_set1_epi32(int(b)); }
  static unsigned mask_above(const uint32_t* p, ireg c) {
    return _mm512_cmpgt_epu32_mask(_mm512_loadu_si512(p), c);
  }
  static int64_t count_above(const uint32_t* p, int64_t nv, ireg c) {  // two chains
    int64_t n0 = 0, n1 = 0, v = 0;
    for (; v + 2 <= nv; v += 2) {
      n0 += _mm_popcnt_u32(mask_above(p + 16 * v, c));
      n1 += _mm_popcnt_u32(mask_above(p + 16 * v + 16, c));
    }
    if (v < nv) n0 += _mm_popcnt_u32(mask_above(p + 16 * v, c));
    return n0 + n1;
  }
  static int64_t compress(unsigned m, int64_t j, int32_t* out) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_storeu_si512(out, _mm512_maskz_compress_epi32(
                                 __mmask16(m), _mm512_add_epi32(lanes, _mm512_set1_epi32(int(j)))));
    return _mm_popcnt_u32(m);
  }
};
#endif

// The width the neuron kernels (midl_cpu.cpp) run at in this build.
#if MIDL_AVX512
using Simd = Simd512;
#elif MIDL_AVX2
using Simd = Simd256;
#endif

#undef MIDL_SIMD_SAME_NAME

}  // namespace midl_simd
