"""The studies a report draws: each study's completed trials, front, knee and reference.

:func:`load_studies` reads studies through :mod:`midl_autok.results.record`, so fronts,
feasibility and knees are the ones ``midl-autok pareto`` shows; :class:`StudyData` holds what
the figures (:mod:`midl_autok.results.figures`) and the page (:mod:`midl_autok.results.report`)
need. The hypervolume reference point is the one the search fixed before it started (study
user attr), never one derived from the trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from midl_autok.errors import ScheduleError, UserError
from midl_autok.pareto import knee_point
from midl_autok.results.hypervolume import ideal_point
from midl_autok.results.record import ATTR_RUN_ID, ATTR_SCHEDULE
from midl_autok.schedule import KSchedule

if TYPE_CHECKING:
    import optuna

    from midl_autok.results.record import StudyRecord
    from midl_autok.store import Store

__all__ = [
    "X_METRIC",
    "Y_METRIC",
    "ChromeNotFoundError",
    "ReportError",
    "StudyData",
    "TrialPoint",
    "load_studies",
    "study_data",
]

X_METRIC = "inference_flops_ratio"
Y_METRIC = "val_accuracy"


class ReportError(UserError):
    """A report cannot be built from what was asked (no such study, nothing completed...)."""


class ChromeNotFoundError(ReportError):
    """A static image was asked for but kaleido finds no Chrome/Chromium to render it."""


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial as the report sees it."""

    number: int
    values: tuple[float, ...]
    metrics: dict[str, Any]
    schedule: KSchedule | None
    mlflow_run_id: str | None
    start: datetime | None
    complete: datetime | None
    feasible: bool = True

    def coord(self, metric: str, study: StudyData) -> float:
        """The trial's value of ``metric``: a recorded metric, else the objective of that name."""
        value = self.metrics.get(metric)
        if value is None and metric in study.objectives:
            value = self.values[study.objectives.index(metric)]
        try:
            return float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            return math.nan


@dataclass
class StudyData:
    """A study's completed trials, its Pareto front and its fixed reference point."""

    name: str
    agent: str
    directions: list[str]
    objectives: list[str]
    reference: list[float] | None
    ideal: list[float] | None  # best reachable objective values (hypervolume normalization)
    points: list[TrialPoint]  # completed trials, by trial number
    states: dict[str, int]  # trial count per state name (COMPLETE, FAIL, PRUNED, ...)
    first_start: datetime | None = None
    front: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    knee: int | None = None  # index into points

    @property
    def label(self) -> str:
        return f"{self.name} ({self.agent})" if self.agent else self.name

    def pareto_points(self) -> list[TrialPoint]:
        """Front points ordered by their FLOPs ratio (cheapest first)."""
        chosen = [p for p, on in zip(self.points, self.front, strict=True) if on]
        return sorted(chosen, key=lambda p: (p.coord(X_METRIC, self), p.number))


def load_studies(source: Store | str, study_names: Sequence[str] | None = None) -> list[StudyData]:
    """Read the named studies (all of the store's studies when none are named).

    ``source`` is a :class:`~midl_autok.store.Store` or an Optuna storage URL.
    """
    from midl_autok.results.record import list_studies, load_study_record
    from midl_autok.store import Store, open_store

    store = source if isinstance(source, Store) else open_store(storage=source)
    names = list(dict.fromkeys(study_names or list_studies(store)))
    if not names:
        raise ReportError(f"the store {store.root} holds no studies yet; run `midl-autok search`")
    return [study_data(load_study_record(store, name)) for name in names]


def study_data(record: StudyRecord) -> StudyData:
    """What the report needs of one study record."""
    feasible = {t.number for t in record.feasible()}
    front = record.front()
    on_front = {t.number for t in front}
    points = [_trial_point(record, t, t.number in feasible) for t in record.completed()]
    knee = None
    if front and record.confirmed():  # the knee of the confirmed means (what export picks)
        best = record.pick("knee")
        knee = next(i for i, p in enumerate(points) if p.number == best.number)
    elif front:
        best = front[knee_point(np.array([t.values for t in front]), record.directions)]
        knee = next(i for i, p in enumerate(points) if p.number == best.number)
    starts = [t.datetime_start for t in record.trials if t.datetime_start is not None]
    agent = record.attrs.get("agent")
    return StudyData(
        name=record.name,
        agent=agent if isinstance(agent, str) else "",
        directions=record.directions,
        objectives=record.objectives,
        reference=record.reference_point,
        ideal=ideal_point(record.objectives, record.attrs),
        points=points,
        states=record.counts(),
        first_start=min(starts) if starts else None,
        front=np.array([p.number in on_front for p in points], dtype=bool),
        knee=knee,
    )


def _trial_point(
    record: StudyRecord, trial: optuna.trial.FrozenTrial, feasible: bool
) -> TrialPoint:
    schedule = None
    raw = trial.user_attrs.get(ATTR_SCHEDULE)
    if isinstance(raw, dict):
        try:
            schedule = KSchedule.from_dict(raw, source=f"trial {trial.number}")
        except ScheduleError:
            schedule = None  # drawn without its heatmap
    run_id = trial.user_attrs.get(ATTR_RUN_ID)
    metrics: dict[str, Any] = record.metrics(trial)
    confirmed = record.confirmed(trial)
    if confirmed is not None:  # --confirm N: mean and sd over its seeds
        metrics.update({k: v for k, v in confirmed.to_dict().items() if isinstance(v, float)})
        metrics["confirm_seeds"] = confirmed.n
    return TrialPoint(
        number=trial.number,
        values=tuple(float(v) for v in trial.values),
        metrics=metrics,
        schedule=schedule,
        mlflow_run_id=str(run_id) if run_id else None,
        start=trial.datetime_start,
        complete=trial.datetime_complete,
        feasible=feasible,
    )
