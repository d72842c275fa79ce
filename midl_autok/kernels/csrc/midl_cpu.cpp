// MID-L CPU kernels, compiled on first use by midl_autok/kernels/cpu.py (shipped as package data).
//
// ``midl_sparse_eval(x, G1, G2, W, b, V, U, c, k, act)`` computes one MID-L layer in eval mode
// for x (B, d_in) and returns ``(y, logits, idx)``:
//
// 1. the logits ``G2 (G1 x)`` and the light path ``U (V x) + c`` (or 0 without one);
// 2. per sample, the k largest logits (the k-th largest key by a bitwise binary search, then
//    one scan; exactly k even with ties or NaN) -> ``idx`` (B, k);
// 3. ``y = act(light)`` everywhere, then for the selected (sample, row) pairs only
//    ``y = act(light + g * (W[row] . x + b[row] - light))`` with ``g = sigmoid(logit)``.
//
// A float32 batch of 8 or more with SIMD (batch_eval_f32): one GEMM for [G1; V] x, then per
// sample in one pass the thin up-products (four samples at a time, from transposed G2 and U),
// the selection and the gate at the k selected entries only; then a blocked sampled
// dense-dense product for the full path: samples in tiles (a bit set of the tile's samples
// per row), d_in in chunks, rows in blocks that keep their chunk of W in L2, each row chunk
// dotted with up to 8 of the tile's samples at once (``full_path_tiles_f32``). The stacked
// and transposed thin matrices are cached per parameter version (cache.h).
// One float32 sample with SIMD: the thin products in loops, four selected rows at a time
// against the input (``rows_dot4``: four streams of W in flight). Otherwise (a few samples,
// float64, no SIMD): the thin products as GEMMs or loops, the selected rows of W read in
// place, grouped by row (each selected row read once for all samples that chose it).
// MKL's sgemm runs its AVX2 code on AMD CPUs, so there the AVX-512 build's blocked path also
// does its multiply-adds at a higher rate than the dense layer it is compared with.
//

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

// The SIMD paths, picked at build time from the CPU (-march=native): AVX-512 where the build
// has it, else AVX2 + FMA (8-float lanes, tails through vector masks), else none (the
// generic loops, which the compiler vectorizes as it can). Each SIMD kernel below is written
// once, as a template over the width ``S`` (simd.h: Simd512 or Simd256; ``Simd`` is this
// build's).
#include "simd.h"

#include "cache.h"
#include "params.h"

#if MIDL_SIMD
using midl_simd::Simd;
#endif

namespace {

// Up to this many samples the low-rank products run in plain loops, not GEMM calls.
constexpr int64_t kSmallBatch = 4;

// From this many samples on, a float batch takes batch_eval_f32 (SIMD builds).
constexpr int64_t kTileBatch = 8;

// Multiply-adds per thread chunk of the full path (below this, one thread).
constexpr int64_t kParallelMacs = int64_t(1) << 18;

// Independent partial sums: the compiler vectorizes the inner loop without reassociating.
constexpr int64_t kLanes = 64;

// ``next`` (may be null): the row read after this one, prefetched while this one is summed.
template <typename T>
inline T dot1(const T* __restrict a, const T* __restrict x, int64_t n,
              const T* next = nullptr) {
  constexpr int64_t kLine = 64 / sizeof(T);
  T acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    if (next != nullptr)
      for (int64_t l = 0; l < kLanes; l += kLine) MIDL_PREFETCH(next + i + l);
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += a[i + l] * x[i + l];
  }
  T s = 0;
  for (; i < n; ++i) s += a[i] * x[i];
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

#if MIDL_SIMD
// Four rows ws[0..4) of W against one input x: x is loaded once for the four rows (five loads
// per four multiply-adds, eight independent accumulators) and the four rows stream at once,
// which keeps more of W's cache lines in flight than one row at a time (a sample's selected
// rows are scattered through W, so the hardware prefetcher sees only short runs).
template <class S>
inline void rows_dot4(const float* const* ws, const float* __restrict x, int64_t len,
                      float* out) {
  using reg = typename S::reg;
  constexpr int W = S::W;
  reg a[4], b[4];
  for (int r = 0; r < 4; ++r) a[r] = b[r] = S::zero();
  int64_t i = 0;
  for (; i + 2 * W <= len; i += 2 * W) {
    const reg x0 = S::load(x + i), x1 = S::load(x + i + W);
    for (int r = 0; r < 4; ++r) {
      a[r] = S::fmadd(S::load(ws[r] + i), x0, a[r]);
      b[r] = S::fmadd(S::load(ws[r] + i + W), x1, b[r]);
    }
  }
  for (; i < len; i += W) {  // at most one whole and one partial vector
    const reg x0 = S::loadn(x + i, len - i);
    for (int r = 0; r < 4; ++r) a[r] = S::fmadd(S::loadn(ws[r] + i, len - i), x0, a[r]);
  }
  for (int r = 0; r < 4; ++r) out[r] = S::hsum(S::add(a[r], b[r]));
}
#endif

// One row against four inputs: five loads per four multiply-adds.
constexpr int64_t kLanes4 = 32;

template <typename T>
inline void dot4(const T* __restrict a, const T* __restrict x0, const T* __restrict x1,
                 const T* __restrict x2, const T* __restrict x3, int64_t n, T* out) {
  T c0[kLanes4] = {}, c1[kLanes4] = {}, c2[kLanes4] = {}, c3[kLanes4] = {};
  int64_t i = 0;
  for (; i + kLanes4 <= n; i += kLanes4) {
    for (int64_t l = 0; l < kLanes4; ++l) {
      const T w = a[i + l];
      c0[l] += w * x0[i + l];
      c1[l] += w * x1[i + l];
      c2[l] += w * x2[i + l];
      c3[l] += w * x3[i + l];
    }
  }
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (; i < n; ++i) {
    s0 += a[i] * x0[i];
    s1 += a[i] * x1[i];
    s2 += a[i] * x2[i];
    s3 += a[i] * x3[i];
  }
  for (int64_t l = 0; l < kLanes4; ++l) {
    s0 += c0[l];
    s1 += c1[l];
    s2 += c2[l];
    s3 += c3[l];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

#if MIDL_SIMD
// Sixteen rows of a float (d, r) matrix with r % W == 0 against h: W FMA chains per W rows,
// then one transpose-and-add tree per W rows (S::sums) instead of W horizontal sums.
template <class S>
inline void thin16(const float* __restrict Bm, const float* __restrict h, int64_t r, int64_t j,
                   float* __restrict o) {
  for (int64_t jw = j; jw < j + 16; jw += S::W) {
    typename S::reg v[S::W];
    for (int i = 0; i < S::W; ++i) v[i] = S::zero();
    for (int64_t q = 0; q < r; q += S::W) {
      const typename S::reg hv = S::load(h + q);
      for (int i = 0; i < S::W; ++i) v[i] = S::fmadd(S::load(Bm + (jw + i) * r + q), hv, v[i]);
    }
    S::store(o + jw, S::sums(v));
  }
}
#endif

#if MIDL_SIMD
// o[j0..) = c + sum_q h[q] * BT[q][j0..) in blocks of U W outputs (U independent FMA chains),
// as far as whole blocks go; returns where it stopped.
template <class S, int U>
inline int64_t thin_rows_t_blocks(const float* __restrict h, const float* __restrict BT,
                                  int64_t r, int64_t d, const float* __restrict c,
                                  float* __restrict o, int64_t j) {
  using reg = typename S::reg;
  constexpr int W = S::W;
  for (; j + U * W <= d; j += U * W) {
    reg a[U];
    for (int u = 0; u < U; ++u) a[u] = c != nullptr ? S::load(c + j + u * W) : S::zero();
    for (int64_t q = 0; q < r; ++q) {
      const reg hq = S::set1(h[q]);
      const float* b = BT + q * d + j;
      for (int u = 0; u < U; ++u) a[u] = S::fmadd(hq, S::load(b + u * W), a[u]);
    }
    for (int u = 0; u < U; ++u) S::store(o + j + u * W, a[u]);
  }
  return j;
}

// o[0..d) = c + sum_q h[q] * BT[q][0..d)  (BT: r x d, the transposed thin matrix): 8 W outputs
// at a time (eight chains cover the FMA latency), then 4 W, then one W at a time.
template <class S>
inline void thin_rows_t(const float* __restrict h, const float* __restrict BT, int64_t r,
                        int64_t d, const float* __restrict c, float* __restrict o) {
  using reg = typename S::reg;
  constexpr int W = S::W;
  int64_t j = thin_rows_t_blocks<S, 8>(h, BT, r, d, c, o, 0);
  j = thin_rows_t_blocks<S, 4>(h, BT, r, d, c, o, j);
  for (; j < d; j += W) {
    const int64_t n = d - j;
    reg a0 = c != nullptr ? S::loadn(c + j, n) : S::zero();
    for (int64_t q = 0; q < r; ++q) a0 = S::fmadd(S::set1(h[q]), S::loadn(BT + q * d + j, n), a0);
    S::storen(o + j, a0, n);
  }
}
#endif

#if MIDL_SIMD
// thin_rows_t for four samples at once: o[u][0..d) = c + sum_q h[u][q] BT[q][0..d), u < 4.
// Each 2 W columns of BT are loaded once for the four samples (two vectors, eight chains):
// BT (r x d, 32 KB at 16 x 512) is read from L2 a quarter as often as one sample at a time.
template <class S>
inline void thin_rows_t4(const float* const* h, const float* __restrict BT, int64_t r,
                         int64_t d, const float* __restrict c, float* const* o) {
  using reg = typename S::reg;
  constexpr int W = S::W;
  int64_t j = 0;
  for (; j + 2 * W <= d; j += 2 * W) {
    reg a[4][2];
    for (int v = 0; v < 2; ++v) {
      const reg c0 = c != nullptr ? S::load(c + j + v * W) : S::zero();
      for (int u = 0; u < 4; ++u) a[u][v] = c0;
    }
    for (int64_t q = 0; q < r; ++q) {
      const reg b0 = S::load(BT + q * d + j), b1 = S::load(BT + q * d + j + W);
      for (int u = 0; u < 4; ++u) {
        const reg hq = S::set1(h[u][q]);
        a[u][0] = S::fmadd(hq, b0, a[u][0]);
        a[u][1] = S::fmadd(hq, b1, a[u][1]);
      }
    }
    for (int u = 0; u < 4; ++u) {
      S::store(o[u] + j, a[u][0]);
      S::store(o[u] + j + W, a[u][1]);
    }
  }
  for (; j < d; j += W) {
    const int64_t n = d - j;
    for (int u = 0; u < 4; ++u) {
      reg a0 = c != nullptr ? S::loadn(c + j, n) : S::zero();
      for (int64_t q = 0; q < r; ++q)
        a0 = S::fmadd(S::set1(h[u][q]), S::loadn(BT + q * d + j, n), a0);
      S::storen(o[u] + j, a0, n);
    }
  }
}
#endif

// o[j] = Bm[j, :] . h + bias[j] for every row of a thin (d, r) matrix (r = a low rank).
template <typename T>
inline void thin_matvec(const T* __restrict Bm, const T* __restrict h, int64_t r, int64_t d,
                        const T* __restrict bias, T* __restrict o) {
  constexpr int64_t J = 16;
  int64_t j = 0;
#if MIDL_SIMD
  if constexpr (std::is_same<T, float>::value) {
    if (r % Simd::W == 0)
      for (; j + J <= d; j += J) thin16<Simd>(Bm, h, r, j, o);
  }
#endif
  for (; j + J <= d; j += J) {  // 16 independent sums vectorize across rows
    T acc[J] = {};
    for (int64_t q = 0; q < r; ++q) {
      const T hq = h[q];
      for (int64_t jj = 0; jj < J; ++jj) acc[jj] += Bm[(j + jj) * r + q] * hq;
    }
    for (int64_t jj = 0; jj < J; ++jj) o[j + jj] = acc[jj];
  }
  for (; j < d; ++j) {
    T acc = 0;
    for (int64_t q = 0; q < r; ++q) acc += Bm[j * r + q] * h[q];
    o[j] = acc;
  }
  if (bias != nullptr)
    for (int64_t jj = 0; jj < d; ++jj) o[jj] += bias[jj];
}

// out (B, d) = (x (B, d_in) . A^T (d_in -> r)) . Bm^T (r -> d) + bias, for a few samples:
// r long dot products per sample, then d short ones; no GEMM call overhead.
template <typename T>
void lowrank_small(const T* x, int64_t B, int64_t din, const T* A, const T* Bm, const T* bias,
                   int64_t r, int64_t d, T* out) {
  std::vector<T> h(r);
  for (int64_t s = 0; s < B; ++s) {
    const T* xs = x + s * din;
    int64_t q = 0;
#if MIDL_SIMD
    if constexpr (std::is_same<T, float>::value) {  // four rows of A at a time
      for (; q + 4 <= r; q += 4) {
        const float* ws[4] = {A + q * din, A + (q + 1) * din, A + (q + 2) * din,
                              A + (q + 3) * din};
        rows_dot4<Simd>(ws, xs, din, h.data() + q);
      }
    }
#endif
    for (; q < r; ++q) h[q] = dot1<T>(A + q * din, xs, din);
    thin_matvec<T>(Bm, h.data(), r, d, bias, out + s * d);
  }
}

// Activation codes shared with Python: 0 identity, 1 relu, 2 tanh, 3 silu, 4 gelu (erf).
template <typename T>
inline T activate(T v, int64_t act) {
  switch (act) {
    case 1: return v > T(0) ? v : T(0);
    case 2: return std::tanh(v);
    case 3: return v / (T(1) + std::exp(-v));
    case 4: return T(0.5) * v * (T(1) + std::erf(v * T(0.70710678118654752440)));
    default: return v;
  }
}


// Order-preserving unsigned keys of floating-point values (larger value, larger key).
inline uint32_t order_key(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t order_key(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
template <typename T>
struct KeyOf {  // reduced-precision types select on their float value
  using type = uint32_t;
  static type of(T v) { return order_key(static_cast<float>(v)); }
};
template <>
struct KeyOf<double> {
  using type = uint64_t;
  static type of(double v) { return order_key(v); }
};

// The k largest of z[0..d) -> idx[0..k), in increasing index order: exactly k indices,
// whatever ties or NaNs occur. The k-th largest key is found by radix selection, 8 bits at
// a time, keeping only the keys that still share the chosen prefix (a quickselect's
// data-dependent branches mispredict about every other step and cost several times more).
#if MIDL_SIMD
// The bitwise binary search of the SIMD versions below: the largest 32-bit key with at least
// k keys >= it (count_ge(cand): how many keys are >= cand), stopping as soon as a candidate
// has exactly k (then *exact).
template <typename CountGe>
inline uint32_t bisect_kth_key(int64_t k, CountGe count_ge, bool* exact) {
  uint32_t prefix = 0;
  *exact = false;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = prefix | (1u << bit);
    const int64_t n = count_ge(cand);
    if (n >= k) {
      prefix = cand;
      if (n == k) {
        *exact = true;
        break;
      }
    }
  }
  return prefix;
}
#endif

#if MIDL_SIMD
// The k-th largest key of d floats by a bitwise binary search on the key: each of at most 32
// steps counts the keys >= a candidate with one compare per W keys, and it stops as soon as a
// candidate has exactly k keys at or above it (the usual case without ties). keys[0..d) get
// the order keys (padded with 0 to a multiple of W). Returns the threshold; *exact = every
// key >= threshold is selected (exactly k of them), else the threshold is the k-th largest
// key itself and the ties at it are taken by lowest index.
template <class S>
inline uint32_t topk_threshold_f32(const float* z, int64_t d, int64_t k, uint32_t* keys,
                                   bool* exact) {
  int64_t j = 0;
  for (; j + S::W <= d; j += S::W) S::store_keys(keys + j, S::order_keys(z + j, S::W));
  if (j < d) {  // the tail
    S::store_keys(keys + j, S::order_keys(z + j, d - j));
    j += S::W;
  }
  const int64_t nv = j / S::W;
  // keys >= cand, i.e. > cand - 1 (cand >= 1; padding keys are 0: never counted)
  return bisect_kth_key(k, [&](uint32_t cand) { return S::count_above(keys, nv, S::above(cand - 1)); },
                        exact);
}

// select_topk for float with SIMD: the same set (ties by lowest index); idx ascending except
// that ties at the k-th key come after the keys above it.
template <class S>
inline void select_topk_f32(const float* z, int64_t d, int64_t k, int64_t* idx,
                            std::vector<uint32_t>& keys) {
  const int64_t nk = (d + S::W - 1) / S::W * S::W;
  keys.resize(2 * nk + S::W);  // the keys, then the selected indices (32-bit; W of room)
  bool exact = false;
  const uint32_t thr = topk_threshold_f32<S>(z, d, k, keys.data(), &exact);
  // selected: key >= thr (exact; thr >= 1 then) or key > thr
  const auto c = S::above(exact ? thr - 1 : thr);
  int32_t* sel = reinterpret_cast<int32_t*>(keys.data() + nk);
  int64_t t = 0;
  for (int64_t j = 0; j < d; j += S::W)
    t += S::compress(S::mask_above(keys.data() + j, c), j, sel + t);
  for (int64_t q = 0; q < t; ++q) idx[q] = sel[q];
  const uint32_t tie = S::stored(thr);
  for (int64_t j = 0; j < d && t < k; ++j)  // ties at the k-th largest, by index
    if (keys[j] == tie) idx[t++] = j;
}
#endif

template <typename T>
void select_topk(const T* z, int64_t d, int64_t k, int64_t* idx,
                 std::vector<typename KeyOf<T>::type>& keys,
                 std::vector<typename KeyOf<T>::type>& cur) {
  using K = typename KeyOf<T>::type;
#if MIDL_SIMD
  if constexpr (std::is_same<T, float>::value) {
    select_topk_f32<Simd>(z, d, k, idx, keys);
    return;
  }
#endif
  keys.resize(d);
  for (int64_t j = 0; j < d; ++j) keys[j] = KeyOf<T>::of(z[j]);
  cur.assign(keys.begin(), keys.end());
  int64_t need = k;  // rank of the wanted key among those in cur (1 = largest)
  K prefix = 0;
  for (int shift = int(sizeof(K) * 8) - 8; shift >= 0; shift -= 8) {
    int64_t hist[256] = {};
    for (const K key : cur) hist[(key >> shift) & 0xFF]++;
    int digit = 255;
    for (; digit > 0 && hist[digit] < need; --digit) need -= hist[digit];
    prefix |= K(digit) << shift;
    int64_t n = 0;
    for (const K key : cur) {  // branch-free compaction: keep the keys of that digit
      cur[n] = key;
      n += ((key >> shift) & 0xFF) == K(digit);
    }
    cur.resize(n);
  }
  int64_t t = 0;
  for (int64_t j = 0; j < d; ++j) {  // fewer than k keys are above the k-th largest,
    idx[t] = j;                      // so t < k here: a branch-free append
    t += keys[j] > prefix;
  }
  for (int64_t j = 0; j < d && t < k; ++j)  // then ties at the k-th largest, by index
    if (keys[j] == prefix) idx[t++] = j;
}

#if MIDL_SIMD
// sigmoid(z) = 1 / (1 + exp(-z)) for W floats: exp as 2^n e^r (Cephes' expf polynomial, about
// 1 ulp), z clamped to [-88, 88] (beyond, sigmoid is 0 or 1 to float precision); NaN stays
// NaN. (Simd256 builds 2^n in the exponent field: 2^-127 flushes to 0, where the sigmoid is 1
// to float precision anyway.)
template <class S>
inline typename S::reg sigmoid(typename S::reg z) {
  using reg = typename S::reg;
  const reg one = S::set1(1.0f);
  reg x = S::max(S::set1(-88.0f), S::sub(S::zero(), z));
  x = S::min(S::set1(88.0f), x);  // (max/min return x when x is NaN)
  const reg n = S::round(S::mul(x, S::set1(1.44269504088896341f)));
  reg r = S::fnmadd(n, S::set1(0.693359375f), x);
  r = S::fnmadd(n, S::set1(-2.12194440e-4f), r);
  reg q = S::set1(1.9875691500e-4f);
  q = S::fmadd(q, r, S::set1(1.3981999507e-3f));
  q = S::fmadd(q, r, S::set1(8.3334519073e-3f));
  q = S::fmadd(q, r, S::set1(4.1665795894e-2f));
  q = S::fmadd(q, r, S::set1(1.6666665459e-1f));
  q = S::fmadd(q, r, S::set1(5.0000001201e-1f));
  q = S::fmadd(S::mul(q, r), r, S::add(r, one));
  const reg e = S::ldexp(q, n);  // exp(-z)
  return S::div(one, S::add(one, e));
}

// g[0..n) = sigmoid(z[0..n))
template <class S>
inline void sigmoid_row_f32(const float* z, float* g, int64_t n) {
  for (int64_t j = 0; j < n; j += S::W) S::storen(g + j, sigmoid<S>(S::loadn(z + j, n - j)), n - j);
}

// w[0..len) . xs[n][0..len) for n < N (N <= 8): each W floats of w are loaded once for all N
// inputs (N + 1 loads per N multiply-adds). Lanes >= N of the result are 0.
// ``next`` (may be null): a row read next, prefetched 64 bytes per 16 floats.
template <class S, int N>
inline __m256 dot_n(const float* __restrict w, const float* const* xs, int64_t len,
                    const float* next) {
  using reg = typename S::reg;
  constexpr int W = S::W;
  constexpr bool paired = N <= S::kPairedInputs;  // two accumulators per input: enough
  reg a[8], b[8];                                 // independent FMA chains
  for (int n = 0; n < 8; ++n) a[n] = b[n] = S::zero();
  int64_t i = 0;
  for (; i + 2 * W <= len; i += 2 * W) {
    if (next != nullptr)
      for (int l = 0; l < 2 * W; l += 16) MIDL_PREFETCH(next + i + l);
    const reg w0 = S::load(w + i), w1 = S::load(w + i + W);
    for (int n = 0; n < N; ++n) {
      a[n] = S::fmadd(w0, S::load(xs[n] + i), a[n]);
      if constexpr (paired) {
        b[n] = S::fmadd(w1, S::load(xs[n] + i + W), b[n]);
      } else {  // (too few registers: one accumulator each)
        a[n] = S::fmadd(w1, S::load(xs[n] + i + W), a[n]);
      }
    }
  }
  for (; i < len; i += W) {  // at most one whole and one partial vector
    const reg w0 = S::loadn(w + i, len - i);
    for (int n = 0; n < N; ++n) a[n] = S::fmadd(w0, S::loadn(xs[n] + i, len - i), a[n]);
  }
  if constexpr (paired)
    for (int n = 0; n < N; ++n) a[n] = S::add(a[n], b[n]);
  return S::sums8(a);
}

inline __m256 dot_upto8(int n, const float* w, const float* const* xs, int64_t len,
                        const float* next) {
  switch (n) {
    case 1: return dot_n<Simd, 1>(w, xs, len, next);
    case 2: return dot_n<Simd, 2>(w, xs, len, next);
    case 3: return dot_n<Simd, 3>(w, xs, len, next);
    case 4: return dot_n<Simd, 4>(w, xs, len, next);
    case 5: return dot_n<Simd, 5>(w, xs, len, next);
    case 6: return dot_n<Simd, 6>(w, xs, len, next);
    case 7: return dot_n<Simd, 7>(w, xs, len, next);
    default: return dot_n<Simd, 8>(w, xs, len, next);
  }
}

// The full path of a batch (float, AVX-512 or AVX2 + FMA), a sampled dense-dense product: for
// every selected (sample s, row j), y[s, j] = l + g (W[j] . x[s] + b[j] - l) with l = y[s, j]
// on entry (the light path, or 0) and g = gate[s, j]; no activation. Blocked like a GEMM so
// that most loads hit L1: samples in tiles of T (a 64-bit set of the tile's samples per row),
// d_in in chunks so that a tile's inputs (T x chunk) fit in L1, rows in blocks so that a
// block's chunk of W stays in L2 while the tiles pass. Each row's chunk is dotted with up to 8
// of the tile's samples that selected it at a time.
void full_path_tiles_f32(const float* xp, const float* wp, const float* bp, const float* gp,
                         const int64_t* ip, int64_t B, int64_t din, int64_t d, int64_t k,
                         float* yp) {
  const double p = double(k) / double(d);
  int64_t T = 8;  // about 6 or more samples per (tile, row): 6-8-wide dots
  while (T < 64 && double(T) * p < 6.0) T *= 2;
  const int64_t ntiles = (B + T - 1) / T;
  std::vector<uint64_t> sel(ntiles * d, 0);
  for (int64_t s = 0; s < B; ++s) {
    uint64_t* row = sel.data() + (s / T) * d;
    const uint64_t bit = uint64_t(1) << (s % T);
    for (int64_t t = 0; t < k; ++t) row[ip[s * k + t]] |= bit;
  }
  std::vector<char> used(d, 0);
  for (int64_t q = 0; q < B * k; ++q) used[ip[q]] = 1;
  const bool pack_w = ntiles > 1;
  const int64_t tile = std::min(T, B);
  // tile * kc floats <= 64 KiB: a row's dots are ~2x longer than with an L1-sized tile, and
  // the ~T p inputs a row reads stay in L1 (measured ~10-15% faster at d_in 512-784, B 256)
  int64_t kc = std::max<int64_t>(128, 16384 / tile);
  const int64_t nch = (din + kc - 1) / kc;
  kc = ((din + nch - 1) / nch + 15) / 16 * 16;
  // rb rows: their chunk of W and their partial sums (rb * B floats) share ~384 KiB of L2
  int64_t rb = std::max<int64_t>(16, (96 * 1024) / (kc + (nch > 1 ? tile * ntiles : 0)));
  const int64_t nthreads = at::get_num_threads();
  if (nthreads > 1 && B * k * din >= 4 * kParallelMacs)
    rb = std::min(rb, ((d + nthreads - 1) / nthreads + 15) / 16 * 16);
  rb = std::min(rb, d);
  const int64_t nblocks = (d + rb - 1) / rb;
  const bool parallel = nthreads > 1 && nblocks > 1 && B * k * din >= 4 * kParallelMacs;
  auto body = [&](int64_t q0, int64_t q1) {
    // partial sums over the chunks, [tile][row - j0][sample in tile]: a tile's sums of one
    // row share cache lines, and a pass over the rows reads them in order
    std::vector<float> part(nch > 1 ? ntiles * rb * T : 0);
    std::vector<float> wpk(pack_w ? rb * kc : 0), xpk(T * kc);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t j0 = q * rb, j1 = std::min(d, j0 + rb);
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t c0 = c * kc, len = std::min(kc, din - c0);
        if (len <= 0) break;
        const bool first = c == 0, last = c0 + len >= din;
        // Packed copies (a power-of-two d_in would map every row to the same cache sets).
        // (W only when several tiles reuse it, and only the rows some sample selected)
        if (pack_w)
          for (int64_t j = j0; j < j1; ++j)
            if (used[j])
              std::memcpy(wpk.data() + (j - j0) * kc, wp + j * din + c0, len * sizeof(float));
        for (int64_t tt = 0; tt < ntiles; ++tt) {
          const int64_t s0 = tt * T, s1 = std::min(B, s0 + T);
          for (int64_t s = s0; s < s1; ++s)
            std::memcpy(xpk.data() + (s - s0) * kc, xp + s * din + c0, len * sizeof(float));
          const uint64_t* srow = sel.data() + tt * d;
          int64_t jn = j0;  // the next row this tile selected (its W is prefetched)
          for (int64_t j = j0; j < j1; ++j) {
            uint64_t bits = srow[j];
            if (bits == 0) continue;
            const float* next = nullptr;
            if (!pack_w) {
              if (jn <= j)
                for (jn = j + 1; jn < j1 && srow[jn] == 0; ++jn) {
                }
              if (jn < j1) next = wp + jn * din + c0;
            }
            const float* w = pack_w ? wpk.data() + (j - j0) * kc : wp + j * din + c0;
            while (bits != 0) {
              int64_t ss[8];
              const float* xs[8];
              // groups of at most 8, as even as possible (11 = 6 + 5, not 8 + 3)
              const int left = __builtin_popcountll(bits);
              const int take = left <= 8 ? left : (left + (left + 7) / 8 - 1) / ((left + 7) / 8);
              int n = 0;
              for (; n < take; ++n) {
                ss[n] = tt * T + __builtin_ctzll(bits);
                bits &= bits - 1;
                xs[n] = xpk.data() + (ss[n] - s0) * kc;
              }
              alignas(32) float v[8];
              _mm256_store_ps(v, dot_upto8(n, w, xs, len, next));
              next = nullptr;
              for (int u = 0; u < n; ++u) {
                const int64_t s = ss[u];
                float f = v[u];
                float* pf = nch > 1 ? part.data() + (tt * rb + (j - j0)) * T + (s - tt * T)
                                    : nullptr;
                if (!first) f += *pf;
                if (!last) {
                  *pf = f;
                  continue;
                }
                const int64_t o = s * d + j;
                const float l = yp[o];
                yp[o] = l + gp[o] * (f + (bp != nullptr ? bp[j] : 0.0f) - l);
              }
            }
          }
        }
      }
    }
  };
  if (parallel) {
    at::parallel_for(0, nblocks, 1, body);
  } else {
    body(0, nblocks);
  }
}
#endif

// The paths for a few samples, float64, or builds without SIMD (batch_eval_f32 takes float
// batches with SIMD).
template <typename T>
void run(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& gate, const T* lp,
         const at::Tensor& W, const c10::optional<at::Tensor>& b, int64_t k, int64_t act,
         at::Tensor& out, at::Tensor& idx) {
  const int64_t B = x.size(0), din = x.size(1), d = W.size(0);
  const T* xp = x.data_ptr<T>();
  const T* zp = logits.data_ptr<T>();
  const T* gp = gate.defined() ? gate.data_ptr<T>() : nullptr;
  const T* wp = W.data_ptr<T>();
  const T* bp = (b.has_value() && b->defined()) ? b->data_ptr<T>() : nullptr;
  T* yp = out.data_ptr<T>();
  int64_t* ip = idx.data_ptr<int64_t>();

  // 1. selection per sample; y = act(light) everywhere (act(0) = 0 without a light path).
  const int64_t sample_grain = std::max<int64_t>(1, (kParallelMacs / 4) / std::max<int64_t>(d, 1));
  at::parallel_for(0, B, sample_grain, [&](int64_t s0, int64_t s1) {
    std::vector<typename KeyOf<T>::type> keys, cur;
    for (int64_t s = s0; s < s1; ++s) {
      select_topk<T>(zp + s * d, d, k, ip + s * k, keys, cur);
      T* y = yp + s * d;
      if (lp != nullptr) {
        const T* l = lp + s * d;
        if (act == 1) {  // (a branch-free loop the compiler vectorizes)
          for (int64_t j = 0; j < d; ++j) y[j] = l[j] > T(0) ? l[j] : T(0);
        } else {
          for (int64_t j = 0; j < d; ++j) y[j] = activate<T>(l[j], act);
        }
      } else {
        std::fill(y, y + d, T(0));
      }
    }
  });
  auto mix = [&](int64_t s, int64_t j, T f) {
    const T l = lp != nullptr ? lp[s * d + j] : T(0);
    const T g = gp != nullptr ? gp[s * d + j] : T(1) / (T(1) + std::exp(-zp[s * d + j]));
    yp[s * d + j] = activate<T>(l + g * (f + (bp != nullptr ? bp[j] : T(0)) - l), act);
  };

  // 2. full path on the selected rows only, reading them in place.
  // Threads only for large work: a parallel region costs microseconds, and far more when
  // the machine is busy, which would eat the saving at small sizes.
  const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(din, 1));
  if (B == 1) {
#if MIDL_SIMD
    if constexpr (std::is_same<T, float>::value) {  // four selected rows at a time
      // the gate of the selected entries, one vectorized sigmoid (not k scalar exps)
      std::vector<float> g(k);
      for (int64_t t = 0; t < k; ++t) g[t] = zp[ip[t]];
      sigmoid_row_f32<Simd>(g.data(), g.data(), k);
      auto put = [&](int64_t t, float f) {
        const int64_t j = ip[t];
        const float l = lp != nullptr ? lp[j] : 0.0f;
        yp[j] = activate<float>(l + g[t] * (f + (bp != nullptr ? bp[j] : 0.0f) - l), act);
      };
      at::parallel_for(0, k, grain, [&](int64_t t0, int64_t t1) {
        int64_t t = t0;
        float f[4];
        for (; t + 4 <= t1; t += 4) {
          const float* ws[4] = {wp + ip[t] * din, wp + ip[t + 1] * din, wp + ip[t + 2] * din,
                                wp + ip[t + 3] * din};
          rows_dot4<Simd>(ws, xp, din, f);
          for (int r = 0; r < 4; ++r) put(t + r, f[r]);
        }
        for (; t < t1; ++t) put(t, dot1<T>(wp + ip[t] * din, xp, din));
      });
      return;
    }
#endif
    at::parallel_for(0, k, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j = ip[t];
        const T* next = t + 1 < t1 ? wp + ip[t + 1] * din : nullptr;
        mix(0, j, dot1<T>(wp + j * din, xp, din, next));
      }
    });
    return;
  }
  // Group by row: counting sort of the (sample, row) pairs.
  std::vector<int64_t> start(d + 1, 0);
  for (int64_t p = 0; p < B * k; ++p) start[ip[p] + 1]++;
  for (int64_t j = 0; j < d; ++j) start[j + 1] += start[j];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  std::vector<int64_t> who(B * k);
  for (int64_t s = 0; s < B; ++s)
    for (int64_t t = 0; t < k; ++t) who[fill[ip[s * k + t]]++] = s;
  std::vector<int64_t> rows;
  rows.reserve(d);
  for (int64_t j = 0; j < d; ++j)
    if (start[j + 1] > start[j]) rows.push_back(j);
  const int64_t nrows = static_cast<int64_t>(rows.size());
  const int64_t per_row = std::max<int64_t>(1, (B * k) / std::max<int64_t>(nrows, 1));
  const int64_t row_grain = std::max<int64_t>(1, grain / per_row);
  at::parallel_for(0, nrows, row_grain, [&](int64_t r0, int64_t r1) {
    T f[4];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t j = rows[r];
      const T* w = wp + j * din;
      int64_t p = start[j];
      const int64_t end = start[j + 1];
      for (; p + 4 <= end; p += 4) {
        const int64_t a0 = who[p], a1 = who[p + 1], a2 = who[p + 2], a3 = who[p + 3];
        dot4<T>(w, xp + a0 * din, xp + a1 * din, xp + a2 * din, xp + a3 * din, din, f);
        mix(a0, j, f[0]);
        mix(a1, j, f[1]);
        mix(a2, j, f[2]);
        mix(a3, j, f[3]);
      }
      for (; p < end; ++p) mix(who[p], j, dot1<T>(w, xp + who[p] * din, din));
    }
  });
}

#if MIDL_SIMD
// A (d, r) float matrix transposed, (r, d) (ATen's copy of a transposed view costs ~14 us at
// 512 x 16: a strided read per element)
at::Tensor transposed(const at::Tensor& m_in) {
  const at::Tensor m = m_in.contiguous();
  const int64_t d = m.size(0), r = m.size(1);
  const float* p = m.data_ptr<float>();
  at::Tensor t = at::empty({r, d}, m.options());
  float* tp = t.data_ptr<float>();
  for (int64_t j = 0; j < d; ++j)
    for (int64_t q = 0; q < r; ++q) tp[q * d + j] = p[j * r + q];
  return t;
}

// A float batch (B >= kTileBatch) with SIMD, in three steps:
// 1. h_g = x G1^T and h_l = x V^T (GEMMs);
// 2. per sample, in one pass while its rows are in L1: the logits z = G2 h_g (written to the
//    returned logits), the top-k of z, the gate sigmoid(z) at the k selected entries only, and
//    the light path l = U h_l + c into y (0 without one); the thin products run from
//    transposed copies of G2 and U (broadcast h, no horizontal sums);
// 3. the blocked full path mixes the selected entries into y, then the activation.
std::vector<at::Tensor> batch_eval_f32(const at::Tensor& x, const at::Tensor& G1,
                                       const at::Tensor& G2, const at::Tensor& W,
                                       const c10::optional<at::Tensor>& b,
                                       const c10::optional<at::Tensor>& V,
                                       const c10::optional<at::Tensor>& U,
                                       const c10::optional<at::Tensor>& c, int64_t k,
                                       int64_t act, at::Tensor logits, at::Tensor idx) {
  const int64_t B = x.size(0), din = x.size(1), d = W.size(0);
  const bool light = V.has_value() && V->defined();
  const int64_t rg = G1.size(0), rl = light ? V->size(0) : 0;
  // [h_g | h_l] = x [G1; V]^T, one GEMM; the stacked inputs and the transposed outputs of
  // the thin products are cached per parameter version (cache.h)
  const at::Tensor gv =
      light ? midl_derived({G1, *V}, kDerivedStacked, [&] { return at::cat({G1, *V}); }) : G1;
  const at::Tensor h = at::linear(x, gv).contiguous();  // (B, rg + rl)
  const int64_t hstride = rg + rl;
  auto transpose = [](const at::Tensor& m) {
    return midl_derived({m}, kDerivedTransposed, [&] { return transposed(m); });
  };
  const at::Tensor g2t = transpose(G2);  // (rg, d)
  at::Tensor ut, cc;
  if (light) {
    ut = transpose(*U);  // (rl, d)
    if (c.has_value() && c->defined()) cc = c->contiguous();
  }
  at::Tensor out = at::empty({B, d}, x.options());
  at::Tensor gate = at::empty({B, d}, x.options());  // written at the selected entries only
  const float* hp = h.data_ptr<float>();
  const float* lp = light ? hp + rg : nullptr;
  const float* g2p = g2t.data_ptr<float>();
  const float* up = light ? ut.data_ptr<float>() : nullptr;
  const float* cp = cc.defined() ? cc.data_ptr<float>() : nullptr;
  float* zp = logits.data_ptr<float>();
  float* yp = out.data_ptr<float>();
  float* gp = gate.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t grain =  // in groups of four samples
      std::max<int64_t>(1, (kParallelMacs / 16) / std::max<int64_t>(d * (1 + (rg + rl) / 4), 1));
  // thin products four samples at a time (one at a time for the last few)
  auto thin = [&](const float* h, int64_t stride, const float* bt, int64_t rank,
                  const float* bias, float* o, int64_t s, int64_t n) {
    if (n == 4) {
      const float* hs[4] = {h + s * stride, h + (s + 1) * stride, h + (s + 2) * stride,
                            h + (s + 3) * stride};
      float* os[4] = {o + s * d, o + (s + 1) * d, o + (s + 2) * d, o + (s + 3) * d};
      thin_rows_t4<Simd>(hs, bt, rank, d, bias, os);
    } else {
      for (int64_t u = s; u < s + n; ++u)
        thin_rows_t<Simd>(h + u * stride, bt, rank, d, bias, o + u * d);
    }
  };
  at::parallel_for(0, (B + 3) / 4, grain, [&](int64_t q0, int64_t q1) {
    std::vector<uint32_t> keys;
    std::vector<float> sel(k);
    for (int64_t s4 = 4 * q0; s4 < std::min(B, 4 * q1); s4 += 4) {
      const int64_t n = std::min<int64_t>(4, B - s4);
      thin(hp, hstride, g2p, rg, nullptr, zp, s4, n);
      for (int64_t s = s4; s < s4 + n; ++s) {
        const float* z = zp + s * d;
        int64_t* is = ip + s * k;
        select_topk_f32<Simd>(z, d, k, is, keys);
        for (int64_t t = 0; t < k; ++t) sel[t] = z[is[t]];
        sigmoid_row_f32<Simd>(sel.data(), sel.data(), k);
        float* g = gp + s * d;
        for (int64_t t = 0; t < k; ++t) g[is[t]] = sel[t];
      }
      if (light) {
        thin(lp, hstride, up, rl, cp, yp, s4, n);
      } else {
        std::fill(yp + s4 * d, yp + (s4 + n) * d, 0.0f);
      }
    }
  });
  const at::Tensor Wc = W.contiguous();
  at::Tensor bc;
  if (b.has_value() && b->defined()) bc = b->contiguous();
  full_path_tiles_f32(x.data_ptr<float>(), Wc.data_ptr<float>(),
                      bc.defined() ? bc.data_ptr<float>() : nullptr, gp, ip, B, din, d, k, yp);
  if (act != 0) {
    at::parallel_for(0, B * d, kParallelMacs, [&](int64_t i0, int64_t i1) {
      if (act == 1) {
        for (int64_t i = i0; i < i1; ++i) yp[i] = yp[i] > 0.0f ? yp[i] : 0.0f;
      } else {
        for (int64_t i = i0; i < i1; ++i) yp[i] = activate<float>(yp[i], act);
      }
    });
  }
  return {out, logits, idx};
}
#endif

}  // namespace

// g[0..n) = sigmoid(z[0..n)) with this file's vectorized sigmoid (scalar without SIMD); for
// midl_block.cpp's mix, which needs the gate values of the selected groups only.
void midl_sigmoid_row(const float* z, float* g, int64_t n) {
#if MIDL_SIMD
  sigmoid_row_f32<Simd>(z, g, n);
#else
  for (int64_t j = 0; j < n; ++j) g[j] = 1.0f / (1.0f + std::exp(-z[j]));
#endif
}

namespace {

// midl_sparse_eval, writing the logits and idx into ``logits`` (B, d) and ``idx`` (B, k) when
// they are defined (allocated here otherwise); returns (y, logits, idx).
std::vector<at::Tensor> sparse_eval(const at::Tensor& x_in, const at::Tensor& gate_in,
                                    const at::Tensor& gate_out, const at::Tensor& weight,
                                    const c10::optional<at::Tensor>& bias,
                                    const c10::optional<at::Tensor>& light_in,
                                    const c10::optional<at::Tensor>& light_out,
                                    const c10::optional<at::Tensor>& light_bias, int64_t k,
                                    int64_t act, at::Tensor logits, at::Tensor idx) {
  TORCH_CHECK(x_in.dim() == 2, "x must be (B, d_in)");
  TORCH_CHECK(x_in.device().is_cpu(), "midl_sparse_eval runs on CPU tensors only");
  midl_check_cpu_params("midl_sparse_eval", gate_in, gate_out, weight, bias, light_in, light_out,
                        light_bias);
  const int64_t d = weight.size(0);
  TORCH_CHECK(k >= 1 && k <= d, "k must satisfy 1 <= k <= ", d, ", got ", k);
  at::NoGradGuard no_grad;
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0);
  if (logits.defined()) {
    TORCH_CHECK(logits.device().is_cpu() && logits.is_contiguous() &&
                    logits.scalar_type() == x.scalar_type() && logits.dim() == 2 &&
                    logits.size(0) == B && logits.size(1) == d,
                "the logits buffer must be a contiguous (", B, ", ", d,
                ") CPU tensor of x's dtype");
  } else {
    logits = at::empty({B, d}, x.options());
  }
  if (idx.defined()) {
    TORCH_CHECK(idx.device().is_cpu() && idx.is_contiguous() && idx.scalar_type() == at::kLong &&
                    idx.dim() == 2 && idx.size(0) == B && idx.size(1) == k,
                "the idx buffer must be a contiguous (", B, ", ", k, ") int64 CPU tensor");
  } else {
    idx = at::empty({B, k}, x.options().dtype(at::kLong));
  }
  const at::Tensor W = weight.contiguous();
  c10::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
#if MIDL_SIMD
  if (x.scalar_type() == at::kFloat && B >= kTileBatch)
    return batch_eval_f32(x, gate_in, gate_out, W, b, light_in, light_out, light_bias, k, act,
                          logits, idx);
#endif
  const bool has_light = light_in.has_value() && light_in->defined();
  at::Tensor light;
  // a few samples: the light path in a plain buffer (not returned: no tensor to allocate)
  std::vector<unsigned char> light_small;
  const void* lp = nullptr;
  if (x.size(0) <= kSmallBatch) {
    // A few samples: the four thin products in plain loops (GEMM calls cost more here).
    if (has_light) {
      light_small.resize(x.size(0) * d * x.element_size());
      lp = light_small.data();
    }
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "midl_lowrank", [&] {
      const at::Tensor g1 = gate_in.contiguous(), g2 = gate_out.contiguous();
      lowrank_small<scalar_t>(x.data_ptr<scalar_t>(), x.size(0), x.size(1),
                              g1.data_ptr<scalar_t>(), g2.data_ptr<scalar_t>(), nullptr,
                              g1.size(0), d, logits.data_ptr<scalar_t>());
      if (has_light) {
        const at::Tensor v = light_in->contiguous(), u = light_out->contiguous();
        at::Tensor c;
        if (light_bias.has_value() && light_bias->defined()) c = light_bias->contiguous();
        lowrank_small<scalar_t>(x.data_ptr<scalar_t>(), x.size(0), x.size(1),
                                v.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                c.defined() ? c.data_ptr<scalar_t>() : nullptr, v.size(0), d,
                                reinterpret_cast<scalar_t*>(light_small.data()));
      }
    });
  } else {
    // (B, d), into the given tensor by memcpy (an out= op would refuse an inference tensor
    // outside inference mode)
    const at::Tensor z = at::linear(at::linear(x, gate_in), gate_out).contiguous();
    std::memcpy(logits.data_ptr(), z.data_ptr(), z.numel() * z.element_size());
    if (has_light) {
      light = at::linear(at::linear(x, *light_in), *light_out, light_bias).contiguous();
      lp = light.data_ptr();
    }
  }
  // The gate is read only where selected: a few samples take k scalar exps, a batch one
  // vectorized sigmoid over (B, d).
  const at::Tensor gate = B <= kSmallBatch ? at::Tensor() : at::sigmoid(logits);
  at::Tensor out = at::empty({B, d}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "midl_sparse_eval", [&] {
    run<scalar_t>(x, logits, gate, static_cast<const scalar_t*>(lp), W, b, k, act, out, idx);
  });
  return {out, logits, idx};
}

}  // namespace

std::vector<at::Tensor> midl_sparse_eval(
    const at::Tensor& x, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t act) {
  return sparse_eval(x, gate_in, gate_out, weight, bias, light_in, light_out, light_bias, k, act,
                     at::Tensor(), at::Tensor());
}

// The same, the logits and idx written into the caller's tensors (a layer's record buffers,
// reused call after call), y alone returned: each tensor a call creates and returns to Python
// costs ~1 us, a visible share of a layer at batch 1.
at::Tensor midl_sparse_eval_into(
    const at::Tensor& x, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t act,
    const at::Tensor& logits, const at::Tensor& idx) {
  TORCH_CHECK(logits.defined() && idx.defined(), "midl_sparse_eval_into needs both buffers");
  return sparse_eval(x, gate_in, gate_out, weight, bias, light_in, light_out, light_bias, k, act,
                     logits, idx)[0];
}

// Appended to SOURCE: whether this build has the blocked batch path (for the cost rule).
bool midl_blocked_available() {
#if MIDL_SIMD
  return true;
#else
  return false;
#endif
}

int64_t midl_blocked_min_batch() { return kTileBatch; }

// Appended to SOURCE: the exact top-k mask, used by every CPU path (torch.topk is slow for
// large k on CPU: ~5 us per row of 512 at k = 230, against well under 1 us here).
at::Tensor midl_topk_mask(const at::Tensor& scores_in, int64_t k) {
  TORCH_CHECK(scores_in.dim() == 2, "scores must be (B, d)");
  TORCH_CHECK(scores_in.device().is_cpu(), "midl_topk_mask runs on CPU tensors only");
  const at::Tensor scores = scores_in.contiguous();
  const int64_t B = scores.size(0), d = scores.size(1);
  TORCH_CHECK(k >= 1 && k <= d, "k must satisfy 1 <= k <= ", d, ", got ", k);
  at::Tensor mask = at::zeros({B, d}, scores.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, scores.scalar_type(),
                                  "midl_topk_mask", [&] {
    const scalar_t* zp = scores.data_ptr<scalar_t>();
    scalar_t* mp = mask.data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (kParallelMacs / 4) / std::max<int64_t>(d, 1));
    at::parallel_for(0, B, grain, [&](int64_t s0, int64_t s1) {
      std::vector<typename KeyOf<scalar_t>::type> keys, cur;
      std::vector<int64_t> idx(k);
      for (int64_t s = s0; s < s1; ++s) {
        select_topk<scalar_t>(zp + s * d, d, k, idx.data(), keys, cur);
        for (int64_t t = 0; t < k; ++t) mp[s * d + idx[t]] = scalar_t(1);
      }
    });
  });
  return mask;
}

// Appended to SOURCE: the training step's elementwise work, fused into one pass each way.
// Forward:  g = sigmoid(logits), a = m g, y = act(a f + (1 - a) l)          (act: identity|relu)
// Backward: p = dy act'(y), df = p a, dl = p - df, da = p (f - l),
//           dlogits = da (m + g) g (1 - g)       (straight-through: d a / d g = m + g)
namespace {
// One pass each way; the cases are template parameters so that every loop body is
// branch-free and vectorizes (the sigmoid itself is ATen's vectorized one).
template <typename T, bool kMask, bool kLight, bool kRelu>
void mix_forward_loop(const T* __restrict gp, const T* __restrict mp, const T* __restrict fp,
                      const T* __restrict lp, T* __restrict yp, int64_t n) {
  at::parallel_for(0, n, kParallelMacs, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T a = kMask ? mp[i] * gp[i] : gp[i];
      T v = a * fp[i];
      if (kLight) v += (T(1) - a) * lp[i];
      yp[i] = kRelu ? (v > T(0) ? v : T(0)) : v;
    }
  });
}

template <typename T, bool kMask, bool kLight, bool kRelu>
void mix_backward_loop(const T* __restrict dyp, const T* __restrict yp,
                       const T* __restrict gp, const T* __restrict mp,
                       const T* __restrict fp, const T* __restrict lp, T* __restrict dzp,
                       T* __restrict dfp, T* __restrict dlp, int64_t n) {
  at::parallel_for(0, n, kParallelMacs, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T dy = dyp[i];  // loaded unconditionally: a conditional load blocks vectorizing
      const T p = kRelu ? (yp[i] > T(0) ? dy : T(0)) : dy;
      const T gi = gp[i];
      const T mi = kMask ? mp[i] : T(1);
      const T a = mi * gi;
      const T dfi = p * a;
      dfp[i] = dfi;
      if (kLight) dlp[i] = p - dfi;
      const T da = kLight ? p * (fp[i] - lp[i]) : p * fp[i];
      dzp[i] = da * (mi + gi) * gi * (T(1) - gi);
    }
  });
}

template <typename F>
void dispatch_cases(bool mask, bool light, bool relu, F&& body) {
  if (mask) {
    if (light) { relu ? body(std::true_type{}, std::true_type{}, std::true_type{})
                      : body(std::true_type{}, std::true_type{}, std::false_type{}); }
    else { relu ? body(std::true_type{}, std::false_type{}, std::true_type{})
                : body(std::true_type{}, std::false_type{}, std::false_type{}); }
  } else {
    if (light) { relu ? body(std::false_type{}, std::true_type{}, std::true_type{})
                      : body(std::false_type{}, std::true_type{}, std::false_type{}); }
    else { relu ? body(std::false_type{}, std::false_type{}, std::true_type{})
                : body(std::false_type{}, std::false_type{}, std::false_type{}); }
  }
}
}  // namespace

std::vector<at::Tensor> midl_mix_forward(const at::Tensor& logits,
                                         const c10::optional<at::Tensor>& mask,
                                         const at::Tensor& f_in,
                                         const c10::optional<at::Tensor>& light, int64_t act) {
  TORCH_CHECK(act == 0 || act == 1, "midl_mix_forward: act must be 0 (identity) or 1 (relu)");
  const at::Tensor f = f_in.contiguous();
  const at::Tensor g = at::sigmoid(logits).contiguous();
  at::Tensor m, l;
  if (mask.has_value() && mask->defined()) m = mask->contiguous();
  if (light.has_value() && light->defined()) l = light->contiguous();
  at::Tensor y = at::empty_like(f);
  const int64_t n = f.numel();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "midl_mix_forward", [&] {
    const scalar_t* mp = m.defined() ? m.data_ptr<scalar_t>() : nullptr;
    const scalar_t* lp = l.defined() ? l.data_ptr<scalar_t>() : nullptr;
    dispatch_cases(m.defined(), l.defined(), act == 1, [&](auto M, auto L, auto R) {
      mix_forward_loop<scalar_t, decltype(M)::value, decltype(L)::value, decltype(R)::value>(
          g.data_ptr<scalar_t>(), mp, f.data_ptr<scalar_t>(), lp, y.data_ptr<scalar_t>(), n);
    });
  });
  return {y, g};
}

std::vector<at::Tensor> midl_mix_backward(const at::Tensor& grad_in, const at::Tensor& y_in,
                                          const at::Tensor& g_in,
                                          const c10::optional<at::Tensor>& mask,
                                          const at::Tensor& f_in,
                                          const c10::optional<at::Tensor>& light, int64_t act) {
  const at::Tensor grad = grad_in.contiguous(), y = y_in.contiguous(), g = g_in.contiguous();
  const at::Tensor f = f_in.contiguous();
  at::Tensor m, l, dl;
  if (mask.has_value() && mask->defined()) m = mask->contiguous();
  if (light.has_value() && light->defined()) {
    l = light->contiguous();
    dl = at::empty_like(f);
  }
  at::Tensor dz = at::empty_like(f), df = at::empty_like(f);
  const int64_t n = f.numel();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "midl_mix_backward", [&] {
    const scalar_t* mp = m.defined() ? m.data_ptr<scalar_t>() : nullptr;
    const scalar_t* lp = l.defined() ? l.data_ptr<scalar_t>() : nullptr;
    scalar_t* dlp = dl.defined() ? dl.data_ptr<scalar_t>() : nullptr;
    dispatch_cases(m.defined(), l.defined(), act == 1, [&](auto M, auto L, auto R) {
      mix_backward_loop<scalar_t, decltype(M)::value, decltype(L)::value, decltype(R)::value>(
          grad.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), mp,
          f.data_ptr<scalar_t>(), lp, dz.data_ptr<scalar_t>(), df.data_ptr<scalar_t>(), dlp, n);
    });
  });
  return {dz, df, dl};
}

// Appended to SOURCE: one training step's layer as a C++ autograd function (float32,
// AVX-512, activation identity or ReLU). Forward: f = x W^T + b and [h_g | h_l] = x [G1; V]^T
// as two GEMMs, then per sample in one pass the thin products z = G2 h_g, l = U h_l + c, the
// top-k mask (k < d), g = sigmoid(z) and y = act(a f + (1 - a) l), a = m g. Backward: per
// sample the mix's gradients (straight-through, d a / d g = m + g), dh_g = G2^T dz and
// dh_l = U^T dl, and the sums dG2 = dz h_g^T, dU = dl h_l^T, db, dc, without materializing
// dz or dl; then dW = df^T x, [dG1; dV] = [dh_g | dh_l]^T x and dx as GEMMs.
#if MIDL_SIMD
#include <torch/csrc/autograd/custom_function.h>

namespace {

#if MIDL_AVX512
// out[0..r) = sum_j v[j] * B[j][0..r)  (B: d x r), lanes over r, four chains over j
template <class S>
inline void thin_cols(const float* __restrict v, const float* __restrict B, int64_t d,
                      int64_t r, float* __restrict out) {
  using reg = typename S::reg;
  for (int64_t q0 = 0; q0 < r; q0 += S::W) {
    const int64_t n = r - q0;
    reg a[4] = {S::zero(), S::zero(), S::zero(), S::zero()};
    int64_t j = 0;
    for (; j + 4 <= d; j += 4)
      for (int u = 0; u < 4; ++u)
        a[u] = S::fmadd(S::set1(v[j + u]), S::loadn(B + (j + u) * r + q0, n), a[u]);
    for (; j < d; ++j) a[0] = S::fmadd(S::set1(v[j]), S::loadn(B + j * r + q0, n), a[0]);
    S::storen(out + q0, S::add(S::add(a[0], a[1]), S::add(a[2], a[3])), n);
  }
}

// acc[j][0..r) += sum_u v[u][j] * h[u][0..r) for n <= 4 rows v (d) and h (r): one
// load/store of acc per j for all n (B x r outer-product sums, acc: d x r)
template <class S>
inline void outer_acc(const float* const* v, const float* const* h, int n, int64_t d,
                      int64_t r, float* __restrict acc) {
  using reg = typename S::reg;
  for (int64_t q0 = 0; q0 < r; q0 += S::W) {
    const int64_t m = r - q0;
    reg hv[4];
    for (int u = 0; u < n; ++u) hv[u] = S::loadn(h[u] + q0, m);
    for (int64_t j = 0; j < d; ++j) {
      float* a = acc + j * r + q0;
      reg s = S::loadn(a, m);
      for (int u = 0; u < n; ++u) s = S::fmadd(S::set1(v[u][j]), hv[u], s);
      S::storen(a, s, m);
    }
  }
}
#endif  // MIDL_AVX512 (AVX2 + FMA builds run the thin products as GEMMs: MidlTrainFn)

// One sample of the forward mix: g = sigmoid(z), a = m g, y = act(a f + (1 - a) l) (m, l may
// be null: k = d, no light path).
template <class S>
inline void mix_forward_row(const float* z, const float* ms, const float* fs, const float* ls,
                            float* ys, float* gs, int64_t d, bool relu) {
  using reg = typename S::reg;
  const reg one = S::set1(1.0f);
  for (int64_t j = 0; j < d; j += S::W) {
    const int64_t n = d - j;
    const reg gv = sigmoid<S>(S::loadn(z + j, n));
    const reg av = ms != nullptr ? S::mul(S::loadn(ms + j, n), gv) : gv;
    reg v = S::mul(av, S::loadn(fs + j, n));
    if (ls != nullptr) v = S::fmadd(S::sub(one, av), S::loadn(ls + j, n), v);
    if (relu) v = S::max(v, S::zero());
    S::storen(ys + j, v, n);
    S::storen(gs + j, gv, n);
  }
}

// One sample of the backward mix: df, dl = p - df, dz = da (m + g) g (1 - g) with p = dy act'(y)
// and da = p (f - l); db += df and dc += dl (m, l may be null; db and dc too: the sums over
// samples are then left to the caller).
template <class S>
inline void mix_backward_row(const float* dy, const float* y, const float* g, const float* m,
                             const float* f, const float* l, float* df, float* db, float* dc,
                             float* dl, float* dz, int64_t d, bool relu) {
  using reg = typename S::reg;
  const reg one = S::set1(1.0f);
  for (int64_t j = 0; j < d; j += S::W) {
    const int64_t n = d - j;
    reg p = S::loadn(dy + j, n);
    if (relu) p = S::keep_if_pos(S::loadn(y + j, n), p);
    const reg gv = S::loadn(g + j, n);
    const reg mv = m != nullptr ? S::loadn(m + j, n) : one;
    const reg dfv = S::mul(p, S::mul(mv, gv));
    S::storen(df + j, dfv, n);
    if (db != nullptr) S::storen(db + j, S::add(S::loadn(db + j, n), dfv), n);
    const reg fv = S::loadn(f + j, n);
    reg da;
    if (l != nullptr) {
      const reg dlv = S::sub(p, dfv);
      S::storen(dl + j, dlv, n);
      if (dc != nullptr) S::storen(dc + j, S::add(S::loadn(dc + j, n), dlv), n);
      da = S::mul(p, S::sub(fv, S::loadn(l + j, n)));
    } else {
      da = S::mul(p, fv);
    }
    // dz = da (m + g) g (1 - g)
    S::storen(dz + j, S::mul(S::mul(da, S::add(mv, gv)), S::mul(gv, S::sub(one, gv))), n);
  }
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// An optional input of the autograd function: an empty tensor stands for None (a custom
// function cannot take undefined tensors).
inline at::Tensor opt(const c10::optional<at::Tensor>& t, const at::Tensor& like) {
  return t.has_value() && t->defined() ? *t : at::empty({0}, like.options());
}
inline at::Tensor given(const at::Tensor& t) { return t.numel() > 0 ? t : at::Tensor(); }

// AVX2 builds form the thin products of the gate and light path as GEMMs on (B, d) matrices
// (forward z = h_g G2^T, l = h_l U^T + c; backward dh = dz G2, dG2 = dz^T h_g, ...): MKL's
// thin GEMMs run them faster than 8-lane loops, and the elementwise passes then split
// across threads. AVX-512 builds run them per sample inside the passes.
struct MidlTrainFn : public torch::autograd::Function<MidlTrainFn> {
  // inputs: x, G1, G2, W, b, V, U, c (b, V, U, c may be undefined); outputs: y, g, m
  static variable_list forward(AutogradContext* ctx, at::Tensor x_in, at::Tensor G1,
                               at::Tensor G2, at::Tensor W, at::Tensor b_in, at::Tensor V_in,
                               at::Tensor U_in, at::Tensor c_in, int64_t k, int64_t act) {
    const at::Tensor b = given(b_in), V = given(V_in), U = given(U_in), c = given(c_in);
    ctx->set_materialize_grads(false);  // g and m get no gradients: no (B, d) zeros for them
    const at::Tensor x = x_in.contiguous();
    const int64_t B = x.size(0), d = W.size(0), rg = G1.size(0);
    const bool light = V.defined();
    const int64_t rl = light ? V.size(0) : 0;
    const at::Tensor A = light ? at::cat({G1, V}, 0) : G1;  // (rg + rl, d_in)
    const at::Tensor H = at::mm(x, A.t());                   // (B, rg + rl): [h_g | h_l]
    const at::Tensor f = b.defined() ? at::addmm(b, x, W.t()) : at::mm(x, W.t());
    at::Tensor y = at::empty({B, d}, x.options()), g = at::empty({B, d}, x.options());
#if MIDL_AVX2
    // the thin products as GEMMs: logits Z = h_g G2^T and l = h_l U^T + c, (B, d) each
    const at::Tensor Z = at::mm(H.narrow(1, 0, rg), G2.t());
    at::Tensor l;
    if (light) {
      const at::Tensor hl = H.narrow(1, rg, rl);
      l = c.defined() ? at::addmm(c, hl, U.t()) : at::mm(hl, U.t());
    }
    const float* zp = Z.data_ptr<float>();
#else
    const at::Tensor G2T = G2.t().contiguous();
    const at::Tensor UT = light ? U.t().contiguous() : at::Tensor();
    const at::Tensor cc = c.defined() ? c.contiguous() : at::Tensor();
    at::Tensor l = light ? at::empty({B, d}, x.options()) : at::Tensor();
    const float* Hp = H.data_ptr<float>();
    const float* g2t = G2T.data_ptr<float>();
    const float* ut = light ? UT.data_ptr<float>() : nullptr;
    const float* cp = cc.defined() ? cc.data_ptr<float>() : nullptr;
#endif
    at::Tensor m = k < d ? at::zeros({B, d}, x.options()) : at::Tensor();
    const float* fp = f.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    float* gp = g.data_ptr<float>();
    float* lp = light ? l.data_ptr<float>() : nullptr;
    float* mp = m.defined() ? m.data_ptr<float>() : nullptr;
    const int64_t hs = rg + rl;
    const bool relu = act == 1;
    const int64_t grain = std::max<int64_t>(1, kParallelMacs / std::max<int64_t>(d * hs, 1));
    at::parallel_for(0, B, grain, [&](int64_t s0, int64_t s1) {
      std::vector<uint32_t> keys;
      std::vector<int64_t> idx(k);
#if !MIDL_AVX2
      std::vector<float> zrow(d);
#endif
      for (int64_t s = s0; s < s1; ++s) {
        float* ls = lp != nullptr ? lp + s * d : nullptr;
#if MIDL_AVX2
        const float* z = zp + s * d;  // logits
#else
        const float* hg = Hp + s * hs;
        thin_rows_t<Simd>(hg, g2t, rg, d, nullptr, zrow.data());  // logits
        const float* z = zrow.data();
        if (ls != nullptr) thin_rows_t<Simd>(hg + rg, ut, rl, d, cp, ls);
#endif
        float* ms = mp != nullptr ? mp + s * d : nullptr;
        if (ms != nullptr) {
          select_topk_f32<Simd>(z, d, k, idx.data(), keys);
          for (int64_t t = 0; t < k; ++t) ms[idx[t]] = 1.0f;
        }
        const float* fs = fp + s * d;
        float* ys = yp + s * d;
        float* gs = gp + s * d;
        mix_forward_row<Simd>(z, ms, fs, ls, ys, gs, d, relu);
      }
    });
    const at::Tensor m_out = m.defined() ? m : at::empty({0}, x.options());  // k = d: none
    const at::Tensor none = at::empty({0}, x.options());
    ctx->save_for_backward({x, G1, G2, W, light ? V : none, light ? U : none, H, f,
                            light ? l : none, y, g, m_out});
    ctx->saved_data["act"] = act;
    ctx->saved_data["has_b"] = b.defined();
    ctx->saved_data["has_c"] = c.defined();
    ctx->mark_non_differentiable({g, m_out});
    return {y, g, m_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &G1 = saved[1], &G2 = saved[2], &W = saved[3];
    const at::Tensor V = given(saved[4]), U = given(saved[5]);
    const at::Tensor &H = saved[6], &f = saved[7];
    const at::Tensor l = given(saved[8]);
    const at::Tensor &y = saved[9], &g = saved[10], &m = saved[11];
    const bool relu = ctx->saved_data["act"].toInt() == 1;
    const bool has_b = ctx->saved_data["has_b"].toBool();
    const bool has_c = ctx->saved_data["has_c"].toBool();
    const at::Tensor dy = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(y);
    const int64_t B = x.size(0), d = W.size(0), rg = G1.size(0);
    const bool light = V.defined();
    const int64_t rl = light ? V.size(0) : 0;
    const at::Tensor G2c = G2.contiguous();
    const at::Tensor Uc = light ? U.contiguous() : at::Tensor();
    at::Tensor df = at::empty({B, d}, y.options());
    const float *dyp = dy.data_ptr<float>(), *yp = y.data_ptr<float>(), *gp = g.data_ptr<float>();
    const float* mp = m.numel() > 0 ? m.data_ptr<float>() : nullptr;
    const float* fp = f.data_ptr<float>();
    const float* lp = light ? l.data_ptr<float>() : nullptr;
    float* dfp = df.data_ptr<float>();
#if MIDL_AVX2
    // per sample (any thread) dz and dl into (B, d) matrices; then the sums over samples
    // and dh as GEMMs
    at::Tensor dZ = at::empty({B, d}, y.options());
    at::Tensor dL = light ? at::empty({B, d}, y.options()) : at::Tensor();
    float* dzp = dZ.data_ptr<float>();
    float* dlp = light ? dL.data_ptr<float>() : nullptr;
    at::parallel_for(0, B, std::max<int64_t>(1, kParallelMacs / (16 * d)),
                     [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t o = s * d;
        mix_backward_row<Simd>(dyp + o, yp + o, gp + o, mp != nullptr ? mp + o : nullptr, fp + o,
                         lp != nullptr ? lp + o : nullptr, dfp + o, nullptr, nullptr,
                         dlp != nullptr ? dlp + o : nullptr, dzp + o, d, relu);
      }
    });
    // dG2 = dZ^T h_g as (h_g^T dZ)^T: MKL runs the (r, d) output faster than the thin (d, r)
    // one (0.30 vs 0.49 ms at d = 1024, batch 256, r = 16; torch.profiler); the transpose is r x d
    // (this file's loop: ATen's copy of the transposed view is several times slower)
    const at::Tensor hg = H.narrow(1, 0, rg);
    const at::Tensor dG2 = transposed(at::mm(hg.t(), dZ));
    const at::Tensor db = df.sum(0);
    at::Tensor dU, dc, dH;
    if (light) {
      const at::Tensor hl = H.narrow(1, rg, rl);
      dU = transposed(at::mm(hl.t(), dL));
      dc = dL.sum(0);
      dH = at::cat({at::mm(dZ, G2c), at::mm(dL, Uc)}, 1);
    } else {
      dc = at::zeros({d}, y.options());
      dH = at::mm(dZ, G2c);
    }
#else
    const int64_t hs = rg + rl;
    at::Tensor dH = at::empty({B, hs}, y.options());
    at::Tensor dG2 = at::zeros({d, rg}, y.options());
    at::Tensor dU = light ? at::zeros({d, rl}, y.options()) : at::Tensor();
    at::Tensor db = at::zeros({d}, y.options()), dc = at::zeros({d}, y.options());
    const float* Hp = H.data_ptr<float>();
    const float* g2 = G2c.data_ptr<float>();
    const float* u = light ? Uc.data_ptr<float>() : nullptr;
    float* dHp = dH.data_ptr<float>();
    float *dg2 = dG2.data_ptr<float>(), *du = light ? dU.data_ptr<float>() : nullptr;
    float *dbp = db.data_ptr<float>(), *dcp = dc.data_ptr<float>();
    {
      // one thread: the sums over samples (dG2, dU, db, dc) accumulate in place
      std::vector<float> dz(4 * d), dl(4 * d);
      for (int64_t s0 = 0; s0 < B; s0 += 4) {
        const int n = int(std::min<int64_t>(4, B - s0));
        for (int uu = 0; uu < n; ++uu) {
          const int64_t s = s0 + uu, o = s * d;
          float* dzs = dz.data() + uu * d;
          float* dls = dl.data() + uu * d;
          mix_backward_row<Simd>(dyp + o, yp + o, gp + o, mp != nullptr ? mp + o : nullptr, fp + o,
                           lp != nullptr ? lp + o : nullptr, dfp + o, dbp, dcp, dls, dzs, d,
                           relu);
          thin_cols<Simd>(dzs, g2, d, rg, dHp + s * hs);
          if (light) thin_cols<Simd>(dls, u, d, rl, dHp + s * hs + rg);
        }
        const float* vz[4];
        const float* vl[4];
        const float* hg[4];
        const float* hl[4];
        for (int uu = 0; uu < n; ++uu) {
          vz[uu] = dz.data() + uu * d;
          vl[uu] = dl.data() + uu * d;
          hg[uu] = Hp + (s0 + uu) * hs;
          hl[uu] = hg[uu] + rg;
        }
        outer_acc<Simd>(vz, hg, n, d, rg, dg2);
        if (light) outer_acc<Simd>(vl, hl, n, d, rl, du);
      }
    }
#endif
    const at::Tensor dA = at::mm(dH.t(), x);  // (hs, d_in): [dG1; dV]
    const at::Tensor dW = at::mm(df.t(), x);
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      dx = at::mm(df, W);
      dx.addmm_(dH.narrow(1, 0, rg), G1);
      if (light) dx.addmm_(dH.narrow(1, rg, rl), V);
    }
    at::Tensor dG1 = dA.narrow(0, 0, rg);
    at::Tensor dV = light ? dA.narrow(0, rg, rl) : at::Tensor();
    return {dx, dG1, dG2, dW, has_b ? db : at::Tensor(), dV, dU,
            has_c ? dc : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace
#endif

std::vector<at::Tensor> midl_train(const at::Tensor& x, const at::Tensor& G1,
                                   const at::Tensor& G2, const at::Tensor& W,
                                   const c10::optional<at::Tensor>& b,
                                   const c10::optional<at::Tensor>& V,
                                   const c10::optional<at::Tensor>& U,
                                   const c10::optional<at::Tensor>& c, int64_t k, int64_t act) {
#if MIDL_SIMD
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "midl_train: x must be a (B, d_in) float32 CPU tensor");
  midl_check_cpu_params("midl_train", G1, G2, W, b, V, U, c);
  TORCH_CHECK(act == 0 || act == 1, "midl_train: act must be 0 (identity) or 1 (relu)");
  TORCH_CHECK(k >= 1 && k <= W.size(0), "k must satisfy 1 <= k <= ", W.size(0), ", got ", k);
  return MidlTrainFn::apply(x, G1, G2, W, opt(b, x), opt(V, x), opt(U, x), opt(c, x), k, act);
#else
  TORCH_CHECK(false, "midl_train needs a build with AVX-512 or AVX2 + FMA");
  return {};
#endif
}

// Defined in midl_block.cpp (block gating): ``(y, logits, group idx)``.
std::vector<at::Tensor> midl_block_eval(
    const at::Tensor& x_in, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t size, int64_t act, bool thin);

// The Python bindings, registered once, here.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("midl_block_eval", &midl_block_eval,
        "block-gated MID-L eval: (y, logits, group idx); thin: (y, G1 x, group idx)");
  m.def("midl_sparse_eval", &midl_sparse_eval, "MID-L eval: (y, logits, idx)");
  m.def("midl_sparse_eval_into", &midl_sparse_eval_into,
        "MID-L eval, logits and idx written into the given tensors: y");
  m.def("midl_topk_mask", &midl_topk_mask, "exact top-k mask per row");
  m.def("midl_mix_forward", &midl_mix_forward, "fused gate mix, forward");
  m.def("midl_mix_backward", &midl_mix_backward, "fused gate mix, backward");
  m.def("midl_blocked_available", &midl_blocked_available, "whether the blocked path is built");
  m.def("midl_blocked_min_batch", &midl_blocked_min_batch, "the blocked path's tile batch");
  m.def("midl_train", &midl_train, "one training step of the layer (autograd function)");
  m.def("midl_cache_clear", &midl_cache_clear, "drop the cached derived copies of parameters");
}
