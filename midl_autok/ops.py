"""The custom op ``midl_autok::midl_eval``: one MID-L layer in eval mode, as one graph node.

``torch.ops.midl_autok.midl_eval(x, G1, G2, W, b, V, U, c, k, act) -> (y, logits, idx)``
computes, for ``x`` (B, d_in) (see :mod:`midl_autok.layers` for the equations)::

    logits = G2 · G1 · x                      (B, d)
    idx    = the k largest logits per sample  (B, k), int64
    y      = act(l + g ⊙ (W x + b - l)) on the selected (sample, row) pairs, act(l) elsewhere
             with g = sigmoid(logits), l = U · (V · x) + c (0 without a light path)

``act`` is the layer's activation code (0 identity, 1 ReLU, 2 tanh, 3 SiLU, 4 exact GELU).

``torch.ops.midl_autok.midl_block_eval(x, G1, G2, W, b, V, U, c, k, size, act)`` is the same
layer with block gating (``gating="block:size"``, :mod:`midl_autok.block`): ``idx`` (B, k /
size) holds the selected groups. Its implementation is one Python function on every key: the
compiled block kernel for float32 CPU input, :func:`midl_block_eval_reference` otherwise.

Because the op is registered with the dispatcher and has a fake implementation (output shapes
from input shapes: ``(B, d)``, ``(B, d)``, ``(B, k)``), ``torch.export`` and ``torch.compile``
record it as one node instead of tracing through it, so an exported MID-L model keeps the
sparse kernel. Its implementations:

- **CPU, compiled** (``kernels/csrc/midl_ops.cpp``): the C++ kernel of
  :mod:`midl_autok.kernels` (only the selected rows of W are read). It is registered for the
  CPU dispatch key when the extension is loaded, and from then on takes precedence.
- **everything else** (CUDA and any device, other dtypes, a CPU without the extension, or
  ``MIDL_AUTOK_NO_EXTENSIONS=1``): :func:`midl_eval_reference`, the masked dense computation
  in PyTorch ops (registered as ``CompositeExplicitAutograd``). On a CPU float input it first
  tries to load the extension (building it if needed, once per process) and calls the kernel.

**Where it is registered.** Importing this module registers the op; :mod:`midl_autok.layers`
(so :mod:`midl_autok.models` and :mod:`midl_autok.deploy`) imports it. ``import midl_autok``
alone does not (it stays light: no torch), so a process that runs an exported program with
``torch.export.load`` directly must ``import midl_autok.ops`` first;
:func:`midl_autok.deploy.load_program` does that. The op has no autograd formula: it is the
inference path (MID-L trains on its masked dense path).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from midl_autok.block import block_eval
from midl_autok.kernels.cpu import cpu_kernels

__all__ = [
    "BLOCK_OP_NAME",
    "OP_NAME",
    "midl_block_eval",
    "midl_block_eval_reference",
    "midl_eval",
    "midl_eval_reference",
]

OP_NAME = "midl_autok::midl_eval"
BLOCK_OP_NAME = "midl_autok::midl_block_eval"

SCHEMA = (
    "midl_eval(Tensor x, Tensor gate_in, Tensor gate_out, Tensor weight, Tensor? bias, "
    "Tensor? light_in, Tensor? light_out, Tensor? light_bias, int k, int act) "
    "-> (Tensor, Tensor, Tensor)"
)
BLOCK_SCHEMA = (
    "midl_block_eval(Tensor x, Tensor gate_in, Tensor gate_out, Tensor weight, Tensor? bias, "
    "Tensor? light_in, Tensor? light_out, Tensor? light_bias, int k, int size, int act) "
    "-> (Tensor, Tensor, Tensor)"
)

_ACTIVATIONS = {
    0: lambda t: t,
    1: torch.relu,
    2: torch.tanh,
    3: F.silu,
    4: F.gelu,
}


def midl_eval_reference(
    x: torch.Tensor,
    gate_in: torch.Tensor,
    gate_out: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    light_in: torch.Tensor | None,
    light_out: torch.Tensor | None,
    light_bias: torch.Tensor | None,
    k: int,
    act: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op in PyTorch ops (any device): masked dense, i.e. every row of W, then the
    selected entries mixed in. Same function as the compiled kernel (ties in the logits may
    be broken differently)."""
    if act not in _ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)}, but got {act}")
    logits = F.linear(F.linear(x, gate_in), gate_out)  # (B, d)
    idx = logits.topk(k, dim=-1, sorted=False).indices  # (B, k)
    g = torch.sigmoid(logits.gather(-1, idx))  # (B, k)
    f = F.linear(x, weight, bias).gather(-1, idx)  # (B, k)
    if light_in is None or light_out is None:
        y = torch.zeros_like(logits).scatter_(-1, idx, g * f)
    else:
        light = F.linear(F.linear(x, light_in), light_out, light_bias)  # (B, d)
        light_sel = light.gather(-1, idx)
        y = light.scatter(-1, idx, light_sel + g * (f - light_sel))
    return _ACTIVATIONS[act](y), logits, idx


def _composite(x: torch.Tensor, *rest: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op's implementation for every key without a compiled kernel; ``rest`` is the
    schema's arguments after ``x``: the seven parameters, ``k``, ``act``."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        ops = cpu_kernels()  # loading it also registers its CPU kernel for the next calls
        if ops is not None:
            y, logits, idx = ops.midl_sparse_eval(x, *rest)
            return y, logits, idx
    return midl_eval_reference(x, *rest)


def _fake(x: torch.Tensor, *rest: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output shapes from input shapes: ``(B, d)``, ``(B, d)``, ``(B, k)`` (int64)."""
    batch, d, k = x.shape[0], rest[2].shape[0], rest[-2]  # rest[2]: W (d, d_in)
    return (
        x.new_empty((batch, d)),
        x.new_empty((batch, d)),
        x.new_empty((batch, k), dtype=torch.long),
    )


def midl_block_eval_reference(
    x: torch.Tensor, *params: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``midl_block_eval`` in PyTorch ops (any device): :func:`midl_autok.block.block_eval`
    (one small dense product per group) and the activation. ``params``: the seven
    parameters, ``k``, ``size``, ``act``."""
    *weights, k, size, act = params
    if act not in _ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(_ACTIVATIONS)}, but got {act}")
    y, logits, idx = block_eval(x, weights, k, size)
    return _ACTIVATIONS[act](y), logits, idx


def _block_composite(
    x: torch.Tensor, *rest: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``midl_block_eval`` on every key: the compiled kernel for float32 CPU input (loading
    the extension on first use), :func:`midl_block_eval_reference` otherwise."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        ops = cpu_kernels()
        if ops is not None:
            y, logits, idx = ops.midl_block_eval(x, *rest, False)
            return y, logits, idx
    return midl_block_eval_reference(x, *rest)


def _block_fake(x: torch.Tensor, *rest: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output shapes: ``(B, d)``, ``(B, d)``, ``(B, k / size)`` (int64)."""
    batch, d, k, size = x.shape[0], rest[2].shape[0], rest[-3], rest[-2]
    return (
        x.new_empty((batch, d)),
        x.new_empty((batch, d)),
        x.new_empty((batch, k // size), dtype=torch.long),
    )


def _register() -> torch.library.Library:
    lib = torch.library.Library("midl_autok", "DEF")  # kept alive in _LIBRARY
    lib.define(SCHEMA)
    lib.impl("midl_eval", _composite, "CompositeExplicitAutograd")
    torch.library.register_fake(OP_NAME, _fake, lib=lib)
    lib.define(BLOCK_SCHEMA)
    lib.impl("midl_block_eval", _block_composite, "CompositeExplicitAutograd")
    torch.library.register_fake(BLOCK_OP_NAME, _block_fake, lib=lib)
    return lib


_LIBRARY = _register()

midl_eval = torch.ops.midl_autok.midl_eval
midl_block_eval = torch.ops.midl_autok.midl_block_eval
