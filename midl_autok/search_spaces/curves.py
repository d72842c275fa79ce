"""The pure ramp functions the search spaces are built from (re-exported by
:mod:`midl_autok.search_spaces.base`, where they used to live).

Time inside a run is normalized: epoch ``e`` of ``E`` sits at ``t_e = e / (E - 1)`` (``t = 1``
when ``E = 1``), so epoch 0 is ``t = 0`` and the last (deployed) epoch is ``t = 1``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "cosine_ramp",
    "cubic_ramp",
    "epoch_times",
    "linear_ramp",
    "piecewise_linear",
    "ramp_progress",
]


def epoch_times(epochs: int) -> np.ndarray:
    """Normalized time of each epoch: ``t_e = e / (E - 1)`` for ``E > 1``, ``[1.0]`` for ``E = 1``.

    The first epoch is at ``t = 0`` and the last, deployed epoch at ``t = 1``, so a ramp's end
    value is always the k of the exported model.
    """
    if epochs < 1:
        raise ValueError(f"`epochs >= 1` must hold, but got {epochs}")
    if epochs == 1:
        return np.ones(1)
    return np.arange(epochs, dtype=float) / (epochs - 1)


def ramp_progress(t: ArrayLike, t0: float = 0.0, t1: float = 1.0) -> np.ndarray:
    """Progress through the ramp window ``[t0, t1]``.

    ``p(t) = clip((t - t0) / (t1 - t0), 0, 1)``; when ``t0 == t1`` the ramp is a step:
    ``p(t) = 0`` for ``t < t0`` and ``1`` for ``t >= t0``.
    """
    if not t0 <= t1:
        raise ValueError(f"`t0 <= t1` must hold, but got t0={t0}, t1={t1}")
    tt = np.asarray(t, dtype=float)
    if t1 == t0:
        return (tt >= t0).astype(float)
    with np.errstate(over="ignore"):  # a tiny window overflows to +-inf, clipped to a step
        return np.clip((tt - t0) / (t1 - t0), 0.0, 1.0)


def linear_ramp(
    t: ArrayLike, start: float, end: float, t0: float = 0.0, t1: float = 1.0
) -> np.ndarray:
    """Linear ramp from ``start`` to ``end`` over ``[t0, t1]``, flat outside.

    ``f(t) = start + (end - start) * p``, with ``p = clip((t - t0) / (t1 - t0), 0, 1)``.
    """
    p = ramp_progress(t, t0, t1)
    return _blend(start, end, 1.0 - p)


def cosine_ramp(
    t: ArrayLike, start: float, end: float, t0: float = 0.0, t1: float = 1.0
) -> np.ndarray:
    """Half-cosine ramp (as in cosine annealing) from ``start`` to ``end`` over ``[t0, t1]``.

    ``f(t) = end + (start - end) * (1 + cos(pi * p)) / 2``, with
    ``p = clip((t - t0) / (t1 - t0), 0, 1)``. Flat at both ends of the window.
    """
    p = ramp_progress(t, t0, t1)
    return _blend(start, end, 0.5 * (1.0 + np.cos(np.pi * p)))


def cubic_ramp(
    t: ArrayLike, start: float, end: float, t0: float = 0.0, t1: float = 1.0
) -> np.ndarray:
    """Cubic ramp of gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune").

    ``f(t) = end + (start - end) * (1 - (t - t0) / (t1 - t0))^3`` for ``t0 <= t <= t1``,
    ``start`` before ``t0`` and ``end`` after ``t1``. Zhu & Gupta ramp sparsity
    ``s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3``; here the ramped quantity is the
    kept fraction ``1 - s``, which follows the same curve. It changes fast early and
    flattens as it reaches ``end``.
    """
    p = ramp_progress(t, t0, t1)
    return _blend(start, end, (1.0 - p) ** 3)


#: The ramp shapes by name: the ramp spaces (``linear``, ``cosine``, ``cubic``) and the
#: ``budget`` space's ``ramp`` option.
RAMPS = {"linear": linear_ramp, "cosine": cosine_ramp, "cubic": cubic_ramp}


def _blend(start: float, end: float, w: np.ndarray) -> np.ndarray:
    """``w * start + (1 - w) * end``: the same as ``end + (start - end) * w``, but exactly
    ``start`` at ``w = 1`` and exactly ``end`` at ``w = 0`` in floating point (so a ramp's
    endpoints round to the same k as its start and end fractions)."""
    return w * start + (1.0 - w) * end


def piecewise_linear(t: ArrayLike, times: ArrayLike, values: ArrayLike) -> np.ndarray:
    """Linear interpolation through knots ``(times[i], values[i])``, flat outside them.

    For ``times[i] <= t <= times[i+1]``:
    ``f(t) = values[i] + (values[i+1] - values[i]) * (t - times[i]) / (times[i+1] - times[i])``.
    ``times`` must be non-decreasing; at a repeated time the later knot wins for ``t`` at or
    after it (a step).
    """
    tk = np.asarray(times, dtype=float)
    vk = np.asarray(values, dtype=float)
    if tk.ndim != 1 or tk.shape != vk.shape or tk.size == 0:
        raise ValueError(
            f"times and values must be 1-D of the same non-zero length, "
            f"but got shapes {tk.shape} and {vk.shape}"
        )
    if np.any(np.diff(tk) < 0):
        raise ValueError(f"`times` must be non-decreasing, but got {tk.tolist()}")
    return np.asarray(np.interp(np.asarray(t, dtype=float), tk, vk), dtype=float)
