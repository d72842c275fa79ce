"""Early stopping for searches with two (or more) objectives: ASHA and Pareto successive halving.

Neither Optuna's pruners nor Ray Tune's ASHA rank trials on several objectives. Two policies
are offered to the Ray backend (``--early-stop asha|mo-asha``); both judge a trial at *rungs*,
epochs ``g, g*r, g*r^2, ...`` strictly before its last epoch (``g`` the grace period, ``r``
the reduction factor), asynchronously: a trial is judged against the trials that reached the
same rung before it, as in ASHA (Li et al. 2020).

* ``asha``: Ray Tune's :class:`~ray.tune.schedulers.ASHAScheduler` on a scalarized value,
  :func:`scalarize` (the mean normalized distance from the hypervolume reference point).
* ``mo-asha``: :class:`ParetoSuccessiveHalving`: at each rung the trials are ordered by
  non-dominated sorting, then by crowding distance (NSGA-II's order, Deb et al. 2002), and a
  trial continues only if it is in the top ``ceil(n / r)`` of the ``n`` trials recorded there
  (:func:`promotable`).

What a rung compares is the value each objective *will have* when the trial ends, as far as it
is known after this epoch: the validation accuracy (or loss) of the epoch just trained, and
the FLOPs of the trial's schedule, which are fixed by the schedule before training starts (a
ramp that starts dense and ends sparse is judged by its sparse end). Workers report these as
``objective/<metric>`` (see :func:`objective_key`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from midl_autok import pareto
from midl_autok.search.ray.options import EARLY_STOPS

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from ray.tune.experiment import Trial

__all__ = [
    "EARLY_STOPS",
    "SCORE",
    "ParetoSuccessiveHalving",
    "crowding_distance",
    "make_scheduler",
    "objective_key",
    "promotable",
    "rung_epochs",
    "scalarize",
]

#: Result key of the scalarized objective ASHA ranks on.
SCORE = "score"
#: Result key counting epochs (one report per epoch).
TIME_ATTR = "training_iteration"


def objective_key(metric: str) -> str:
    """Result key under which a worker reports ``metric``'s value at a rung."""
    return f"objective/{metric}"


# --------------------------------------------------------------------------- pure policy


def rung_epochs(epochs: int, *, grace_period: int = 1, reduction_factor: float = 2) -> list[int]:
    """Rungs ``g * r^i`` (rounded down) strictly before the last epoch, ascending.

    >>> rung_epochs(12, grace_period=1, reduction_factor=2)
    [1, 2, 4, 8]
    """
    if grace_period < 1:
        raise ValueError(f"grace_period must be an integer >= 1, but got {grace_period}")
    if not reduction_factor > 1:
        raise ValueError(f"reduction_factor must be > 1, but got {reduction_factor}")
    rungs: list[int] = []
    i = 0
    while True:
        rung = int(grace_period * reduction_factor**i)
        if rung >= epochs:
            return rungs
        if not rungs or rung > rungs[-1]:
            rungs.append(rung)
        i += 1


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance of each point among ``points`` (one front, ``(n, m)``).

    For each objective ``j``, sort the points by it; the two extremes get infinity and an
    inner point ``i`` adds ``(f_j[next] - f_j[prev]) / (max_j - min_j)``, the side of the
    box its neighbours span (objectives with ``max_j = min_j`` add nothing). Larger means
    more isolated. Directions do not matter (the distance is symmetric).
    """
    arr = np.asarray(points, dtype=float)
    n = arr.shape[0]
    out = np.zeros(n)
    if n <= 2:
        out[:] = math.inf
        return out
    for j in range(arr.shape[1]):
        order = np.argsort(arr[:, j], kind="stable")
        column = arr[order, j]
        out[order[0]] = out[order[-1]] = math.inf
        span = column[-1] - column[0]
        if span > 0:
            out[order[1:-1]] += (column[2:] - column[:-2]) / span
    return out


def pareto_order(points: ArrayLike, directions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(front rank, crowding distance within its front) of every point."""
    arr = np.asarray(points, dtype=float)
    ranks = pareto.non_dominated_sort(arr, directions)
    crowd = np.zeros(arr.shape[0])
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowd[members] = crowding_distance(arr[members])
    return ranks, crowd


def promotable(
    points: ArrayLike, index: int, directions: Sequence[str], *, reduction_factor: float
) -> bool:
    """Whether ``points[index]`` is among the best ``ceil(n / r)`` of the ``n`` points.

    Points are ordered by non-dominated rank, then by larger crowding distance; a point is
    promoted unless ``ceil(n / r)`` or more points are strictly ahead of it (ties promote,
    like ASHA's ``>=`` cutoff).

    >>> promotable([[0.9, 10.0], [0.8, 12.0]], 1, ["maximize", "minimize"], reduction_factor=2)
    False
    """
    arr = np.asarray(points, dtype=float)
    ranks, crowd = pareto_order(arr, directions)
    ahead = (ranks < ranks[index]) | ((ranks == ranks[index]) & (crowd > crowd[index]))
    return int(ahead.sum()) < math.ceil(arr.shape[0] / reduction_factor)


def scalarize(values: Sequence[float], reference: Sequence[float], ideal: Sequence[float]) -> float:
    """Mean normalized gain over the reference point: ``mean_j (ref_j - v_j) / (ref_j - ideal_j)``
    clipped to ``[0, 1]``; 0 at the reference, 1 at the ideal point.

    For (val_accuracy, inference_flops) with reference (0, dense FLOPs) and ideal (1, 0) this
    is ``(val_accuracy + 1 - inference_flops / dense) / 2``.
    """
    gains = []
    for v, r, i in zip(values, reference, ideal, strict=True):
        span = float(r) - float(i)
        gain = (float(r) - float(v)) / span if span else 0.0
        gains.append(min(1.0, max(0.0, gain)))
    return sum(gains) / len(gains)


# --------------------------------------------------------------------------- Ray Tune


class ParetoSuccessiveHalving(FIFOScheduler):
    """Asynchronous successive halving that promotes by Pareto rank, then crowding distance.

    Args:
        objectives: Result keys of the objective values (``objective/val_accuracy``, ...).
        directions: ``"maximize"`` / ``"minimize"``, one per objective.
        epochs: Epochs of a full trial; rungs lie strictly before the last one.
        grace_period: First rung (epochs a trial always trains).
        reduction_factor: Keep the best ``1 / r`` at each rung.
    """

    def __init__(
        self,
        *,
        objectives: Sequence[str],
        directions: Sequence[str],
        epochs: int,
        grace_period: int = 1,
        reduction_factor: float = 2,
    ) -> None:
        super().__init__()
        if len(objectives) != len(directions) or not objectives:
            raise ValueError("objectives and directions need one entry per objective")
        self.objectives = list(objectives)
        self.directions = list(directions)
        self.reduction_factor = float(reduction_factor)
        self.rungs = rung_epochs(
            epochs, grace_period=grace_period, reduction_factor=reduction_factor
        )
        #: rung -> trial id -> objective values recorded there
        self.recorded: dict[int, dict[str, list[float]]] = {r: {} for r in self.rungs}
        #: trial id -> rung at which it was stopped
        self.stopped: dict[str, int] = {}

    def _values(self, result: Mapping[str, Any]) -> list[float] | None:
        values = [result.get(key) for key in self.objectives]
        if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]  # type: ignore[arg-type]

    def decide(self, trial_id: str, epoch: int, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for a result of ``trial_id`` after ``epoch`` epochs."""
        values = self._values(result)
        if values is None:
            return TrialScheduler.CONTINUE
        for rung in reversed(self.rungs):
            if epoch < rung:
                continue
            seen = self.recorded[rung]
            if trial_id in seen:  # judged at this rung already (and promoted)
                return TrialScheduler.CONTINUE
            seen[trial_id] = values
            ids = list(seen)
            points = np.array([seen[i] for i in ids])
            if promotable(
                points,
                ids.index(trial_id),
                self.directions,
                reduction_factor=self.reduction_factor,
            ):
                return TrialScheduler.CONTINUE
            self.stopped[trial_id] = rung
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        epoch = result.get(TIME_ATTR)
        if not isinstance(epoch, int):
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, epoch, result)

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {r}: {len(self.recorded[r])}" for r in self.rungs)
        return f"ParetoSuccessiveHalving: {len(self.stopped)} stopped; trials per rung: {rungs}"


def make_scheduler(
    kind: str,
    *,
    objectives: Sequence[str],
    directions: Sequence[str],
    epochs: int,
    grace_period: int = 1,
    reduction_factor: float = 2,
) -> TrialScheduler | None:
    """The Ray Tune scheduler for ``--early-stop kind`` (None for ``none``).

    ``objectives`` are metric names (``val_accuracy``, ``inference_flops``, ...); ASHA ranks
    on :data:`SCORE`, which workers report when the study has a hypervolume reference point.
    """
    if kind == "none":
        return None
    if not rung_epochs(epochs, grace_period=grace_period, reduction_factor=reduction_factor):
        return None  # no rung before the last epoch: nothing to stop
    if kind == "asha":
        return ASHAScheduler(
            time_attr=TIME_ATTR,
            metric=SCORE,
            mode="max",
            max_t=epochs - 1,  # rungs strictly before the last epoch; it always finishes
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            stop_last_trials=False,
        )
    if kind == "mo-asha":
        return ParetoSuccessiveHalving(
            objectives=[objective_key(m) for m in objectives],
            directions=directions,
            epochs=epochs,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
    raise ValueError(f"unknown early stop {kind!r}; valid: {', '.join(EARLY_STOPS)}")
