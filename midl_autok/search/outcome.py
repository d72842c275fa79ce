"""What a trial is asked to do and what it produced, as plain data.

A :class:`TrialRequest` (the experiment spec as a dict, the schedule as a dict, the MLflow
parent run's :class:`~midl_autok.tracking.TrackingRef`) goes to
:func:`~midl_autok.search.evaluate.evaluate_trial`, here or in a Ray worker; the
:class:`TrialOutcome` it returns goes to :mod:`~midl_autok.search.recording`, which turns it
into the Optuna trial. Both are picklable and JSON-able.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from midl_autok.tracking import TrackingRef

__all__ = ["COMPLETE", "FAIL", "PRUNED", "StopTrial", "TrialOutcome", "TrialRequest", "non_finite"]

COMPLETE: Literal["complete"] = "complete"
FAIL: Literal["fail"] = "fail"
PRUNED: Literal["pruned"] = "pruned"  # stopped early by a scheduler; metrics of its last epoch


class StopTrial(BaseException):
    """Raised by a training hook when the trial is stopped from outside and another process
    records it (e.g. a Ray Tune scheduler stopped it); :func:`evaluate_trial` re-raises it
    without ending the MLflow child run."""


@dataclass(frozen=True)
class TrialRequest:
    """Everything needed to evaluate one schedule, as plain (picklable, JSON-able) data."""

    spec: dict[str, Any]  # ExperimentSpec.model_dump(mode="json")
    schedule: dict[str, Any]  # KSchedule.to_dict()
    trial_number: int
    params: dict[str, Any] = field(default_factory=dict)  # the agent's parameters (logged)
    tracking: TrackingRef | None = None  # None: no MLflow run
    tags: dict[str, str] = field(default_factory=dict)  # child-run tags
    provenance: dict[str, Any] = field(default_factory=dict)  # goes into schedule.json
    device: str = "auto"
    threads: int | None = None  # torch CPU threads for this trial (None: leave as is)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRequest:
        values = dict(data)
        if values.get("tracking") is not None:
            values["tracking"] = TrackingRef(**values["tracking"])
        return cls(**values)


@dataclass
class TrialOutcome:
    """What evaluating one schedule produced."""

    state: Literal["complete", "fail", "pruned"]
    metrics: dict[str, float] = field(default_factory=dict)  # final metrics
    history: list[dict[str, float]] = field(default_factory=list)  # per completed epoch
    schedule: dict[str, Any] | None = None  # the realized schedule (k actually used)
    mlflow_run_id: str | None = None
    fail_reason: str | None = None
    train_s: float = 0.0  # wall time of the training run (data, model, train, evaluate)
    total_s: float = 0.0  # wall time of the whole evaluation (training + tracking)

    @classmethod
    def failed(cls, reason: str, **values: Any) -> TrialOutcome:
        return cls(state=FAIL, fail_reason=reason, **values)

    @property
    def ok(self) -> bool:
        return self.state == COMPLETE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialOutcome:
        return cls(**dict(data))


def non_finite(metrics: Mapping[str, Any]) -> str | None:
    """The reason to fail a trial whose final metrics hold NaN or infinity, else None."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"metric {key} is {value}"
    return None
