"""A front confirmed over seeds: ``--confirm N`` (spec ``search.confirm``), the write side.

After a search reaches its target, the schedules of its Pareto front (the feasible
non-dominated search trials, cheapest first; at most :data:`MAX_FRONT` of them, evenly
spread along the front from the cheapest to the most accurate when it is larger) are
retrained with ``N`` more seeds. Confirmation ``j`` (1..N) of a schedule trains it exactly
as ``midl-autok train --schedule`` would with ``--seed S+j`` (``S``: the study's seed; the
seed of an experiment draws its data split, initialization and batch order), so every
confirmation can be replayed alone.

Each retraining is one Optuna trial and one MLflow child run, recorded through
:mod:`~midl_autok.search.recording`: a trial made from a template (the confirmed trial's
parameters and distributions; not sampled, so the agent proposes nothing for it), with user
attrs ``origin = "confirm"``, ``confirm_of`` (the confirmed trial's number),
``confirm_index`` (``j``), ``confirm_seed`` (``S+j``) and ``schedule_hash``; the child run
carries the same values as tags. Confirmations never count toward ``--trials`` and stay out
of fronts, the hypervolume and the seed grid (:mod:`~midl_autok.results.confirmed`); a
sampler that continues the study later (a larger ``--trials``) sees them as repeated
measurements of the confirmed parameters, which they are.

**Resume.** What is done is read from the study's trials, never from a counter: a
confirmation ``(trial, j)`` is done when a trial with those attrs is COMPLETE, PRUNED, RUNNING
or WAITING, or has failed :data:`MAX_FAILURES` times for a reason other than an interruption.
A confirm phase killed (even by SIGKILL) and run again (the same ``search`` command) runs only
the missing retrainings; the killed one is failed on open as any orphaned trial and retried.

**Backends.** The phase runs in the process that drives the search, after the search's own
trials, for both backends (on Ray: in the driver, on its device, after the Ray phase):
retraining a handful of schedules does not need a cluster, and this keeps one code path.

At the end the study gets the user attr ``confirmed`` (trial number -> ``n``, seeds,
``<metric>_mean`` and ``<metric>_sd``, what optuna-dashboard shows), and each confirmed
trial's MLflow run gets the metrics ``<metric>_mean``, ``<metric>_sd`` and ``confirm_seeds``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midl_autok.errors import system_error_message
from midl_autok.results.confirmed import (
    ATTR_CONFIRM_INDEX,
    ATTR_CONFIRM_OF,
    ATTR_CONFIRM_SEED,
    ATTR_SCHEDULE_HASH,
    ORIGIN,
    is_confirmation,
    schedule_hash,
)
from midl_autok.results.record import ATTR_FAIL_REASON, ATTR_RUN_ID, ATTR_SCHEDULE
from midl_autok.search import recording
from midl_autok.search.evaluate import evaluate_trial
from midl_autok.search.outcome import TrialOutcome

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.search.session import SearchSession

__all__ = [
    "MAX_CONFIRM",
    "MAX_FRONT",
    "STUDY_ATTR",
    "ConfirmTask",
    "confirm_seed",
    "front_to_confirm",
    "pending",
    "run_confirm",
]

#: The most seeds ``--confirm`` takes (each one retrains up to :data:`MAX_FRONT` schedules).
MAX_CONFIRM = 20
#: The most front schedules a confirm phase retrains.
MAX_FRONT = 10
#: A confirmation that failed this many times (not by an interruption) is not tried again.
MAX_FAILURES = 2
#: Study user attr: the largest ``--confirm N`` run on the study (set before its first
#: confirmation, so trial counts know to leave confirmations out).
STUDY_ATTR = "confirm"
#: Study user attr: the confirmed trials' means and standard deviations.
SUMMARY_ATTR = "confirmed"


@dataclass(frozen=True)
class ConfirmTask:
    """One retraining to run: the confirmed trial, the confirmation's index and seed."""

    trial: FrozenTrial
    index: int
    seed: int


def confirm_seed(seed: int, index: int) -> int:
    """The experiment seed of confirmation ``index`` of a study seeded ``seed``."""
    return (seed + index) % 2**32


def front_to_confirm(front: Sequence[Any], limit: int = MAX_FRONT) -> list[Any]:
    """The front (cheapest first) itself, or ``limit`` of its trials evenly spread from the
    cheapest to the most expensive (both ends kept)."""
    if len(front) <= limit:
        return list(front)
    if limit <= 1:
        return list(front[:limit])
    picks = sorted({round(i * (len(front) - 1) / (limit - 1)) for i in range(limit)})
    return [front[i] for i in picks]


def pending(
    trials: Sequence[FrozenTrial], targets: Sequence[FrozenTrial], n: int, *, seed: int
) -> list[ConfirmTask]:
    """The retrainings of ``targets`` (1..``n`` each) that no trial of the study holds yet."""
    from optuna.trial import TrialState

    taken: set[tuple[int, int]] = set()
    failures: Counter[tuple[int, int]] = Counter()
    for t in trials:
        of, index = t.user_attrs.get(ATTR_CONFIRM_OF), t.user_attrs.get(ATTR_CONFIRM_INDEX)
        if not is_confirmation(t) or not isinstance(of, int) or not isinstance(index, int):
            continue
        if t.state != TrialState.FAIL:
            taken.add((of, index))
        elif not str(t.user_attrs.get(ATTR_FAIL_REASON, "")).startswith("interrupted"):
            failures[(of, index)] += 1
    return [
        ConfirmTask(t, j, confirm_seed(seed, j))
        for t in targets
        for j in range(1, n + 1)
        if (t.number, j) not in taken and failures[(t.number, j)] < MAX_FAILURES
    ]


def run_confirm(
    session: SearchSession, *, n: int | None = None, callbacks: Sequence[Any] = ()
) -> int:
    """Retrain the front's schedules with ``n`` more seeds (default: the spec's
    ``search.confirm``); return how many retrainings ran. Nothing runs for ``n = 0``.

    ``callbacks`` (the search's, :class:`~midl_autok.search.local.SearchCallback`): those with
    an ``on_confirm_start(session, total=)`` method get it before the first retraining; all
    get ``on_trial_end`` after each (a progress bar shows the phase)."""
    n = session.spec.search.confirm if n is None else n
    if n <= 0:
        return 0
    record = session.record_view()
    targets = [
        t for t in front_to_confirm(record.front()) if t.user_attrs.get(ATTR_SCHEDULE) is not None
    ]
    tasks = pending(record.trials, targets, n, seed=session.spec.seed)
    if tasks and int(session.study_attr(STUDY_ATTR) or 0) < n:
        session.set_study_attr(STUDY_ATTR, n)  # before the first confirmation trial
    for cb in callbacks if tasks else ():
        if (start := getattr(cb, "on_confirm_start", None)) is not None:
            start(session, total=len(tasks))
    for task in tasks:
        frozen, outcome = _confirm_one(session, task)
        for cb in callbacks:
            cb.on_trial_end(session, frozen, outcome)
    if tasks or session.study_attr(SUMMARY_ATTR) is None:
        _publish(session)
    return len(tasks)


_INFO = ("metrics", "provenance")


def _confirm_one(session: SearchSession, task: ConfirmTask) -> tuple[FrozenTrial, TrialOutcome]:
    """One retraining: a trial from a template, evaluated like any trial, then told."""
    from midl_autok.schedule import KSchedule

    confirmed = task.trial
    # the schedule alone: the original's metrics and provenance are not the retraining's
    raw = {k: v for k, v in confirmed.user_attrs[ATTR_SCHEDULE].items() if k not in _INFO}
    marks = {
        "origin": ORIGIN,
        ATTR_CONFIRM_OF: confirmed.number,
        ATTR_CONFIRM_INDEX: task.index,
        ATTR_CONFIRM_SEED: task.seed,
        ATTR_SCHEDULE_HASH: schedule_hash(raw),
    }
    started = time.perf_counter()
    trial = recording.new_trial(
        session, params=confirmed.params, distributions=confirmed.distributions, user_attrs=marks
    )
    session.started_trial(trial.number, started)
    try:
        try:
            schedule = KSchedule.from_dict(raw, source=f"trial {confirmed.number}")
            request = session.request(trial.number, schedule, confirmed.params)
            request = dataclasses.replace(
                request,
                spec={**request.spec, "seed": task.seed},
                tags={**request.tags, **{k: str(v) for k, v in marks.items()}},
                provenance={**request.provenance, "seed": task.seed, **marks},
            )
            outcome = evaluate_trial(
                request, on_run_started=functools.partial(trial.set_user_attr, ATTR_RUN_ID)
            )
        except Exception as exc:  # tracking or the schedule failed: a failed trial
            if system_error_message(exc) is not None:
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            outcome = TrialOutcome.failed(f"{type(exc).__name__}: {first}")
        # never in the parent run's front (a confirmation)
        return session.tell(trial, outcome), outcome
    except BaseException:  # interrupted: the trial is failed, the caller ends the runs
        session.fail(trial, f"interrupted (process {os.getpid()} was stopped)")
        raise


def _publish(session: SearchSession) -> None:
    """The means and standard deviations: a study attr, and metrics on the confirmed runs."""
    record = session.record_view()
    confirmed = record.confirmed()
    session.set_study_attr(SUMMARY_ATTR, {str(k): c.to_dict() for k, c in confirmed.items()})
    by_number = {t.number: t for t in record.trials}
    for number, c in confirmed.items():
        run_id = by_number[number].user_attrs.get(ATTR_RUN_ID)
        if run_id is None:
            continue
        values: dict[str, float] = {"confirm_seeds": float(c.n)}
        for key in c.mean:
            values[f"{key}_mean"] = c.mean[key]
            values[f"{key}_sd"] = c.sd[key]
        session.tracker.log_metrics(run_id, [(values, 0)])
