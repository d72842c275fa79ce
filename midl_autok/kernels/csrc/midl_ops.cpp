// The CPU kernel of the custom op ``midl_autok::midl_eval`` (one MID-L layer in eval mode).
//
// The op's schema, its fake (tracing) implementation and its PyTorch implementation for every
// other device, dtype and for builds without this extension are registered in Python by
// midl_autok/ops.py. Loading this extension adds the compiled CPU kernel: a kernel registered
// for the CPU key takes precedence over the CompositeExplicitAutograd one, so from then on a
// call on CPU tensors goes from the dispatcher straight to C++ (no Python in between).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

// Defined in midl_cpu.cpp (the kernel bodies): ``(y, logits, idx)``.
std::vector<at::Tensor> midl_sparse_eval(
    const at::Tensor& x_in, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t act);

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> midl_eval_cpu(
    const at::Tensor& x, const at::Tensor& gate_in, const at::Tensor& gate_out,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& light_in, const c10::optional<at::Tensor>& light_out,
    const c10::optional<at::Tensor>& light_bias, int64_t k, int64_t act) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "midl_autok::midl_eval: the CPU kernel takes float32 or float64, got ",
              x.scalar_type());
  std::vector<at::Tensor> out =
      midl_sparse_eval(x, gate_in, gate_out, weight, bias, light_in, light_out, light_bias, k, act);
  return std::make_tuple(out[0], out[1], out[2]);
}

}  // namespace

TORCH_LIBRARY_IMPL(midl_autok, CPU, m) { m.impl("midl_eval", &midl_eval_cpu); }
