"""The Ray Tune backend: trials in parallel on the CPUs and GPUs of a machine or a Ray cluster.

A Ray Tune :class:`~ray.tune.Tuner` runs the trials (:mod:`~midl_autok.search.ray.trainable`);
its search algorithm is :class:`~midl_autok.search.ray.searcher.SessionSearcher`, a Tune
``Searcher`` around the search session. Ray is started or joined by
:mod:`~midl_autok.search.ray.runtime`; the options are :mod:`~midl_autok.search.ray.options`.

The Optuna sampler is the search algorithm, exactly as in the local backend: same agents,
same per-trial sampler seeding, same user attrs and FLOPs constraint, and the study target
``--trials N`` counts COMPLETE + PRUNED trials across invocations. Tune's ``OptunaSearch``
is not used: it owns a second study object with its own sampler, tells values only (no user

**Resume.** The study is the state: a search interrupted (Ctrl-C, SIGTERM, the driver killed)
and rerun with the same command opens the same study, fails the trials the dead process left
RUNNING (ending their child runs), and asks only for the missing trials. Each invocation is
one Tune experiment under the store's ``ray/<study>/``; ``Tuner.restore`` is not used, since it
would rerun the interrupted trials under Optuna trials that were already failed.

**Early stopping** (``--early-stop``): see :mod:`midl_autok.search.ray.schedulers`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ray import tune

from midl_autok.agents import ExternalAgent, SamplerAgent, get_agent
from midl_autok.errors import SpecError
from midl_autok.search.devices import trial_device
from midl_autok.search.fidelity import recorded_rungs
from midl_autok.search.opening import search_to_the_end
from midl_autok.search.ray.options import RayOptions
from midl_autok.search.ray.runtime import (
    check_reachable,
    check_resources,
    ray_connection,
    tune_settings,
)
from midl_autok.search.ray.schedulers import make_scheduler
from midl_autok.search.ray.searcher import SessionSearcher, TrialErrors
from midl_autok.search.ray.trainable import NODE_TAG, trainable, trial_name
from midl_autok.search.recovery import end_children

if TYPE_CHECKING:
    from midl_autok.search.local import SearchCallback
    from midl_autok.search.session import SearchSession, SearchSummary
    from midl_autok.search.stopping import StopRule
    from midl_autok.spec import ExperimentSpec
    from midl_autok.store import Store

__all__ = ["node_ids", "run_ray", "run_ray_search"]


def run_ray(
    session: SearchSession,
    rule: StopRule,
    *,
    callbacks: Sequence[SearchCallback] = (),
    options: RayOptions | None = None,
    device: str | None = None,
) -> str | None:
    """Evaluate trials on Ray until the study counts ``rule.target`` (or the rule stops the
    search); return why it stopped early.

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
    trials_on = trial_device(device or session.device, gpus_per_trial=options.gpus_per_trial)
    options.stopping.check(session)
    if session.counted_trials() >= rule.target:
        for cb in callbacks:
            cb.on_start(session, target=rule.target, done=session.counted_trials())
        return None
    reason = "Ray Tune ended before the trial reported its outcome"
    try:
        with ray_connection(options) as connected:
            workers = check_resources(options, local=connected and not options.address)
            scheduler = make_scheduler(
                options.stopping.rule(session),
                objectives=session.objectives,
                prior=recorded_rungs(session.trials()),
            )
            searcher = SessionSearcher(
                session,
                rule,
                early_stop=options.early_stop if scheduler is not None else "none",
                rungs=getattr(scheduler, "rungs", ()),
                device=trials_on,
                callbacks=callbacks,
            )
            resources = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=-1,  # until the searcher says FINISHED
                    max_concurrent_trials=workers,
                    reuse_actors=True,
                    trial_name_creator=trial_name,
                    trial_dirname_creator=trial_name,
                ),
                run_config=tune.RunConfig(
                    name=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}",
                    storage_path=str(
                        session.store.ray_dir / session.store.report_dir(session.study_name).name
                    ),
                    verbose=0,
                    callbacks=[TrialErrors(searcher)],
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            for cb in callbacks:
                cb.on_start(session, target=rule.target, done=session.counted_trials())
            with tune_settings():
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
        end_children(session.tracker, session.parent_run_id, reason)


def run_ray_search(
    spec: ExperimentSpec,
    *,
    options: RayOptions | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    study: str | None = None,
    device: str = "auto",
    threads: int | None = 1,
    callbacks: Sequence[SearchCallback] = (),
    max_consecutive_failures: int = 5,
    plotlyjs: str | bool = True,
) -> SearchSummary:
    """:func:`~midl_autok.search.local.run_search` on Ray: the search the spec describes,
    trials spread over Ray workers (``options``); resumes the study if it exists."""
    options = options or RayOptions()
    options.check()
    trials_on = trial_device(device, gpus_per_trial=options.gpus_per_trial)
    if options.address:
        check_reachable(options.address)  # before the study and parent run are opened
    agent_cls = get_agent(spec.search.agent)
    if not issubclass(agent_cls, SamplerAgent):
        raise SpecError(
            f"agent {spec.search.agent!r} evaluates its own schedules; use --backend local"
        )
    drive = functools.partial(run_ray, callbacks=callbacks, options=options, device=trials_on)
    return search_to_the_end(
        spec,
        drive,
        store=store,
        study=study,
        device="cpu",  # the driver's; trials train on trials_on
        threads=threads,
        backend="ray",
        plotlyjs=plotlyjs,
        callbacks=callbacks,
        max_consecutive_failures=max_consecutive_failures,
    )


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
