"""The Ray backend's search algorithm: :class:`SessionSearcher`, a Tune ``Searcher`` around the
search session. The driver (this process) owns the Optuna study and the MLflow parent run;
workers only train and log their own child run::

    Searcher.suggest       StopRule.check -> session.ask() -> agent.propose(trial, space)
                           -> session.request(...)
    trainable (worker)     evaluate_trial(request), reporting every epoch, then the outcome
    Searcher.on_trial_*    session.tell(trial, outcome): COMPLETE / FAIL, or PRUNED when the
                           scheduler stopped the trial (the driver then logs the epochs the
                           trial reported into its child run and ends the run KILLED:
                           recording.finish_pruned_run); StopRule.after

Tune's ``OptunaSearch`` is not used: it owns a second study object with its own sampler, tells
values only (no user attrs, no constraint, the MLflow run id never reaches the trial), tells a
trial stopped by a scheduler as COMPLETE with the values of a partly trained model, and pickles
the sampler as its checkpoint, a second copy of state the RDB study already holds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune.search import Searcher

from midl_autok import metrics as M
from midl_autok.agents import SamplerAgent
from midl_autok.metrics import public_metrics
from midl_autok.results.record import ATTR_RUN_ID
from midl_autok.search.fidelity import note_rung, pruned_metrics
from midl_autok.search.outcome import PRUNED, TrialOutcome
from midl_autok.search.ray.schedulers import objective_key
from midl_autok.search.ray.trainable import OUTCOME, RUN_ID
from midl_autok.search.recording import finish_pruned_run
from midl_autok.search.stopping import StopRule
from midl_autok.tracking import FAILED, KILLED

if TYPE_CHECKING:
    import optuna

    from midl_autok.search.local import SearchCallback
    from midl_autok.search.session import SearchSession

__all__ = ["SessionSearcher", "TrialErrors"]

_ITERATION = "training_iteration"


@dataclass
class _Live:
    """A trial the searcher handed to Tune and has not recorded yet."""

    trial: optuna.Trial
    request: dict[str, Any]
    rows: list[dict[str, float]] = field(default_factory=list)  # epochs reported so far
    iteration: int = 0
    run_id: str | None = None
    rungs: dict[str, list[float]] = field(default_factory=dict)  # values at each rung so far


class SessionSearcher(Searcher):
    """A Ray Tune ``Searcher`` that asks the session's Optuna study for trials and tells it
    their outcomes (COMPLETE, FAIL or PRUNED); see the module docstring.

    It suggests until the study counts ``rule.target`` COMPLETE + PRUNED trials (failed ones
    are replaced), then returns ``FINISHED``; no new trial starts after the rule's time budget
    or its failures in a row (:class:`StopRule`; :attr:`stopped` says why).
    """

    def __init__(
        self,
        session: SearchSession,
        rule: StopRule,
        *,
        early_stop: str = "none",
        device: str = "cpu",
        callbacks: Sequence[SearchCallback] = (),
        rungs: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.session = session
        self.target = rule.target
        self.early_stop = early_stop
        self.rungs = set(rungs)  # epochs whose objective values are kept on the trial
        self.device = device
        self.callbacks = list(callbacks)
        self.rule = rule
        self.report = {
            "objectives": session.objectives,
            "reference": session.reference,
            "ideal": session.attrs.get("ideal"),
        }
        self.live: dict[str, _Live] = {}
        self.done = session.counted_trials()
        layers = [s.name for s in session.layers]
        self._row_keys = (
            "epoch",
            *M.METRICS,
            *(M.active_fraction_key(n) for n in layers),
            *(M.k_key(n) for n in layers),
        )

    @property
    def stopped(self) -> str | None:
        """Why no new trial starts before the target (None: it has not stopped early)."""
        return self.rule.stopped

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
        if self.rule.check() is not None:
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
        run_id = result.get(RUN_ID)
        if isinstance(run_id, str) and run_id and live.run_id is None:
            live.run_id = run_id
            with contextlib.suppress(Exception):  # an interrupted trial's run is found by it
                live.trial.set_user_attr(ATTR_RUN_ID, run_id)
        if OUTCOME not in result:
            live.rows.append({k: result[k] for k in self._row_keys if k in result})
        if iteration in self.rungs:  # the study keeps it: a resumed search judges by it
            values = [result.get(objective_key(m)) for m in self.session.objectives]
            with contextlib.suppress(Exception):
                note_rung(live.trial, live.rungs, iteration, values)

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
            return  # TrialErrors records it with Ray's error message (called right after)
        outcome_json = (result or {}).get(OUTCOME)
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
        from optuna.trial import TrialState

        if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.done += 1
        self.rule.after(frozen)
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
        metrics = pruned_metrics(rows)
        realized = KSchedule.from_dict(_realized(live.request["schedule"], rows))
        provenance = {**live.request["provenance"], "mlflow_run_id": live.run_id}
        info = realized.with_info(metrics=public_metrics(metrics), provenance=provenance).to_dict()
        if live.run_id is not None:
            finish_pruned_run(
                self.session.tracker,
                live.run_id,
                history=rows,
                metrics=metrics,
                schedule=info,
                reason=reason,
            )
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


class TrialErrors(tune.Callback):
    """Hands a trial Ray marked as errored to the searcher, with the error's last line."""

    def __init__(self, searcher: SessionSearcher) -> None:
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __deepcopy__(self, memo: dict[int, Any]) -> TrialErrors:
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
