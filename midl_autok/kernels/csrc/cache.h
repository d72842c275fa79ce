// Tensors derived from a layer's parameters (a packed, transposed or stacked copy), cached
// across calls while the parameters are unchanged: midl_cache.cpp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <vector>

// Kinds of derived tensors besides the block kernel's packing by group (kind = group size > 0).
constexpr int64_t kDerivedTransposed = -1;  // (d, r) -> (r, d), contiguous
constexpr int64_t kDerivedStacked = -2;     // [G1; V]: the gate's and light path's inputs

// make(), or the tensor it returned for the same ``from`` tensors (data pointer, shape,
// strides and version counter of each) and ``kind`` on an earlier call. Inference tensors have
// no version counter: make() on every call.
at::Tensor midl_derived(const std::vector<at::Tensor>& from, int64_t kind,
                        const std::function<at::Tensor()>& make);

// Drop every entry (parameters may have changed without a version bump: see midl_cache.cpp).
void midl_cache_clear();
