"""The Ray Tune backend: trials in parallel on the CPUs and GPUs of a machine or a Ray cluster.

A Ray Tune :class:`~ray.tune.Tuner` runs the trials; its search algorithm is
:class:`SessionSearcher`, a Tune ``Searcher`` around the search's
:class:`~midl_autok.backends.session.SearchSession`. The driver (this process) owns the
Optuna study and the MLflow parent run; workers only train and log their own child run::

    Searcher.suggest       session.ask() -> agent.propose(trial, space) -> session.request(...)
    trainable (worker)     evaluate_trial(request) with a hook that reports every epoch
                           (tune.report), then one last report carrying the outcome
    Searcher.on_trial_*    session.tell(trial, outcome): COMPLETE / FAIL, or PRUNED when the
                           scheduler stopped the trial (the driver then logs the epochs the
                           trial reported into its child run and ends the run KILLED)

So the Optuna sampler is the search algorithm, exactly as in the local backend: same agents,
same per-trial sampler seeding, same user attrs and FLOPs constraint, and the study target
``--trials N`` counts COMPLETE + PRUNED trials across invocations. Tune's ``OptunaSearch``
is not used: it owns a second study object with its own sampler, tells values only (no user
attrs, no constraint, the MLflow run id never reaches the trial), tells a trial stopped by a
scheduler as COMPLETE with the values of a partly trained model, and pickles the sampler as
its checkpoint, a second copy of state the RDB study already holds.

**Resume.** The study is the state: a search interrupted (Ctrl-C, SIGTERM, the driver killed)
and rerun with the same command opens the same study, fails the trials the dead process left
RUNNING (ending their child runs), and asks only for the missing trials. Each invocation is
one Tune experiment under the store's ``ray/<study>/``; ``Tuner.restore`` is not used, since it
would rerun the interrupted trials under Optuna trials that were already failed.

**Early stopping** (``--early-stop``): see :mod:`midl_autok.backends.schedulers`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midl_autok import metrics as M
from midl_autok.agents import ExternalAgent, SamplerAgent, get_agent
from midl_autok.backends.evaluate import (
    PRUNED,
    StopTrial,
    TrialOutcome,
    TrialRequest,
    _public,
    evaluate_trial,
)
from midl_autok.backends.session import SearchSession, SearchSummary, open_search
from midl_autok.errors import SpecError, UserError
from midl_autok.interrupts import handling_signals
from midl_autok.store import ATTR_RUN_ID
from midl_autok.tracking import FAILED, KILLED
from midl_autok.trainer import TrainHooks

try:
    import ray
    from ray import tune
    from ray.tune.search import Searcher
except ImportError:  # pragma: no cover - depends on the installed extras
    raise SpecError(
        "the Ray backend needs Ray Tune; install it with: pip install 'midl-autok[ray]'"
    ) from None

from midl_autok.backends.schedulers import (
    EARLY_STOPS,
    SCORE,
    make_scheduler,
    objective_key,
    scalarize,
)

if TYPE_CHECKING:
    import optuna

    from midl_autok.backends.local import SearchCallback
    from midl_autok.spec import ExperimentSpec
    from midl_autok.store import Store
    from midl_autok.trainer import TrainSession

__all__ = ["RayOptions", "SessionSearcher", "run_ray", "run_ray_search"]

#: Extra MLflow child-run tags a Ray worker adds (where the trial ran).
NODE_TAG, TRIAL_TAG, GPU_TAG = "ray.node_id", "ray.trial_id", "ray.gpu_ids"
#: Child-run tag of a trial the scheduler stopped (why).
PRUNED_TAG = "pruned"
_OUTCOME = "outcome"  # result key of the last report: the TrialOutcome as JSON
_RUN_ID = "mlflow_run_id"
_ITERATION = "training_iteration"
_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class RayOptions:
    """Where and how trials run on Ray (``--workers``, ``--cpus-per-trial``, ...)."""

    #: Trials at once (None: as many as the cluster's CPUs and GPUs hold).
    workers: int | None = None
    #: CPUs reserved per trial (fractions allowed).
    cpus_per_trial: float = 1.0
    #: GPUs reserved per trial: a fraction below 1 shares a GPU, above 1 a whole number.
    gpus_per_trial: float = 0.0
    #: None: start a local Ray; ``auto`` or ``host:port``: join that running cluster.
    address: str | None = None
    #: ``none``, ``asha`` or ``mo-asha``.
    early_stop: str = "none"
    #: First rung in epochs (None: a quarter of the epochs, at least 1).
    grace_period: int | None = None
    #: Keep the best 1/r of the trials at each rung.
    reduction_factor: float = 2.0
    #: CPUs / GPUs of a local Ray started here (None: detected); GPUs may be logical.
    num_cpus: int | None = None
    num_gpus: int | None = None

    def check(self) -> None:
        """Raise :class:`SpecError` naming the first bad option."""
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise SpecError(f"--workers must be an integer >= 1, but got {self.workers!r}")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise SpecError(f"--cpus-per-trial must be > 0, but got {self.cpus_per_trial}")
        gpus = self.gpus_per_trial
        if not (math.isfinite(gpus) and gpus >= 0):
            raise SpecError(f"--gpus-per-trial must be >= 0, but got {gpus}")
        if gpus > 1 and gpus != int(gpus):
            raise SpecError(
                f"--gpus-per-trial above 1 must be a whole number (Ray shares a GPU only as a "
                f"fraction below 1), but got {gpus}"
            )
        if self.early_stop not in EARLY_STOPS:
            from midl_autok.errors import unknown_name

            raise unknown_name("--early-stop", self.early_stop, EARLY_STOPS, error=SpecError)
        if self.grace_period is not None and self.grace_period < 1:
            raise SpecError(f"the grace period must be >= 1 epoch, but got {self.grace_period}")
        if not self.reduction_factor > 1:
            raise SpecError(f"the reduction factor must be > 1, but got {self.reduction_factor}")
        if self.address is not None and self.address.strip().startswith("ray://"):
            raise SpecError(
                f"--ray-address {self.address} is a Ray Client address; the search driver must "
                "run inside the cluster, where the study and the trials' results are: submit "
                "it as a Ray job (ray job submit --address http://HEAD:8265 -- midl-autok "
                "search ... --backend ray --ray-address auto) or run it on the head node"
            )

    def grace(self, epochs: int) -> int:
        return self.grace_period or max(1, epochs // 4)


def worker_device(device: str, gpus_per_trial: float) -> str:
    """The device trials train on: ``auto`` is CUDA when the trial has GPUs, else CPU."""
    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if gpus_per_trial > 0 else "cpu"
    if name.startswith("cuda") and gpus_per_trial <= 0:
        raise SpecError(
            f"--device {name} with --backend ray needs --gpus-per-trial G > 0: Ray gives a "
            "trial only the GPUs it reserved"
        )
    if name not in ("cpu", "cuda"):
        raise SpecError(
            f"--device {name} cannot be used with --backend ray (a trial sees only its own "
            "GPUs, numbered from 0); valid: auto, cpu, cuda"
        )
    return name


# --------------------------------------------------------------------------- the worker


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
        costs, schedule = session.costs, self.schedule
        flops = [float(costs.inference_flops(schedule.at(e))) for e in range(schedule.epochs)]
        samples = int(session.data.x_train.shape[0])
        self.final = {
            M.INFERENCE_FLOPS: flops[-1],
            M.INFERENCE_FLOPS_RATIO: flops[-1] / float(costs.dense_flops()),
            M.TRAINING_FLOPS: 3.0 * samples * sum(flops),
            M.ACTIVE_FRACTION: schedule.active_fraction(),
        }

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool | None:
        result: dict[str, Any] = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        values = [self.final.get(m, result.get(m, math.nan)) for m in self.objectives]
        for metric, value in zip(self.objectives, values, strict=True):
            result[objective_key(metric)] = value
        if self.reference and self.ideal and all(math.isfinite(v) for v in values):
            result[SCORE] = scalarize(values, self.reference, self.ideal)
        if self.run_id is not None:
            result[_RUN_ID] = self.run_id
        try:
            tune.report(result)
        except SystemExit:  # the scheduler stopped this trial; the driver records it
            raise StopTrial("stopped by the Ray Tune scheduler") from None
        return None


def _trainable(config: dict[str, Any]) -> None:
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
    tune.report({_OUTCOME: json.dumps(outcome.to_dict()), _RUN_ID: outcome.mlflow_run_id or ""})


def _trial_name(trial: Any) -> str:
    return f"trial-{trial.config['request']['trial_number']}"


# --------------------------------------------------------------------------- the driver


@dataclass
class _Live:
    """A trial the searcher handed to Tune and has not recorded yet."""

    trial: optuna.Trial
    request: dict[str, Any]
    rows: list[dict[str, float]] = field(default_factory=list)  # epochs reported so far
    iteration: int = 0
    run_id: str | None = None


class SessionSearcher(Searcher):
    """A Ray Tune ``Searcher`` that asks the session's Optuna study for trials and tells it
    their outcomes (COMPLETE, FAIL or PRUNED); see the module docstring.

    It suggests until the study counts ``target`` COMPLETE + PRUNED trials (failed ones are
    replaced), then returns ``FINISHED``; no new trial starts after ``timeout_s`` or after
    ``max_consecutive_failures`` failures in a row (:attr:`stopped` says why).
    """

    def __init__(
        self,
        session: SearchSession,
        *,
        target: int,
        early_stop: str = "none",
        device: str = "cpu",
        timeout_s: float | None = None,
        callbacks: Sequence[SearchCallback] = (),
        max_consecutive_failures: int = 5,
    ) -> None:
        super().__init__()
        self.session = session
        self.target = target
        self.early_stop = early_stop
        self.device = device
        self.timeout_s = timeout_s
        self.callbacks = list(callbacks)
        self.max_consecutive_failures = max_consecutive_failures
        self.report = {
            "objectives": session.objectives,
            "reference": session.reference,
            "ideal": session.attrs.get("ideal"),
        }
        self.live: dict[str, _Live] = {}
        self.done = session.counted_trials()
        self.in_a_row = 0
        self.stopped: str | None = None
        self.started = time.perf_counter()
        layers = [s.name for s in session.layers]
        self._row_keys = (
            "epoch",
            *M.METRICS,
            *(M.active_fraction_key(n) for n in layers),
            *(M.k_key(n) for n in layers),
        )

    # Tune pickles its configuration (tuner.pkl) and deep-copies parts of it: the live
    # session (storage engine, MLflow client) stays with this object in this process.
    def __getstate__(self) -> dict[str, Any]:
        return {"_metric": None, "_mode": None, "study": self.session.study_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionSearcher:
        return self

    def save(self, checkpoint_path: str) -> None:
        """Nothing to checkpoint: the Optuna study is the search's state."""
        Path(checkpoint_path).write_text(
            json.dumps({"study": self.session.study_name, "state": "the Optuna study"}) + "\n"
        )

    def restore(self, checkpoint_path: str) -> None:
        pass

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return True

    # -- suggest -----------------------------------------------------------------------------

    def suggest(self, trial_id: str) -> Any:
        """A trial's config, ``None`` (nothing now: wait for live trials) or ``FINISHED``."""
        elapsed = time.perf_counter() - self.started
        if self.stopped is None and self.timeout_s is not None and elapsed >= self.timeout_s:
            self.stopped = f"the time budget of {self.timeout_s:g} s ran out"
        if self.stopped is not None:
            return Searcher.FINISHED
        if self.done + len(self.live) >= self.target:
            return None if self.live else Searcher.FINISHED  # a live trial may still fail
        session = self.session
        agent = session.agent
        assert isinstance(agent, SamplerAgent)
        trial = session.ask()
        try:
            try:
                schedule = agent.propose(trial, session.space)
                request = session.request(trial.number, schedule, trial.params).to_dict()
            except Exception as exc:  # the agent failed: a failed trial, as in the local loop
                self._record(trial, TrialOutcome.failed(f"{type(exc).__name__}: {exc}"))
                return None
        except BaseException:
            session.fail(trial, f"interrupted (process {os.getpid()} was stopped)")
            raise
        request["device"] = self.device
        _absolute_data_path(request["spec"])
        self.live[trial_id] = _Live(trial=trial, request=request)
        return {"request": request, "report": self.report}

    # -- results -----------------------------------------------------------------------------

    def _take(self, live: _Live, result: Mapping[str, Any]) -> None:
        iteration = result.get(_ITERATION)
        if not isinstance(iteration, int) or iteration <= live.iteration:
            return
        live.iteration = iteration
        run_id = result.get(_RUN_ID)
        if isinstance(run_id, str) and run_id and live.run_id is None:
            live.run_id = run_id
            with contextlib.suppress(Exception):  # an interrupted trial's run is found by it
                live.trial.set_user_attr(ATTR_RUN_ID, run_id)
        if _OUTCOME not in result:
            live.rows.append({k: result[k] for k in self._row_keys if k in result})

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        live = self.live.get(trial_id)
        if live is not None:
            self._take(live, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        if result:
            self._take(live, result)
        if error:
            return  # _TrialErrors records it with Ray's error message (called right after)
        outcome_json = (result or {}).get(_OUTCOME)
        if isinstance(outcome_json, str):
            outcome = TrialOutcome.from_dict(json.loads(outcome_json))
        elif live.rows and self.early_stop != "none":
            outcome = self._pruned(live)
        else:
            outcome = self._lost(live, "the trial ended without reporting a result")
        self._finish(trial_id, outcome)

    def record_error(self, trial_id: str, message: str) -> None:
        """A trial Ray reported as errored (the worker raised or died)."""
        live = self.live.get(trial_id)
        if live is not None:
            self._finish(trial_id, self._lost(live, f"the Ray trial failed: {message}"))

    def abandon(self, reason: str) -> None:
        """Fail every trial not recorded yet and end its child run KILLED (interrupted)."""
        for trial_id in list(self.live):
            live = self.live.pop(trial_id)
            self._end_run(live.run_id, KILLED, reason)
            self.session.fail(live.trial, reason)

    # -- recording ---------------------------------------------------------------------------

    def _finish(self, trial_id: str, outcome: TrialOutcome) -> None:
        live = self.live.pop(trial_id)
        self._record(live.trial, outcome)

    def _record(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        try:
            frozen = self.session.tell(trial, outcome)
        except BaseException:  # storage error or interruption: the trial is failed
            self.session.fail(trial, f"recording the trial failed (process {os.getpid()})")
            raise
        if frozen.state.name in ("COMPLETE", "PRUNED"):
            self.done += 1
            self.in_a_row = 0
        else:
            self.in_a_row += 1
            if self.in_a_row >= self.max_consecutive_failures and self.stopped is None:
                reason = frozen.user_attrs.get("fail_reason", "unknown")
                self.stopped = f"{self.in_a_row} trials in a row failed (last: {reason})"
        for cb in self.callbacks:
            cb.on_trial_end(self.session, frozen, outcome)

    def _end_run(self, run_id: str | None, status: str, reason: str) -> None:
        tracker = self.session.tracker
        if run_id is not None and tracker.run_status(run_id) == "RUNNING":
            with contextlib.suppress(Exception):
                tracker.end_run(run_id, status, reason=reason)

    def _lost(self, live: _Live, reason: str) -> TrialOutcome:
        self._end_run(live.run_id, FAILED, reason)
        return TrialOutcome.failed(reason, history=live.rows, mlflow_run_id=live.run_id)

    def _pruned(self, live: _Live) -> TrialOutcome:
        """The outcome of a trial the scheduler stopped: its last epoch's metrics, the schedule
        it trained so far; its child run gets the epochs and ends KILLED (tag ``pruned``)."""
        from midl_autok.schedule import KSchedule

        rows, epochs = live.rows, self.session.spec.training.epochs
        reason = f"stopped early by {self.early_stop} after epoch {len(rows)} of {epochs}"
        metrics = {k: v for k, v in rows[-1].items() if k not in ("epoch", M.EPOCH_TIME_S)}
        metrics["epochs"] = float(len(rows))
        realized = KSchedule.from_dict(_realized(live.request["schedule"], rows))
        provenance = {**live.request["provenance"], "mlflow_run_id": live.run_id}
        info = realized.with_info(metrics=_public(metrics), provenance=provenance).to_dict()
        if live.run_id is not None:
            tracker = self.session.tracker
            tracker.log_trial(live.run_id, history=rows, metrics=metrics, schedule=info)
            tracker.client.set_tag(live.run_id, PRUNED_TAG, reason)
            tracker.end_run(live.run_id, KILLED)
        return TrialOutcome(
            state=PRUNED,
            metrics=metrics,
            history=rows,
            schedule=info,
            mlflow_run_id=live.run_id,
            fail_reason=reason,
            train_s=sum(float(r.get(M.EPOCH_TIME_S, 0.0)) for r in rows),
        )


def _realized(schedule: Mapping[str, Any], rows: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The schedule's first ``len(rows)`` epochs, with the k each epoch reported."""
    k = []
    for layer, planned in zip(schedule["layers"], schedule["k"], strict=True):
        key = M.k_key(layer["name"])
        k.append([int(row.get(key, planned[e])) for e, row in enumerate(rows)])
    return {**schedule, "epochs": len(rows), "k": k, "metrics": {}, "provenance": {}}


def _absolute_data_path(spec: dict[str, Any]) -> None:
    """A relative ``dataset.path`` is relative to the driver's folder, not the workers'."""
    dataset = spec.get("dataset") or {}
    path = dataset.get("path")
    if isinstance(path, str) and path and "://" not in path and not os.path.isabs(path):
        dataset["path"] = str(Path(path).absolute())


class _TrialErrors(tune.Callback):
    """Hands a trial Ray marked as errored to the searcher, with the error's last line."""

    def __init__(self, searcher: SessionSearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __deepcopy__(self, memo: dict[int, Any]) -> _TrialErrors:
        return self

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        text = ""
        with contextlib.suppress(Exception):
            text = trial.get_error() or ""
        lines = [line.strip() for line in str(text).splitlines() if line.strip()]
        message = lines[-1] if lines else "unknown error"
        if trial.error_file:
            message += f" (see {trial.error_file})"
        self.searcher.record_error(trial.trial_id, message)


# --------------------------------------------------------------------------- Ray itself


@contextlib.contextmanager
def ray_connection(options: RayOptions) -> Iterator[bool]:
    """Use the caller's Ray, join ``options.address``, or start a local Ray (shut down after).

    Yields True when Ray was started or joined here. Trials keep the driver's working folder
    (``RAY_CHDIR_TO_TRIAL_DIR=0``); Ray's usage statistics stay off unless the user turned
    them on.
    """
    if ray.is_initialized():
        yield False
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
    }
    if options.address:
        _check_reachable(options.address)
    handlers = _signal_handlers()
    try:
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:  # no notice that Ray made the token of this short-lived cluster
            logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
            # "local": a new Ray even when `ray start` left a cluster address on this machine
            ray.init(
                address="local", num_cpus=options.num_cpus, num_gpus=options.num_gpus, **kwargs
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        hint = "; start one with `ray start --head`" if options.address else ""
        raise UserError(f"cannot start or join {where}: {lines[0]}{hint}") from None
    finally:  # ray.init replaces the SIGTERM handler (the CLI's ends the search cleanly)
        _restore_signal_handlers(handlers)
    try:
        yield True
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a cluster address nothing answers at (``ray.init`` retries for
    minutes). ``auto`` is looked up as Ray does (the address ``ray start`` recorded)."""
    from ray._private import services

    try:
        resolved = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise UserError(f"cannot find the Ray cluster {address!r}: {lines[0]}") from None
    except Exception:  # Ray's lookup changed: let ray.init decide
        return
    if not resolved:
        return
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({resolved}: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}); start its head with "
            "`ray start --head` "
            "or check the address"
        ) from None


def _end_leftover_runs(session: SearchSession, reason: str) -> None:
    """End KILLED the child runs of this search's parent run that are still RUNNING."""
    tracker = session.tracker
    query = (
        f"tags.`mlflow.parentRunId` = '{session.parent_run_id}' and attributes.status = 'RUNNING'"
    )
    with contextlib.suppress(Exception):
        for run in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=query, max_results=1000
        ):
            tracker.end_run(run.info.run_id, KILLED, reason=reason)


def _signal_handlers() -> dict[signal.Signals, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(handlers: Mapping[signal.Signals, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _nodes() -> list[dict[str, float]]:
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def check_resources(options: RayOptions, *, local: bool) -> int:
    """Check that a trial fits on some node; return the number of trials to run at once.

    When the trial fits nowhere: an error for a local Ray, a warning for a cluster (an
    autoscaler may add nodes).
    """
    cpus, gpus = options.cpus_per_trial, options.gpus_per_trial
    nodes = _nodes()
    if not any(n.get("CPU", 0.0) >= cpus and n.get("GPU", 0.0) >= gpus for n in nodes):
        best_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        best_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
        message = (
            f"no Ray node has {cpus:g} CPU(s) and {gpus:g} GPU(s) for one trial (the largest "
            f"has {best_cpu:g} CPU(s), {best_gpu:g} GPU(s)); lower --cpus-per-trial / "
            "--gpus-per-trial"
        )
        if local:
            raise SpecError(message)
        logging.getLogger(__name__).warning("%s, or add nodes", message)
    if options.workers is not None:
        return options.workers
    fits = sum(math.floor(n.get("CPU", 0.0) / cpus + 1e-9) for n in nodes)
    if gpus > 0:
        fits = min(fits, sum(math.floor(n.get("GPU", 0.0) / gpus + 1e-9) for n in nodes))
    return max(1, int(fits))


@contextlib.contextmanager
def _tune_settings() -> Iterator[None]:
    """Tune settings for the driver, restored afterwards: Ctrl-C raises KeyboardInterrupt
    inside ``Tuner.fit`` (Tune's own handler would end the run quietly and return), so the
    search fails the live trials and ends their runs; Tune's console output (an experiment
    table, result paths) stays off: the search has its own progress bar; and a result
    without the scheduler's metric is no error (the last report carries the outcome, and a
    trial can fail before its first epoch ends)."""
    settings = {
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    }
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- entry points


def run_ray(
    session: SearchSession,
    *,
    target: int,
    timeout_s: float | None = None,
    callbacks: Sequence[SearchCallback] = (),
    options: RayOptions | None = None,
    device: str | None = None,
    max_consecutive_failures: int = 5,
) -> str | None:
    """Evaluate trials on Ray until the study counts ``target``; return why it stopped early.

    ``device`` is the trials' device (default: the session's; ``auto`` = CUDA when the trial
    reserved GPUs). Starts a local Ray unless Ray is already initialized in this process or
    ``options.address`` names a cluster.
    """
    options = options or RayOptions()
    options.check()
    agent = session.agent
    if isinstance(agent, ExternalAgent) or not isinstance(agent, SamplerAgent):
        raise SpecError(
            f"agent {agent.name!r} evaluates its own schedules; use --backend local with it"
        )
    trial_device = worker_device(device or session.device, options.gpus_per_trial)
    epochs = session.spec.training.epochs
    if options.early_stop == "asha" and not (session.reference and session.attrs.get("ideal")):
        raise SpecError(
            f"--early-stop asha ranks trials on a score measured from the hypervolume "
            f"reference point, which objectives {session.objectives} do not have; use mo-asha"
        )
    if session.counted_trials() >= target:
        for cb in callbacks:
            cb.on_start(session, target=target, done=session.counted_trials())
        return None
    reason = "Ray Tune ended before the trial reported its outcome"
    try:
        with ray_connection(options) as connected:
            workers = check_resources(options, local=connected and not options.address)
            scheduler = make_scheduler(
                options.early_stop,
                objectives=session.objectives,
                directions=session.directions,
                epochs=epochs,
                grace_period=options.grace(epochs),
                reduction_factor=options.reduction_factor,
            )
            searcher = SessionSearcher(
                session,
                target=target,
                early_stop=options.early_stop if scheduler is not None else "none",
                device=trial_device,
                timeout_s=timeout_s,
                callbacks=callbacks,
                max_consecutive_failures=max_consecutive_failures,
            )
            resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
            tuner = tune.Tuner(
                tune.with_resources(_trainable, resources),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=-1,  # until the searcher says FINISHED
                    max_concurrent_trials=workers,
                    reuse_actors=True,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}",
                    storage_path=str(
                        session.store.ray_dir / session.store.report_dir(session.study_name).name
                    ),
                    verbose=0,
                    callbacks=[_TrialErrors(searcher)],
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            for cb in callbacks:
                cb.on_start(session, target=target, done=session.counted_trials())
            with _tune_settings():
                try:
                    tuner.fit()
                except BaseException as exc:
                    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
                    reason = (
                        f"interrupted (process {os.getpid()} was stopped)"
                        if interrupted
                        else f"the Ray search failed: {type(exc).__name__}: {exc}"
                    )
                    searcher.abandon(reason)
                    raise
            searcher.abandon(reason)
            return searcher.stopped
    finally:  # Ray is gone: a child run still RUNNING has a worker that will never end it
        _end_leftover_runs(session, reason)


def run_ray_search(
    spec: ExperimentSpec,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    study: str | None = None,
    device: str = "auto",
    threads: int | None = 1,
    options: RayOptions | None = None,
    callbacks: Sequence[SearchCallback] = (),
    max_consecutive_failures: int = 5,
    plotlyjs: str | bool = True,
) -> SearchSummary:
    """:func:`~midl_autok.backends.local.run_search` on Ray: the search the spec describes,
    trials spread over Ray workers (``options``); resumes the study if it exists."""
    options = options or RayOptions()
    options.check()
    trial_device = worker_device(device, options.gpus_per_trial)
    if options.address:
        _check_reachable(options.address)  # before the study and parent run are opened
    agent_cls = get_agent(spec.search.agent)
    if not issubclass(agent_cls, SamplerAgent):
        raise SpecError(
            f"agent {spec.search.agent!r} evaluates its own schedules; use --backend local"
        )
    target = spec.budget.trials
    with (
        handling_signals(),  # Ctrl-C / SIGTERM never in the middle of a storage call
        open_search(
            spec,
            store=store,
            study=study,
            device="cpu",
            backend="ray",
            target=target,
            threads=threads,
        ) as session,
    ):
        stopped = run_ray(
            session,
            target=target,
            timeout_s=spec.budget.timeout_s,
            callbacks=callbacks,
            options=options,
            device=trial_device,
            max_consecutive_failures=max_consecutive_failures,
        )
        return session.finish(target=target, stopped=stopped, plotlyjs=plotlyjs)


def node_ids(store: Store, study: str) -> dict[int, str]:
    """Trial number -> Ray node id, from the study's MLflow child runs (tag ``ray.node_id``)."""
    client = store.mlflow_client()
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return {}
    out: dict[int, str] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=10000):
        tags = run.data.tags
        if NODE_TAG in tags and str(tags.get("trial", "")).isdigit():
            out[int(tags["trial"])] = tags[NODE_TAG]
    return out
