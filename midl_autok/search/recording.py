"""Where a trial is recorded: the only code that creates MLflow runs and sets Optuna trial states.

**Every evaluated schedule, from any agent or backend, becomes one Optuna trial and one MLflow
child run**, and this module is where both are written:

* MLflow runs: :func:`start_run` (the search's parent run, a trial's child run), then
  :func:`finish_child_run` (per-epoch and final metrics, ``schedule.json``, FINISHED or FAILED),
  or :func:`finish_pruned_run` (a trial a Ray Tune scheduler stopped: KILLED, tag ``pruned``);
* Optuna trial states: :func:`tell_outcome` (COMPLETE with the objective values, FAIL with a
  ``fail_reason``, PRUNED), :func:`fail_trial` (FAIL without an outcome: interrupted, orphaned),
  :func:`complete_from_run` (a trial whose process died after its run FINISHED and before
  ``tell``: completed from what the run recorded),
  and :func:`record_external` (a schedule an external agent evaluated itself: a new trial made
  from a template, its child run, then :func:`tell_outcome` through the session);
  :func:`new_trial` makes such a trial (also a confirmation's: :mod:`~midl_autok.search.confirm`).

States are :class:`optuna.trial.TrialState` members, never their names. Ending runs that were
orphaned (a killed process, an ended search) is :mod:`midl_autok.search.recovery`'s job.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from midl_autok.agents.host import RecordFields
from midl_autok.interrupts import deferring
from midl_autok.metrics import INFERENCE_FLOPS_RATIO
from midl_autok.results.feasibility import FLOPS_CONSTRAINT
from midl_autok.results.record import (
    ATTR_FAIL_REASON,
    ATTR_PRUNED_REASON,
    ATTR_RUN_ID,
    ATTR_SCHEDULE,
)
from midl_autok.search.outcome import COMPLETE, FAIL, PRUNED, TrialOutcome, non_finite
from midl_autok.tracking import FAILED, FINISHED, KILLED, PARENT_TAG, refused, tag_value

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from midl_autok.schedule import KSchedule
    from midl_autok.search.outcome import TrialRequest
    from midl_autok.search.session import SearchSession
    from midl_autok.tracking import Tracker

__all__ = [
    "PRUNED_TAG",
    "complete_from_run",
    "fail_trial",
    "fail_trial_number",
    "fail_waiting_trial",
    "finish_child_run",
    "finish_pruned_run",
    "new_trial",
    "record_external",
    "start_child_run",
    "start_run",
    "tell_outcome",
]

#: Child-run tag of a trial a scheduler stopped (why).
PRUNED_TAG = "pruned"


# --------------------------------------------------------------------------- MLflow runs


@deferring
def start_run(
    tracker: Tracker,
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Create a run of the tracker's experiment (a child when ``parent_run_id`` is given);
    return its id. A server that refuses us is a :class:`~midl_autok.errors.UserError`."""
    from mlflow.exceptions import MlflowException

    all_tags = {k: tag_value(v) for k, v in (tags or {}).items() if v is not None}
    if parent_run_id is not None:
        all_tags[PARENT_TAG] = parent_run_id
    try:
        run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags=all_tags)
    except MlflowException as exc:
        raise refused(exc, tracker.tracking_uri) or exc from None
    if params:
        tracker.log_params(run.info.run_id, params)
    return str(run.info.run_id)


def start_child_run(tracker: Tracker, request: TrialRequest) -> str:
    """The child run of trial ``request.trial_number``, tagged with the process that runs it."""
    assert request.tracking is not None
    return start_run(
        tracker,
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


def finish_child_run(
    tracker: Tracker,
    run_id: str,
    *,
    history: Sequence[Mapping[str, float]],
    metrics: Mapping[str, float],
    schedule: Mapping[str, Any] | None,
    reason: str | None,
) -> None:
    """Log the trial's epochs, final metrics and ``schedule.json``; end the run FINISHED (or
    FAILED with ``reason``). A failure while logging ends it KILLED/FAILED and propagates."""
    try:
        tracker.log_trial(run_id, history=history, metrics=metrics, schedule=schedule)
        tracker.end_run(run_id, FINISHED if reason is None else FAILED, reason=reason)
    except BaseException:
        tracker.end_run(run_id, KILLED if reason is None else FAILED, reason=reason)
        raise


def finish_pruned_run(
    tracker: Tracker,
    run_id: str,
    *,
    history: Sequence[Mapping[str, float]],
    metrics: Mapping[str, float],
    schedule: Mapping[str, Any],
    reason: str,
) -> None:
    """A trial a scheduler stopped: its epochs so far, tag ``pruned`` (why), ended KILLED."""
    tracker.log_trial(run_id, history=history, metrics=metrics, schedule=schedule)
    tracker.client.set_tag(run_id, PRUNED_TAG, tag_value(reason))
    tracker.end_run(run_id, KILLED)


# --------------------------------------------------------------------------- Optuna trials


def tell_outcome(
    study: optuna.Study,
    trial: optuna.Trial,
    outcome: TrialOutcome,
    *,
    objectives: Sequence[str],
    flops_budget: float | None,
) -> FrozenTrial:
    """Record ``outcome`` on ``trial`` (user attrs, FLOPs constraint) and finish it:
    COMPLETE with the objective values, FAIL with ``fail_reason``, or PRUNED (a scheduler
    stopped it early: the metrics of its last epoch, no values; ``fail_reason`` says why,
    as user attr ``pruned_reason``)."""
    from optuna.trial import TrialState

    pruned = outcome.state == PRUNED
    values, reason = (None, None) if pruned else _values(outcome, objectives)
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
    if values is not None and flops_budget is not None:
        ratio = float(outcome.metrics[INFERENCE_FLOPS_RATIO])
        trial.set_constraint(FLOPS_CONSTRAINT, ratio - flops_budget)
    if pruned:
        return study.tell(trial, state=TrialState.PRUNED)
    if values is None:
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, values)


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    """Finish ``trial`` as FAIL without an outcome (e.g. interrupted), with ``fail_reason``."""
    from optuna.trial import TrialState

    with contextlib.suppress(Exception):  # already finished: nothing to add
        trial.set_user_attr(ATTR_FAIL_REASON, reason)
    return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def fail_trial_number(
    study: optuna.Study, storage: Any, study_id: int, number: int, reason: str
) -> None:
    """Finish the RUNNING trial ``number`` of the study as FAIL with ``fail_reason`` (a trial
    another process left behind: :mod:`~midl_autok.search.recovery` decides which)."""
    from optuna.trial import TrialState

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def fail_waiting_trial(storage: Any, trial_id: int, reason: str) -> None:
    """Finish a WAITING trial (a search's number reservation, :mod:`~midl_autok.search.reserve`,
    that no ``ask`` took before the search was interrupted) as FAIL with ``fail_reason``."""
    from optuna.trial import TrialState

    storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def complete_from_run(
    study: optuna.Study, storage: Any, study_id: int, number: int, tracker: Tracker, run_id: str
) -> FrozenTrial | None:
    """Finish the RUNNING trial ``number`` from its FINISHED child run ``run_id``: a process
    killed after ending the run and before Optuna's ``tell`` left the trial behind with its
    result already recorded in MLflow. Its final metrics (those ``schedule.json`` lists) and
    schedule become the trial's, told COMPLETE (or FAIL when an objective is missing), with
    the study's objectives and FLOPs budget. None (nothing written) when the run holds no
    ``schedule.json``: the caller fails the trial as before."""
    import optuna

    metrics, schedule = tracker.read_trial(run_id)
    if schedule is None:
        return None
    listed = schedule.get("metrics")
    if isinstance(listed, dict) and listed:
        metrics = {k: v for k, v in metrics.items() if k in listed}
    attrs = study.user_attrs
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    outcome = TrialOutcome(
        state=COMPLETE, metrics=metrics, history=[], schedule=schedule, mlflow_run_id=run_id
    )
    return tell_outcome(
        study,
        optuna.trial.Trial(study, trial_id),
        outcome,
        objectives=list(attrs.get("objectives") or []),
        flops_budget=attrs.get("flops_budget"),
    )


def record_external(
    session: SearchSession, schedule: KSchedule, **fields: Unpack[RecordFields]
) -> FrozenTrial:
    """Record a schedule an agent evaluated itself: one Optuna trial + one MLflow child run
    (this is :meth:`SearchSession.record`, the host's ``record``).

    ``schedule`` is the realized schedule, ``metrics`` the final metrics (names from
    :mod:`midl_autok.metrics`, as :class:`~midl_autok.trainer.TrainResult` has them),
    ``history`` the per-epoch rows (default: none). ``params`` are the trial's parameters in
    this session's search space; by default the space's encoding of the schedule when it has
    one (the ``free`` space encodes any schedule), else none. ``fail_reason`` (or a non-finite
    metric) records a failed evaluation. ``train_s``: the training seconds (default 0).
    ``user_attrs`` (plain values, e.g. an RL agent's ``phase`` and ``lam``) go on the trial
    and, as tags, on the child run. The keywords are
    :class:`~midl_autok.agents.host.RecordFields` (the host protocol's ``record``).

    The trial is made from a template (:func:`new_trial`, its parameters in the session's
    space), the child run gets the epochs and ``schedule.json``, then
    :meth:`SearchSession.tell` records the outcome.
    """
    from midl_autok.errors import UserError, unknown_name

    known = RecordFields.__required_keys__ | RecordFields.__optional_keys__
    unexpected = sorted(set(fields) - known)
    if unexpected:
        raise TypeError(f"record() got an unexpected keyword argument {unexpected[0]!r}")
    if "metrics" not in fields:
        raise TypeError("record() missing required keyword argument: 'metrics'")
    metrics, history = fields["metrics"], fields.get("history", ())
    params, fail_reason = fields.get("params"), fields.get("fail_reason")
    train_s, user_attrs = fields.get("train_s", 0.0), fields.get("user_attrs")
    space = session.space
    if params is None:
        try:
            params = space.encode_params(schedule)
        except UserError:
            params = {}
    dists = space.optuna_distributions()
    unknown = [k for k in params if k not in dists]
    if unknown:
        raise unknown_name(f"parameter of search space '{space.name}'", unknown[0], dists)
    started = time.perf_counter()
    trial = new_trial(
        session,
        params=params,
        distributions={k: dists[k] for k in params},
        user_attrs={**(user_attrs or {}), "origin": session.agent.name},
    )
    session.started_trial(trial.number, started)
    try:
        number = trial.number
        reason = fail_reason or non_finite(metrics)
        run_id = start_run(
            session.tracker,
            f"trial-{number}",
            parent_run_id=session.parent_run_id,
            tags={
                **(user_attrs or {}),
                "trial": number,
                "host": session.host,
                "pid": session.pid,
                **session.request(number, schedule).tags,
            },
            params=params,
        )
        prov = {**session.provenance(number), "mlflow_run_id": run_id}
        finite = {k: v for k, v in metrics.items() if not _bad_number(v)}  # all of them, as before
        info = schedule.with_info(metrics=finite, provenance=prov).to_dict()
        finish_child_run(
            session.tracker,
            run_id,
            history=history,
            metrics=metrics,
            schedule=info,
            reason=reason,
        )
        outcome = TrialOutcome(
            state=COMPLETE if reason is None else FAIL,
            metrics=dict(metrics),
            history=[dict(r) for r in history],
            schedule=info,
            mlflow_run_id=run_id,
            fail_reason=reason,
            train_s=train_s,
        )
    except BaseException:
        session.fail(trial, "recording the trial failed")
        raise
    return session.tell(trial, outcome)


def new_trial(
    session: SearchSession,
    *,
    params: Mapping[str, Any],
    distributions: Mapping[str, Any],
    user_attrs: Mapping[str, Any],
) -> optuna.Trial:
    """A new RUNNING trial of the session's study, made from a template (not sampled): its
    ``params`` with their ``distributions``, ``user_attrs`` and this process's ``host``/``pid``
    (an external agent's evaluation, a confirmation of a front's schedule)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    template = create_trial(
        state=TrialState.RUNNING,
        params=dict(params),
        distributions=dict(distributions),
        user_attrs={**user_attrs, "host": session.host, "pid": session.pid},
    )
    trial_id = session.storage.create_new_trial(session.study_id, template_trial=template)
    return optuna.trial.Trial(session.study, trial_id)


def _values(
    outcome: TrialOutcome, objectives: Sequence[str]
) -> tuple[list[float] | None, str | None]:
    if not outcome.ok:
        return None, outcome.fail_reason or "the evaluation failed"
    missing = [m for m in objectives if m not in outcome.metrics]
    if missing:
        return None, f"objective {missing[0]} is missing from the trial's metrics"
    reason = non_finite(outcome.metrics)
    if reason is not None:
        return None, reason
    return [float(outcome.metrics[m]) for m in objectives], None


def _bad_number(value: Any) -> bool:
    import math

    return isinstance(value, float) and not math.isfinite(value)
