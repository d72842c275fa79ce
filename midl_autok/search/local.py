"""The local backend: trials one after another in this process.

The loop is Optuna's ask-and-tell, written out instead of ``study.optimize`` because every
step has a job here: ``ask`` (sampler reseeded from ``--seed`` and the trial number, trial
stamped with host and pid), the agent proposes a schedule, :func:`evaluate_trial` trains it
and logs the MLflow child run (whose id is stored on the trial before training starts), and
``tell`` records values, user attrs and the FLOPs constraint
(:mod:`~midl_autok.search.recording`). ``optimize`` would also turn a
Ctrl-C into a FAIL without letting us end the MLflow runs, and would count trials per
invocation, not per study.

``--trials N`` is the study's target: the loop runs until the study holds N COMPLETE (or
PRUNED) trials, so a rerun after an interruption runs only the missing ones. Failed trials
do not count and are retried by the next ask; the stop rule (time budget, failures in a row)
is :class:`~midl_autok.search.stopping.StopRule`, shared with the Ray backend.

``early_stop`` (``--early-stop asha|mo-asha``) judges each trial at epoch rungs by the rule
the Ray backend's scheduler follows (:mod:`~midl_autok.search.rungs`), against the values the
study's other trials kept at the same rung (:class:`~midl_autok.search.fidelity.StudyRungs`);
a stopped trial is PRUNED with its last epoch's metrics and counts toward ``--trials``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from midl_autok.agents import ExternalAgent, SamplerAgent
from midl_autok.errors import SpecError, system_error_message
from midl_autok.results.record import ATTR_RUN_ID
from midl_autok.search.evaluate import evaluate_trial
from midl_autok.search.fidelity import RungHook, StudyRungs
from midl_autok.search.opening import search_to_the_end
from midl_autok.search.outcome import TrialOutcome, TrialRequest
from midl_autok.search.rungs import EarlyStop
from midl_autok.search.session import SearchSession, SearchSummary
from midl_autok.search.stopping import StopRule

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.spec import ExperimentSpec
    from midl_autok.store import Store
    from midl_autok.trainer import TrainHooks

__all__ = ["SearchCallback", "run_local", "run_search"]

HooksFactory = Callable[[TrialRequest], Sequence["TrainHooks"]]


class SearchCallback(Protocol):
    """Extension points of a search loop (progress bars, early stops in tests). Subclass it
    for no-op defaults, or pass any object with both methods."""

    def on_start(self, session: SearchSession, *, target: int, done: int) -> None:
        """Before the first new trial; ``done`` trials already count toward ``target``."""

    def on_trial_end(
        self, session: SearchSession, trial: FrozenTrial, outcome: TrialOutcome
    ) -> None:
        """After a trial was recorded (COMPLETE, PRUNED or FAIL)."""


def run_local(
    session: SearchSession,
    rule: StopRule,
    *,
    callbacks: Sequence[SearchCallback] = (),
    train_hooks: HooksFactory | None = None,
    early_stop: EarlyStop | str = "none",
) -> str | None:
    """Evaluate trials until the study counts ``rule.target`` (or the rule stops the search:
    time budget, failures in a row); return why it stopped early, if so.

    ``early_stop``: stop unpromising trials at epoch rungs (an :class:`EarlyStop` or its kind).
    """
    agent = session.agent
    stopping = early_stop if isinstance(early_stop, EarlyStop) else EarlyStop(early_stop)
    stopping.check(session)
    if isinstance(agent, ExternalAgent) and stopping.kind != "none":
        raise SpecError(
            f"--early-stop applies to agents that sample schedules; agent {agent.name!r} "
            "runs its own training episodes"
        )
    if isinstance(agent, ExternalAgent):  # its own loop; it calls the callbacks
        agent.run_with(session, target=rule.target, callbacks=callbacks, train_hooks=train_hooks)
        return None
    for cb in callbacks:
        cb.on_start(session, target=rule.target, done=session.counted_trials())
    if not isinstance(agent, SamplerAgent):
        raise TypeError(f"agent {agent.name!r} is neither a SamplerAgent nor an ExternalAgent")
    while not rule.done(session.counted_trials()):
        if rule.check() is not None:
            return rule.stopped
        trial = session.ask()
        try:
            try:
                schedule = agent.propose(trial, session.space)
                request = session.request(trial.number, schedule, trial.params)
                hooks = list(train_hooks(request)) if train_hooks is not None else []
                if stopping.kind != "none":
                    judge = StudyRungs(session, trial, stopping)
                    hooks.append(RungHook(schedule, session.objectives, judge))
                outcome = evaluate_trial(
                    request,
                    hooks=hooks,
                    on_run_started=functools.partial(trial.set_user_attr, ATTR_RUN_ID),
                )
            except Exception as exc:  # the agent or tracking failed: a failed trial
                if system_error_message(exc) is not None:
                    raise  # disk full, read-only or locked store: stop, do not burn trials
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                outcome = TrialOutcome.failed(f"{type(exc).__name__}: {first}")
            frozen = session.tell(trial, outcome)
        except BaseException:  # interrupted: the trial is failed, the caller ends the runs
            session.fail(trial, f"interrupted (process {os.getpid()} was stopped)")
            raise
        for cb in callbacks:
            cb.on_trial_end(session, frozen, outcome)
        if rule.after(frozen) is not None:
            return rule.stopped
    return None


def run_search(
    spec: ExperimentSpec,
    *,
    store: Store | str | os.PathLike[str] | None = None,
    study: str | None = None,
    device: str = "auto",
    threads: int | None = 1,
    callbacks: Sequence[SearchCallback] = (),
    train_hooks: HooksFactory | None = None,
    max_consecutive_failures: int = 5,
    plotlyjs: str | bool = True,
    early_stop: EarlyStop | str = "none",
) -> SearchSummary:
    """Run the search the spec describes (agent, space, ``budget.trials`` as the study's
    target, ``budget.flops_budget``, seed) in this process; resume the study if it exists.
    ``early_stop``: ``--early-stop`` (see :func:`run_local`).

    ``threads``: torch CPU threads per trial (see :func:`open_search`). Returns a
    :class:`SearchSummary`; the Pareto files are in ``summary.files``.
    """
    drive = functools.partial(
        run_local, callbacks=callbacks, train_hooks=train_hooks, early_stop=early_stop
    )
    return search_to_the_end(
        spec,
        drive,
        store=store,
        study=study,
        device=device,
        threads=threads,
        backend="local",
        plotlyjs=plotlyjs,
        callbacks=callbacks,
        max_consecutive_failures=max_consecutive_failures,
    )
