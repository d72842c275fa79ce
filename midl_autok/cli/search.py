"""``midl-autok search``: find Top-k schedules that trade accuracy against inference FLOPs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midl_autok.cli._app import (
    DataPathOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    ExperimentArg,
    ExperimentOpt,
    GateRankOpt,
    InitFromOpt,
    LightRankOpt,
    SeedOpt,
    TargetOpt,
    app,
    experiment_spec,
    on_search_interrupt,
)
from midl_autok.cli._factory_options import DataFactoryOpt, ModelFactoryOpt

if TYPE_CHECKING:
    pass

# Options shared by the commands that read or write a store (search, studies, pareto, export).
StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Store folder (default: $MIDL_AUTOK_HOME, else ./midl_runs).",
        show_default=False,
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna RDB storage URL instead of the store's optuna.db, e.g. "
        "postgresql://user@host/db. MLflow follows MLFLOW_TRACKING_URI when it is set.",
        show_default=False,
    ),
]
StudyOpt = Annotated[
    str | None,
    typer.Option(
        "--study",
        help="Study name (see `midl-autok studies`).",
        show_default=False,
    ),
]

_AGENTS_HELP = "tpe, nsga2, gp, random, qmc, fixed-k, and the RL agents ppo, sac, a2c"
_SPACES_HELP = "constant, linear, cosine, cubic, knots, free, budget (a target FLOPs ratio)"


@app.command()
def search(
    experiment: ExperimentArg = None,
    experiment_opt: ExperimentOpt = None,
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    target: TargetOpt = None,
    model_factory: ModelFactoryOpt = None,
    data_factory: DataFactoryOpt = None,
    init_from: InitFromOpt = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            help=f"Search agent: {_AGENTS_HELP}. Default: the experiment's (tpe for digits-mlp).",
        ),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            "--space",
            help=f"Schedule search space: {_SPACES_HELP}. Default: the experiment's (budget "
            "for digits-mlp). fixed-k ignores it.",
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help="Target number of completed trials in the study (default: the experiment's "
            "budget.trials). Rerunning the same command runs only the missing ones.",
            show_default=False,
        ),
    ] = None,
    seed_grid: Annotated[
        int | None,
        typer.Option(
            "--seed-grid",
            help="The first N trials of a sampler search are a coarse constant-k grid (the "
            "fixed-k agent's grid of N fractions, coarse to fine), then the sampler goes on "
            "from them; 0: none; at most --trials. Default: the experiment's search.seed_grid (5 "
            "for digits-mlp). "
            "fixed-k and RL agents ignore it.",
            show_default=False,
        ),
    ] = None,
    confirm: Annotated[
        int | None,
        typer.Option(
            "--confirm",
            help="After the search, retrain the front's schedules (at most 10) with N more "
            "seeds (0..20); pareto, export and report then use their means. Default: the "
            "experiment's search.confirm (0).",
            show_default=False,
        ),
    ] = None,
    search_ranks: Annotated[
        bool,
        typer.Option(
            "--search-ranks",
            help="Also search every MID-L layer's gate_rank and light_rank (powers of two up "
            "to the layer's width and 64; light 0 = no light path); the budget space counts "
            "them in its FLOPs target, and exported schedules carry them. Sampler agents only.",
        ),
    ] = False,
    study: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="Study name (default: `EXPERIMENT-AGENT-SPACE-seedS`, plus `-HASH` of the "
            "setup when it differs from the shipped experiment).",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    storage: StorageOpt = None,
    seed: SeedOpt = None,
    flops_budget: Annotated[
        float | None,
        typer.Option(
            "--flops-budget",
            help="Only schedules whose inference FLOPs are at most R x the dense model's are "
            "feasible (0 < R <= 1); the front reports feasible trials.",
            show_default=False,
        ),
    ] = None,
    epochs: EpochsOpt = None,
    gate_rank: GateRankOpt = None,
    light_rank: LightRankOpt = None,
    device: DeviceOpt = "auto",
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="Torch CPU threads per trial. One is fastest for small models and keeps a "
            "shared machine responsive; raise it for large CNNs.",
        ),
    ] = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Parallel workers. --backend ray: trials at once (default: as many as the "
            "cluster's CPUs/GPUs hold per --cpus-per-trial/--gpus-per-trial). RL agents: "
            "vectorized environments (one process each when > 1; default 1).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Where trials run: local (one after another in this process) or ray (Ray "
            "Tune: parallel trials on this machine's CPUs/GPUs or on a Ray cluster).",
        ),
    ] = "local",
    cpus_per_trial: Annotated[
        float | None,
        typer.Option(
            "--cpus-per-trial",
            help="--backend ray: CPUs reserved per trial (default 1; raise --threads with it).",
            show_default=False,
        ),
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option(
            "--gpus-per-trial",
            help="--backend ray: GPUs per trial; a fraction below 1 shares a GPU (0.5: two "
            "trials per GPU). With GPUs, --device auto trains on them (default 0).",
            show_default=False,
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="--backend ray: join a running Ray cluster (auto, or HEAD_IP:6379) instead "
            "of starting a local Ray. Run the search on a cluster node (or as a Ray job).",
            show_default=False,
        ),
    ] = None,
    early_stop: Annotated[
        str | None,
        typer.Option(
            "--early-stop",
            help="Stop unpromising trials at rungs (epochs g, 2g, 4g, ...; g a quarter of the "
            "epochs), same rule on both backends: none (default), asha (one score: mean gain "
            "over the hypervolume reference) or mo-asha (Pareto rank, then crowding distance, "
            "on the objectives). Stopped trials are PRUNED with their last epoch's metrics; "
            "they count toward --trials, never toward the front.",
            show_default=False,
        ),
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            "--episodes",
            help="RL agents: training episodes (= training runs) before the rollouts (default 40).",
            show_default=False,
        ),
    ] = None,
    lambdas: Annotated[
        str | None,
        typer.Option(
            "--lambdas",
            help="RL agents: FLOPs weights to roll out after training, e.g. 0.01,0.1,1; "
            "training draws lambda log-uniformly from their range (default "
            "0.01,0.03,0.1,0.3,1).",
            show_default=False,
        ),
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets",
            help="RL agents: hard inference-FLOPs budgets (fractions of dense) to roll out "
            "instead of lambdas, e.g. 0.3,0.6; training draws one per episode from their "
            "range and clips the final epoch's k to it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Search per-layer, per-epoch Top-k schedules; record every trial; print the front.

    Every evaluated schedule becomes one Optuna trial (optuna.db) and one MLflow child run
    (mlflow.db) in the store. Failed trials are recorded with their reason and the search
    goes on. With no arguments: digits-mlp, TPE, budget space, a seed grid of 5, 30 trials.

    RL agents (ppo, sac, a2c) train a policy that picks each epoch's k while training runs:
    --episodes training runs (each recorded, user attr phase=training), then one
    deterministic rollout per --lambdas (or --budgets) value on a fresh seed
    (phase=rollout). The policy is kept in `STORE/policies/` and logged on the MLflow
    parent run; `midl-autok train --controller POLICY` reuses it. Resume: rerunning the
    same command skips training once the policy is saved and rolls out only the missing
    values; training interrupted before that restarts from scratch (same seeds).
    """
    from midl_autok.agents import get_agent
    from midl_autok.errors import SpecError
    from midl_autok.search_spaces import SEARCH_SPACES

    if not 1 <= threads <= 1024:
        raise SpecError(f"--threads must satisfy 1 <= N <= 1024, but got {threads}")
    if trials is not None and trials < 1:
        raise SpecError(f"--trials must be an integer >= 1, but got {trials}")
    if seed_grid is not None and seed_grid < 0:
        raise SpecError(f"--seed-grid must be an integer >= 0, but got {seed_grid}")
    if confirm is not None and not 0 <= confirm <= 20:
        raise SpecError(
            f"--confirm must be an integer with 0 <= N <= 20 (seeds), but got {confirm}"
        )
    if flops_budget is not None and not (math.isfinite(flops_budget) and 0 < flops_budget <= 1):
        raise SpecError(
            "--flops-budget must satisfy 0 < R <= 1 (a fraction of the dense model's inference "
            f"FLOPs), but got {flops_budget}"
        )
    if agent is not None:
        get_agent(agent)  # unknown name: did-you-mean
    if space is not None and space not in SEARCH_SPACES:
        from midl_autok.errors import unknown_name

        raise unknown_name("search space", space, SEARCH_SPACES, error=SpecError)
    ray_options = _ray_options(
        backend,
        device=device,
        workers=workers,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        ray_address=ray_address,
        early_stop=early_stop,
    )
    rl_options = _rl_options(
        workers=None if ray_options is not None else workers,
        episodes=episodes,
        lambdas=lambdas,
        budgets=budgets,
    )
    spec = experiment_spec(
        experiment,
        experiment_opt,
        dataset=dataset,
        data_path=data_path,
        target=target,
        epochs=epochs,
        seed=seed,
        gate_rank=gate_rank,
        light_rank=light_rank,
        factories=(model_factory, data_factory),
        extra={
            "search.agent": agent,
            "search.space": space,
            "budget.trials": trials,
            "budget.flops_budget": flops_budget,
            "search.seed_grid": seed_grid,
            "search.confirm": confirm,
            "search.ranks": True if search_ranks else None,
            "model.init_from": init_from and str(init_from.resolve()),
        },
    )
    if seed_grid is not None and seed_grid > spec.budget.trials:
        raise SpecError(
            f"--seed-grid must be at most --trials ({spec.budget.trials}): it gives the first "
            f"N trials, but got {seed_grid}"
        )
    spec = _with_agent_options(spec, rl_options, trials_given=trials is not None)
    from midl_autok.cli._search_output import Progress, print_policy, print_summary
    from midl_autok.interrupts import handling_signals
    from midl_autok.search import get_backend
    from midl_autok.search.quiet import quiet
    from midl_autok.search.rungs import EarlyStop
    from midl_autok.store import open_store

    options: dict[str, Any] = {"options": ray_options}
    if ray_options is None:  # the same --early-stop, on the local backend
        options = {"early_stop": EarlyStop(early_stop or "none")}
        options["early_stop"].check()
    run = get_backend(backend)
    the_store = open_store(store, storage=storage)
    quiet()
    progress = Progress(spec.name)
    on_search_interrupt(progress.progress, the_store)  # Ctrl-C / SIGTERM: one line, the count
    with handling_signals(), progress:  # Ctrl-C / SIGTERM: trials failed, runs ended
        summary = run(
            spec,
            store=the_store,
            study=study,
            device=device,
            threads=threads,
            callbacks=[progress],
            **options,
        )
    print_summary(summary, the_store, overhead=ray_options is None)
    print_policy(summary, the_store)
    if summary.stopped:
        print(f"midl-autok: search stopped early: {summary.stopped}", file=sys.stderr)
        raise typer.Exit(1)


def _numbers(flag: str, text: str, *, budget: bool) -> list[float]:
    """``"a,b,c"`` as numbers >= 0 (budgets: in (0, 1])."""
    rule = "numbers in (0, 1], e.g. 0.3,0.6" if budget else "numbers >= 0, e.g. 0.03,0.1,0.3"
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    ok = bool(values) and all(
        math.isfinite(v) and ((0 < v <= 1) if budget else v >= 0) for v in values
    )
    if not ok:
        from midl_autok.errors import SpecError

        raise SpecError(f"{flag} must be comma-separated {rule}, but got {text!r}")
    return values


def _ray_options(
    backend: str,
    *,
    device: str,
    workers: int | None,
    cpus_per_trial: float | None,
    gpus_per_trial: float | None,
    ray_address: str | None,
    early_stop: str | None,
) -> Any:
    """The Ray backend's options (checked), or None for the local backend; the Ray-only
    options given with the local backend are errors."""
    from midl_autok.errors import SpecError, unknown_name
    from midl_autok.search import BACKENDS

    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS, error=SpecError)
    given = {
        "--cpus-per-trial": cpus_per_trial,
        "--gpus-per-trial": gpus_per_trial,
        "--ray-address": ray_address,
    }
    if backend != "ray":
        for flag, value in given.items():
            if value is not None:
                raise SpecError(f"{flag} applies to --backend ray, not to --backend {backend}")
        return None
    from midl_autok.search.devices import trial_device
    from midl_autok.search.ray.options import RayOptions

    options = RayOptions(
        workers=workers,
        cpus_per_trial=1.0 if cpus_per_trial is None else cpus_per_trial,
        gpus_per_trial=0.0 if gpus_per_trial is None else gpus_per_trial,
        address=ray_address,
        early_stop=early_stop or "none",
    )
    options.check()
    trial_device(device, gpus_per_trial=options.gpus_per_trial)
    return options


def _rl_options(
    *, workers: int | None, episodes: int | None, lambdas: str | None, budgets: str | None
) -> dict[str, Any]:
    """The agent options given as --workers/--episodes/--lambdas/--budgets, checked."""
    from midl_autok.errors import SpecError

    for flag, value in (("--workers", workers), ("--episodes", episodes)):
        if value is not None and value < 1:
            raise SpecError(f"{flag} must be an integer >= 1, but got {value}")
    options: dict[str, Any] = {"workers": workers, "episodes": episodes}
    if lambdas is not None:
        options["lambdas"] = _numbers("--lambdas", lambdas, budget=False)
    if budgets is not None:
        options["budgets"] = _numbers("--budgets", budgets, budget=True)
    return {k: v for k, v in options.items() if v is not None}


def _with_agent_options(spec: Any, options: dict[str, Any], *, trials_given: bool) -> Any:
    """``spec`` with the CLI's agent options; an option the agent does not take is an error."""
    from midl_autok.agents import get_agent
    from midl_autok.errors import SpecError

    name = spec.search.agent
    accepted = get_agent(name).defaults
    rl = "episodes" in accepted
    if trials_given and rl:
        raise SpecError(
            f"--trials does not apply to agent '{name}': it runs --episodes training episodes, "
            "then one rollout per --lambdas (or --budgets) value"
        )
    for key in options:
        if key not in accepted:
            hint = "; for trials in parallel use --backend ray" if key == "workers" else ""
            raise SpecError(
                f"--{key} applies to the RL agents (ppo, sac, a2c), not to agent '{name}'{hint}"
            )
    if not options:
        return spec
    return spec.override(**{f"search.options.{k}": v for k, v in options.items()})
