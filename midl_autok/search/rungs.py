"""Early stopping at epoch rungs on several objectives: the one rule both backends follow.

Neither Optuna's pruners nor Ray Tune's ASHA rank trials on several objectives, so the project
has its own asynchronous successive halving (ASHA, Li et al. 2020) that ranks by Pareto order.
A trial is judged at *rungs*, epochs ``g, g*r, g*r^2, ...`` strictly before its last epoch
(``g`` the grace period, ``r`` the reduction factor; :func:`rung_epochs`), against the trials
that reached the same rung before it; it goes on only if it is among the best ``ceil(n / r)``
of the ``n`` trials recorded there (:func:`promotable`). ``--early-stop`` picks what is ranked:

* ``mo-asha``: the objective values, ordered by non-dominated sorting, then by crowding
  distance (NSGA-II's order, Deb et al. 2002);
* ``asha``: one score, :func:`scalarize` (the mean normalized gain over the hypervolume
  reference point), ordered by value: plain ASHA.

What a rung compares is the value each objective *will have* when the trial ends, as far as it
is known after this epoch: the validation accuracy (or loss) of the epoch just trained, and
the FLOPs of the trial's schedule, which are fixed by the schedule before training starts (a
ramp that starts dense and ends sparse is judged by its sparse end).

:class:`RungRule` holds the values recorded per rung; the local backend fills it from the
study (trial user attr ``rungs``, see :mod:`~midl_autok.search.fidelity`), the Ray backend's
scheduler (:mod:`~midl_autok.search.ray.schedulers`) from the results its workers report.
Pure: no Optuna, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from midl_autok import pareto

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from midl_autok.search.session import SearchSession

__all__ = [
    "EARLY_STOPS",
    "EarlyStop",
    "RungRule",
    "comparable",
    "crowding_distance",
    "pareto_order",
    "promotable",
    "rung_epochs",
    "scalarize",
]

#: ``--early-stop`` values, for both backends.
EARLY_STOPS = ("none", "asha", "mo-asha")


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
    like ASHA's ``>=`` cutoff). With one objective this is ASHA's rule on that value.

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


class RungRule:
    """Successive halving at epoch rungs on the objective values (``mo-asha``) or on their
    scalarized score (``asha``).

    Args:
        kind: ``asha`` or ``mo-asha``.
        directions: ``"maximize"`` / ``"minimize"``, one per objective.
        epochs: Epochs of a full trial; rungs lie strictly before the last one.
        grace_period: First rung (epochs a trial always trains).
        reduction_factor: Keep the best ``1 / r`` at each rung.
        reference, ideal: The hypervolume reference and ideal points (``asha`` needs them).
    """

    def __init__(
        self,
        kind: str,
        *,
        directions: Sequence[str],
        epochs: int,
        grace_period: int = 1,
        reduction_factor: float = 2,
        reference: Sequence[float] | None = None,
        ideal: Sequence[float] | None = None,
    ) -> None:
        if kind not in EARLY_STOPS[1:]:
            raise ValueError(f"unknown early stop {kind!r}; valid: {', '.join(EARLY_STOPS[1:])}")
        if kind == "asha" and not (reference and ideal):
            raise ValueError("asha ranks a score measured from the reference and ideal points")
        self.kind = kind
        self.directions = list(directions)
        self.epochs = epochs
        self.reduction_factor = float(reduction_factor)
        self.reference, self.ideal = reference, ideal
        self.rungs = rung_epochs(
            epochs, grace_period=grace_period, reduction_factor=reduction_factor
        )
        #: rung -> trial key -> objective values recorded there
        self.recorded: dict[int, dict[Hashable, list[float]]] = {r: {} for r in self.rungs}
        #: trial key -> rung at which it was stopped
        self.stopped: dict[Hashable, int] = {}

    def rung_at(self, epoch: int) -> int | None:
        """The rung a trial reaches after ``epoch`` epochs (the highest at or below), if any."""
        reached = [r for r in self.rungs if r <= epoch]
        return reached[-1] if reached else None

    def record(self, key: Hashable, rung: int, values: Sequence[float]) -> None:
        """Note a trial's values at ``rung`` without judging it (e.g. an earlier search's)."""
        if rung in self.recorded and comparable(values):
            self.recorded[rung].setdefault(key, [float(v) for v in values])

    def judge(self, key: Hashable, epoch: int, values: Sequence[float]) -> int | None:
        """The rung at which trial ``key`` stops after ``epoch`` epochs with objective
        ``values``, or None to go on (no rung reached, judged there already, promoted, or
        values that cannot be compared, such as NaN)."""
        rung = self.rung_at(epoch)
        if rung is None or not comparable(values):
            return None
        seen = self.recorded[rung]
        if key in seen:  # judged at this rung already (and promoted)
            return None
        seen[key] = [float(v) for v in values]
        keys = list(seen)
        if self.kind == "asha":
            assert self.reference is not None
            assert self.ideal is not None
            points = [[scalarize(seen[k], self.reference, self.ideal)] for k in keys]
            directions = ["maximize"]
        else:
            points, directions = [seen[k] for k in keys], self.directions
        if promotable(points, keys.index(key), directions, reduction_factor=self.reduction_factor):
            return None
        self.stopped[key] = rung
        return rung

    def reason(self, epoch: int) -> str:
        """Why a trial stopped after ``epoch`` epochs (the PRUNED trial's ``pruned_reason``)."""
        return f"stopped early by {self.kind} after epoch {epoch} of {self.epochs}"


def comparable(values: Sequence[object]) -> bool:
    """Whether every value is a finite number (NaN and missing values are never ranked)."""
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


@dataclass(frozen=True)
class EarlyStop:
    """``--early-stop`` and its rungs, the same for both backends."""

    #: ``none``, ``asha`` or ``mo-asha``.
    kind: str = "none"
    #: First rung in epochs (None: a quarter of the epochs, at least 1).
    grace_period: int | None = None
    #: Keep the best 1/r of the trials at each rung.
    reduction_factor: float = 2.0

    def grace(self, epochs: int) -> int:
        return self.grace_period or max(1, epochs // 4)

    def check(self, session: SearchSession | None = None) -> None:
        """Raise :class:`~midl_autok.errors.SpecError` naming the first bad option (and, with
        a session, an ``asha`` its objectives cannot score)."""
        from midl_autok.errors import SpecError, unknown_name

        if self.kind not in EARLY_STOPS:
            raise unknown_name("--early-stop", self.kind, EARLY_STOPS, error=SpecError)
        if self.grace_period is not None and self.grace_period < 1:
            raise SpecError(f"the grace period must be >= 1 epoch, but got {self.grace_period}")
        if not self.reduction_factor > 1:
            raise SpecError(f"the reduction factor must be > 1, but got {self.reduction_factor}")
        if (
            session is not None
            and self.kind == "asha"
            and not (session.reference and session.attrs.get("ideal"))
        ):
            raise SpecError(
                f"--early-stop asha ranks trials on a score measured from the hypervolume "
                f"reference point, which objectives {session.objectives} do not have; use mo-asha"
            )

    def rule(self, session: SearchSession) -> RungRule | None:
        """The session's rule (None for ``none``, or with no rung before the last epoch)."""
        if self.kind == "none":
            return None
        epochs = session.spec.training.epochs
        rule = RungRule(
            self.kind,
            directions=session.directions,
            epochs=epochs,
            grace_period=self.grace(epochs),
            reduction_factor=self.reduction_factor,
            reference=session.reference,
            ideal=session.attrs.get("ideal"),
        )
        return rule if rule.rungs else None
