"""Multi-fidelity search: the parts of ``--early-stop`` both backends share around the rule.

The rule itself (rungs, who goes on) is :class:`~midl_autok.search.rungs.RungRule`. Here:

* what a rung compares (:func:`final_costs`, :func:`rung_values`): the epoch's validation
  metrics and the costs the schedule will have when it ends;
* :class:`RungHook`, the training hook that judges a trial at each rung and stops it (the
  local backend; a Ray worker reports to the Tune scheduler instead);
* :class:`StudyRungs`, the local backend's judge: each trial's values at each rung are kept
  on its Optuna trial (user attr ``rungs``: ``{"<epoch>": [value per objective]}``), and a
  trial at a rung is judged against every other trial of the study that reached that rung,
  whatever process ran it and whether it ended or not, so a resumed or a concurrent search
  judges as one search would. The Ray driver writes the same user attr and seeds its
  scheduler from it (:func:`recorded_rungs`);
* :func:`pruned_metrics`: the metrics a PRUNED trial carries, its last epoch's.

A stopped trial is recorded PRUNED with those metrics, its child run KILLED with tag
``pruned`` (:mod:`~midl_autok.search.recording`). PRUNED trials count toward ``--trials``
like COMPLETE ones, never toward the front (they have no objective values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from midl_autok import metrics as M
from midl_autok.search.rungs import EarlyStop, comparable
from midl_autok.trainer import TrainHooks

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from midl_autok.schedule import KSchedule
    from midl_autok.search.session import SearchSession
    from midl_autok.trainer import TrainSession

__all__ = [
    "ATTR_RUNGS",
    "RungHook",
    "StudyRungs",
    "final_costs",
    "note_rung",
    "pruned_metrics",
    "recorded_rungs",
    "rung_values",
]

#: Trial user attr: the trial's objective values at each rung it reached.
ATTR_RUNGS = "rungs"


# --------------------------------------------------------------------------- what is compared


def final_costs(session: TrainSession, schedule: KSchedule) -> dict[str, float]:
    """The cost metrics ``schedule`` will have when its run ends, known before training:
    inference FLOPs (and ratio) at the last epoch's k, training FLOPs, active fraction."""
    from midl_autok.flops import training_flops

    costs = session.costs
    flops = [float(costs.inference_flops(schedule.at(e))) for e in range(schedule.epochs)]
    samples = int(session.data.x_train.shape[0])
    return {
        M.INFERENCE_FLOPS: flops[-1],
        M.INFERENCE_FLOPS_RATIO: flops[-1] / float(costs.dense_flops()),
        M.TRAINING_FLOPS: float(training_flops(sum(flops), samples)),
        M.ACTIVE_FRACTION: schedule.active_fraction(),
    }


def rung_values(
    objectives: Sequence[str], final: Mapping[str, float], metrics: Mapping[str, Any]
) -> list[float]:
    """Each objective's value as a rung compares it: its final cost when the schedule fixes
    it, else the epoch's metric (NaN when missing)."""
    return [float(final.get(m, metrics.get(m, math.nan))) for m in objectives]


def pruned_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The metrics of a trial stopped after ``len(rows)`` epochs: its last epoch's."""
    out = {k: float(v) for k, v in rows[-1].items() if k not in ("epoch", M.EPOCH_TIME_S)}
    out["epochs"] = float(len(rows))
    return out


# --------------------------------------------------------------------------- the local backend


Judge = Callable[[int, list[float]], "str | None"]


class RungHook(TrainHooks):
    """Judges the trial after each epoch (``judge(epochs_done, values)`` returns why it stops,
    or None) and stops the run at the first ``stop``; :attr:`pruned` then says why."""

    def __init__(self, schedule: KSchedule, objectives: Sequence[str], judge: Judge) -> None:
        self.schedule = schedule
        self.objectives = list(objectives)
        self.judge = judge
        self.final: dict[str, float] = {}
        self.pruned: str | None = None

    def on_run_start(self, session: TrainSession) -> None:
        self.final = final_costs(session, self.schedule)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool | None:
        self.pruned = self.judge(epoch + 1, rung_values(self.objectives, self.final, metrics))
        return False if self.pruned is not None else None


def note_rung(trial: optuna.Trial, seen: dict[str, list[float]], epoch: int, values: Any) -> None:
    """Keep ``values`` as the trial's values at rung ``epoch`` (user attr ``rungs``)."""
    if comparable(values):
        seen[str(epoch)] = [float(v) for v in values]
        trial.set_user_attr(ATTR_RUNGS, dict(seen))


def recorded_rungs(trials: Iterable[FrozenTrial]) -> Iterator[tuple[int, int, list[float]]]:
    """(trial number, rung, values) for every rung value kept on ``trials``."""
    for t in trials:
        kept = t.user_attrs.get(ATTR_RUNGS)
        if not isinstance(kept, dict):
            continue
        for rung, values in kept.items():
            if str(rung).isdigit() and isinstance(values, list) and comparable(values):
                yield t.number, int(rung), [float(v) for v in values]


class StudyRungs:
    """The judge of one local trial: at a rung, keep its values on the trial, then judge it
    against the values every other trial of the study kept at that rung."""

    def __init__(self, session: SearchSession, trial: optuna.Trial, early_stop: EarlyStop):
        self.session, self.trial, self.early_stop = session, trial, early_stop
        self.seen: dict[str, list[float]] = {}

    def __call__(self, epoch: int, values: list[float]) -> str | None:
        rule = self.early_stop.rule(self.session)
        if rule is None or epoch not in rule.rungs:
            return None
        note_rung(self.trial, self.seen, epoch, values)
        number = self.trial.number
        for other, rung, kept in recorded_rungs(self.session.trials()):
            if other != number:
                rule.record(other, rung, kept)
        if rule.judge(number, epoch, values) is None:
            return None
        return rule.reason(epoch)
