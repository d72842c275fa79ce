"""MLflow tracking: one parent run per search invocation, one child run per trial.

Everything goes through :class:`Tracker`, a thin layer over ``MlflowClient`` with explicit
run ids (never MLflow's global "active run", which mixes runs across threads and Ray
workers) and batched logging (one request per trial for all per-epoch and final metrics).

* Parent run (per ``search`` invocation): tags ``experiment``, ``agent``, ``space``,
  ``seed``, ``study``, package versions, ``git_sha``; params from the experiment spec;
  ``spec.yaml``; metric ``hypervolume`` (and ``hypervolume_normalized``, ``front_size``)
  after each completed trial with ``step`` = trial number; at the end of a search that added
  trials ``pareto.csv``, ``pareto.json``, ``pareto.html`` and ``report.html`` (the pages load
  plotly.js from its CDN; the store's copies under ``reports/`` work offline).
* The experiment (one per study) is tagged ``mlflow.experimentKind`` =
  ``custom_model_development``, so the MLflow UI opens it on its runs, not its GenAI view.
* Child run (per trial, tag ``mlflow.parentRunId``): the trial's parameters, per-epoch
  metrics with ``step`` = epoch, the final metrics (at the last epoch's step), the realized
  schedule as ``schedule.json``; status FINISHED, or FAILED with tag ``fail_reason``.

Metric names are the project's (:mod:`midl_autok.metrics`); MLflow accepts them as they are
(``active_fraction/body.0`` is valid). :func:`metric_key` maps any other character to ``_``
so a layer with an unusual name still logs.

A worker process (e.g. a Ray Tune trial) rebuilds a tracker from a picklable
:class:`TrackingRef` and logs its child run under the same parent. Runs are created only by
:mod:`midl_autok.search.recording` and orphaned ones ended only by
:mod:`midl_autok.search.recovery`; this module logs values into runs and ends them.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midl_autok.interrupts import deferring
from midl_autok.store import make_client, redact_url

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "KIND_TAG",
    "KIND_TRAINING",
    "PARENT_TAG",
    "Tracker",
    "TrackingRef",
    "git_sha",
    "make_client",
    "metric_key",
    "package_versions",
    "refused",
    "tag_value",
]

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
PARENT_TAG = "mlflow.parentRunId"
#: The experiment tag that makes the MLflow UI (3.x) open a study's experiment in its model
#: training view (runs, metrics) rather than the GenAI view (traces).
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"

_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]")
_MAX_METRICS, _MAX_PARAMS = 1000, 100  # MLflow's per-request batch limits
_MAX_TAG = 5000


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric/param key: characters other than letters, digits,
    ``_ - . /`` and space become ``_``; empty path parts are dropped (``a//b`` -> ``a/b``)."""
    key = _BAD_KEY_CHARS.sub("_", str(name))
    parts = [p for p in key.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


@functools.cache
def package_versions() -> dict[str, str]:
    """Versions of the packages a search result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("midl-autok", "torch", "numpy", "optuna", "mlflow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def git_sha(root: Path | None = None) -> str | None:
    """The git commit of the midl-autok source tree (or of ``root``), ``+dirty`` when it has
    local changes to tracked files; None when it is not a git checkout."""
    here = root if root is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class TrackingRef:
    """What a worker needs to log a child run: picklable, JSON-able."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def to_dict(self) -> dict[str, str]:
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
        }


class Tracker:
    """MLflow logging for one MLflow experiment, with explicit run ids."""

    def __init__(self, client: MlflowClient, experiment_id: str) -> None:
        self.client = client
        self.experiment_id = experiment_id

    @classmethod
    def for_experiment(
        cls, client: MlflowClient, name: str, *, artifact_location: str | None = None
    ) -> Tracker:
        """The tracker of the MLflow experiment ``name`` (created, or restored if deleted),
        tagged as a model training experiment (:data:`KIND_TAG`)."""
        from mlflow.exceptions import MlflowException

        try:
            exp = client.get_experiment_by_name(name)
        except MlflowException as exc:
            raise refused(exc, str(client.tracking_uri)) or exc from None
        if exp is None:
            try:
                return cls(
                    client,
                    client.create_experiment(
                        name, artifact_location, tags={KIND_TAG: KIND_TRAINING}
                    ),
                )
            except MlflowException as exc:  # created meanwhile by another process?
                exp = client.get_experiment_by_name(name)
                if exp is None and exc.error_code == "INVALID_PARAMETER_VALUE":
                    from midl_autok.errors import UserError

                    raise UserError(
                        f"MLflow refuses the study name as an experiment name: {exc.message}; "
                        "choose another --study"
                    ) from None
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if KIND_TAG not in exp.tags:  # made before the tag was set (keep a user's choice)
            client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND_TRAINING)
        return cls(client, exp.experiment_id)

    @classmethod
    def from_ref(cls, ref: TrackingRef) -> Tracker:
        return cls(make_client(ref.tracking_uri), ref.experiment_id)

    @property
    def tracking_uri(self) -> str:
        return str(self.client.tracking_uri)

    def ref(self, parent_run_id: str) -> TrackingRef:
        return TrackingRef(self.tracking_uri, self.experiment_id, parent_run_id)

    # -- runs --------------------------------------------------------------------------------

    def end_run(self, run_id: str, status: str = FINISHED, *, reason: str | None = None) -> None:
        """Finish a run with FINISHED / FAILED / KILLED (``reason`` as tag ``fail_reason``)."""
        if reason:
            self.client.set_tag(run_id, "fail_reason", tag_value(reason))
        self.client.set_terminated(run_id, status)

    def running_runs(self, where: str = "") -> list[Any]:
        """RUNNING runs of this experiment (``where``: more of MLflow's filter, with ``and``)."""
        return list(
            self.client.search_runs(
                [self.experiment_id],
                filter_string="attributes.status = 'RUNNING'" + (f" and {where}" if where else ""),
                max_results=1000,
            )
        )

    def run_status(self, run_id: str) -> str | None:
        try:
            return str(self.client.get_run(run_id).info.status)
        except Exception:
            return None

    def read_trial(self, run_id: str) -> tuple[dict[str, float], dict[str, Any] | None]:
        """A trial run's final metrics and its ``schedule.json`` (None when it has none)."""
        import tempfile

        metrics = {k: float(v) for k, v in self.client.get_run(run_id).data.metrics.items()}
        bar = os.environ.get(_PROGRESS_BAR)
        os.environ[_PROGRESS_BAR] = "false"  # MLflow draws a download bar on stderr otherwise
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, "schedule.json", tmp)
                schedule = json.loads(Path(path).read_text())
            except Exception:
                schedule = None
            finally:
                if bar is None:
                    os.environ.pop(_PROGRESS_BAR, None)
                else:
                    os.environ[_PROGRESS_BAR] = bar
        return metrics, schedule if isinstance(schedule, dict) else None

    # -- values ------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k), _param(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + _MAX_PARAMS])

    def log_metrics(self, run_id: str, rows: Iterable[tuple[Mapping[str, float], int]]) -> None:
        """Log ``(metrics, step)`` rows in as few requests as MLflow allows."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, int(step))
            for values, step in rows
            for k, v in values.items()
            if _number(v)
        ]
        for i in range(0, len(items), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=items[i : i + _MAX_METRICS])

    def log_metric(self, run_id: str, key: str, value: float, *, step: int = 0) -> None:
        self.client.log_metric(run_id, metric_key(key), float(value), step=step)

    def log_trial(
        self,
        run_id: str,
        *,
        history: Sequence[Mapping[str, float]],
        metrics: Mapping[str, float],
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        """Per-epoch metrics (``step`` = epoch), final metrics and ``schedule.json``."""
        rows: list[tuple[Mapping[str, float], int]] = []
        for i, row in enumerate(history):
            step = int(row.get("epoch", i))
            rows.append(({k: v for k, v in row.items() if k != "epoch"}, step))
        last_step = rows[-1][1] if rows else 0
        last = dict(rows[-1][0]) if rows else {}
        final = {k: v for k, v in metrics.items() if last.get(k) != v}  # no duplicate points
        rows.append((final, last_step))
        self.log_metrics(run_id, rows)
        if schedule is not None:
            self.log_json(run_id, schedule, "schedule.json")

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_text(run_id, json.dumps(obj, indent=2, allow_nan=False), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_files(self, run_id: str, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path), folder)


def refused(exc: Any, uri: str) -> Exception | None:
    """A :class:`~midl_autok.errors.UserError` for an MLflow server that refuses us (no or
    wrong credentials, no permission) or cannot be reached; None for anything else."""
    from midl_autok.errors import UserError

    code = getattr(exc, "error_code", "")
    where = redact_url(uri)
    if code == "UNAUTHENTICATED":
        return UserError(
            f"the MLflow server {where} refused the request: not authenticated (401); set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if code == "PERMISSION_DENIED":
        return UserError(
            f"the MLflow server {where} refused the request: permission denied (403); ask its "
            "admin for EDIT permission on the experiment, or choose another --study"
        )
    text = str(exc)
    if "Max retries exceeded" in text or "Connection refused" in text:
        return UserError(f"cannot reach the MLflow server {where} (is it running?)")
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return repr(round(value, 10))
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def tag_value(value: Any) -> str:
    """A tag value MLflow accepts (long text is truncated, not rejected)."""
    text = str(value)
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 3] + "..."


# Every tracking call holds a Ctrl-C / SIGTERM until it returns (midl_autok.interrupts): an
# interrupt inside one could leave the sqlite store's transaction open and its lock held.
for _name, _fn in list(vars(Tracker).items()):
    if not _name.startswith("_") and inspect.isfunction(_fn):
        setattr(Tracker, _name, deferring(_fn))


#: Names this module had before the Pareto files moved to :mod:`midl_autok.results.files`.
_MOVED = {
    "pareto_summary": "midl_autok.results.files",
    "write_pareto_files": "midl_autok.results.files",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
