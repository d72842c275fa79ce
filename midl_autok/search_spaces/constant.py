"""The ``constant`` space: one k fraction per layer, held for every epoch.

Parameters: ``<layer>.fraction`` in ``[min_fraction, max_fraction]``. With one layer this is
the paper's fixed-k setting; the fixed-k baseline enqueues its grid through
:meth:`~.base.SearchSpace.encode_params`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from midl_autok.search_spaces.base import Param, SearchSpace

__all__ = ["ConstantSpace"]


class ConstantSpace(SearchSpace):
    """``k[layer][epoch] = k_from_fraction(<layer>.fraction, width)`` for every epoch."""

    name = "constant"

    def _build_params(self) -> list[Param]:
        return [self._fraction_param(f"{spec.name}.fraction") for spec in self.layers]

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        column = np.array([values[f"{spec.name}.fraction"] for spec in self.layers])
        return np.repeat(column[:, None], self.epochs, axis=1)

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float]:
        return {
            f"{s.name}.fraction": float(row[-1])
            for s, row in zip(self.layers, fractions, strict=True)
        }
