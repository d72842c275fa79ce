"""A search session: one study, one MLflow parent run, and the rule that joins them.

**Every evaluated schedule, from any agent or backend, becomes one Optuna trial and one MLflow
child run.** :class:`SearchSession` is where that rule lives:

* :func:`open_search` resolves the agent, the search space and the store; creates or resumes
  the study (checking that a resumed study was made for the same experiment); fixes the
  hypervolume reference point before the first trial; fails trials left RUNNING by a process
  that died; and starts this invocation's MLflow parent run.
* Sampler agents: the backend calls :meth:`SearchSession.ask`, the agent proposes a
  schedule on the trial, :func:`~midl_autok.backends.evaluate.evaluate_trial` trains it (here
  or in a worker, from :meth:`SearchSession.request`), and :meth:`SearchSession.tell` records
  the outcome.
* External agents (RL): :meth:`SearchSession.record` takes a schedule they evaluated
  themselves and records it the same way.
* :meth:`SearchSession.finish` writes ``pareto.{json,csv,html}`` (store ``reports/<study>/``
  and the parent run) and ends the parent run; used as a context manager the session ends
  the parent run KILLED/FAILED when the search is interrupted or crashes.

Trial user attrs: ``schedule`` (the realized KSchedule as JSON, with provenance),
``mlflow_run_id``, every final metric by name, ``fail_reason`` for failed trials, and
``host``/``pid`` of the process that ran it (to recognize trials orphaned by a killed process).
Study user attrs: ``spec`` (the full experiment spec), ``experiment``, ``agent``, ``space``,
``seed``, ``objectives``, ``reference_point``, ``ideal``, ``dense_inference_flops``,
``flops_budget``, ``layers``, ``epochs`` and versions; written before the first trial.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from midl_autok import __version__
from midl_autok.agents import Agent, SamplerAgent, get_agent
from midl_autok.backends.evaluate import PRUNED, TrialOutcome, TrialRequest, non_finite
from midl_autok.errors import SpecError, UserError, unknown_name
from midl_autok.store import (
    ATTR_FAIL_REASON,
    ATTR_RUN_ID,
    ATTR_SCHEDULE,
    STUDY_FORMAT,
    Store,
    StudyRecord,
    hypervolume,
    load_study_record,
    open_store,
)
from midl_autok.tracking import FAILED, FINISHED, KILLED, Tracker, git_sha, package_versions

if TYPE_CHECKING:
    from pathlib import Path

    import optuna
    from optuna.trial import FrozenTrial

    from midl_autok.schedule import KSchedule, LayerSpec
    from midl_autok.search_spaces import SearchSpace
    from midl_autok.spec import ExperimentSpec

__all__ = [
    "SearchSession",
    "SearchSummary",
    "default_study_name",
    "open_search",
    "spec_identity",
    "split_options",
]

#: Best possible value of each objective metric (for the normalized hypervolume).
IDEAL: dict[str, float] = {
    "val_accuracy": 1.0,
    "inference_flops": 0.0,
    "inference_flops_ratio": 0.0,
    "training_flops": 0.0,
    "active_fraction": 0.0,
}
#: Spec fields that may change between invocations of the same study.
_FREE_FIELDS = (("budget", "trials"), ("budget", "timeout_s"), ("description",))
FLOPS_CONSTRAINT = "flops_budget"
#: Trial user attr: why a PRUNED trial was stopped early.
ATTR_PRUNED_REASON = "pruned_reason"
#: A RUNNING trial that names no process and is this old is an orphan even while other
#: searches on the study are live (a live search names its trial right after asking).
UNOWNED_GRACE_S = 600.0


# --------------------------------------------------------------------------- study identity


def spec_identity(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as a dict without the fields a resumed study may change (trials, timeout)."""
    data = spec.model_dump(mode="json")
    for path in _FREE_FIELDS:
        node = data
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return data


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def default_study_name(spec: ExperimentSpec) -> str:
    """``<experiment>-<agent>-<space>-seed<S>``, plus ``-<hash>`` of the spec when it differs
    from the shipped experiment of that name (e.g. ``--epochs`` or ``--flops-budget`` given),
    so rerunning the same command resumes the same study and a different setup gets its own."""
    from midl_autok.spec import list_experiments, load_spec

    agent, space = spec.search.agent, spec.search.space
    label = get_agent(agent)(seed=0).space_label(space) if agent else space
    parts = [spec.name, agent] + ([label] if label != "-" else []) + [f"seed{spec.seed}"]
    base = "-".join(parts)
    shipped = None
    if spec.name in list_experiments():
        shipped = load_spec(spec.name).override(
            **{"search.agent": agent, "search.space": space, "seed": spec.seed}
        )
    if shipped is not None and spec_identity(shipped) == spec_identity(spec):
        return base
    return f"{base}-{_digest(spec_identity(spec))}"


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if old != new:
        return f"{path or '(spec)'} is {json.dumps(old)} there but {json.dumps(new)} here"
    return None


def split_options(
    options: Mapping[str, Any], space: str, agent: type[Agent]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``search.options`` into (space options, agent options) by the names each takes."""
    from midl_autok.search_spaces import SEARCH_SPACES

    if space not in SEARCH_SPACES:
        raise unknown_name("search space", space, SEARCH_SPACES, error=SpecError)
    space_keys = set(SEARCH_SPACES[space].option_names())
    agent_keys = set(agent.option_names())
    space_opts, agent_opts = {}, {}
    for key, value in options.items():
        if key in space_keys:
            space_opts[key] = value
        elif key in agent_keys:
            agent_opts[key] = value
        else:
            raise unknown_name(
                f"search option (space '{space}', agent '{agent.name}')",
                key,
                sorted(space_keys | agent_keys),
                error=SpecError,
            )
    return space_opts, agent_opts


# --------------------------------------------------------------------------- the session


@dataclass
class SearchSummary:
    """What one search invocation did and where its results are."""

    study: str
    store: Store
    target: int
    completed: int  # COMPLETE + PRUNED trials in the study
    new_trials: int  # trials this invocation evaluated (any state)
    failed: int  # of which failed
    hypervolume: float | None
    hypervolume_normalized: float | None
    front: list[dict[str, Any]]
    parent_run_id: str | None
    wall_s: float  # the whole invocation: opening, trials, Pareto files
    train_s: float  # training wall time of this invocation's trials (sum)
    trial_s: float  # wall time of this invocation's trials, ask to tell (sum)
    files: list[Path] = field(default_factory=list)
    stopped: str | None = None  # why the search stopped before the target, if it did
    pruned: int = 0  # of the new trials, stopped early by a scheduler (counted as completed)

    @property
    def overhead_per_trial_s(self) -> float | None:
        """Mean time per new trial not spent training: Optuna ask/tell and user attrs, the
        MLflow child run, the parent's hypervolume (excludes opening and Pareto files)."""
        if not self.new_trials:
            return None
        return (self.trial_s - self.train_s) / self.new_trials


class SearchSession:
    """One study + one MLflow parent run. Build it with :func:`open_search`."""

    def __init__(
        self,
        *,
        spec: ExperimentSpec,
        store: Store,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        agent: Agent,
        space: SearchSpace,
        tracker: Tracker,
        parent_run_id: str,
        attrs: dict[str, Any],
        device: str,
        threads: int | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.study = study
        self.storage = storage
        self.study_id = self.storage.get_study_id_from_name(study.study_name)
        self.agent = agent
        self.space = space
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.attrs = attrs
        self.device = device
        self.threads = threads
        self.objectives: list[str] = list(attrs["objectives"])
        self.directions: list[str] = [o.direction for o in spec.objectives]
        self.reference: list[float] | None = attrs.get("reference_point")
        self.flops_budget: float | None = attrs.get("flops_budget")
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = time.perf_counter()
        self.opened = datetime.datetime.now()  # Optuna's datetime_start is naive local time
        self.new_trials = 0
        self.failed = 0
        self.pruned = 0
        self.train_s = 0.0
        self.trial_s = 0.0  # wall time from ask (or record) to the end of tell, summed
        self._asked: dict[int, float] = {}
        self.hypervolume: float | None = None
        self.front_size = 0
        self._points: list[list[float]] = []
        self._parent_open = True
        self._load_points()

    # -- facts ---------------------------------------------------------------------------

    @property
    def study_name(self) -> str:
        return str(self.study.study_name)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return self.space.layers

    def counted_trials(self) -> int:
        """Trials that count toward ``--trials``: COMPLETE and PRUNED (failed ones do not)."""
        from optuna.trial import TrialState

        return self.storage.get_n_trials(
            self.study_id, state=(TrialState.COMPLETE, TrialState.PRUNED)
        )

    def record_view(self) -> StudyRecord:
        """The study as stored now (for fronts, picks and exports)."""
        return load_study_record(self.store, self.study_name)

    def _load_points(self) -> None:
        from optuna.trial import TrialState

        for t in self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.COMPLETE,)
        ):
            if t.values is not None and all(v <= 0 for v in t.constraints.values()):
                self._points.append(list(t.values))
        self._update_front()

    def _update_front(self) -> None:
        import numpy as np

        from midl_autok import pareto

        if self._points:
            self.front_size = int(
                pareto.non_dominated(np.array(self._points), self.directions).sum()
            )
        if self.reference is not None:
            self.hypervolume = hypervolume(self._points, self.reference, self.directions)

    @property
    def normalized_hypervolume(self) -> float | None:
        ideal = self.attrs.get("ideal")
        if self.hypervolume is None or not ideal or self.reference is None:
            return None
        box = math.prod(abs(r - i) for r, i in zip(self.reference, ideal, strict=True))
        return self.hypervolume / box if box > 0 else None

    # -- sampler agents: ask / request / tell ------------------------------------------------

    def ask(self) -> optuna.Trial:
        """A new RUNNING trial, its sampler seeded from ``--seed`` and the trial number."""
        if not isinstance(self.agent, SamplerAgent):
            raise TypeError(f"agent {self.agent.name!r} does not sample; it calls record()")
        number = self.storage.get_n_trials(self.study_id)
        self.study.sampler = self.agent.create_sampler(self.agent.trial_seed(number))
        started = time.perf_counter()
        trial = self.study.ask()
        self._asked[trial.number] = started
        # A kill between ask() and these two writes leaves a RUNNING trial that names no
        # process; open_search fails such trials (see _fail_unowned).
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", self.pid)
        return trial

    def provenance(self, trial_number: int) -> dict[str, Any]:
        """Provenance of a schedule evaluated as ``trial_number`` (spec included)."""
        return {
            "study": self.study_name,
            "trial": trial_number,
            "experiment": self.spec.name,
            "agent": self.agent.name,
            "space": self.attrs["space"],
            "seed": self.spec.seed,
            "midl_autok_version": __version__,
            "git_sha": git_sha(),
            "spec": self.attrs["spec"],
        }

    def request(
        self, trial_number: int, schedule: KSchedule, params: Mapping[str, Any] | None = None
    ) -> TrialRequest:
        """The plain-data request to evaluate ``schedule`` as trial ``trial_number``."""
        return TrialRequest(
            spec=self.attrs["spec"],
            schedule=schedule.to_dict(),
            trial_number=trial_number,
            params=dict(params or {}),
            tracking=self.tracker.ref(self.parent_run_id),
            tags={
                "study": self.study_name,
                "experiment": self.spec.name,
                "agent": self.agent.name,
                "space": self.attrs["space"],
            },
            provenance=self.provenance(trial_number),
            device=self.device,
            threads=self.threads,
        )

    def tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> FrozenTrial:
        """Record ``outcome`` on ``trial`` (user attrs, FLOPs constraint) and finish it:
        COMPLETE with the objective values, FAIL with ``fail_reason``, or PRUNED (a scheduler
        stopped it early: the metrics of its last epoch, no values; ``fail_reason`` says why,
        as user attr ``pruned_reason``)."""
        from optuna.trial import TrialState

        pruned = outcome.state == PRUNED
        values, reason = (None, None) if pruned else self._values(outcome)
        attrs: dict[str, Any] = {k: v for k, v in outcome.metrics.items() if not _bad_number(v)}
        if outcome.schedule is not None:
            schedule = dict(outcome.schedule)
            schedule["provenance"] = {
                k: v for k, v in schedule.get("provenance", {}).items() if k != "spec"
            }
            attrs[ATTR_SCHEDULE] = schedule
        if outcome.mlflow_run_id is not None:
            attrs[ATTR_RUN_ID] = outcome.mlflow_run_id
        if reason is not None:
            attrs[ATTR_FAIL_REASON] = reason
        if pruned and outcome.fail_reason:
            attrs[ATTR_PRUNED_REASON] = outcome.fail_reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if values is not None and self.flops_budget is not None:
            ratio = float(outcome.metrics["inference_flops_ratio"])
            trial.set_constraint(FLOPS_CONSTRAINT, ratio - self.flops_budget)
        if pruned:
            frozen = self.study.tell(trial, state=TrialState.PRUNED)
        elif values is None:
            frozen = self.study.tell(trial, state=TrialState.FAIL)
        else:
            frozen = self.study.tell(trial, values)
        self._after_trial(frozen, outcome)
        return frozen

    def fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        """Finish ``trial`` as FAIL without an outcome (e.g. interrupted)."""
        from optuna.trial import TrialState

        with contextlib.suppress(Exception):  # already finished: nothing to add
            trial.set_user_attr(ATTR_FAIL_REASON, reason)
        frozen = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self.new_trials += 1
        self.failed += 1
        return frozen

    def _values(self, outcome: TrialOutcome) -> tuple[list[float] | None, str | None]:
        if not outcome.ok:
            return None, outcome.fail_reason or "the evaluation failed"
        missing = [m for m in self.objectives if m not in outcome.metrics]
        if missing:
            return None, f"objective {missing[0]} is missing from the trial's metrics"
        reason = non_finite(outcome.metrics)
        if reason is not None:
            return None, reason
        return [float(outcome.metrics[m]) for m in self.objectives], None

    def _after_trial(self, frozen: FrozenTrial, outcome: TrialOutcome) -> None:
        self.new_trials += 1
        self.train_s += outcome.train_s
        if frozen.state.name == "COMPLETE":
            self._log_front(frozen)
        elif frozen.state.name == "PRUNED":
            self.pruned += 1
        else:
            self.failed += 1
        started = self._asked.pop(frozen.number, None)
        if started is not None:
            self.trial_s += time.perf_counter() - started

    def _log_front(self, frozen: FrozenTrial) -> None:
        if frozen.values is not None and all(v <= 0 for v in frozen.constraints.values()):
            self._points.append(list(frozen.values))
            self._update_front()
        values = {"front_size": float(self.front_size)}
        if self.hypervolume is not None:
            values["hypervolume"] = self.hypervolume
        if self.normalized_hypervolume is not None:
            values["hypervolume_normalized"] = self.normalized_hypervolume
        self.tracker.log_metrics(self.parent_run_id, [(values, frozen.number)])

    # -- external agents ---------------------------------------------------------------------

    def record(
        self,
        schedule: KSchedule,
        *,
        metrics: Mapping[str, float],
        history: Sequence[Mapping[str, float]] = (),
        params: Mapping[str, float] | None = None,
        fail_reason: str | None = None,
        train_s: float = 0.0,
        user_attrs: Mapping[str, str | int | float | bool | None] | None = None,
    ) -> FrozenTrial:
        """Record a schedule an agent evaluated itself: one Optuna trial + one MLflow child run.

        ``schedule`` is the realized schedule, ``metrics`` the final metrics (names from
        :mod:`midl_autok.metrics`, as :class:`~midl_autok.trainer.TrainResult` has them),
        ``history`` the per-epoch rows. ``params`` are the trial's parameters in this session's
        search space; by default the space's encoding of the schedule when it has one (the
        ``free`` space encodes any schedule), else none. ``fail_reason`` (or a non-finite
        metric) records a failed evaluation. ``user_attrs`` (plain values, e.g. an RL agent's
        ``phase`` and ``lam``) go on the trial and, as tags, on the child run.
        """
        import optuna
        from optuna.trial import TrialState, create_trial

        if params is None:
            try:
                params = self.space.encode_params(schedule)
            except UserError:
                params = {}
        dists = self.space.optuna_distributions()
        unknown = [k for k in params if k not in dists]
        if unknown:
            raise unknown_name(f"parameter of search space '{self.space.name}'", unknown[0], dists)
        template = create_trial(
            state=TrialState.RUNNING,
            params=dict(params),
            distributions={k: dists[k] for k in params},
            user_attrs={
                **(user_attrs or {}),
                "host": self.host,
                "pid": self.pid,
                "origin": self.agent.name,
            },
        )
        started = time.perf_counter()
        trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        trial = optuna.trial.Trial(self.study, trial_id)
        self._asked[trial.number] = started
        try:
            number = trial.number
            reason = fail_reason or non_finite(metrics)
            run_id = self.tracker.start_run(
                f"trial-{number}",
                parent_run_id=self.parent_run_id,
                tags={
                    **(user_attrs or {}),
                    "trial": number,
                    "host": self.host,
                    "pid": self.pid,
                    **self.request(number, schedule).tags,
                },
                params=params,
            )
            prov = {**self.provenance(number), "mlflow_run_id": run_id}
            finite = {k: v for k, v in metrics.items() if not _bad_number(v)}
            info = schedule.with_info(metrics=finite, provenance=prov).to_dict()
            self.tracker.log_trial(run_id, history=history, metrics=metrics, schedule=info)
            self.tracker.end_run(run_id, FINISHED if reason is None else FAILED, reason=reason)
            outcome = TrialOutcome(
                state="complete" if reason is None else "fail",
                metrics=dict(metrics),
                history=[dict(r) for r in history],
                schedule=info,
                mlflow_run_id=run_id,
                fail_reason=reason,
                train_s=train_s,
            )
        except BaseException:
            self.fail(trial, "recording the trial failed")
            raise
        return self.tell(trial, outcome)

    # -- the end -----------------------------------------------------------------------------

    def summary(
        self, *, target: int, files: Sequence[Path] = (), stopped: str | None = None
    ) -> SearchSummary:
        record = self.record_view()
        return SearchSummary(
            study=self.study_name,
            store=self.store,
            target=target,
            completed=self.counted_trials(),
            new_trials=self.new_trials,
            failed=self.failed,
            hypervolume=record.hypervolume(),
            hypervolume_normalized=record.normalized_hypervolume(),
            front=[record.point(t) for t in record.front()],
            parent_run_id=self.parent_run_id,
            wall_s=time.perf_counter() - self.started,
            train_s=self.train_s,
            trial_s=self.trial_s,
            files=list(files),
            stopped=stopped,
            pruned=self.pruned,
        )

    def write_pareto(self, *, plotlyjs: str | bool = True) -> list[Path]:
        """Write ``pareto.{json,csv,html}`` to ``reports/<study>/`` and the parent run."""
        from midl_autok.tracking import write_pareto_files

        files = write_pareto_files(
            self.record_view(), self.store.report_dir(self.study_name), plotlyjs=plotlyjs
        )
        page = self._write_report()
        if page is not None:
            files.append(page)
        self.tracker.log_files(self.parent_run_id, files)
        return files

    def _write_report(self) -> Path | None:
        """The study's ``midl-autok report`` page, also logged to the parent run. A report
        that cannot be built is a warning, never a failed search (its trials are stored)."""
        from midl_autok.report import build_report, export_command
        from midl_autok.schedule import write_atomic

        try:
            page = build_report(
                self.store,
                [self.study_name],
                export=lambda s, n: export_command(s, n, store=str(self.store.root)),
            )
            path = self.store.report_dir(self.study_name) / "report.html"
            write_atomic(path, page)
        except Exception as exc:  # the search's results are safe in the study already
            import logging

            logging.getLogger(__name__).warning("report.html not written: %s", exc)
            return None
        return path

    def finish(
        self, *, target: int, stopped: str | None = None, plotlyjs: str | bool = True
    ) -> SearchSummary:
        """Write the Pareto files, end the parent run FINISHED, return the summary."""
        files = self.write_pareto(plotlyjs=plotlyjs)
        summary = self.summary(target=target, files=files, stopped=stopped)
        self.close(FINISHED)
        return summary

    def close(self, status: str = FINISHED) -> None:
        """End the parent run (idempotent)."""
        if self._parent_open:
            self._parent_open = False
            with contextlib.suppress(Exception):  # runs an earlier, killed search left behind
                self.tracker.end_runs_of_ended_parents()
            self.tracker.end_run(self.parent_run_id, status)

    def __enter__(self) -> SearchSession:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._parent_open:
            return
        if exc_type is None:
            self.close(FINISHED)
            return
        interrupted = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        with contextlib.suppress(Exception):  # no RUNNING leftovers, whatever was interrupted
            self._fail_own_running(
                "interrupted: the search was stopped" if interrupted else f"search failed: {exc}"
            )
        with contextlib.suppress(Exception):  # keep the Pareto files of the trials done
            self.write_pareto()
        with contextlib.suppress(Exception):  # never hide the real error (disk full, ...)
            self.close(KILLED if interrupted else FAILED)

    def _fail_own_running(self, reason: str) -> None:
        """Fail the trials this session left RUNNING (an interruption can land anywhere, even
        inside ``ask`` before the trial got its pid) and end its child runs still RUNNING."""
        from optuna.trial import TrialState

        for t in self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        ):
            pid = t.user_attrs.get("pid")
            mine = pid == self.pid and t.user_attrs.get("host") == self.host
            fresh = pid is None and t.datetime_start is not None and t.datetime_start >= self.opened
            if not (mine or fresh):
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            self.storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        self.tracker.end_orphaned_runs(
            self.host, lambda pid: pid != self.pid, keep=[self.parent_run_id], reason=reason
        )


def _bad_number(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


# --------------------------------------------------------------------------- opening


def open_search(
    spec: ExperimentSpec,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    study: str | None = None,
    device: str = "auto",
    backend: str = "local",
    target: int | None = None,
    threads: int | None = 1,
) -> SearchSession:
    """Open (create or resume) the study for ``spec`` and start an MLflow parent run.

    The agent, space, seed, FLOPs budget and trial target come from the spec
    (``search.agent``, ``search.space``, ``search.options``, ``seed``,
    ``budget.flops_budget``, ``budget.trials``); ``study`` defaults to
    :func:`default_study_name`. Raises :class:`~midl_autok.errors.UserError` for a bad
    setup (unknown agent or space, unwritable store, a study made for another setup).

    ``threads`` is the number of torch CPU threads each trial trains with (default 1: the
    small models of a search train fastest on one thread, and several threads collapse when
    the machine is shared; None leaves torch's setting).
    """
    import optuna

    from midl_autok.flops import cost_model
    from midl_autok.pareto import reference_point
    from midl_autok.search_spaces import SEARCH_SPACES
    from midl_autok.trainer import build_for_spec, dataset_for_spec, resolve_device

    agent_cls = get_agent(spec.search.agent)
    space_opts, agent_opts = split_options(spec.search.options, spec.search.space, agent_cls)
    agent = agent_cls(seed=spec.seed, **agent_opts)
    resolve_device(device)  # CUDA asked for but missing: fail before any trial

    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    layers = model.layer_specs()
    if not layers:
        raise SpecError(
            f"a search needs MID-L layers, but the experiment's model (variant "
            f"{spec.model.variant!r}) has none; use model.variant: midl"
        )
    model.eval()
    import torch

    with torch.no_grad():
        costs = cost_model(model, data.x_train[:1])
    dense = float(costs.dense_flops())
    if agent.uses_space and "cost" in SEARCH_SPACES[spec.search.space].option_names():
        space_opts["cost"] = costs  # e.g. the budget space: its target is a FLOPs ratio
    space = agent.make_space(spec.search.space, layers, spec.training.epochs, space_opts)
    objectives = [o.metric for o in spec.objectives]
    try:
        ref: list[float] | None = reference_point(
            objectives,
            dense_inference_flops=dense,
            dense_training_flops=3.0 * spec.training.epochs * data.x_train.shape[0] * dense,
        )
    except ValueError:
        ref = None  # e.g. val_loss: no fixed reference, no hypervolume
    ideal = [IDEAL[m] for m in objectives] if all(m in IDEAL for m in objectives) else None

    store = store if isinstance(store, Store) else open_store(store)
    store.ensure_writable()
    name = study or default_study_name(spec)
    spec_dict = spec.model_dump(mode="json")
    attrs: dict[str, Any] = {
        "format": STUDY_FORMAT,
        "experiment": spec.name,
        "spec": spec_dict,
        "agent": agent.name,
        "space": agent.space_label(spec.search.space),
        "space_options": space.options if agent.uses_space else {},
        "agent_options": agent.options,
        "seed": spec.seed,
        "objectives": objectives,
        "reference_point": ref,
        "ideal": ideal,
        "dense_inference_flops": dense,
        "flops_budget": spec.budget.flops_budget,
        "layers": [[s.name, s.width] for s in layers],
        "epochs": spec.training.epochs,
        "midl_autok_version": __version__,
        "git_sha": git_sha(),
    }
    storage = store.optuna_storage()
    ostudy = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=[o.direction for o in spec.objectives],
        load_if_exists=True,
    )
    study_id = storage.get_study_id_from_name(name)
    existing = storage.get_study_user_attrs(study_id)
    if existing.get("spec") is not None:
        old_spec = _identity_of(existing["spec"])
        diff = _first_difference(old_spec, spec_identity(spec))
        if diff is not None:
            raise SpecError(
                f"study {name!r} in {store.root} was made for another setup: {diff}; "
                "give a new --study name (or leave --study out for an automatic one)"
            )
        attrs = {**existing, "spec": spec_dict}
        storage.set_study_user_attr(study_id, "spec", spec_dict)  # latest budget.trials
    elif storage.get_n_trials(study_id) > 0:
        raise SpecError(
            f"study {name!r} in {store.root} exists but was not made by midl-autok search; "
            "choose another --study name"
        )
    else:
        for key, value in attrs.items():
            storage.set_study_user_attr(study_id, key, value)

    if isinstance(agent, SamplerAgent):
        agent.prepare(target=target or spec.budget.trials, space=space)
    tracker = Tracker.for_experiment(
        store.mlflow_client(), name, artifact_location=store.artifact_location
    )
    _fail_orphans(storage, study_id, ostudy, tracker)
    tracker.end_orphaned_runs(socket.gethostname(), _alive)
    tracker.end_runs_of_ended_parents()
    # no live search on this study (here or elsewhere): every trial naming no process is an
    # orphan; otherwise only those older than a live process could take to name itself
    grace = UNOWNED_GRACE_S if tracker.has_running_parent_runs() else None
    _fail_unowned(storage, study_id, ostudy, older_than_s=grace)
    parent = tracker.start_run(
        name,
        tags={
            "study": name,
            "experiment": spec.name,
            "agent": agent.name,
            "space": attrs["space"],
            "seed": spec.seed,
            "backend": backend,
            "git_sha": git_sha(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **{f"version.{k}": v for k, v in package_versions().items()},
        },
        params={**_flatten(spec_dict), **{f"agent.{k}": v for k, v in agent.options.items()}},
    )
    tracker.log_text(parent, spec.to_yaml(), "spec.yaml")
    return SearchSession(
        spec=spec,
        store=store,
        study=ostudy,
        storage=storage,
        agent=agent,
        space=space,
        tracker=tracker,
        parent_run_id=parent,
        attrs=attrs,
        device=device,
        threads=threads,
    )


def _identity_of(spec_dict: dict[str, Any]) -> dict[str, Any]:
    from midl_autok.spec import validate_spec

    try:
        return spec_identity(validate_spec(spec_dict, source="the study's spec"))
    except UserError:
        return spec_dict


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        elif value is not None and value != {}:
            out[name] = value
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_orphans(storage: Any, study_id: int, study: optuna.Study, tracker: Tracker) -> int:
    """Fail RUNNING trials whose process (on this host) is gone; end their MLflow runs."""
    from optuna.trial import TrialState

    host, me = socket.gethostname(), os.getpid()
    count = 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int):
            continue
        if pid != me and _alive(pid):
            continue  # another search is running this trial right now
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        reason = f"interrupted: process {pid} ended before the trial finished"
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        run_id = t.user_attrs.get(ATTR_RUN_ID)
        if isinstance(run_id, str) and tracker.run_status(run_id) == "RUNNING":
            tracker.end_run(run_id, KILLED, reason=reason)
        count += 1
    return count


def _fail_unowned(
    storage: Any, study_id: int, study: optuna.Study, *, older_than_s: float | None = None
) -> int:
    """Fail RUNNING trials that name no process (``host``/``pid`` missing: a search killed
    between Optuna's ``ask`` and the next write, or another tool; only a search driver asks,
    so only a live search -- a RUNNING parent run -- can still name one). ``older_than_s``: only
    those started at least that long ago (a live search names its trial within
    milliseconds); None: all of them (call it so only when no search can still run them)."""
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    count = 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if isinstance(t.user_attrs.get("pid"), int):
            continue
        if older_than_s is not None and (
            t.datetime_start is None or (now - t.datetime_start).total_seconds() < older_than_s
        ):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        reason = (
            "interrupted: process unknown ended before the trial finished "
            "(stopped before the trial recorded its host and pid)"
        )
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        count += 1
    return count
