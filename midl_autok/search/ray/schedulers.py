"""Early stopping on the Ray backend: the rung rule of :mod:`midl_autok.search.rungs` as a Ray
Tune scheduler.

Neither Optuna's pruners nor Ray Tune's ASHA rank trials on several objectives. Both
``--early-stop asha|mo-asha`` are :class:`ParetoSuccessiveHalving`, a Tune scheduler around
:class:`~midl_autok.search.rungs.RungRule`, the same rule the local backend applies
(:mod:`~midl_autok.search.fidelity`): at each rung (epochs ``g, g*r, g*r^2, ...`` strictly
before the last epoch) a trial goes on only if it is in the top ``ceil(n / r)`` of the ``n``
trials recorded there, ranked by Pareto order then crowding distance (``mo-asha``) or by the
scalarized score (``asha``).

Workers report the values a rung compares as ``objective/<metric>`` (see
:func:`objective_key`). The scheduler starts with the rung values the study already holds
(trial user attr ``rungs``), so a resumed search judges new trials against the earlier ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from midl_autok.search.rungs import (
    EARLY_STOPS,
    RungRule,
    crowding_distance,
    pareto_order,
    promotable,
    rung_epochs,
    scalarize,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = [
    "EARLY_STOPS",
    "SCORE",
    "ParetoSuccessiveHalving",
    "crowding_distance",
    "make_scheduler",
    "objective_key",
    "pareto_order",
    "promotable",
    "rung_epochs",
    "scalarize",
]

#: Result key of the scalarized objective (reported for dashboards; ``asha`` ranks on it).
SCORE = "score"
#: Result key counting epochs (one report per epoch).
TIME_ATTR = "training_iteration"


def objective_key(metric: str) -> str:
    """Result key under which a worker reports ``metric``'s value at a rung."""
    return f"objective/{metric}"


# --------------------------------------------------------------------------- Ray Tune


class ParetoSuccessiveHalving(FIFOScheduler):
    """Asynchronous successive halving by :class:`~midl_autok.search.rungs.RungRule`.

    Args:
        rule: The rung rule, fresh (the scheduler records the values it judges in it), e.g.
            :meth:`EarlyStop.rule <midl_autok.search.rungs.EarlyStop.rule>` of a session.
        objectives: Result keys of the objective values (``objective/val_accuracy``, ...),
            one per direction of ``rule``.
        prior: (trial, rung, values) recorded before this scheduler started.
    """

    def __init__(
        self,
        rule: RungRule,
        *,
        objectives: Sequence[str],
        prior: Iterable[tuple[Any, int, Sequence[float]]] = (),
    ) -> None:
        super().__init__()
        if len(objectives) != len(rule.directions) or not objectives:
            raise ValueError("objectives and directions need one entry per objective")
        self.objectives = list(objectives)
        self.rule = rule
        for key, rung, values in prior:
            self.rule.record(key, rung, values)

    @property
    def rungs(self) -> list[int]:
        return self.rule.rungs

    @property
    def stopped(self) -> dict[Any, int]:
        """Trial id -> rung at which it was stopped."""
        return self.rule.stopped

    def decide(self, trial_id: str, epoch: int, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for a result of ``trial_id`` after ``epoch`` epochs."""
        values = [result.get(key, math.nan) for key in self.objectives]
        if self.rule.judge(trial_id, epoch, values) is None:
            return TrialScheduler.CONTINUE
        return TrialScheduler.STOP

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        epoch = result.get(TIME_ATTR)
        if not isinstance(epoch, int):
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, epoch, result)

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {r}: {len(self.rule.recorded[r])}" for r in self.rungs)
        return f"ParetoSuccessiveHalving: {len(self.stopped)} stopped; trials per rung: {rungs}"


def make_scheduler(
    rule: RungRule | None,
    *,
    objectives: Sequence[str],
    prior: Iterable[tuple[Any, int, Sequence[float]]] = (),
) -> TrialScheduler | None:
    """The Ray Tune scheduler that applies ``rule``, the one the local backend follows
    (:meth:`EarlyStop.rule <midl_autok.search.rungs.EarlyStop.rule>`: None for ``--early-stop
    none`` or when no rung lies before the last epoch, and then no scheduler).
    ``objectives`` are metric names (``val_accuracy``, ...)."""
    if rule is None or not rule.rungs:
        return None  # nothing to stop
    return ParetoSuccessiveHalving(
        rule, objectives=[objective_key(m) for m in objectives], prior=prior
    )
