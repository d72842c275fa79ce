"""Pareto fronts of objective vectors: non-dominated sort, 2-D hypervolume, knee point.

Pure functions on numpy arrays. ``points`` is an ``(n, m)`` array (one row per trial, one
column per objective) and ``directions`` names each column's sense, ``"maximize"`` or
``"minimize"`` (Optuna ``StudyDirection`` values work too). Internally every objective is
turned into a loss to minimize (maximized columns are negated).

**Dominance.** ``a`` dominates ``b`` when ``a`` is at least as good in every objective and
strictly better in at least one. Identical points do not dominate each other, so all copies
of a non-dominated point are non-dominated and share a rank (Optuna's ``best_trials`` treats
duplicates the same way).

**Hypervolume** is measured against a reference point fixed *before* the search (e.g.
accuracy 0 and the dense model's FLOPs: :func:`reference_point`), never one derived from the
points found, so values are comparable across trials, studies and agents.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "hypervolume_2d",
    "hypervolume_history",
    "knee_point",
    "non_dominated",
    "non_dominated_sort",
    "reference_point",
]

Direction = str | Enum


def _signs(directions: Sequence[Direction], m: int) -> np.ndarray:
    """+1 for minimize, -1 for maximize, one per objective."""
    if isinstance(directions, str):
        raise ValueError(
            f"directions must be a sequence with one entry per objective, such as "
            f"['maximize', 'minimize'], but got the string {directions!r}"
        )
    if len(directions) != m:
        raise ValueError(
            f"directions must have one entry per objective ({m}), but got {len(directions)}"
        )
    signs = []
    for d in directions:
        label = d.name if isinstance(d, Enum) else d
        label = str(label).lower()
        if label == "minimize":
            signs.append(1.0)
        elif label == "maximize":
            signs.append(-1.0)
        else:
            raise ValueError(f"each direction must be 'maximize' or 'minimize', but got {d!r}")
    return np.array(signs)


def _as_points(points: ArrayLike, *, allow_nan: bool = False) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n points, m objectives), got {arr.shape}")
    if not allow_nan:
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"points must be finite, but row {i} is {arr[i].tolist()}")
    return arr


def _losses(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    arr = _as_points(points)
    if arr.shape[0] == 0:
        return np.zeros((0, len(directions)))
    return arr * _signs(directions, arr.shape[1])


def _non_dominated_losses(loss: np.ndarray) -> np.ndarray:
    """Mask of non-dominated rows of a loss matrix (all objectives minimized)."""
    n, m = loss.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 2:
        # Sweep in lexicographic order: a point is dominated iff some lexicographically smaller,
        # non-identical point has a second loss <= its own. O(n log n).
        order = np.lexsort((loss[:, 1], loss[:, 0]))
        xs, ys = loss[order, 0], loss[order, 1]
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
        running_min = np.minimum.accumulate(ys)
        before = np.full(n, np.inf)
        has_before = group_start > 0
        before[has_before] = running_min[group_start[has_before] - 1]
        mask = np.empty(n, dtype=bool)
        mask[order] = ~(before <= ys)
        return mask
    # General m: O(n^2 m), one vectorized comparison per point.
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        weakly_better = np.all(loss <= loss[i], axis=1)
        strictly_better = np.any(loss < loss[i], axis=1)
        mask[i] = not np.any(weakly_better & strictly_better)
    return mask


def non_dominated(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean mask of the points no other point dominates (the Pareto front).

    Duplicates of a non-dominated point are all ``True``. Rows must be finite (filter failed
    trials first). ``O(n log n)`` for two objectives, ``O(n^2 m)`` otherwise.

    >>> non_dominated([[0.9, 10], [0.8, 5], [0.7, 8]], ["maximize", "minimize"]).tolist()
    [True, True, False]
    """
    return _non_dominated_losses(_losses(points, directions))


def non_dominated_sort(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """Front index of every point: 0 for the Pareto front, 1 for the front once 0 is removed...

    Identical points get the same rank.

    >>> non_dominated_sort([[0.9, 10], [0.8, 5], [0.7, 8]], ["maximize", "minimize"]).tolist()
    [0, 0, 1]
    """
    loss = _losses(points, directions)
    ranks = np.full(loss.shape[0], -1, dtype=int)
    remaining = np.arange(loss.shape[0])
    rank = 0
    while remaining.size:
        front = _non_dominated_losses(loss[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def hypervolume_2d(
    points: ArrayLike, ref: Sequence[float], directions: Sequence[Direction]
) -> float:
    """Exact area dominated by ``points`` and bounded by the reference point ``ref``.

    The area is the union over points ``p`` of the boxes between ``p`` and ``ref``. Only
    points strictly better than ``ref`` in both objectives add area; the others contribute
    nothing (they are not an error). With the front sorted by the first loss ``x_1 < ... <
    x_k`` (so ``y_1 > ... > y_k``) and ``x_{k+1} = ref_x``::

        HV = sum_i (x_{i+1} - x_i) * (ref_y - y_i)

    >>> hypervolume_2d([[0.9, 10], [0.8, 5]], ref=[0.0, 20], directions=["maximize", "minimize"])
    13.0
    """
    if isinstance(directions, str) or len(directions) != 2:
        raise ValueError(f"hypervolume_2d needs 2 directions, but got {directions!r}")
    loss = _losses(points, directions)
    r = _reference(ref, directions)
    inside = np.all(loss < r, axis=1)
    front = loss[inside]
    if front.shape[0] == 0:
        return 0.0
    front = front[_non_dominated_losses(front)]
    front = np.unique(front, axis=0)  # sorted by x, then y; duplicates add nothing
    xs, ys = front[:, 0], front[:, 1]
    widths = np.append(xs[1:], r[0]) - xs
    return float(np.sum(widths * (r[1] - ys)))


def hypervolume_history(
    points: ArrayLike,
    ref: Sequence[float],
    directions: Sequence[Direction],
    *,
    include: ArrayLike | None = None,
) -> np.ndarray:
    """Hypervolume of the first ``i + 1`` points, for each ``i`` (points in trial order).

    ``include`` (bool per point) leaves points out (infeasible or failed trials; their rows
    may hold NaN) while keeping one entry per point. Non-decreasing by construction.
    """
    arr = _as_points(points, allow_nan=True)
    n = arr.shape[0]
    keep = np.ones(n, dtype=bool) if include is None else np.asarray(include, dtype=bool)
    if keep.shape != (n,):
        raise ValueError(f"include must have one entry per point ({n}), but got {keep.shape}")
    bad = np.flatnonzero(keep & ~np.isfinite(arr).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"included points must be finite, but row {i} is {arr[i].tolist()}; "
            "exclude it with include="
        )
    out = np.zeros(n)
    hv = 0.0
    for i in range(n):
        if keep[i]:
            hv = hypervolume_2d(arr[: i + 1][keep[: i + 1]], ref, directions)
        out[i] = hv
    return out


def knee_point(points: ArrayLike, directions: Sequence[Direction]) -> int:
    """Index (into ``points``) of the knee of the Pareto front.

    Definition: take the non-dominated points; min-max normalize each loss over them (0 =
    the front's best value of that objective, 1 = its worst; an objective with no spread
    is 0 everywhere); the knee minimizes the sum of normalized losses. With two objectives
    the front's extremes normalize to ``(0, 1)`` and ``(1, 0)``, so this is the point
    farthest from the line through the extremes, on the ideal side: the best trade-off
    before returns diminish. Ties go to the earliest point.

    >>> knee_point([[0.97, 100], [0.95, 20], [0.60, 10]], ["maximize", "minimize"])
    1
    """
    loss = _losses(points, directions)
    if loss.shape[0] == 0:
        raise ValueError("knee_point needs at least one point, but got none")
    idx = np.flatnonzero(_non_dominated_losses(loss))
    front = loss[idx]
    lo, hi = front.min(axis=0), front.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    score = ((front - lo) / span).sum(axis=1)
    # Ties go to the earliest point, also when rounding split them (1/26 + 10/26 != 9/26 + 2/26)
    tied = np.flatnonzero(score <= score.min() + 1e-12)
    return int(idx[int(tied[0])])


_REFERENCE_BY_METRIC: dict[str, float | str] = {
    "val_accuracy": 0.0,
    "active_fraction": 1.0,
    "inference_flops_ratio": 1.0,
    "inference_flops": "dense_inference_flops",
    "training_flops": "dense_training_flops",
}


def reference_point(
    objectives: Sequence[str],
    *,
    dense_inference_flops: float | None = None,
    dense_training_flops: float | None = None,
) -> list[float]:
    """The fixed hypervolume reference point for objective metric names, known before search.

    ``val_accuracy`` -> 0; ``inference_flops_ratio`` and ``active_fraction`` -> 1 (the dense
    model); ``inference_flops`` / ``training_flops`` -> the dense model's count, which must be
    given. ``val_loss`` has no natural bound: pass a reference explicitly instead.
    """
    given: dict[str, Any] = {
        "dense_inference_flops": dense_inference_flops,
        "dense_training_flops": dense_training_flops,
    }
    out: list[float] = []
    for metric in objectives:
        if metric not in _REFERENCE_BY_METRIC:
            raise ValueError(
                f"no fixed hypervolume reference for objective {metric!r}; valid: "
                f"{', '.join(sorted(_REFERENCE_BY_METRIC))}; pass a reference point explicitly"
            )
        value = _REFERENCE_BY_METRIC[metric]
        if isinstance(value, str):
            number = given[value]
            if number is None or not math.isfinite(number) or number <= 0:
                raise ValueError(
                    f"the reference for {metric} is the dense model's count: pass "
                    f"{value}= (a finite number > 0), but got {number!r}"
                )
            value = float(number)
        out.append(value)
    return out


def _reference(ref: Sequence[float], directions: Sequence[Direction]) -> np.ndarray:
    r = np.asarray(ref, dtype=float)
    if r.shape != (len(directions),) or not np.all(np.isfinite(r)):
        raise ValueError(
            f"ref must be {len(directions)} finite numbers (one per objective), but got {ref!r}"
        )
    return r * _signs(directions, r.shape[0])
