"""Recovery: every rule that finds a trial or an MLflow run nobody will finish, in one module.

A search killed with SIGKILL, a machine that rebooted, a Ray worker still shutting down: each
can leave an Optuna trial RUNNING or an MLflow run RUNNING that no live process will end.
The rules, applied when a search opens (:func:`recover_on_open`) and when it ends:

* **orphaned trial** (:func:`fail_orphaned_trials`): RUNNING, stamped with this host and a
  ``pid`` that no longer runs -> FAIL, its child run KILLED; but when its child run is
  FINISHED (the process died between the run's end and Optuna's ``tell``) -> completed
  from the run (:func:`~midl_autok.search.recording.complete_from_run`);
* **unowned trial** (:func:`fail_unowned_trials`): RUNNING and naming no process (killed
  between Optuna's ``ask`` and the next write) -> FAIL, once no live search could still name
  it (no RUNNING parent run) or once :data:`UNOWNED_GRACE_S` has passed;
* **own leftovers** (:func:`fail_own_running`): an interrupted search fails the trials it left
  RUNNING (and the trial-number reservation it left WAITING) and ends its child runs;
* **orphaned run** (:func:`end_orphaned_runs`): RUNNING, tagged with this host and a dead
  ``pid`` -> KILLED;
* **run of an ended search** (:func:`end_runs_of_ended_parents`, :func:`end_children`): a child
  run whose parent run has ended -> KILLED.

Trials are failed through :func:`midl_autok.search.recording.fail_trial_number`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from midl_autok.results.record import ATTR_RUN_ID
from midl_autok.search.recording import complete_from_run, fail_trial_number, fail_waiting_trial
from midl_autok.tracking import FINISHED, KILLED, PARENT_TAG

if TYPE_CHECKING:
    import optuna

    from midl_autok.tracking import Tracker

__all__ = [
    "UNOWNED_GRACE_S",
    "alive",
    "end_children",
    "end_orphaned_runs",
    "end_runs_of_ended_parents",
    "fail_orphaned_trials",
    "fail_own_running",
    "fail_unowned_trials",
    "has_running_parent_runs",
    "recover_on_open",
]

#: A RUNNING trial that names no process and is this old is an orphan even while other
#: searches on the study are live (a live search names its trial right after asking).
UNOWNED_GRACE_S = 600.0


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_on_open(storage: Any, study_id: int, study: optuna.Study, tracker: Tracker) -> None:
    """What a search does before its first trial: fail the study's orphaned trials, end the
    runs of dead processes and ended searches, then fail the trials that name no process
    (all of them when no search is live on the study, else only the old ones)."""
    fail_orphaned_trials(storage, study_id, study, tracker)
    end_orphaned_runs(tracker, socket.gethostname(), alive)
    end_runs_of_ended_parents(tracker)
    grace = UNOWNED_GRACE_S if has_running_parent_runs(tracker) else None
    fail_unowned_trials(storage, study_id, study, older_than_s=grace)


# --------------------------------------------------------------------------- Optuna trials


def _running(storage: Any, study_id: int) -> list[Any]:
    from optuna.trial import TrialState

    return list(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)))


def fail_orphaned_trials(storage: Any, study_id: int, study: optuna.Study, tracker: Tracker) -> int:
    """Fail RUNNING trials whose process (on this host) is gone and end their MLflow runs,
    or complete them from their child run when it FINISHED; return how many."""
    host, me = socket.gethostname(), os.getpid()
    count = 0
    for t in _running(storage, study_id):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int):
            continue
        if pid != me and alive(pid):
            continue  # another search is running this trial right now
        run_id = t.user_attrs.get(ATTR_RUN_ID)
        status = tracker.run_status(run_id) if isinstance(run_id, str) else None
        count += 1
        if status == FINISHED and complete_from_run(
            study, storage, study_id, t.number, tracker, str(run_id)
        ):
            continue  # killed between the run's end and tell: its result is in MLflow
        reason = f"interrupted: process {pid} ended before the trial finished"
        fail_trial_number(study, storage, study_id, t.number, reason)
        if status == "RUNNING":
            tracker.end_run(str(run_id), KILLED, reason=reason)
    return count


def fail_unowned_trials(
    storage: Any, study_id: int, study: optuna.Study, *, older_than_s: float | None = None
) -> int:
    """Fail RUNNING trials that name no process (``host``/``pid`` missing: a search killed
    between Optuna's ``ask`` and the next write, or another tool; only a search driver asks,
    so only a live search -- a RUNNING parent run -- can still name one). ``older_than_s``: only
    those started at least that long ago (a live search names its trial within
    milliseconds); None: all of them (call it so only when no search can still run them)."""
    now = datetime.datetime.now()
    count = 0
    for t in _running(storage, study_id):
        if isinstance(t.user_attrs.get("pid"), int):
            continue
        if older_than_s is not None and (
            t.datetime_start is None or (now - t.datetime_start).total_seconds() < older_than_s
        ):
            continue
        reason = (
            "interrupted: process unknown ended before the trial finished "
            "(stopped before the trial recorded its host and pid)"
        )
        fail_trial_number(study, storage, study_id, t.number, reason)
        count += 1
    return count


def fail_own_running(
    storage: Any,
    study_id: int,
    study: optuna.Study,
    tracker: Tracker,
    *,
    opened: datetime.datetime,
    parent_run_id: str,
    reason: str,
) -> None:
    """Fail the trials this process left RUNNING (an interruption can land anywhere, even
    inside ``ask`` before the trial got its pid: a trial naming no process that started after
    ``opened`` is ours too) and end its child runs still RUNNING."""
    host, me = socket.gethostname(), os.getpid()
    for t in _running(storage, study_id):
        pid = t.user_attrs.get("pid")
        mine = pid == me and t.user_attrs.get("host") == host
        fresh = pid is None and t.datetime_start is not None and t.datetime_start >= opened
        if mine or fresh:
            fail_trial_number(study, storage, study_id, t.number, reason)
    from optuna.trial import TrialState

    from midl_autok.search.reserve import ATTR_RESERVED_BY

    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if t.user_attrs.get(ATTR_RESERVED_BY) == parent_run_id:  # a reservation no ask took
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            fail_waiting_trial(storage, trial_id, reason)
    end_orphaned_runs(tracker, host, lambda pid: pid != me, keep=[parent_run_id], reason=reason)


# --------------------------------------------------------------------------- MLflow runs


def end_orphaned_runs(
    tracker: Tracker,
    host: str,
    is_alive: Callable[[int], bool],
    *,
    keep: Iterable[str] = (),
    reason: str | None = None,
) -> int:
    """End as KILLED the RUNNING runs of the tracker's experiment started on ``host`` by a
    process that no longer exists (tags ``host`` and ``pid``; e.g. a search killed with
    SIGKILL), except the runs in ``keep``."""
    kept = set(keep)
    quoted = host.replace("'", "\\'")
    ended = 0
    for run in tracker.running_runs(f"tags.host = '{quoted}'"):
        pid = run.data.tags.get("pid", "")
        if run.info.run_id in kept or not pid.isdigit() or is_alive(int(pid)):
            continue
        why = reason or f"interrupted: process {pid} ended before the run finished"
        tracker.end_run(run.info.run_id, KILLED, reason=why)
        ended += 1
    return ended


def end_runs_of_ended_parents(tracker: Tracker, *, keep: Iterable[str] = ()) -> int:
    """End as KILLED the RUNNING child runs whose parent run has ended (FINISHED, FAILED
    or KILLED): their search is over, so nothing will end them (e.g. a Ray worker still
    shutting down when the search that outlived its killed driver opened the study)."""
    kept = set(keep)
    parents: dict[str, str | None] = {}
    ended = 0
    for run in tracker.running_runs():
        parent = run.data.tags.get(PARENT_TAG)
        if parent is None or run.info.run_id in kept:
            continue
        if parent not in parents:
            parents[parent] = tracker.run_status(parent)
        if parents[parent] in ("RUNNING", None):  # live, or unknown: leave it
            continue
        why = f"interrupted: its search (parent run {parent}) ended before the trial finished"
        tracker.end_run(run.info.run_id, KILLED, reason=why)
        ended += 1
    return ended


def end_children(tracker: Tracker, parent_run_id: str, reason: str) -> None:
    """End KILLED the child runs of ``parent_run_id`` still RUNNING (its workers are gone,
    e.g. Ray was shut down); errors are swallowed (the search is ending anyway)."""
    with contextlib.suppress(Exception):
        for run in tracker.running_runs(f"tags.`{PARENT_TAG}` = '{parent_run_id}'"):
            tracker.end_run(run.info.run_id, KILLED, reason=reason)


def has_running_parent_runs(tracker: Tracker) -> bool:
    """Whether a top-level run of the tracker's experiment is RUNNING: a search that may be
    live somewhere (call :func:`end_orphaned_runs` first to end those of dead processes)."""
    return any(PARENT_TAG not in run.data.tags for run in tracker.running_runs())
