"""From an action to each layer's k: decode, clip to a hard budget, and the divergence penalty.

The one decision rule of :class:`~midl_autok.env.TopKScheduleEnv` and
:class:`~midl_autok.rl.PolicyController` (:func:`decide_k`, bound to a run's settings by
:class:`KRule`), so a policy makes the same k in both. Equations in the docstring of
:mod:`midl_autok.env`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from midl_autok.flops import CostModel
from midl_autok.schedule import LayerSpec, k_from_fraction

__all__ = ["KRule", "clip_to_budget", "decide_k", "decode_action", "diverged_penalty"]


def decode_action(
    action: Any, layers: Sequence[LayerSpec], *, min_fraction: float
) -> dict[str, int]:
    """``k_l = k_from_fraction(min_f + (1 - min_f) * (clip(a_l, -1, 1) + 1) / 2, d_l)``."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)  # (L,)
    if a.shape[0] != len(layers):
        raise ValueError(
            f"the action must have one entry per MID-L layer ({len(layers)}), but got {a.shape[0]}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"the action must be finite, but got {a.tolist()}")
    frac = min_fraction + (1.0 - min_fraction) * (np.clip(a, -1.0, 1.0) + 1.0) / 2.0  # (L,)
    return {s.name: k_from_fraction(float(f), s.width) for s, f in zip(layers, frac, strict=True)}


def clip_to_budget(
    k: Mapping[str, int], costs: CostModel, *, max_flops: float, k_min: Mapping[str, int]
) -> dict[str, int]:
    """The largest uniform shrink of ``k`` toward ``k_min`` with ``inference_flops <= max_flops``.

    ``k'_l = k_min_l + floor(s * (k_l - k_min_l))`` with
    ``s = (max_flops - flops(k_min)) / sum_l 2 d_in_l (k_l - k_min_l)``; ``k`` is returned
    unchanged when it already fits. Needs ``flops(k_min) <= max_flops``.
    """
    out = dict(k)
    if costs.inference_flops(out) <= max_flops:
        return out
    base = costs.inference_flops(k_min)
    if base > max_flops:
        raise ValueError(
            f"the FLOPs budget ({max_flops:.0f}) is below the cost with every layer at its "
            f"minimum k ({base})"
        )
    slope = {c.name: 2 * c.d_in for c in costs.midl_layers}  # FLOPs per unit of k
    excess = sum(slope[n] * (out[n] - k_min[n]) for n in out)
    scale = (max_flops - base) / excess
    out = {n: k_min[n] + math.floor(scale * (out[n] - k_min[n])) for n in out}
    while costs.inference_flops(out) > max_flops:  # float rounding: a step at most
        name = max((n for n in out if out[n] > k_min[n]), key=lambda n: slope[n] * out[n])
        out[name] -= 1
    return out


def decide_k(
    action: Any,
    *,
    layers: Sequence[LayerSpec],
    costs: CostModel,
    min_fraction: float,
    budget: float | None,
    hard_budget: bool,
    final: bool,
) -> tuple[dict[str, int], bool]:
    """Decode ``action`` to k and, in hard-budget mode on the ``final`` epoch, clip it to the
    budget; returns ``(k, clipped)``. The one decision rule of the env and the controller."""
    k = decode_action(action, layers, min_fraction=min_fraction)
    if not (hard_budget and final and budget is not None):
        return k, False
    k_min = {s.name: k_from_fraction(min_fraction, s.width) for s in layers}
    clipped = clip_to_budget(k, costs, max_flops=budget * costs.dense_flops(), k_min=k_min)
    return clipped, clipped != k


@dataclass(frozen=True)
class KRule:
    """:func:`decide_k` with one run's settings bound: ``rule.decide(action, epoch)`` is the k
    of ``epoch`` (the last of ``epochs`` is the ``final`` one, clipped in hard-budget mode).
    The env builds one per episode (its ``budget`` may be drawn per episode); the controller
    one per run."""

    layers: Sequence[LayerSpec]
    costs: CostModel
    min_fraction: float
    budget: float | None  # inference FLOPs budget as a fraction of dense, or None
    hard_budget: bool
    epochs: int

    def decide(self, action: Any, epoch: int) -> tuple[dict[str, int], bool]:
        """``(k, clipped)`` for ``action`` at ``epoch`` (0-based)."""
        return decide_k(
            action,
            layers=self.layers,
            costs=self.costs,
            min_fraction=self.min_fraction,
            budget=self.budget,
            hard_budget=self.hard_budget,
            final=epoch == self.epochs - 1,
        )


def diverged_penalty(lam: float, flops_max: float) -> float:
    """Reward of the step whose training diverged: ``-2 - 2 * lam * R``."""
    return -2.0 - 2.0 * lam * flops_max
