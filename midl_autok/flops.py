"""Analytic cost model: FLOPs of dense and MID-L networks.

Convention: FLOPs = 2 x multiply-adds of matrix products and convolutions, per sample,
forward pass. Elementwise work (activations, the sigmoid, the mix, bias adds) is O(d) per
layer and is not counted, as in ``torch.utils.flop_counter.FlopCounterMode``, which a test
checks these numbers against.

    dense layer       2 * d_in * d
    MID-L layer at k  2 * ( r_g * (d_in + d)  +  k * d_in  +  r * (d_in + d) )
                      (neuron and block:B gating alike: see below)
    conv2d            2 * (C_in / groups) * kh * kw * C_out * H_out * W_out
    LSTM              2 * 4 * h * (d_in + h) * T   per layer (gates of every step)

A model's **inference FLOPs** sum its layers with every MID-L layer at the schedule's final
epoch k. Its **dense FLOPs** replace each MID-L layer by ``nn.Linear(d_in, d)``. A run's
**training FLOPs** = sum over epochs of (samples seen x forward FLOPs at that epoch's k x 3).

Block gating (``gating="block:B"``, :mod:`midl_autok.block`) costs the same products: the
gate still computes the d neuron logits (``r_g * (d_in + d)``), which are pooled into d / B
group scores (d additions) and top-k runs over those d / B scores instead of d (comparisons):
both elementwise, not counted. The full path runs the k selected rows (k / B groups of B
contiguous rows: ``k * d_in``) and the light path every neuron (``r * (d_in + d)``). What
block gating saves is time, not FLOPs: its full path is dense products over contiguous rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from midl_autok.gating import Gating
from midl_autok.layers import MIDL
from midl_autok.schedule import KSchedule

__all__ = [
    "CostModel",
    "LayerCost",
    "conv2d_flops",
    "cost_model",
    "dense_flops",
    "lstm_flops",
    "midl_flops",
    "training_flops",
]


def dense_flops(d_in: int, d: int) -> int:
    """``2 * d_in * d``: one dense (``nn.Linear``) layer, per sample."""
    return 2 * d_in * d


def midl_flops(
    d_in: int,
    d: int,
    k: int,
    *,
    gate_rank: int,
    light_rank: int,
    gating: str | Gating | None = None,
) -> int:
    """``2 * (r_g * (d_in + d) + k * d_in + r * (d_in + d))``: one MID-L layer at ``k``.

    The same for ``gating`` ``neuron`` and ``block:B`` (see the module docstring); with
    ``block:B``, ``k`` and ``d`` must be multiples of B (a ``SpecError`` otherwise)."""
    if gating is not None:
        Gating.parse(gating).check_k(k, d, "midl_flops")
    return 2 * (gate_rank * (d_in + d) + k * d_in + light_rank * (d_in + d))


def conv2d_flops(
    c_in: int, c_out: int, kernel: tuple[int, int], out_hw: tuple[int, int], groups: int = 1
) -> int:
    """``2 * (C_in / groups) * kh * kw * C_out * H_out * W_out``."""
    return 2 * (c_in // groups) * kernel[0] * kernel[1] * c_out * out_hw[0] * out_hw[1]


def lstm_flops(input_size: int, hidden_size: int, seq_len: int, *, num_layers: int = 1) -> int:
    """``2 * 4 * h * (d_in + h) * T`` per layer; later layers read ``h`` instead of ``d_in``."""
    total = 0
    for layer in range(num_layers):
        d_in = input_size if layer == 0 else hidden_size
        total += 2 * 4 * hidden_size * (d_in + hidden_size) * seq_len
    return total


def training_flops(forward_flops: float, samples: int) -> float:
    """Training FLOPs of ``samples`` samples at ``forward_flops`` per sample::

        training = 3 * samples * forward

    (the forward pass, and a backward pass of about twice its cost). The one copy of this
    rule: the trainer's count, the search's reference point and the Ray trainable's
    per-epoch objective use it.
    """
    return 3 * samples * forward_flops


@dataclass(frozen=True)
class LayerCost:
    """One costed module: fixed FLOPs, or a MID-L layer whose FLOPs depend on k."""

    name: str
    kind: str  # "midl" | "linear" | "conv2d" | "lstm"
    flops: int  # fixed cost; for MID-L the dense-equivalent cost 2 * d_in * d
    d_in: int = 0
    d: int = 0
    gate_rank: int = 0
    light_rank: int = 0
    gating: str = "neuron"  # MID-L: neuron or block:B (same formula; k is not checked here)

    def at(self, k: int | None) -> int:
        if self.kind != "midl":
            return self.flops
        return midl_flops(
            self.d_in,
            self.d,
            self.d if k is None else k,
            gate_rank=self.gate_rank,
            light_rank=self.light_rank,
        )


@dataclass(frozen=True)
class CostModel:
    """Per-sample forward FLOPs of a model as a function of its MID-L layers' k."""

    layers: tuple[LayerCost, ...]

    @property
    def midl_layers(self) -> tuple[LayerCost, ...]:
        return tuple(c for c in self.layers if c.kind == "midl")

    def inference_flops(self, k: Mapping[str, int] | None = None) -> int:
        """Forward FLOPs per sample with MID-L layers at ``k`` (missing names: all neurons)."""
        k = k or {}
        return sum(c.at(k.get(c.name)) for c in self.layers)

    def dense_flops(self) -> int:
        """Forward FLOPs per sample of the same architecture with ``nn.Linear`` for MID-L."""
        return sum(c.flops for c in self.layers)

    def ratio(self, k: Mapping[str, int] | None = None) -> float:
        """``inference_flops(k) / dense_flops()``: lower is cheaper."""
        return self.inference_flops(k) / self.dense_flops()

    def training_flops(self, schedule: KSchedule, samples_per_epoch: int | Sequence[int]) -> int:
        """Sum over epochs of samples seen x forward FLOPs at that epoch's k x 3."""
        if isinstance(samples_per_epoch, int):
            samples = [samples_per_epoch] * schedule.epochs
        else:
            samples = list(samples_per_epoch)
            if len(samples) != schedule.epochs:
                raise ValueError(
                    f"samples_per_epoch must have one entry per epoch ({schedule.epochs}), "
                    f"but got {len(samples)}"
                )
        per_epoch = [self.inference_flops(schedule.at(e)) for e in range(schedule.epochs)]
        return int(sum(training_flops(f, n) for f, n in zip(per_epoch, samples, strict=True)))

    def per_layer(self, k: Mapping[str, int] | None = None) -> dict[str, int]:
        k = k or {}
        return {c.name: c.at(k.get(c.name)) for c in self.layers}


def cost_model(model: nn.Module, example: torch.Tensor) -> CostModel:
    """Trace one forward pass of ``model`` on ``example`` (one sample, batch dim included) to
    record each costed module's shapes, then cost them analytically.

    Costed modules: :class:`MIDL`, ``nn.Linear``, ``nn.Conv2d``, ``nn.LSTM`` (single
    direction, batch_first or not). Other modules (pooling, norms, embeddings, activations)
    count as 0, like ``FlopCounterMode``. A model with its own ``cost_model(example)`` method
    (the transformer: :mod:`midl_autok.flops_transformer`) is costed by it.
    """
    own = getattr(model, "cost_model", None)
    if callable(own):
        costs_of_model: CostModel = own(example)
        return costs_of_model
    costs: list[LayerCost] = []
    names = {module: name for name, module in model.named_modules()}
    handles = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: object) -> None:
        name = names[module]
        x = args[0]
        if isinstance(module, MIDL):
            costs.append(
                LayerCost(
                    name,
                    "midl",
                    dense_flops(module.in_features, module.out_features),
                    d_in=module.in_features,
                    d=module.out_features,
                    gate_rank=module.gate_rank,
                    light_rank=module.light_rank,
                    gating=str(module.gating),
                )
            )
        elif isinstance(module, nn.Linear):
            rows = x.numel() // x.shape[-1]  # batch is 1 here; > 1 when applied per time step
            costs.append(
                LayerCost(
                    name, "linear", rows * dense_flops(module.in_features, module.out_features)
                )
            )
        elif isinstance(module, nn.Conv2d):
            assert isinstance(out, torch.Tensor)
            kh, kw = module.kernel_size
            flops = conv2d_flops(
                module.in_channels,
                module.out_channels,
                (kh, kw),
                (out.shape[-2], out.shape[-1]),
                module.groups,
            )
            costs.append(LayerCost(name, "conv2d", flops))
        elif isinstance(module, nn.LSTM):
            if module.bidirectional or module.proj_size:
                raise ValueError(
                    f"cost model: bidirectional/projected LSTM {name} is not supported"
                )
            seq_len = x.shape[1] if module.batch_first else x.shape[0]
            flops = lstm_flops(
                module.input_size, module.hidden_size, seq_len, num_layers=module.num_layers
            )
            costs.append(LayerCost(name, "lstm", flops))

    for module in model.modules():
        if isinstance(module, (MIDL, nn.Linear, nn.Conv2d, nn.LSTM)):
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return CostModel(tuple(costs))
