"""Search spaces: a few named parameters -> a :class:`~midl_autok.schedule.KSchedule`.

Registered by name in :data:`SEARCH_SPACES`; build one with :func:`make_space`::

    space = make_space("cosine", [("body.0", 256), ("body.1", 256)], epochs=12)
    schedule = space.suggest(trial)           # Optuna define-by-run
    schedule = space.decode(u)                # u in [0, 1]^D (RL, tests)
    param_space = space.ray_param_space()     # Ray Tune

=========  ==========================================================  ==================
name       parameters                                                   D
=========  ==========================================================  ==================
constant   ``<layer>.fraction``                                         L
linear     ``<layer>.start``, ``<layer>.end``, ``t0``, ``span``         2L + 2 (shared)
cosine     as linear, half-cosine ramp                                  2L + 2 (shared)
cubic      as linear, Zhu & Gupta (2017) cubic ramp                     2L + 2 (shared)
knots      ``<layer>.knot<i>`` (+ ``knots.t<i>``)                       L n (+ n - 2)
free       ``<layer>.e<epoch>``                                         L E
budget     ``budget`` (target cost), ``<layer>.share``, ``start``,      L + 4
           ``t0``, ``span`` (``ramp="none"``: the first two only)       (L + 1)
=========  ==========================================================  ==================

Adding a space = one module with a :class:`SearchSpace` subclass + one entry here; the
shared contract tests then cover it. This package imports only numpy: Optuna and Ray are
imported inside the methods that need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from midl_autok.errors import SpecError, unknown_name
from midl_autok.schedule import LayerSpec
from midl_autok.search_spaces.base import Param, SearchSpace
from midl_autok.search_spaces.budget import BudgetSpace, water_fill
from midl_autok.search_spaces.constant import ConstantSpace
from midl_autok.search_spaces.curves import (
    cosine_ramp,
    cubic_ramp,
    epoch_times,
    linear_ramp,
    piecewise_linear,
    ramp_progress,
)
from midl_autok.search_spaces.free import FreeSpace
from midl_autok.search_spaces.knots import KnotsSpace
from midl_autok.search_spaces.ramps import (
    CosineSpace,
    CubicSpace,
    LinearSpace,
    RampSpace,
    ramp_window,
)

__all__ = [
    "SEARCH_SPACES",
    "BudgetSpace",
    "ConstantSpace",
    "CosineSpace",
    "CubicSpace",
    "FreeSpace",
    "KnotsSpace",
    "LinearSpace",
    "Param",
    "RampSpace",
    "SearchSpace",
    "cosine_ramp",
    "cubic_ramp",
    "epoch_times",
    "linear_ramp",
    "make_space",
    "piecewise_linear",
    "ramp_progress",
    "ramp_window",
    "water_fill",
]

SEARCH_SPACES: dict[str, type[SearchSpace]] = {
    cls.name: cls
    for cls in (
        ConstantSpace,
        LinearSpace,
        CosineSpace,
        CubicSpace,
        KnotsSpace,
        FreeSpace,
        BudgetSpace,
    )
}


def make_space(
    name: str,
    layers: Sequence[LayerSpec | tuple[str, int]],
    epochs: int,
    **options: Any,
) -> SearchSpace:
    """Build the search space registered as ``name``.

    ``options`` are the space's keyword options (``min_fraction``, ``max_fraction``, and
    e.g. ``window`` for the ramps, ``n_knots`` for ``knots``, or ``cost`` and ``ramp`` for
    ``budget``). An unknown space name or
    option raises :class:`~midl_autok.errors.SpecError` with a "did you mean".
    """
    try:
        cls = SEARCH_SPACES[name]
    except (KeyError, TypeError):
        raise unknown_name("search space", str(name), SEARCH_SPACES, error=SpecError) from None
    return cls(layers, epochs, **options)
