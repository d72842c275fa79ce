"""The ``knots`` space: per layer, a piecewise-linear curve through knots at shared times.

Parameters (``n = n_knots``, default 4):

``<layer>.knot<i>`` for ``i = 0 .. n-1``
    the k fraction at knot ``i``, in ``[min_fraction, max_fraction]``.
``knots.t<i>`` for ``i = 1 .. n-2`` (only with ``search_times=True``)
    interior knot times in ``[0, 1]``. They are **sorted** before use, so the value
    ``<layer>.knot<i>`` belongs to the ``i``-th smallest time. Without ``search_times`` the
    knots are evenly spaced: ``t_i = i / (n - 1)``.

The first knot is at ``t = 0`` (the first epoch), the last at ``t = 1`` (the last epoch);
in between the curve is :func:`~.base.piecewise_linear`. All layers share the knot times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from midl_autok.errors import SpecError
from midl_autok.schedule import LayerSpec
from midl_autok.search_spaces.base import Param, SearchSpace, time_param
from midl_autok.search_spaces.curves import piecewise_linear

__all__ = ["KnotsSpace"]


class KnotsSpace(SearchSpace):
    """Piecewise-linear schedule through ``n_knots`` shared knot times.

    Args:
        n_knots: Number of knots (``>= 2``), including the ones at ``t = 0`` and ``t = 1``.
        search_times: Also search the ``n_knots - 2`` interior knot times (else evenly spaced).
    """

    name = "knots"

    def __init__(
        self,
        layers: Sequence[LayerSpec | tuple[str, int]],
        epochs: int,
        *,
        n_knots: int = 4,
        search_times: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(n_knots, bool) or not isinstance(n_knots, int) or not 2 <= n_knots <= 64:
            raise SpecError(
                f"option n_knots of search space 'knots' must be an integer with "
                f"2 <= n_knots <= 64, but got {n_knots!r}"
            )
        if not isinstance(search_times, bool):
            raise SpecError(
                f"option search_times of search space 'knots' must be true or false, "
                f"but got {search_times!r}"
            )
        self.n_knots = n_knots
        self.search_times = search_times
        super().__init__(layers, epochs, **kwargs)

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "n_knots": self.n_knots, "search_times": self.search_times}

    def _time_names(self) -> list[str]:
        return [f"knots.t{i}" for i in range(1, self.n_knots - 1)] if self.search_times else []

    def _build_params(self) -> list[Param]:
        params = [
            self._fraction_param(f"{spec.name}.knot{i}")
            for spec in self.layers
            for i in range(self.n_knots)
        ]
        return params + [time_param(n) for n in self._time_names()]

    def knot_times(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """The ``n_knots`` knot times: ``0``, the sorted interior times, ``1``."""
        if self.search_times:
            if values is None:
                raise ValueError("knot times are searched; pass the parameter values")
            inner = sorted(values[n] for n in self._time_names())
        else:
            inner = [i / (self.n_knots - 1) for i in range(1, self.n_knots - 1)]
        return np.array([0.0, *inner, 1.0])

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        times = self.knot_times(values)
        return np.array(
            [
                piecewise_linear(
                    self._times,
                    times,
                    [values[f"{s.name}.knot{i}"] for i in range(self.n_knots)],
                )
                for s in self.layers
            ]
        )

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float]:
        # Sample each row at evenly spaced knots: exact for constant rows and for schedules that
        # are piecewise linear with those knots.
        times = np.array([i / (self.n_knots - 1) for i in range(self.n_knots)])
        inner = times[1:-1] if self.search_times else times[:0]
        guess = {n: float(t) for n, t in zip(self._time_names(), inner, strict=True)}
        for spec, row in zip(self.layers, fractions, strict=True):
            knots = np.interp(times, self._times, row)
            guess.update({f"{spec.name}.knot{i}": float(v) for i, v in enumerate(knots)})
        return guess

    def _encodable(self) -> str:
        return (
            "it encodes schedules with one k per layer for all epochs, and piecewise-linear "
            "ones with evenly spaced knots"
        )
