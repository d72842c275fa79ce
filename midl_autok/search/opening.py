"""Opening a search: :func:`open_search` creates or resumes the study and starts the parent run.

In order: resolve the agent and the search space from the spec; learn the dense model's FLOPs
(for the fixed hypervolume reference point); create or resume the Optuna study, checking that
a resumed study was made for the same setup (:mod:`~midl_autok.search.identity`); write the
study user attrs before the first trial; recover what killed searches left behind
(:func:`~midl_autok.search.recovery.recover_on_open`); start this invocation's MLflow parent
run (:func:`~midl_autok.search.recording.start_run`).

The dense FLOPs come from the cost model, which traces one forward pass of the spec's model;
the model's input shape, class count and vocabulary, and the training-set size of the
reference's training FLOPs, are the dataset's, so the dataset is loaded here (once per
process: :func:`~midl_autok.trainer.dataset_for_spec` caches it for the trials that follow).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from midl_autok import __version__
from midl_autok.agents import SamplerAgent, get_agent
from midl_autok.errors import SpecError
from midl_autok.interrupts import handling_signals
from midl_autok.results.hypervolume import checked_reference, ideal_point
from midl_autok.results.record import STUDY_FORMAT
from midl_autok.search.devices import trial_device
from midl_autok.search.identity import (
    check_study_name,
    default_study_name,
    first_difference,
    identity_of,
    spec_identity,
    split_options,
)
from midl_autok.search.recording import start_run
from midl_autok.search.recovery import recover_on_open
from midl_autok.search.session import SearchSession, SearchSummary
from midl_autok.search.stopping import StopRule
from midl_autok.store import Store, open_store
from midl_autok.tracking import Tracker, git_sha, package_versions

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

__all__ = ["open_search", "search_to_the_end"]


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

    from midl_autok.flops import cost_model, training_flops
    from midl_autok.pareto import reference_point
    from midl_autok.search_spaces import SEARCH_SPACES
    from midl_autok.search_spaces.ranks import rank_search_options
    from midl_autok.trainer import build_for_spec, dataset_for_spec

    if study is not None:
        check_study_name(study)  # before anything is created or trained
    agent_cls = get_agent(spec.search.agent)
    space_opts, agent_opts = split_options(spec.search.options, spec.search.space, agent_cls)
    agent = agent_cls(seed=spec.seed, **agent_opts)
    trial_device(device)  # CUDA asked for but missing: fail before any trial

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
    _check_flops_budget(spec.budget.flops_budget, costs.ratio({c.name: 1 for c in layers}))
    if agent.uses_space and "cost" in SEARCH_SPACES[spec.search.space].option_names():
        space_opts["cost"] = costs  # e.g. the budget space: its target is a FLOPs ratio
    if spec.search.ranks:
        space_opts.update(rank_search_options(agent, model))
    space = agent.make_space(spec.search.space, layers, spec.training.epochs, space_opts)
    objectives = [o.metric for o in spec.objectives]
    epochs = spec.training.epochs
    try:
        ref: list[float] | None = reference_point(
            objectives,
            dense_inference_flops=dense,
            dense_training_flops=training_flops(dense, epochs * data.x_train.shape[0]),
        )
    except ValueError:
        ref = None  # e.g. val_loss: no fixed reference, no hypervolume
    ideal = ideal_point(objectives)

    store = store if isinstance(store, Store) else open_store(store)
    store.ensure_writable()
    name = check_study_name(study or default_study_name(spec))
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
    study_id, created = _create_or_find(storage, name, [o.direction for o in spec.objectives])
    existing = {} if created else _midl_attrs(storage, study_id, name, store, objectives)
    if existing:
        old_spec = identity_of(existing["spec"])
        diff = first_difference(old_spec, spec_identity(spec))
        if diff is not None:
            raise SpecError(
                f"study {name!r} in {store.root} was made for another setup: {diff}; "
                "give a new --study name (or leave --study out for an automatic one)"
            )
        attrs = {**existing, "spec": spec_dict}
        # a tampered reference point: one line, before the parent run starts
        checked_reference(existing.get("reference_point"), objectives, study=name)
        storage.set_study_user_attr(study_id, "spec", spec_dict)  # latest budget.trials
    else:
        # "format" first (the mark of a midl-autok study), "spec" last (the attrs are all
        # there: what a concurrent search opening the same new study waits for)
        for key, value in sorted(attrs.items(), key=lambda kv: kv[0] == "spec"):
            storage.set_study_user_attr(study_id, key, value)
    ostudy = optuna.load_study(study_name=name, storage=storage)
    if ostudy.metric_names != objectives:  # optuna-dashboard's axis names (not "Objective 0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names(objectives)

    if isinstance(agent, SamplerAgent):
        agent.prepare(target=target or spec.budget.trials, space=space)
    try:
        tracker = Tracker.for_experiment(
            store.mlflow_client(), name, artifact_location=store.artifact_location
        )
    except BaseException:
        if created:  # MLflow refused the name: leave no empty study behind
            storage.delete_study(study_id)
        raise
    recover_on_open(storage, study_id, ostudy, tracker)
    parent = start_run(
        tracker,
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
    session = SearchSession(
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
    session.block_gatings = {
        name: gating
        for name, layer in model.midl_layers()
        if (gating := getattr(layer, "gating", None)) is not None and gating.kind == "block"
    }
    return session


def search_to_the_end(
    spec: ExperimentSpec,
    drive: Callable[..., str | None],
    *,
    store: Store | str | os.PathLike[str] | None,
    study: str | None,
    device: str,
    threads: int | None,
    backend: str,
    plotlyjs: str | bool,
    callbacks: Sequence[Any] = (),
    max_consecutive_failures: int = 5,
) -> SearchSummary:
    """One whole search invocation, whatever the backend: open the study (``budget.trials``
    is the target), let ``drive(session, rule)`` run the trials under the one stop rule
    (:class:`~midl_autok.search.stopping.StopRule`: the target, ``budget.timeout_s``,
    ``max_consecutive_failures``; ``drive`` is a backend's loop, e.g.
    :func:`~midl_autok.search.local.run_local` with its other options bound; it returns why it
    stopped early, if it did), confirm the front
    (``--confirm N``, reported to ``callbacks``), write the Pareto files and end the parent
    run. Ctrl-C and SIGTERM are held while a storage call runs; an interruption fails the live
    trials and ends the runs."""
    target = spec.budget.trials
    with (
        handling_signals(),  # Ctrl-C / SIGTERM never in the middle of a storage call
        open_search(
            spec,
            store=store,
            study=study,
            device=device,
            backend=backend,
            target=target,
            threads=threads,
        ) as session,
    ):
        stopped = drive(session, StopRule(target, spec.budget.timeout_s, max_consecutive_failures))
        confirmations = 0
        if stopped is None:  # the target reached: confirm the front (--confirm N)
            from midl_autok.search.confirm import run_confirm

            confirmations = run_confirm(session, callbacks=callbacks)
        summary = session.finish(target=target, stopped=stopped, plotlyjs=plotlyjs)
        summary.confirmations = confirmations
        return summary


def _check_flops_budget(budget: float | None, floor: float) -> None:
    """A FLOPs budget below ``floor`` (the model with k = 1 in every MID-L layer) can be met by
    no schedule: one line naming the floor, before anything is created."""
    if budget is not None and budget < floor:
        raise SpecError(
            f"--flops-budget (budget.flops_budget) must be >= {floor:.4g}, what the gate and "
            f"light paths and the non-MID-L layers cost with k = 1 in every MID-L layer (no "
            f"schedule costs less), but got {budget}"
        )


#: How long a search waits for the study attributes of a study that another midl-autok
#: process has just created under the same name (it writes them right after creating it).
ATTRS_WAIT_S = 5.0


def _create_or_find(storage: Any, name: str, directions: list[str]) -> tuple[int, bool]:
    """The id of study ``name`` and whether this call created it (False: it existed)."""
    import optuna
    from optuna.study import StudyDirection

    try:
        return storage.get_study_id_from_name(name), False
    except KeyError:
        pass
    try:
        wanted = [StudyDirection[d.upper()] for d in directions]
        return storage.create_new_study(wanted, name), True
    except optuna.exceptions.DuplicatedStudyError:  # another process created it meanwhile
        return storage.get_study_id_from_name(name), False


def _midl_attrs(
    storage: Any, study_id: int, name: str, store: Store, objectives: list[str]
) -> dict[str, Any]:
    """The user attrs of an existing study made by midl-autok search; a
    :class:`~midl_autok.errors.SpecError` for a study of another tool (no ``format`` attr:
    adopting it would train for nothing and fail every trial). A study created a moment ago
    by a concurrent search gets :data:`ATTRS_WAIT_S` to receive its attrs."""
    n_objectives = len(storage.get_study_directions(study_id))
    deadline = time.monotonic() + ATTRS_WAIT_S
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get("format") == STUDY_FORMAT and attrs.get("spec") is not None:
            return dict(attrs)
        fresh = (  # attrs still being written by the search that created it?
            (not attrs or attrs.get("format") == STUDY_FORMAT)
            and n_objectives == len(objectives)
            and storage.get_n_trials(study_id) == 0
        )
        if not fresh or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    what = f"{n_objectives} objective{'s' if n_objectives != 1 else ''}"
    raise SpecError(
        f"study {name!r} in {store.root} exists but was not made by midl-autok search "
        f"({what}, no midl-autok attributes); choose another --study name (or leave --study "
        "out for an automatic one)"
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        elif value is not None and value != {}:
            out[name] = value
    return out
