"""The Ray Tune trainable: what a worker runs for one trial.

It evaluates the trial's request (:func:`~midl_autok.search.evaluate.evaluate_trial`) with a
hook that reports every epoch to Tune (the epoch's metrics, the objective values a scheduler's
rung compares, the scalarized score), then one last report carrying the outcome as JSON. A stop
by the scheduler becomes :class:`~midl_autok.search.outcome.StopTrial`: the driver records the
trial as pruned and ends its child run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from midl_autok.search.evaluate import evaluate_trial
from midl_autok.search.fidelity import final_costs, rung_values
from midl_autok.search.outcome import StopTrial, TrialRequest
from midl_autok.search.ray.schedulers import SCORE, objective_key, scalarize
from midl_autok.trainer import TrainHooks

if TYPE_CHECKING:
    from midl_autok.trainer import TrainSession

__all__ = ["GPU_TAG", "NODE_TAG", "OUTCOME", "RUN_ID", "TRIAL_TAG", "trainable", "trial_name"]

#: Extra MLflow child-run tags a Ray worker adds (where the trial ran).
NODE_TAG, TRIAL_TAG, GPU_TAG = "ray.node_id", "ray.trial_id", "ray.gpu_ids"
OUTCOME = "outcome"  # result key of the last report: the TrialOutcome as JSON
RUN_ID = "mlflow_run_id"


class _Reporter(TrainHooks):
    """Reports every epoch to Ray Tune: the epoch's metrics, the objective values a rung
    compares (FLOPs as the schedule will end, known before training) and the scalarized
    score. A stop by the scheduler surfaces in ``tune.report`` as ``SystemExit``; it becomes
    :class:`StopTrial`, which leaves the child run to the driver."""

    def __init__(self, request: TrialRequest, report: Mapping[str, Any]) -> None:
        from midl_autok.schedule import KSchedule

        self.schedule = KSchedule.from_dict(request.schedule, source="trial request")
        self.objectives: list[str] = list(report.get("objectives") or [])
        self.reference: list[float] | None = report.get("reference")
        self.ideal: list[float] | None = report.get("ideal")
        self.run_id: str | None = None
        self.final: dict[str, float] = {}

    def started(self, run_id: str) -> None:
        self.run_id = run_id

    def on_run_start(self, session: TrainSession) -> None:
        self.final = final_costs(session, self.schedule)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool | None:
        result: dict[str, Any] = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        values = rung_values(self.objectives, self.final, result)
        for metric, value in zip(self.objectives, values, strict=True):
            result[objective_key(metric)] = value
        if self.reference and self.ideal and all(math.isfinite(v) for v in values):
            result[SCORE] = scalarize(values, self.reference, self.ideal)
        if self.run_id is not None:
            result[RUN_ID] = self.run_id
        try:
            tune.report(result)
        except SystemExit:  # the scheduler stopped this trial; the driver records it
            raise StopTrial("stopped by the Ray Tune scheduler") from None
        return None


def trainable(config: dict[str, Any]) -> None:
    """The Ray Tune trainable: evaluate one trial request, report each epoch, then the outcome."""
    request = TrialRequest.from_dict(config["request"])
    context = ray.get_runtime_context()
    tags = {NODE_TAG: context.get_node_id(), TRIAL_TAG: tune.get_context().get_trial_id()}
    gpus = ray.get_gpu_ids()
    if gpus:
        tags[GPU_TAG] = ",".join(str(g) for g in gpus)
    request = replace(request, tags={**request.tags, **tags})
    reporter = _Reporter(request, config.get("report") or {})
    try:
        outcome = evaluate_trial(request, hooks=[reporter], on_run_started=reporter.started)
    except StopTrial:  # leave the thread the way Ray stops it (a bare return would block)
        raise SystemExit(0) from None
    tune.report({OUTCOME: json.dumps(outcome.to_dict()), RUN_ID: outcome.mlflow_run_id or ""})


def trial_name(trial: Any) -> str:
    return f"trial-{trial.config['request']['trial_number']}"
