"""From an action to each layer's k: decode, clip to a hard budget or fit to a budget, and the
divergence penalty.

The one decision rule of :class:`~midl_autok.env.TopKScheduleEnv` and
:class:`~midl_autok.rl.PolicyController` (:func:`decide_k`, bound to a run's settings by
:class:`KRule`), so a policy makes the same k in both. Equations in the docstring of
:mod:`midl_autok.env`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from midl_autok.flops import CostModel
from midl_autok.schedule import LayerSpec, k_from_fraction

__all__ = [
    "KRule",
    "clip_to_budget",
    "decide_k",
    "decode_action",
    "diverged_penalty",
    "fit_to_budget",
    "flops_cap",
    "lowest_k",
]


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


def lowest_k(layers: Sequence[LayerSpec], min_fraction: float) -> dict[str, int]:
    """Every layer at its smallest k (``min_fraction`` of its width): the cheapest schedule an
    action can reach, whose FLOPs ratio is the lowest reachable budget."""
    return {s.name: k_from_fraction(min_fraction, s.width) for s in layers}


def _toward(
    start: Mapping[str, int],
    end: Mapping[str, int],
    costs: CostModel,
    *,
    max_flops: float,
) -> dict[str, int]:
    """``k_l = start_l + floor(s * (end_l - start_l))`` with the largest common ``s`` in [0, 1]
    such that ``inference_flops(k) <= max_flops`` (needs ``flops(start) <= max_flops``).

    MID-L FLOPs are linear in k (``2 d_in`` per unit), so ``s`` is exact (rational
    arithmetic: no float rounding decides a unit of k) and each ``k_l`` is non-decreasing in
    ``max_flops``; a cost model that is not linear (a custom one) is fixed up one unit at a time.
    """
    out = {n: int(start[n]) for n in start}
    if costs.inference_flops(end) <= max_flops:
        return {n: int(end[n]) for n in start}
    slope = {c.name: 2 * c.d_in for c in costs.midl_layers}  # FLOPs per unit of k
    room = Fraction(max_flops) - costs.inference_flops(out)
    total = sum(slope[n] * (end[n] - out[n]) for n in out)
    if total > 0:
        scale = room / total  # in [0, 1)
        out = {n: out[n] + math.floor(scale * (end[n] - out[n])) for n in out}
    while costs.inference_flops(out) > max_flops:  # a non-linear cost model: a step at most
        name = max((n for n in out if out[n] > start[n]), key=lambda n: slope[n] * out[n])
        out[name] -= 1
    return out


def clip_to_budget(
    k: Mapping[str, int], costs: CostModel, *, max_flops: float, k_min: Mapping[str, int]
) -> dict[str, int]:
    """The largest uniform shrink of ``k`` toward ``k_min`` with ``inference_flops <= max_flops``.

    ``k'_l = k_min_l + floor(s * (k_l - k_min_l))`` with
    ``s = (max_flops - flops(k_min)) / sum_l 2 d_in_l (k_l - k_min_l)``; ``k`` is returned
    unchanged when it already fits. Needs ``flops(k_min) <= max_flops``.
    """
    base = costs.inference_flops(k_min)
    if costs.inference_flops(k) > max_flops and base > max_flops:
        raise ValueError(
            f"the FLOPs budget ({max_flops:.0f}) is below the cost with every layer at its "
            f"minimum k ({base})"
        )
    return _toward(k_min, k, costs, max_flops=max_flops)


def fit_to_budget(
    k: Mapping[str, int],
    costs: CostModel,
    *,
    max_flops: float,
    k_min: Mapping[str, int],
    k_max: Mapping[str, int],
) -> dict[str, int]:
    """``k`` moved onto the budget: shrunk toward ``k_min`` when over it (:func:`clip_to_budget`),
    grown toward ``k_max`` by one common factor when under it (``k_l + floor(s (k_max_l -
    k_l))``, the largest ``s`` that fits). The result costs ``<= max_flops``, and less only by
    the rounding (under one unit of k per layer) or when ``k_max`` itself fits; each layer's
    k is non-decreasing in ``max_flops``. What the action decides is the allocation: the
    direction in which the budget is reached."""
    if costs.inference_flops(k) > max_flops:
        return clip_to_budget(k, costs, max_flops=max_flops, k_min=k_min)
    return _toward(k, k_max, costs, max_flops=max_flops)


def flops_cap(budget: float, costs: CostModel) -> int:
    """The most inference FLOPs whose ratio to dense, as :meth:`CostModel.ratio` computes it, is
    ``<= budget``. Not ``budget * dense``: at a budget equal to a reachable ratio (the floor,
    say) the float product can land a hair below that ratio's FLOPs and refuse it."""
    dense = costs.dense_flops()
    cap = math.floor(budget * dense)
    while (cap + 1) / dense <= budget:
        cap += 1
    while cap > 0 and cap / dense > budget:
        cap -= 1
    return cap


def decide_k(
    action: Any,
    *,
    layers: Sequence[LayerSpec],
    costs: CostModel,
    min_fraction: float,
    budget: float | None,
    hard_budget: bool,
    final: bool,
    spend_budget: bool = False,
) -> tuple[dict[str, int], bool]:
    """Decode ``action`` to k; in hard-budget mode on the ``final`` epoch, clip it to the
    budget; in spend-budget mode, on every epoch, fit it to the budget (:func:`fit_to_budget`).
    Returns ``(k, changed)``. The one decision rule of the env and the controller."""
    k = decode_action(action, layers, min_fraction=min_fraction)
    if budget is None or not (spend_budget or (hard_budget and final)):
        return k, False
    k_min = lowest_k(layers, min_fraction)
    max_flops = flops_cap(budget, costs)
    if spend_budget:
        k_max = {s.name: s.width for s in layers}
        fitted = fit_to_budget(k, costs, max_flops=max_flops, k_min=k_min, k_max=k_max)
    else:
        fitted = clip_to_budget(k, costs, max_flops=max_flops, k_min=k_min)
    return fitted, fitted != k


@dataclass(frozen=True)
class KRule:
    """:func:`decide_k` with one run's settings bound: ``rule.decide(action, epoch)`` is the k
    of ``epoch`` (the last of ``epochs`` is the ``final`` one, clipped in hard-budget mode).
    The env builds one per episode (its ``budget`` may be drawn per episode); the controller
    one per run. ``spend_budget``: every epoch's k is fit to the budget instead."""

    layers: Sequence[LayerSpec]
    costs: CostModel
    min_fraction: float
    budget: float | None  # inference FLOPs budget as a fraction of dense, or None
    hard_budget: bool
    epochs: int
    spend_budget: bool = False

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
            spend_budget=self.spend_budget,
        )


def diverged_penalty(lam: float, flops_max: float) -> float:
    """Reward of the step whose training diverged: ``-2 - 2 * lam * R``."""
    return -2.0 - 2.0 * lam * flops_max
