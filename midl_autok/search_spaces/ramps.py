"""Ramp spaces: per layer a start and an end k fraction, joined by a ramp over a time window.

Parameters (``<layer>`` is the layer name, e.g. ``body.0``):

``<layer>.start``, ``<layer>.end``
    k fractions before and after the ramp, in ``[min_fraction, max_fraction]``. The end
    fraction is the deployed model's (the last epoch is at ``t = 1 >= t1``).
``t0``, ``span`` (``window="shared"``, the default) or ``<layer>.t0``, ``<layer>.span``
    (``window="per_layer"``), in ``[0, 1]``: the ramp window is
    ``[t0, t1]`` with ``t1 = t0 + span * (1 - t0)``, so any values give a valid window
    (``span`` is the fraction of the training left after ``t0`` that the ramp takes).

The three spaces differ only in the ramp: :func:`~.curves.linear_ramp`,
:func:`~.curves.cosine_ramp` and :func:`~.curves.cubic_ramp` (Zhu & Gupta 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from midl_autok.errors import SpecError
from midl_autok.schedule import LayerSpec
from midl_autok.search_spaces.base import Param, SearchSpace, time_param
from midl_autok.search_spaces.curves import cosine_ramp, cubic_ramp, linear_ramp

__all__ = ["CosineSpace", "CubicSpace", "LinearSpace", "RampSpace", "ramp_window"]

Ramp = Callable[[np.ndarray, float, float, float, float], np.ndarray]


def ramp_window(t0: float, span: float) -> tuple[float, float]:
    """The window ``[t0, t1]`` with ``t1 = t0 + span * (1 - t0)``, for ``t0, span`` in [0, 1]."""
    return t0, t0 + span * (1.0 - t0)


class RampSpace(SearchSpace):
    """Start and end fraction per layer, a ramp between them over ``[t0, t1]``.

    Args:
        window: ``"shared"`` (one window for all layers, 2 parameters) or ``"per_layer"``.
    """

    ramp: ClassVar[Ramp]

    def __init__(
        self,
        layers: Sequence[LayerSpec | tuple[str, int]],
        epochs: int,
        *,
        window: Literal["shared", "per_layer"] = "shared",
        **kwargs: Any,
    ) -> None:
        if window not in ("shared", "per_layer"):
            raise SpecError(
                f"option window of search space '{self.name}' must be 'shared' or 'per_layer', "
                f"but got {window!r}"
            )
        self.window = window
        super().__init__(layers, epochs, **kwargs)

    @property
    def options(self) -> dict[str, Any]:
        return {**super().options, "window": self.window}

    def _window_names(self, layer: str) -> tuple[str, str]:
        if self.window == "shared":
            return "t0", "span"
        return f"{layer}.t0", f"{layer}.span"

    def _build_params(self) -> list[Param]:
        params: list[Param] = []
        for spec in self.layers:
            params += [
                self._fraction_param(f"{spec.name}.start"),
                self._fraction_param(f"{spec.name}.end"),
            ]
            if self.window == "per_layer":
                params += [time_param(n) for n in self._window_names(spec.name)]
        if self.window == "shared":
            params += [time_param("t0"), time_param("span")]
        return params

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        rows = []
        ramp = type(self).ramp
        for spec in self.layers:
            t0_name, span_name = self._window_names(spec.name)
            t0, t1 = ramp_window(values[t0_name], values[span_name])
            start, end = values[f"{spec.name}.start"], values[f"{spec.name}.end"]
            rows.append(ramp(self._times, start, end, t0, t1))
        return np.array(rows)

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float]:
        # A full-length ramp from the first epoch's fraction to the last one's: exact for
        # constant rows (and for schedules that are exactly this ramp).
        guess: dict[str, float] = {}
        for spec, row in zip(self.layers, fractions, strict=True):
            guess[f"{spec.name}.start"] = float(row[0])
            guess[f"{spec.name}.end"] = float(row[-1])
            t0_name, span_name = self._window_names(spec.name)
            guess[t0_name], guess[span_name] = 0.0, 1.0
        return guess

    def _encodable(self) -> str:
        return (
            "it encodes schedules with one k per layer for all epochs, and full-length "
            f"{self.name} ramps"
        )


class LinearSpace(RampSpace):
    """Linear ramp per layer (:func:`~.curves.linear_ramp`)."""

    name = "linear"
    ramp = staticmethod(linear_ramp)


class CosineSpace(RampSpace):
    """Half-cosine ramp per layer (:func:`~.curves.cosine_ramp`)."""

    name = "cosine"
    ramp = staticmethod(cosine_ramp)


class CubicSpace(RampSpace):
    """Cubic gradual-pruning ramp per layer (:func:`~.curves.cubic_ramp`, Zhu & Gupta 2017)."""

    name = "cubic"
    ramp = staticmethod(cubic_ramp)
