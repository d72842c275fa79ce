// Block gating (``gating="block:B"``): the CPU kernel of ``midl_autok::midl_block_eval``.
//
// ``midl_block_eval(x, G1, G2, W, b, V, U, c, k, size, act, thin)`` computes one block-gated MID-L
// layer in eval mode for x (B, d_in) (midl_autok/block.py has the equations and the PyTorch
// version) and returns ``(y, logits, idx)`` with idx (B, k / size) the selected groups.
// With ``thin`` (its last argument; the eager layer's call) it returns ``(y, h, idx)``, h = G1 x
// (B, r): the group scores come from G2 summed per group, the mix computes the selected
// entries' logits from h, and the layer computes all the logits from h only if asked (its
// gate statistics): at d = 1024, batch 256 the (B, d) logits and their sums cost ~0.3 ms of a
// ~3 ms layer.
//
// 1. ``logits = G2 (G1 x)`` and the group scores ``sum(logits.view(B, G, size), -1)`` (ATen);
//    the rank-r products (G1 x, V x: thin_down; G2 h, U h: thin_up) run as tiles here from
//    16 samples with AVX2 + FMA (MKL ran these 16-row products at about half its rate), else
//    aten::linear: the logits agree with the Python path's to rounding, so the selection is
//    the same except where two group scores tie within it;
// 2. per sample the k / size groups with the largest scores (ties: lowest index first);
// 3. the (sample, group) pairs sorted by group (CSR), so each group j runs one small dense
//    product of its samples' rows of x with the contiguous rows W[j * size, (j + 1) * size).
//    With AVX2 + FMA and size a multiple of 8: W packed by group, transposed (cached per
//    weight, see packed_weight), and per chunk of 128 inputs an outer-product tile of 6
//    samples x 16 outputs (twelve 8-float accumulators, x broadcast from its rows in place);
//    other sizes use a dot-product tile of 3 samples x 4 rows along d_in;
// 4. the mix: y = l + g * (W x + b - l) on the selected entries, g = sigmoid(logits) computed
//    there (the neuron kernels' vectorized sigmoid, midl_cpu.cpp: a quarter of the entries at
//    k = d / 4, where ATen's sigmoid over all of them took ~0.6 ms at batch 256), y = l (the
//    light path, or 0) elsewhere; then the activation (ATen, in place).
//
// float32 only: midl_autok/ops.py's implementation of the op calls it for float32 CPU input
// and runs the PyTorch version otherwise (float64, other devices, no extension). Groups run in
// parallel over at::parallel_for (each group writes its own columns).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "cache.h"
#include "params.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

// The 8-float tiles below run on every build with AVX2 + FMA (AVX-512 ones too): simd.h's
// Simd256.
#include "simd.h"
#if defined(__AVX2__) && defined(__FMA__)
#define MIDL_BLOCK_AVX2 1
using S8 = midl_simd::Simd256;
#else
#define MIDL_BLOCK_AVX2 0
#endif

// midl_cpu.cpp: g[0..n) = sigmoid(z[0..n)), vectorized as the neuron kernels' gate.
void midl_sigmoid_row(const float* z, float* g, int64_t n);

namespace {

// out[s * R + r] = xs[s][0..n) . w[r * ldw + 0..n) for S samples and R rows.
template <int S, int R>
inline void tile_dots(const float* const* xs, const float* w, int64_t ldw, int64_t n,
                      float* out) {
  int64_t p = 0;
#if MIDL_BLOCK_AVX2
  S8::reg acc[S][R];
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) acc[s][r] = S8::zero();
  for (; p + S8::W <= n; p += S8::W) {
    S8::reg xv[S];
    for (int s = 0; s < S; ++s) xv[s] = S8::load(xs[s] + p);
    for (int r = 0; r < R; ++r) {
      const S8::reg wv = S8::load(w + r * ldw + p);
      for (int s = 0; s < S; ++s) acc[s][r] = S8::fmadd(xv[s], wv, acc[s][r]);
    }
  }
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) out[s * R + r] = S8::hsum(acc[s][r]);
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
// thin_down / thin_up from this batch on; below it aten::linear (the copies of W^T and the
// zeroed output cost more than the tiles win: block:32 at batch 1 went from 1.8x to 1.1x dense)
constexpr int64_t kThinMinBatch = 16;

// The thin down-projection h = x W^T for x (B, n) and a few rows W (R, n), both row-major:
// tiles of 3 samples x 4 rows along n (tile_dots). MKL ran these R = 16 products at about
// half of its large-product rate.
at::Tensor thin_down(const at::Tensor& x, const at::Tensor& w_in) {
  // a matrix-vector product, or no SIMD tile (tile_dots would run scalar loops): MKL's
  if (!MIDL_BLOCK_AVX2 || x.size(0) < kThinMinBatch) return at::linear(x, w_in);
  const at::Tensor w = w_in.contiguous();
  const int64_t batch = x.size(0), n = x.size(1), rows = w.size(0);
  at::Tensor h = at::empty({batch, rows}, x.options());
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* hp = h.data_ptr<float>();
  at::parallel_for(0, (batch + kTileSamples - 1) / kTileSamples, 1, [&](int64_t lo, int64_t hi) {
    float dots[kTileSamples * kTileRows];
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t s0 = t * kTileSamples;
      const int ns = static_cast<int>(std::min<int64_t>(kTileSamples, batch - s0));
      const float* xs[kTileSamples];
      for (int s = 0; s < ns; ++s) xs[s] = xp + (s0 + s) * n;
      for (int64_t q0 = 0; q0 < rows; q0 += kTileRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, rows - q0));
        switch (ns) {
          case 3: tile_rows<3>(nr, xs, wp + q0 * n, n, n, dots); break;
          case 2: tile_rows<2>(nr, xs, wp + q0 * n, n, n, dots); break;
          default: tile_rows<1>(nr, xs, wp + q0 * n, n, n, dots); break;
        }
        for (int s = 0; s < ns; ++s)
          for (int r = 0; r < nr; ++r) hp[(s0 + s) * rows + q0 + r] = dots[s * nr + r];
      }
    }
  });
  return h;
}
#ifndef MIDL_BLOCK_CHUNK
#define MIDL_BLOCK_CHUNK 128
#endif
// d_in runs in chunks of this many inputs, so a group's chunk of W (size x chunk floats; 16 KB
// at size 32) stays in L1/L2 while all of the group's samples pass over it.
constexpr int64_t kChunk = MIDL_BLOCK_CHUNK;

#if MIDL_BLOCK_AVX2
// The outer-product tile (size a multiple of 8): f[s][r0 .. r0 + 16) += sum_p xs[s][p] *
// wt[p][r0 .. r0 + 16) for S samples, wt the chunk of W_j packed transposed (n x size). Twelve
// accumulators for S = 6, no horizontal sums; x values are broadcast from their rows in place.
// Add = false: f is overwritten (its tile is complete in one call: thin_up, n = r).
template <int S, int V, bool Add = true>
inline void outer_tile(const float* const* xs, const float* wt, int64_t size, int64_t n,
                       float* f, int64_t r0) {
  S8::reg acc[S][V];
  for (int s = 0; s < S; ++s)
    for (int v = 0; v < V; ++v) acc[s][v] = S8::zero();
  for (int64_t p = 0; p < n; ++p) {
    S8::reg wv[V];
    for (int v = 0; v < V; ++v) wv[v] = S8::load(wt + p * size + r0 + S8::W * v);
    for (int s = 0; s < S; ++s) {
      const S8::reg xv = S8::set1(xs[s][p]);  // (a broadcast from memory)
      for (int v = 0; v < V; ++v) acc[s][v] = S8::fmadd(xv, wv[v], acc[s][v]);
    }
  }
  for (int s = 0; s < S; ++s)
    for (int v = 0; v < V; ++v) {
      float* out = f + s * size + r0 + S8::W * v;
      S8::store(out, Add ? S8::add(S8::load(out), acc[s][v]) : acc[s][v]);
    }
}

template <int V, bool Add = true>
inline void outer_rows(int ns, const float* const* xs, const float* wt, int64_t size, int64_t n,
                       float* f, int64_t r0) {
  switch (ns) {
    case 6: outer_tile<6, V, Add>(xs, wt, size, n, f, r0); break;
    case 5: outer_tile<5, V, Add>(xs, wt, size, n, f, r0); break;
    case 4: outer_tile<4, V, Add>(xs, wt, size, n, f, r0); break;
    case 3: outer_tile<3, V, Add>(xs, wt, size, n, f, r0); break;
    case 2: outer_tile<2, V, Add>(xs, wt, size, n, f, r0); break;
    default: outer_tile<1, V, Add>(xs, wt, size, n, f, r0); break;
  }
}

constexpr int kOuterSamples = 6;

// run_group's product for size % 8 == 0: wtj is W_j packed transposed (d_in x size floats,
// packed_weight); per chunk of d_in (16 KB of it at size 32) all of the group's samples pass.
void group_product_outer(const int64_t* samples, int64_t begin, int64_t count, const float* x,
                         int64_t din, const float* wtj, int64_t size, float* f) {
  for (int64_t p0 = 0; p0 < din; p0 += kChunk) {
    const int64_t n = std::min<int64_t>(kChunk, din - p0);
    const float* wt = wtj + p0 * size;
    for (int64_t s0 = 0; s0 < count; s0 += kOuterSamples) {
      const int ns = static_cast<int>(std::min<int64_t>(kOuterSamples, count - s0));
      const float* xs[kOuterSamples];
      for (int s = 0; s < ns; ++s) xs[s] = x + samples[begin + s0 + s] * din + p0;
      int64_t r0 = 0;
      for (; r0 + 16 <= size; r0 += 16) outer_rows<2>(ns, xs, wt, size, n, f + s0 * size, r0);
      if (r0 < size) outer_rows<1>(ns, xs, wt, size, n, f + s0 * size, r0);
    }
  }
}
#endif

// The thin up-projection y = h W^T for h (B, r) and W (d, r), r small (the gate's G2 and the
// light path's U, r = 16 by default): with AVX2 + FMA the outer-product tile over W^T (r x d),
// 6 samples x 16 outputs per tile, r steps; else (or d not a multiple of 8) aten::linear.
at::Tensor thin_up(const at::Tensor& h_in, const at::Tensor& w) {
  const int64_t d = w.size(0);
#if MIDL_BLOCK_AVX2
  if (d % S8::W == 0 && h_in.size(0) >= kThinMinBatch) {
    const at::Tensor h = h_in.contiguous(), wt = w.t().contiguous();  // (B, r), (r, d)
    const int64_t batch = h.size(0), r = h.size(1);
    at::Tensor y = at::empty({batch, d}, h.options());  // every tile written once
    const float *hp = h.data_ptr<float>(), *wtp = wt.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    const int64_t tiles = (batch + kOuterSamples - 1) / kOuterSamples;
    at::parallel_for(0, tiles, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t s0 = t * kOuterSamples;
        const int ns = static_cast<int>(std::min<int64_t>(kOuterSamples, batch - s0));
        const float* hs[kOuterSamples];
        for (int s = 0; s < ns; ++s) hs[s] = hp + (s0 + s) * r;
        int64_t j0 = 0;
        for (; j0 + 2 * S8::W <= d; j0 += 2 * S8::W)
          outer_rows<2, false>(ns, hs, wtp, d, r, yp + s0 * d, j0);
        if (j0 < d) outer_rows<1, false>(ns, hs, wtp, d, r, yp + s0 * d, j0);
      }
    });
    return y;
  }
#endif
  return at::linear(h_in, w);
}

// The gate's logits: either all of them, z (B, d), or the factors to compute the selected
// ones from, h = G1 x (B, r) and G2 (d, r) (midl_block_eval with thin).
struct Logits {
  const float* z;    // (B, d), or null
  const float* h;    // (B, r)
  const float* g2p;  // G2 by group, transposed: (G, r, size)
  int64_t r;
};

// Group j: its samples (sorted pairs [begin, end)), the rows W[j * size, +size), mixed into y.
// f: scratch of (end - begin) * size floats (the partial dot products over the chunks); wt:
// W packed by group (packed_weight) for the outer-product tile, or null (the dot tile).
void run_group(int64_t j, const int64_t* samples, int64_t begin, int64_t end, const float* x,
               int64_t din, const float* W, const float* b, const Logits& z, float* y,
               int64_t d, int64_t size, bool light, const float* lc, float* f,
               const float* wt) {
  const float* wj = W + j * size * din;
  const int64_t count = end - begin;
  std::fill(f, f + count * size, 0.0f);
  float dots[kTileSamples * kTileRows];
#if MIDL_BLOCK_AVX2
  const bool outer = wt != nullptr;
  if (outer) group_product_outer(samples, begin, count, x, din, wt + j * size * din, size, f);
#else
  const bool outer = false;
  (void)wt;
#endif
  for (int64_t p0 = 0; !outer && p0 < din; p0 += kChunk) {
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
  std::vector<float> gate(static_cast<size_t>(size)), logit(static_cast<size_t>(size));
  for (int64_t s = 0; s < count; ++s) {  // the mix: y = l + g * (f + b - l), g = sigmoid(z)
    const int64_t base = samples[begin + s] * d + j * size;
    const float* zs = z.z + base;
    if (z.z == nullptr) {  // this sample's logits of group j: sum_q h[q] G2^T[q, group j]
      const float* h = z.h + samples[begin + s] * z.r;
      const float* g = z.g2p + j * z.r * size;  // G2[j * size + r, q] = g[q * size + r]
      int64_t r0 = 0;
#if MIDL_BLOCK_AVX2
      for (; r0 + S8::W <= size; r0 += S8::W) {  // 8 logits in a register, r FMAs
        S8::reg acc = S8::zero();
        for (int64_t q = 0; q < z.r; ++q)
          acc = S8::fmadd(S8::set1(h[q]), S8::load(g + q * size + r0), acc);
        S8::store(logit.data() + r0, acc);
      }
#endif
      for (; r0 < size; ++r0) {
        float acc = 0.0f;
        for (int64_t q = 0; q < z.r; ++q) acc += h[q] * g[q * size + r0];
        logit[r0] = acc;
      }
      zs = logit.data();
    }
    midl_sigmoid_row(zs, gate.data(), size);
    for (int64_t r = 0; r < size; ++r) {
      const float v = f[s * size + r] + (b ? b[j * size + r] : 0.0f);
      const float l = light ? y[base + r] + (lc ? lc[j * size + r] : 0.0f) : 0.0f;
      y[base + r] = l + gate[r] * (v - l);
    }
  }
}

inline float score_key(float v) { return std::isnan(v) ? INFINITY : v; }

// Up to this many groups the selection ranks by counting (see midl_block_eval).
constexpr int64_t kRankGroups = 64;

// W packed by group for the outer-product tile: (G, d_in, size), group j's rows transposed.
// Packing reads all of W (4 MB at d = 1024), ~1 ms a call at batch 256, as much as a quarter
// of the layer's time, so the packed copy is cached per weight and reused while the weight is
// unchanged (midl_derived, cache.h). Memory: one more copy of each block-gated layer's W (and
// G2, for the thin call) in eval.
at::Tensor pack_by_group(const at::Tensor& W, int64_t size) {
  const int64_t d = W.size(0), din = W.size(1);
  return W.view({d / size, size, din}).transpose(1, 2).contiguous();
}

at::Tensor packed_weight(const at::Tensor& weight, const at::Tensor& W, int64_t size) {
  return midl_derived({weight}, size, [&] { return pack_by_group(W, size); });
}

}  // namespace

// thin = false: returns the logits (the custom op's output); thin = true (the eager layer's
// call): returns h = G1 x, the group scores come from G2 summed per group.
std::vector<at::Tensor> midl_block_eval(
    const at::Tensor& x_in, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t size, int64_t act,
    bool thin) {
  TORCH_CHECK(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "midl_block_eval: x must be a (B, d_in) float32 CPU tensor");
  midl_check_cpu_params("midl_block_eval", gate_in, gate_out, weight, bias, light_in, light_out,
                        light_bias);
  const int64_t d = weight.size(0);
  TORCH_CHECK(size >= 1 && d % size == 0 && k % size == 0 && k >= size && k <= d,
              "midl_block_eval: size must divide d = ", d, " and k = ", k, ", got ", size);
  TORCH_CHECK(act >= 0 && act <= 4, "midl_block_eval: act must be in 0..4, got ", act);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor W = weight.contiguous();
  const int64_t batch = x.size(0), din = x.size(1), groups = d / size, per = k / size;
  const at::Tensor h = thin_down(x, gate_in).contiguous();  // (B, r)
  const at::Tensor g2 = gate_out.contiguous();            // (d, r)
  // all the logits, or only the group scores: sum_r G2[j * size + r] . h = (G2 summed per
  // group) . h, (B, G) at G * r per sample instead of d * r (a quarter of the gate at size 32)
  const at::Tensor logits = thin ? at::Tensor() : thin_up(h, g2);  // (B, d)
  // thin: G2 by group, each group's (r, size) block contiguous (cached per weight, as W's
  // packing): G2^T at a stride of d rows put the r rows a group reads 4 KB apart (d = 1024),
  // likely into the same L1 sets
  const at::Tensor g2p = thin ? packed_weight(gate_out, g2, size) : at::Tensor();  // (G, r, size)
  const at::Tensor scores = thin ? at::linear(h, g2p.sum(-1)).contiguous()
                                 : logits.view({batch, groups, size}).sum(-1).contiguous();
  const bool light = light_in.has_value() && light_out.has_value();
  // the light path without its bias: the bias is added in the mix (selected entries) and in
  // the last pass (the others), not by a (B, d) broadcast copy inside addmm (~0.2 ms at b=256)
  at::Tensor y = light ? thin_up(thin_down(x, *light_in), *light_out)
                       : at::zeros({batch, d}, x.options());
  const c10::optional<at::Tensor> lcc = light && light_bias.has_value()
                                            ? c10::optional<at::Tensor>(light_bias->contiguous())
                                            : c10::nullopt;
  const float* lcp = lcc.has_value() ? lcc->data_ptr<float>() : nullptr;
  at::Tensor idx = at::empty({batch, per}, x.options().dtype(at::kLong));
  // 2. selection per sample; then the pairs as CSR by group.
  const float* sp = scores.data_ptr<float>();
  int64_t* ip = idx.data_ptr<int64_t>();
  std::vector<int64_t> counts(groups + 1, 0);
  if (groups <= kRankGroups) {
    // a group is chosen when fewer than per groups beat it (a larger score, or the same one
    // at a lower index): O(G^2) comparisons in a vectorizable loop, and the chosen come out
    // in index order, with no sort (at G = 32 a third of partial_sort's time)
    std::vector<float> keys(static_cast<size_t>(groups));
    for (int64_t s = 0; s < batch; ++s) {
      const float* row = sp + s * groups;
      for (int64_t j = 0; j < groups; ++j) keys[j] = score_key(row[j]);
      int64_t t = 0;
      for (int64_t j = 0; j < groups && t < per; ++j) {
        const float kj = keys[j];
        int64_t beat = 0;
        for (int64_t i = 0; i < groups; ++i)
          beat += (keys[i] > kj) | ((keys[i] == kj) & (i < j));
        if (beat < per) {
          ip[s * per + t++] = j;
          ++counts[j + 1];
        }
      }
    }
  } else {
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
  const float *xp = x.data_ptr<float>(), *wp = W.data_ptr<float>();
  const Logits zp{thin ? nullptr : logits.data_ptr<float>(), h.data_ptr<float>(),
                  thin ? g2p.data_ptr<float>() : nullptr, g2.size(1)};
  float* yp = y.data_ptr<float>();
  const int64_t* smp = samples.data();
  const int64_t* off = counts.data();
  at::Tensor packed;  // the outer-product tile's layout of W (AVX2 + FMA, size % 8 == 0)
  if (MIDL_BLOCK_AVX2 && size % 8 == 0) packed = packed_weight(weight, W, size);
  const float* wtp = packed.defined() ? packed.data_ptr<float>() : nullptr;
  at::parallel_for(0, groups, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch;
    for (int64_t j = lo; j < hi; ++j) {
      scratch.resize(static_cast<size_t>((off[j + 1] - off[j]) * size));
      run_group(j, smp, off[j], off[j + 1], xp, din, wp, bp, zp, yp, d, size, light, lcp,
                scratch.data(), wtp);
    }
  });
  // the last pass, per sample: the light bias on the unselected groups, and ReLU fused
  const bool relu = act == 1;
  if (lcp != nullptr || relu) {
    at::parallel_for(0, batch, 16, [&](int64_t lo, int64_t hi) {
      std::vector<uint8_t> chosen(static_cast<size_t>(groups));
      for (int64_t s = lo; s < hi; ++s) {
        std::fill(chosen.begin(), chosen.end(), 0);
        for (int64_t t = 0; t < per; ++t) chosen[ip[s * per + t]] = 1;
        float* row = yp + s * d;
        if (lcp != nullptr)
          for (int64_t j = 0; j < groups; ++j)
            if (!chosen[j])
              for (int64_t r = j * size; r < (j + 1) * size; ++r) row[r] += lcp[r];
        if (relu)  // NaN stays NaN, as relu_
          for (int64_t i = 0; i < d; ++i) row[i] = row[i] < 0.0f ? 0.0f : row[i];
      }
    });
  }
  switch (act) {
    case 1: break;  // fused above
    case 2: y.tanh_(); break;
    case 3: at::silu_(y); break;
    case 4: y = at::gelu(y); break;
    default: break;
  }
  return {y, thin ? h : logits, idx};
}
