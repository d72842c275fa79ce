"""Evaluate one schedule: train it and log its MLflow child run. Runs anywhere.

:func:`evaluate_trial` is the per-trial work every backend shares. It takes a
:class:`TrialRequest` (plain data: the experiment spec as a dict, the schedule as a dict, the
MLflow parent run's :class:`~midl_autok.tracking.TrackingRef`) and returns a
:class:`TrialOutcome` (plain data again). It never touches Optuna, so it can run in this
process or in a Ray worker; the driver turns the outcome into the Optuna trial with
:meth:`~midl_autok.backends.session.SearchSession.tell`.

A failing evaluation (the loss became NaN, any exception, a non-finite final metric) is an
outcome with ``state="fail"`` and a ``fail_reason``; its child run ends FAILED with the epochs
that did complete. Only an interruption (``KeyboardInterrupt``/``SystemExit``) propagates,
after ending the child run as KILLED, and :class:`StopTrial`, raised by a hook when another
process takes over the trial (the Ray backend's driver records a trial its scheduler stopped
as pruned and ends the child run itself), which leaves the run alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from midl_autok.tracking import FAILED, FINISHED, KILLED, Tracker, TrackingRef
from midl_autok.trainer import TrainHooks

__all__ = ["StopTrial", "TrialOutcome", "TrialRequest", "evaluate_trial"]

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


class _Recorder(TrainHooks):
    """Keeps the rows of the epochs that completed (for a run that fails later)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.rows.append(dict(metrics))


def non_finite(metrics: Mapping[str, Any]) -> str | None:
    """The reason to fail a trial whose final metrics hold NaN or infinity, else None."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"metric {key} is {value}"
    return None


def evaluate_trial(
    request: TrialRequest,
    *,
    hooks: Sequence[TrainHooks] = (),
    on_run_started: Callable[[str], None] | None = None,
) -> TrialOutcome:
    """Train ``request.schedule`` under ``request.spec`` and log the MLflow child run.

    ``hooks`` are passed to the trainer; ``on_run_started`` receives the child run id as
    soon as it exists (the local backend stores it on the Optuna trial at once, so an
    interrupted trial's run can be found and ended later).
    """
    from midl_autok.schedule import KSchedule
    from midl_autok.spec import validate_spec
    from midl_autok.trainer import DivergedError, run_experiment

    start = time.perf_counter()
    spec = validate_spec(request.spec, source="trial spec")
    schedule = KSchedule.from_dict(request.schedule, source=f"trial {request.trial_number}")
    tracker = Tracker.from_ref(request.tracking) if request.tracking is not None else None
    run_id: str | None = None
    if tracker is not None and request.tracking is not None:
        run_id = tracker.start_run(
            f"trial-{request.trial_number}",
            parent_run_id=request.tracking.parent_run_id,
            tags={
                "trial": request.trial_number,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **request.tags,
            },
            params=request.params,
        )
        if on_run_started is not None:
            on_run_started(run_id)

    recorder = _Recorder()
    train_start = time.perf_counter()
    try:
        with _torch_threads(request.threads):
            result = run_experiment(
                spec, schedule=schedule, device=request.device, hooks=[recorder, *hooks]
            )
        metrics, history = dict(result.metrics), list(result.history)
        realized = result.schedule or schedule
        reason = non_finite(metrics)
    except StopTrial:
        raise
    except DivergedError as exc:
        metrics, history, realized, reason = {}, list(exc.history), schedule, str(exc)
    except Exception as exc:
        metrics, history, realized = {}, recorder.rows, schedule
        reason = f"{type(exc).__name__}: {exc}".strip()
    except BaseException:
        if tracker is not None and run_id is not None:
            tracker.end_run(run_id, KILLED, reason="interrupted")
        raise
    train_s = time.perf_counter() - train_start

    provenance = {**request.provenance, "mlflow_run_id": run_id}
    info = realized.with_info(metrics=_public(metrics), provenance=provenance).to_dict()
    if tracker is not None and run_id is not None:
        try:
            tracker.log_trial(run_id, history=history, metrics=metrics, schedule=info)
            tracker.end_run(run_id, FINISHED if reason is None else FAILED, reason=reason)
        except BaseException:
            tracker.end_run(run_id, KILLED if reason is None else FAILED, reason=reason)
            raise
    return TrialOutcome(
        state=COMPLETE if reason is None else FAIL,
        metrics=metrics,
        history=history,
        schedule=info,
        mlflow_run_id=run_id,
        fail_reason=reason,
        train_s=train_s,
        total_s=time.perf_counter() - start,
    )


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, then restore the previous number."""
    if not threads:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _public(metrics: Mapping[str, float]) -> dict[str, float]:
    from midl_autok import metrics as M

    keys = (*M.METRICS, "dense_inference_flops")
    return {
        k: v
        for k, v in metrics.items()
        if k in keys and k != M.EPOCH_TIME_S and math.isfinite(float(v))
    }
