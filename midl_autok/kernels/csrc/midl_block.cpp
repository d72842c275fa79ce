// Block gating (``gating="block:B"``): the CPU kernel of ``midl_autok::midl_block_eval``.
//
// ``midl_block_eval(x, G1, G2, W, b, V, U, c, k, size, act)`` computes one block-gated MID-L
// layer in eval mode for x (B, d_in) (midl_autok/block.py has the equations and the PyTorch
// version) and returns ``(y, logits, idx)`` with idx (B, k / size) the selected groups:
//
// 1. ``logits = linear(linear(x, G1), G2)`` and the group scores ``sum(logits.view(B, G,
//    size), -1)`` with the same ATen calls as the Python path (same selection);
// 2. per sample the k / size groups with the largest scores (ties: lowest index first);
// 3. the (sample, group) pairs sorted by group (CSR), so each group j runs one small dense
//    product of its samples' rows of x with the contiguous rows W[j * size, (j + 1) * size):
//    an AVX2 + FMA tile of 3 samples x 4 rows (twelve 8-float accumulators along d_in), W_j
//    read from L2 once per 3 samples, x rows read in place (no gather copy);
// 4. the mix fused into the tile's store: y = l + g * (W x + b - l) on the selected entries,
//    y = l (the light path, or 0) elsewhere; then the activation (ATen, in place).
//
// float32 only: midl_autok/ops.py's implementation of the op calls it for float32 CPU input
// and runs the PyTorch version otherwise (float64, other devices, no extension). Groups run in
// parallel over at::parallel_for (each group writes its own columns).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MIDL_BLOCK_AVX2 1
#else
#define MIDL_BLOCK_AVX2 0
#endif

namespace {

#if MIDL_BLOCK_AVX2
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// out[s * R + r] = xs[s][0..n) . w[r * ldw + 0..n) for S samples and R rows.
template <int S, int R>
inline void tile_dots(const float* const* xs, const float* w, int64_t ldw, int64_t n,
                      float* out) {
  int64_t p = 0;
#if MIDL_BLOCK_AVX2
  __m256 acc[S][R];
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) acc[s][r] = _mm256_setzero_ps();
  for (; p + 8 <= n; p += 8) {
    __m256 xv[S];
    for (int s = 0; s < S; ++s) xv[s] = _mm256_loadu_ps(xs[s] + p);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + r * ldw + p);
      for (int s = 0; s < S; ++s) acc[s][r] = _mm256_fmadd_ps(xv[s], wv, acc[s][r]);
    }
  }
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) out[s * R + r] = hsum8(acc[s][r]);
#else
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) out[s * R + r] = 0.0f;
#endif
  for (; p < n; ++p)  // the tail (and everything without AVX2)
    for (int s = 0; s < S; ++s)
      for (int r = 0; r < R; ++r) out[s * R + r] += xs[s][p] * w[r * ldw + p];
}

template <int S>
inline void tile_rows(int rows, const float* const* xs, const float* w, int64_t ldw, int64_t n,
                      float* out) {
  switch (rows) {
    case 4: tile_dots<S, 4>(xs, w, ldw, n, out); break;
    case 3: tile_dots<S, 3>(xs, w, ldw, n, out); break;
    case 2: tile_dots<S, 2>(xs, w, ldw, n, out); break;
    default: tile_dots<S, 1>(xs, w, ldw, n, out); break;
  }
}

constexpr int kTileSamples = 3;
constexpr int kTileRows = 4;
#ifndef MIDL_BLOCK_CHUNK
#define MIDL_BLOCK_CHUNK 256
#endif
// d_in runs in chunks of this many inputs, so a group's chunk of W (size x chunk floats; 32 KB
// at size 32) stays in L1/L2 while all of the group's samples pass over it.
constexpr int64_t kChunk = MIDL_BLOCK_CHUNK;

// Group j: its samples (sorted pairs [begin, end)), the rows W[j * size, +size), mixed into y.
// f: scratch of (end - begin) * size floats (the partial dot products over the chunks).
void run_group(int64_t j, const int64_t* samples, int64_t begin, int64_t end, const float* x,
               int64_t din, const float* W, const float* b, const float* g, float* y,
               int64_t d, int64_t size, bool light, float* f) {
  const float* wj = W + j * size * din;
  const int64_t count = end - begin;
  std::fill(f, f + count * size, 0.0f);
  float dots[kTileSamples * kTileRows];
  for (int64_t p0 = 0; p0 < din; p0 += kChunk) {
    const int64_t n = std::min<int64_t>(kChunk, din - p0);
    for (int64_t s0 = 0; s0 < count; s0 += kTileSamples) {
      const int ns = static_cast<int>(std::min<int64_t>(kTileSamples, count - s0));
      const float* xs[kTileSamples];
      for (int s = 0; s < ns; ++s) xs[s] = x + samples[begin + s0 + s] * din + p0;
      for (int64_t r0 = 0; r0 < size; r0 += kTileRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, size - r0));
        const float* w = wj + r0 * din + p0;
        switch (ns) {
          case 3: tile_rows<3>(nr, xs, w, din, n, dots); break;
          case 2: tile_rows<2>(nr, xs, w, din, n, dots); break;
          default: tile_rows<1>(nr, xs, w, din, n, dots); break;
        }
        for (int s = 0; s < ns; ++s)
          for (int r = 0; r < nr; ++r) f[(s0 + s) * size + r0 + r] += dots[s * nr + r];
      }
    }
  }
  for (int64_t s = 0; s < count; ++s) {  // the mix: y = l + g * (f + b - l)
    const int64_t base = samples[begin + s] * d + j * size;
    for (int64_t r = 0; r < size; ++r) {
      const float v = f[s * size + r] + (b ? b[j * size + r] : 0.0f);
      const float l = light ? y[base + r] : 0.0f;
      y[base + r] = l + g[base + r] * (v - l);
    }
  }
}

inline float score_key(float v) { return std::isnan(v) ? INFINITY : v; }

}  // namespace

std::vector<at::Tensor> midl_block_eval(
    const at::Tensor& x_in, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t size, int64_t act) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "midl_block_eval: x must be a (B, d_in) float32 CPU tensor");
  const int64_t d = weight.size(0);
  TORCH_CHECK(size >= 1 && d % size == 0 && k % size == 0 && k >= size && k <= d,
              "midl_block_eval: size must divide d = ", d, " and k = ", k, ", got ", size);
  TORCH_CHECK(act >= 0 && act <= 4, "midl_block_eval: act must be in 0..4, got ", act);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor W = weight.contiguous();
  const int64_t batch = x.size(0), din = x.size(1), groups = d / size, per = k / size;
  at::Tensor logits = at::linear(at::linear(x, gate_in), gate_out);  // (B, d)
  const at::Tensor scores = logits.view({batch, groups, size}).sum(-1).contiguous();  // (B, G)
  const bool light = light_in.has_value() && light_out.has_value();
  at::Tensor y = light ? at::linear(at::linear(x, *light_in), *light_out, light_bias).contiguous()
                       : at::zeros({batch, d}, x.options());
  const at::Tensor g = at::sigmoid(logits).contiguous();  // (B, d)
  at::Tensor idx = at::empty({batch, per}, x.options().dtype(at::kLong));
  // 2. selection per sample; then the pairs as CSR by group.
  const float* sp = scores.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  std::vector<int64_t> counts(groups + 1, 0);
  {
    std::vector<int64_t> order(groups);
    for (int64_t s = 0; s < batch; ++s) {
      const float* row = sp + s * groups;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + per, order.end(),
                        [row](int64_t a, int64_t c) {
                          const float ka = score_key(row[a]), kc = score_key(row[c]);
                          return ka > kc || (ka == kc && a < c);
                        });
      std::sort(order.begin(), order.begin() + per);
      for (int64_t t = 0; t < per; ++t) {
        ip[s * per + t] = order[t];
        ++counts[order[t] + 1];
      }
    }
  }
  std::partial_sum(counts.begin(), counts.end(), counts.begin());  // offsets
  std::vector<int64_t> samples(batch * per);
  {
    std::vector<int64_t> fill(counts.begin(), counts.end() - 1);
    for (int64_t s = 0; s < batch; ++s)
      for (int64_t t = 0; t < per; ++t) samples[fill[ip[s * per + t]]++] = s;
  }
  // 3-4. one small dense product per group, mixed into y.
  const c10::optional<at::Tensor> bc =
      bias.has_value() ? c10::optional<at::Tensor>(bias->contiguous()) : c10::nullopt;
  const float* bp = bc.has_value() ? bc->data_ptr<float>() : nullptr;
  const float *xp = x.data_ptr<float>(), *wp = W.data_ptr<float>(), *gp = g.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t* smp = samples.data();
  const int64_t* off = counts.data();
  at::parallel_for(0, groups, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch;
    for (int64_t j = lo; j < hi; ++j) {
      scratch.resize(static_cast<size_t>((off[j + 1] - off[j]) * size));
      run_group(j, smp, off[j], off[j + 1], xp, din, wp, bp, gp, yp, d, size, light,
                scratch.data());
    }
  });
  switch (act) {
    case 1: y.relu_(); break;
    case 2: y.tanh_(); break;
    case 3: at::silu_(y); break;
    case 4: y = at::gelu(y); break;
    default: break;
  }
  return {y, logits, idx};
}
