"""The ``budget`` space: a target inference cost, its allocation over layers, and a ramp to it.

Parameters (``<layer>`` is the layer name, e.g. ``body.0``):

``budget``
    the target cost of the deployed (last-epoch) schedule. With a cost model (option
    ``cost``, a :class:`~midl_autok.flops.CostModel`; the search session passes the model's)
    it is the **inference-FLOPs ratio** (``inference_flops_ratio``: MID-L inference FLOPs /
    the dense model's); without one it is the final **active fraction**
    (:meth:`~midl_autok.schedule.KSchedule.active_fraction`, the mean of ``k / width``).
    Its interval runs from the floor (every MID-L layer at its lowest k) to the ceiling
    (every layer at its highest k), or ``[min_budget, max_budget]`` inside that.
``<layer>.share``, in ``[0, 1]``
    the layer's claim on the budget: weight ``w = R^(2 share - 1)`` with ``R = 10``. Equal
    shares put every layer at the same position in its k range (the fixed-k setting).
``start``, ``t0``, ``span``, in ``[0, 1]`` (not with ``ramp="none"``)
    the ramp to the final k: each layer starts at ``end + start * (max_fraction - end)``
    (``start = 0``: constant k; ``1``: from the highest k) and ramps to ``end`` over the
    window ``[t0, t0 + span * (1 - t0)]`` with the ``ramp`` curve (cosine by default).

Decoding is exact: the budget minus the fixed cost is split by :func:`water_fill` into each
layer's position ``p`` in its k range, ``k = round(k_lo + p (k_hi - k_lo))``, so the decoded
schedule's cost is the target within half a k step per layer. Any sampler thus reaches the
cheap end of the front as the fixed-k grid does, and learns where to spend.

With ``ranks=True`` (:mod:`~midl_autok.search_spaces.ranks`) the ranks' gate and light paths
count in the target too: the budget runs from every layer at its lowest rank and k to every
layer at its highest, and :meth:`BudgetSpace.fit_ranks` moves the sampled ranks, one step at a
time, until the target lies between the schedule's cost at its lowest and highest k; the k
then spend the rest exactly as above. A layer's rank choices stop below a step that costs more
than the whole k range, which guarantees that fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from midl_autok.errors import SpecError
from midl_autok.schedule import KSchedule, LayerSpec, k_from_fraction
from midl_autok.search_spaces.base import Param, SearchSpace, time_param
from midl_autok.search_spaces.curves import RAMPS
from midl_autok.search_spaces.ramps import ramp_window

if TYPE_CHECKING:
    from midl_autok.flops import CostModel

__all__ = ["SHARE_SPREAD", "BudgetSpace", "water_fill"]

SHARE_SPREAD = 10.0  # R: a share of 0 weighs 1/R, 0.5 weighs 1, 1 weighs R


def _affordable(options: Sequence[int], unit: float, k_range: float) -> tuple[int, ...]:
    """``options`` (sorted) up to the first step that costs more than ``k_range``."""
    kept = list(options[:1])
    for c in options[1:]:
        if (c - kept[-1]) * unit > k_range + 1e-15:
            break
        kept.append(c)
    return tuple(kept)


def water_fill(amount: float, caps: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    """Positions ``p_l = min(1, lam w_l)`` in ``[0, 1]`` with ``sum_l caps_l p_l = amount``.

    ``lam >= 0`` is the one value that spends ``amount`` (clipped to ``[0, sum caps]``): the
    spend ``f(lam) = sum_l caps_l min(1, lam w_l)`` is piecewise linear and increasing, so
    between the breakpoints ``1 / w_l`` (sorted) it is solved in closed form. ``caps`` must be
    ``>= 0`` and ``weights > 0``; a layer with ``caps_l = 0`` gets ``min(1, lam w_l)`` too.
    """
    a = np.asarray(caps, dtype=float)
    w = np.asarray(weights, dtype=float)
    if a.shape != w.shape or np.any(a < 0) or np.any(w <= 0):
        raise ValueError(f"caps >= 0 and weights > 0 of one shape must hold, but got {a} and {w}")
    total = float(a.sum())
    amount = min(max(float(amount), 0.0), total)
    if amount >= total:
        return np.ones_like(a)
    order = np.argsort(1.0 / w, kind="stable")
    full = 0.0  # spend of the layers already at p = 1
    slope = float((a * w).sum())  # d f / d lam of the layers still below 1
    for i in order:
        lam = (amount - full) / slope if slope > 0 else math.inf
        if lam <= 1.0 / w[i]:
            return np.minimum(1.0, lam * w)
        full += a[i]  # layer i is full at this lam: it leaves the slope
        slope -= a[i] * w[i]
    return np.ones_like(a)


class BudgetSpace(SearchSpace):
    """A target cost, decoded exactly into per-layer final k, with a ramp to it.

    Args:
        cost: The model's :class:`~midl_autok.flops.CostModel` (its MID-L layers must be the
            space's layers); the budget is then the inference-FLOPs ratio. None: the final
            active fraction.
        min_budget, max_budget: Narrow the budget's interval (None: floor / ceiling).
        ramp: ``"cosine"`` (default), ``"linear"``, ``"cubic"``, or ``"none"`` (constant k
            per layer, no ``start``/``t0``/``span`` parameters).
    """

    name = "budget"

    def __init__(
        self,
        layers: Sequence[LayerSpec | tuple[str, int]],
        epochs: int,
        *,
        cost: CostModel | None = None,
        min_budget: float | None = None,
        max_budget: float | None = None,
        ramp: Literal["cosine", "linear", "cubic", "none"] = "cosine",
        **kwargs: Any,
    ) -> None:
        if ramp not in (*RAMPS, "none"):
            raise SpecError(
                "option ramp of search space 'budget' must be one of "
                f"{', '.join(map(repr, (*RAMPS, 'none')))}, but got {ramp!r}"
            )
        for label, value in (("min_budget", min_budget), ("max_budget", max_budget)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise SpecError(
                    f"option {label} of search space 'budget' must be a finite number or "
                    f"null, but got {value!r}"
                )
        self.ramp = ramp
        self.cost = cost
        self.min_budget = None if min_budget is None else float(min_budget)
        self.max_budget = None if max_budget is None else float(max_budget)
        super().__init__(layers, epochs, **kwargs)  # calls _build_params

    @property
    def options(self) -> dict[str, Any]:
        # The cost model is not an option a spec can hold: the session passes the model's.
        return {
            **super().options,
            "min_budget": self.min_budget,
            "max_budget": self.max_budget,
            "ramp": self.ramp,
        }

    @property
    def unit(self) -> str:
        """What ``budget`` measures: ``"inference_flops_ratio"`` or ``"active_fraction"``."""
        return "active_fraction" if self.cost is None else "inference_flops_ratio"

    # -- the cost of a final k -------------------------------------------------------------------

    def _coefficients(self) -> tuple[float, np.ndarray]:
        """``(fixed, per_k)``: ``cost(k) = fixed + sum_l per_k[l] * k_l`` in budget units."""
        if self.cost is None:
            widths = np.array([s.width for s in self.layers], dtype=float)
            return 0.0, 1.0 / (len(widths) * widths)
        if not hasattr(self.cost, "midl_layers") or not hasattr(self.cost, "inference_flops"):
            raise SpecError(
                "option cost of search space 'budget' must be a midl_autok.flops.CostModel "
                f"(e.g. cost_model(model, x[:1])), but got {type(self.cost).__name__}"
            )
        by_name = {c.name: c for c in self.cost.midl_layers}
        mine = {s.name for s in self.layers}
        extra = sorted(set(by_name) - mine)
        missing = sorted(mine - set(by_name))
        if extra or missing:
            raise SpecError(
                "the cost model of search space 'budget' must cost exactly the space's MID-L "
                f"layers, but it lacks {missing or 'none'} and has extra {extra or 'none'}"
            )
        for s in self.layers:
            if by_name[s.name].d != s.width:
                raise SpecError(
                    f"the cost model has layer {s.name} with width {by_name[s.name].d}, but "
                    f"the search space has width {s.width}"
                )
        dense = float(self.cost.dense_flops())
        fixed = self.cost.inference_flops({s.name: 0 for s in self.layers}) / dense
        per_k = np.array(
            [(by_name[s.name].at(1) - by_name[s.name].at(0)) / dense for s in self.layers]
        )
        return fixed, per_k

    def ratio(
        self, k: Mapping[str, int], ranks: Mapping[str, tuple[int, int]] | None = None
    ) -> float:
        """The cost of final ``k`` (``{layer: k}``) in the budget's unit, with the model's
        ranks or ``ranks`` (``{layer: (gate_rank, light_rank)}``)."""
        return (
            self._fixed
            + self._rank_offset(ranks)
            + float(sum(c * k[s.name] for s, c in zip(self.layers, self._per_k, strict=True)))
        )

    def floor(
        self, *, k1: bool = False, ranks: Mapping[str, tuple[int, int]] | None = None
    ) -> float:
        """The lowest budget: every layer at its lowest k (``k1=True``: at ``k = 1``), at
        ``ranks``, or with ``ranks=True`` and no ``ranks`` at every layer's lowest ranks."""
        k = np.ones_like(self._k_lo) if k1 else self._k_lo
        return self._fixed + self._rank_offset(ranks, "lowest") + float(self._per_k @ k)

    def ceiling(self, *, ranks: Mapping[str, tuple[int, int]] | None = None) -> float:
        """The highest budget: every layer at its highest k (and highest ranks, see floor)."""
        return self._fixed + self._rank_offset(ranks, "highest") + float(self._per_k @ self._k_hi)

    # -- the ranks ---------------------------------------------------------------------------

    def _rank_offset(
        self, ranks: Mapping[str, tuple[int, int]] | None, extreme: str = "model"
    ) -> float:
        """The cost of ``ranks`` minus that of the model's ranks (``ranks`` None: the model's,
        or with rank co-search the ``extreme`` choices)."""
        if ranks is None:
            if self.rank_search is None or extreme == "model":
                return 0.0
            pick = 0 if extreme == "lowest" else -1
            ranks = {
                s.name: (
                    self.rank_search.choices[s.name][0][pick],
                    self.rank_search.choices[s.name][1][pick],
                )
                for s in self.layers
            }
        total = np.array([sum(ranks[s.name]) for s in self.layers], dtype=float)
        return float(self._rank_unit @ (total - self._rank_sum))

    def _model_ranks(self) -> dict[str, tuple[int, int]]:
        if self.cost is None:
            return {}
        return {c.name: (c.gate_rank, c.light_rank) for c in self.cost.midl_layers}

    def _rank_choices(
        self, base: Mapping[str, Sequence[int]]
    ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        # Ranks up to the layer's input size too, and no step dearer than the whole k range.
        by_name = {c.name: c for c in self.cost.midl_layers} if self.cost is not None else {}
        k_range = float(self._per_k @ (self._k_hi - self._k_lo))
        out = {}
        for (name, (gate, light)), unit in zip(
            super()._rank_choices(base).items(), self._rank_unit, strict=True
        ):
            d_in = by_name[name].d_in if name in by_name else None
            out[name] = tuple(
                _affordable(
                    [c for c in options if d_in is None or c <= max(1, d_in)], unit, k_range
                )
                for options in (gate, light)
            )
        return out  # type: ignore[return-value]

    def fit_ranks(
        self, ranks: Mapping[str, tuple[int, int]], budget: float
    ) -> dict[str, tuple[int, int]]:
        """``ranks`` moved until ``floor(ranks) <= budget <= ceiling(ranks)``.

        While the floor is above the budget, the rank whose next step down saves most steps
        down; while the ceiling is below it, the rank whose next step up costs least steps up
        (ties: the first layer, gate before light). No step costs more than the k range
        ``ceiling - floor`` (see :meth:`_rank_choices`), so a step down from a floor above the
        budget leaves the ceiling above it, and a step up from a ceiling below it leaves the
        floor below it: the loop ends in the bracket. Without a cost model the ranks cost
        nothing and are returned as they are.
        """
        assert self.rank_search is not None
        current = {s.name: list(ranks[s.name]) for s in self.layers}
        slack = 1e-12 * max(1.0, abs(budget))

        def moves(direction: int) -> list[tuple[float, int, int, int]]:
            found = []
            for i, s in enumerate(self.layers):
                for j, options in enumerate(self.rank_search.choices[s.name]):  # type: ignore[union-attr]
                    at = options.index(current[s.name][j])
                    to = at + direction
                    if 0 <= to < len(options):
                        step = abs(options[to] - options[at]) * float(self._rank_unit[i])
                        found.append((step, i, j, options[to]))
            return found

        def fitted() -> dict[str, tuple[int, int]]:
            return {n: (v[0], v[1]) for n, v in current.items()}

        while self.floor(ranks=fitted()) > budget + slack:
            step = max(moves(-1), key=lambda m: (m[0], -m[1], -m[2]), default=None)
            if step is None:
                break
            current[self.layers[step[1]].name][step[2]] = step[3]
        while self.ceiling(ranks=fitted()) < budget - slack:
            step = min(moves(+1), key=lambda m: (m[0], m[1], m[2]), default=None)
            if step is None:
                break
            current[self.layers[step[1]].name][step[2]] = step[3]
        return fitted()

    def _ranks(self, values: Mapping[str, float]) -> dict[str, tuple[int, int]]:
        return self.fit_ranks(super()._ranks(values), values["budget"])

    # -- the contract ------------------------------------------------------------------------

    def _prepare(self) -> None:
        self._fixed, self._per_k = self._coefficients()
        self._k_lo = np.array(
            [k_from_fraction(self.min_fraction, s.width) for s in self.layers], float
        )
        self._k_hi = np.array(
            [k_from_fraction(self.max_fraction, s.width) for s in self.layers], float
        )
        # Cost of one unit of gate or light rank per layer: 2 (d_in + d) / dense FLOPs.
        by_name = {c.name: c for c in self.cost.midl_layers} if self.cost is not None else {}
        dense = float(self.cost.dense_flops()) if self.cost is not None else 1.0
        self._rank_unit = np.array(
            [
                2.0 * (by_name[s.name].d_in + s.width) / dense if s.name in by_name else 0.0
                for s in self.layers
            ]
        )
        self._rank_sum = np.array(
            [
                by_name[s.name].gate_rank + by_name[s.name].light_rank if s.name in by_name else 0
                for s in self.layers
            ],
            dtype=float,
        )

    def _build_params(self) -> list[Param]:
        floor, ceiling = self.floor(), self.ceiling()
        low = floor if self.min_budget is None else self.min_budget
        high = ceiling if self.max_budget is None else self.max_budget
        label = "active fraction" if self.cost is None else "inference-FLOPs ratio"
        if low < floor - 1e-12:
            at_k1 = (
                ""
                if self.cost is None
                else f"; the gate and light paths and the non-MID-L layers cost "
                f"{self.floor(k1=True):.4g} with k = 1 everywhere"
            )
            raise SpecError(
                f"min_budget must be >= {floor:.4g}, the {label} of this model with every MID-L "
                f"layer at its lowest k (min_fraction={self.min_fraction}{at_k1}), but got {low}"
            )
        if high > ceiling + 1e-12:
            raise SpecError(
                f"max_budget must be <= {ceiling:.4g}, the {label} of this model with every "
                f"MID-L layer at its highest k (max_fraction={self.max_fraction}), but got {high}"
            )
        if low > high:
            raise SpecError(
                f"search space 'budget' needs min_budget <= max_budget, but got {low} > {high}"
            )
        params = [Param("budget", max(low, floor), min(high, ceiling))]
        params += [Param(f"{s.name}.share", 0.0, 1.0) for s in self.layers]
        if self.ramp != "none":
            params += [time_param("start"), time_param("t0"), time_param("span")]
        return params

    def final_k(self, values: Mapping[str, float]) -> np.ndarray:
        """Each layer's final k for parameter ``values``: the budget split by :func:`water_fill`
        (after the decoded ranks' cost, with ``ranks=True``)."""
        span = self._k_hi - self._k_lo
        weights = [SHARE_SPREAD ** (2.0 * values[f"{s.name}.share"] - 1.0) for s in self.layers]
        ranks = self._ranks(values) if self.rank_search is not None else None
        amount = values["budget"] - self.floor(ranks=ranks)
        p = water_fill(amount, self._per_k * span, weights)
        return np.round(self._k_lo + p * span)

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        widths = np.array([s.width for s in self.layers], dtype=float)
        end = self.final_k(values) / widths
        if self.ramp == "none":
            return np.repeat(end[:, None], self.epochs, axis=1)
        start = end + values["start"] * (self.max_fraction - end)
        t0, t1 = ramp_window(values["t0"], values["span"])
        curve = RAMPS[self.ramp]
        return np.array([curve(self._times, s, e, t0, t1) for s, e in zip(start, end, strict=True)])

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float] | None:
        # A constant schedule: the budget is its cost, the shares reproduce each layer's
        # position in its k range, no ramp.
        final = KSchedule.from_fractions(self.layers, fractions[:, -1:].tolist())
        k = {s.name: row[0] for s, row in zip(final.layers, final.k, strict=True)}
        span = self._k_hi - self._k_lo
        ranged = span > 0
        p = np.zeros(len(self.layers))
        p[ranged] = (
            np.array([k[s.name] for s in self.layers])[ranged] - self._k_lo[ranged]
        ) / span[ranged]
        top = float(p.max()) if p.size else 0.0
        w = p / top if top > 0 else np.ones_like(p)
        shares = 0.5 + 0.5 * np.log(np.maximum(w, 1.0 / SHARE_SPREAD)) / math.log(SHARE_SPREAD)
        guess = {"budget": self.ratio(k, self._encode_ranks or None)}
        guess.update(
            {f"{s.name}.share": float(v) for s, v in zip(self.layers, shares, strict=True)}
        )
        if self.ramp != "none":
            guess.update({"start": 0.0, "t0": 0.0, "span": 1.0})
        return guess

    def _encodable(self) -> str:
        return (
            "it encodes schedules with one k per layer for all epochs whose k positions differ "
            f"by at most {SHARE_SPREAD:g}x between layers and whose cost lies in its budget range"
        )
