// A check shared by the kernels' entry points: a layer's parameters must be CPU tensors like
// x. (A CPU input given to a model on another device would otherwise have its parameters'
// device memory read as host memory: a crash, not PyTorch's "same device" error.)
#pragma once

#include <ATen/ATen.h>

inline void midl_check_cpu_params(const char* who, const at::Tensor& gate_in,
                                  const at::Tensor& gate_out, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias,
                                  const c10::optional<at::Tensor>& light_in,
                                  const c10::optional<at::Tensor>& light_out,
                                  const c10::optional<at::Tensor>& light_bias) {
  auto cpu = [](const c10::optional<at::Tensor>& t) {
    return !t.has_value() || !t->defined() || t->device().is_cpu();
  };
  TORCH_CHECK(gate_in.device().is_cpu() && gate_out.device().is_cpu() &&
                  weight.device().is_cpu() && cpu(bias) && cpu(light_in) && cpu(light_out) &&
                  cpu(light_bias),
              who, ": the layer's parameters must be on the CPU like x (got the weight on ",
              weight.device(), ")");
}
