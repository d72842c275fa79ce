"""The ``free`` space: one k fraction per layer per epoch (``D = layers x epochs``).

Parameters: ``<layer>.e<epoch>`` in ``[min_fraction, max_fraction]``, the epoch zero-padded
so names sort in time order (``body.0.e00`` ... ``body.0.e11``). It can express (and
encode) any schedule whose fractions lie in the bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from midl_autok.search_spaces.base import Param, SearchSpace

__all__ = ["FreeSpace"]


class FreeSpace(SearchSpace):
    """``k[layer][epoch] = k_from_fraction(<layer>.e<epoch>, width)``."""

    name = "free"

    def _epoch_name(self, layer: str, epoch: int) -> str:
        digits = len(str(self.epochs - 1))
        return f"{layer}.e{epoch:0{digits}d}"

    def _build_params(self) -> list[Param]:
        return [
            self._fraction_param(self._epoch_name(spec.name, e))
            for spec in self.layers
            for e in range(self.epochs)
        ]

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        return np.array(
            [[values[self._epoch_name(s.name, e)] for e in range(self.epochs)] for s in self.layers]
        )

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float]:
        return {
            self._epoch_name(s.name, e): float(row[e])
            for s, row in zip(self.layers, fractions, strict=True)
            for e in range(self.epochs)
        }

    def _encodable(self) -> str:
        return "it encodes any schedule"
