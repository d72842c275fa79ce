"""``midl-autok train``: train one model under one schedule and report its metrics."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
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
    ThreadsOpt,
    app,
    check_choice,
    check_threads,
    experiment_spec,
    on_interrupt,
    stderr_console,
    stdout_console,
)
from midl_autok.cli._factory_options import DataFactoryOpt, ModelFactoryOpt

if TYPE_CHECKING:
    from midl_autok.models import MIDLNet
    from midl_autok.schedule import KSchedule
    from midl_autok.spec import ExperimentSpec
    from midl_autok.trainer import TrainResult

# Per-epoch columns of the table (metric key, header, format).
_COLUMNS = (
    ("epoch", "epoch", "{:.0f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("val_loss", "val loss", "{:.4f}"),
    ("val_accuracy", "val acc", "{:.4f}"),
    ("active_fraction", "active", "{:.3f}"),
    ("inference_flops_ratio", "FLOPs ratio", "{:.3f}"),
    ("epoch_time_s", "time (s)", "{:.2f}"),
)
_SUMMARY = (
    "val_accuracy",
    "test_accuracy",
    "inference_flops",
    "dense_inference_flops",
    "inference_flops_ratio",
    "training_flops",
    "active_fraction",
    "train_time_s",
)


@app.command()
def train(
    experiment: ExperimentArg = None,
    experiment_opt: ExperimentOpt = None,
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    target: TargetOpt = None,
    model_factory: ModelFactoryOpt = None,
    data_factory: DataFactoryOpt = None,
    init_from: InitFromOpt = None,
    schedule: Annotated[
        Path | None,
        typer.Option(
            "--schedule",
            metavar="FILE",
            help="KSchedule file (JSON or YAML) giving k per layer and epoch, e.g. one written "
            "by `midl-autok export`. Its layers must match the model.",
            show_default=False,
        ),
    ] = None,
    k_fraction: Annotated[
        float | None,
        typer.Option(
            "--k-fraction",
            metavar="F",
            help="One k fraction for every MID-L layer and epoch, 0 < F <= 1 "
            "(default: the experiment's training.k_fraction).",
            show_default=False,
        ),
    ] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            metavar="midl|dense|dropout",
            help="midl, or a baseline: dense (nn.Linear) or dropout (nn.Linear + dropout).",
            show_default=False,
        ),
    ] = None,
    epochs: EpochsOpt = None,
    gate_rank: GateRankOpt = None,
    light_rank: LightRankOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 1,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replay a --schedule made for another model (its model signature differs: "
            "other ranks, activation, input or classes) instead of stopping with an error.",
        ),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print only the final metrics as one JSON object on stdout."),
    ] = False,
    save_schedule: Annotated[
        Path | None,
        typer.Option(
            "--save-schedule",
            metavar="FILE",
            help="Write the schedule that was used (with its metrics) to this JSON/YAML file.",
            show_default=False,
        ),
    ] = None,
    controller: Annotated[
        Path | None,
        typer.Option(
            "--controller",
            metavar="FILE",
            help="A policy file (from an RL search, see `STORE/policies/`, or a pool policy "
            "from `train_pool_policy`, which runs any EXPERIMENT with up to its max_layers "
            "MID-L layers) that chooses each epoch's k while training, from what it observes.",
            show_default=False,
        ),
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option(
            "--lam",
            metavar="LAMBDA",
            help="With --controller: the FLOPs weight the policy sees (needed when it was "
            "trained on a range of lambdas).",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            "--budget",
            metavar="B",
            help="With --controller: the inference-FLOPs budget (fraction of dense) for a "
            "policy trained with budgets (a budget-mode pool policy spends it every epoch).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train one model under one Top-k schedule and report accuracy and FLOPs.

    k comes from --schedule, or --k-fraction, or the experiment's training.k_fraction, or is
    chosen live by a policy (--controller). A schedule exported by `midl-autok export`, or a
    policy saved by an RL search, carries the experiment and seed it was made with; without
    EXPERIMENT/--seed they are used (a policy's epochs too, without --epochs). A pool policy
    needs EXPERIMENT (held out of its pool or not).
    """
    on_interrupt(lambda: "nothing was written; rerun the command to train from the start")
    # torch-free until the command line and the spec are checked: a mistake is one line in
    # well under a second, not after importing torch (~2 s)
    from midl_autok.errors import ScheduleError, SpecError
    from midl_autok.schedule import KSchedule
    from midl_autok.spec import VARIANTS

    check_threads(threads)
    check_choice("--variant", variant, VARIANTS)
    if schedule is not None and k_fraction is not None:
        raise SpecError("give either --schedule or --k-fraction, not both")
    if force and schedule is None:
        raise SpecError("--force applies to --schedule (a schedule made for another model)")
    if controller is not None and (schedule is not None or k_fraction is not None):
        other = "--schedule" if schedule is not None else "--k-fraction"
        raise SpecError(f"give either --controller or {other}, not both")
    if controller is None and (lam is not None or budget is not None):
        flag = "--lam" if lam is not None else "--budget"
        raise SpecError(f"{flag} applies to --controller (a policy); give a policy file")
    if lam is not None and not (math.isfinite(lam) and lam >= 0):
        raise SpecError(f"--lam must be a finite number >= 0, but got {lam}")
    if budget is not None and not (math.isfinite(budget) and 0 < budget <= 1):
        raise SpecError(f"--budget must satisfy 0 < B <= 1 (a fraction of dense), but got {budget}")
    if k_fraction is not None and not (math.isfinite(k_fraction) and 0 < k_fraction <= 1):
        raise SpecError(f"--k-fraction must satisfy 0 < F <= 1, but got {k_fraction}")
    loaded = KSchedule.load(schedule) if schedule is not None else None
    if loaded is not None and epochs is not None and epochs != loaded.epochs:
        raise ScheduleError(
            f"{schedule}: the schedule has {loaded.epochs} epochs but --epochs is {epochs}"
        )
    base, base_seed = _replay_source(loaded) if loaded is not None else (None, None)
    policy_meta = None
    if controller is not None:
        policy_meta = _policy_meta(controller)
        pool = policy_meta.get("env", {}).get("pool")
        if isinstance(pool, dict):  # trained on a task pool: runs the experiment given
            if experiment is None and experiment_opt is None:
                tasks = ", ".join(str(t) for t in pool.get("tasks", [])) or "a task pool"
                raise SpecError(
                    f"{controller}: a pool policy (trained on {tasks}) controls any experiment "
                    f"with up to {pool.get('max_layers')} MID-L layers; give EXPERIMENT"
                )
        else:
            base, base_seed = _policy_source(policy_meta, controller)
            if epochs is None and experiment is None and experiment_opt is None:
                epochs = int(policy_meta["env"]["epochs"])
    spec = experiment_spec(
        experiment,
        experiment_opt,
        base=base,
        dataset=dataset,
        data_path=data_path,
        target=target,
        epochs=loaded.epochs if loaded is not None else epochs,
        seed=seed if seed is not None else base_seed,
        gate_rank=gate_rank,
        light_rank=light_rank,
        factories=(model_factory, data_factory),
        extra={
            "model.variant": variant,
            "model.init_from": init_from and str(init_from.resolve()),
        },
    )
    import torch

    from midl_autok.trainer import (
        DivergedError,
        TrainConfig,
        build_for_spec,
        dataset_for_spec,
    )
    from midl_autok.trainer import (
        train as train_model,
    )

    torch.set_num_threads(threads)  # for the whole run, as a search does per trial
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data, ranks=loaded)  # a co-searched schedule's ranks
    config = TrainConfig.from_spec(spec, device=device)
    if loaded is not None:
        if not model.layer_specs():
            raise ScheduleError(
                f"--schedule needs a MID-L model, but the {spec.model.variant} variant has none"
            )
        try:
            model.check_schedule(loaded)
        except ScheduleError as exc:
            raise ScheduleError(f"{schedule}: {exc}") from None
        _check_signature(loaded, str(schedule), model, spec, force=force)
        plan = loaded
    elif controller is not None:
        plan = None
    elif model.layer_specs():
        plan = model.schedule_template(
            config.epochs, spec.training.k_fraction if k_fraction is None else k_fraction
        )
    else:
        plan = None

    hooks: list[Any] = []
    progress = None
    if not json_out:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(
            TextColumn("[bold]train[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=stderr_console(),
            transient=True,
        )
        hooks.append(_progress_hook(progress, spec.name, config.epochs))
    live = None
    if controller is not None and policy_meta is not None:
        live = _controller(controller, policy_meta, model, data, config.epochs, lam, budget)
    try:
        if progress is not None:
            progress.start()
        result = train_model(
            model, data, config=config, schedule=plan, controller=live, hooks=hooks
        )
    except DivergedError as exc:
        print(f"midl-autok: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        if progress is not None:
            progress.stop()

    if save_schedule is not None and result.schedule is not None:
        provenance: dict[str, Any] = {"experiment": spec.name, "seed": spec.seed, "source": "train"}
        if controller is not None and live is not None:
            provenance.update(controller=str(controller), lam=live.lam, budget=live.budget)
        result.schedule.with_info(provenance=provenance).save(save_schedule)
    if json_out:
        print(json.dumps(_jsonable(result.metrics), sort_keys=True))
        return
    _print_report(spec.name, data.name, result, save_schedule, threads=threads)


def _replay_source(schedule: KSchedule) -> tuple[ExperimentSpec | None, int | None]:
    """The experiment and seed an exported schedule was searched with (for exact replay)."""
    from midl_autok.spec import validate_spec

    prov = schedule.provenance
    spec = prov.get("spec")
    base = validate_spec(spec, source="the schedule's provenance.spec") if spec else None
    seed = prov.get("seed")
    return base, seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _check_signature(
    schedule: KSchedule, path: str, model: MIDLNet, spec: ExperimentSpec, *, force: bool
) -> None:
    """A schedule made for another model -- same layer names and widths, another signature
    (ranks, activation, input shape, classes) -- is an error naming the difference; with
    ``force`` a one-line warning."""
    from midl_autok.errors import ScheduleError

    ours = model.signature()
    if not schedule.signature or schedule.signature == ours:
        return  # a hand-written schedule records none
    text = (
        f"{path}: the schedule was made for another model: model signature "
        f"{schedule.signature} in the schedule, {ours} for this {model.arch} model"
    )
    differences = _spec_differences(schedule, spec)
    if differences:
        text += f" ({differences})"
    if force:
        print(f"midl-autok: warning: {text}; replaying it anyway (--force)", file=sys.stderr)
        return
    raise ScheduleError(f"{text}; pass --force to replay it anyway")


def _spec_differences(schedule: KSchedule, spec: ExperimentSpec, limit: int = 3) -> str:
    """The model and dataset settings where the schedule's experiment (its provenance) and
    this run's differ: "model.gate_rank 16 in the schedule's experiment, 4 here"."""
    from midl_autok.errors import UserError
    from midl_autok.spec import validate_spec

    recorded = schedule.provenance.get("spec")
    if not isinstance(recorded, dict):
        return ""
    try:
        theirs = dict(_flat(validate_spec(recorded, source="provenance").model_dump()))
    except UserError:
        return ""
    ours = dict(_flat(spec.model_dump()))
    keys = [
        key
        for key in sorted(set(theirs) | set(ours))
        if (key.startswith(("model.", "dataset.options.")) or key == "dataset.name")
        and theirs.get(key) != ours.get(key)
    ]
    shown = [
        f"{key} {theirs.get(key)!r} in the schedule's experiment, {ours.get(key)!r} here"
        for key in keys[:limit]
    ]
    return "; ".join(shown) + ("; ..." if len(keys) > limit else "")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _policy_meta(path: Path) -> dict[str, Any]:
    """The description of a policy file (read without unpickling; bad files: UserError)."""
    from midl_autok.rl import load_policy

    return load_policy(path).meta


def _policy_source(meta: Mapping[str, Any], path: Path) -> tuple[ExperimentSpec | None, int | None]:
    """The experiment and seed a policy was trained on (its recorded spec, else the shipped
    experiment its env names)."""
    from midl_autok.errors import SpecError
    from midl_autok.spec import list_experiments, load_spec, validate_spec

    if isinstance(meta.get("spec"), dict):
        spec = validate_spec(meta["spec"], source=f"{path}: the policy's spec")
        return spec, spec.seed
    name = meta.get("env", {}).get("spec")
    if isinstance(name, str) and name in list_experiments():
        return load_spec(name), None
    raise SpecError(
        f"{path}: the policy does not record its experiment ({name!r}); give EXPERIMENT"
    )


def _controller(
    path: Path,
    meta: Mapping[str, Any],
    model: Any,
    data: Any,
    epochs: int,
    lam: float | None,
    budget: float | None,
) -> Any:
    """A :class:`~midl_autok.rl.PolicyController` for ``model``, whose MID-L layers must be
    the ones the policy was trained for (a pool policy: at most its ``max_layers``, checked by
    :meth:`~midl_autok.rl.PolicyController.from_file`)."""
    from midl_autok.errors import ScheduleError
    from midl_autok.rl import PolicyController

    env = meta.get("env", {})
    theirs = [(layer["name"], int(layer["width"])) for layer in meta["layers"]]
    ours = [(s.name, s.width) for s in model.layer_specs()]
    if not isinstance(env.get("pool"), dict) and theirs != ours:
        show = ", ".join(f"{n} ({w})" for n, w in theirs)
        have = ", ".join(f"{n} ({w})" for n, w in ours) or "none"
        raise ScheduleError(
            f"{path}: the policy was trained for MID-L layers {show}, but this model has {have}"
        )
    for flag, value, trained in (
        ("--lam", lam, env.get("lam")),
        ("--budget", budget, env.get("budget")),
    ):
        if (
            value is None
            and isinstance(trained, list)
            and len(trained) == 2
            and trained[0] != trained[1]
        ):
            raise ScheduleError(
                f"{path}: the policy was trained with {flag[2:]} in [{trained[0]:g}, "
                f"{trained[1]:g}]; choose one with {flag} (e.g. {flag} {trained[0]:g})"
            )
    return PolicyController.from_file(
        path, model=model, data=data, epochs=epochs, lam=lam, budget=budget
    )


def _integral(key: str) -> bool:
    return key == "epochs" or key.startswith("k/") or ("flops" in key and "ratio" not in key)


def _jsonable(metrics: Mapping[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        v = float(value)
        out[key] = int(v) if v.is_integer() and _integral(key) else v
    return out


def _progress_hook(progress: Any, name: str, epochs: int) -> Any:
    from midl_autok.trainer import TrainHooks, TrainSession

    class ProgressHook(TrainHooks):
        def __init__(self) -> None:
            self.task = progress.add_task(name, total=epochs, status="")

        def on_run_start(self, session: TrainSession) -> None:
            progress.update(self.task, status=f"on {session.device}")

        def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
            status = f"val acc {metrics['val_accuracy']:.4f}  loss {metrics['train_loss']:.4f}"
            progress.update(self.task, advance=1, status=status)

    return ProgressHook()


def _print_report(
    name: str, dataset: str, result: TrainResult, saved: Path | None, *, threads: int
) -> None:
    from rich.table import Table

    console = stdout_console()
    title = f"{name} on {dataset}: per-epoch metrics ({threads} torch thread(s))"
    table = Table(title=title, title_justify="left")
    for _, header, _ in _COLUMNS:
        table.add_column(header, justify="right")
    for row in result.history:
        table.add_row(*(fmt.format(row[key]) for key, _, fmt in _COLUMNS))
    console.print(table)
    summary = Table(title="final", title_justify="left", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in _SUMMARY:
        value = result.metrics[key]
        text = f"{value:,.0f}" if "flops" in key and "ratio" not in key else f"{value:.4f}"
        summary.add_row(key, text)
    console.print(summary)
    if saved is not None:
        console.print(f"schedule written to {saved}")
