"""The typer application and the helpers every command shares."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midl_autok import __version__

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

app = typer.Typer(
    name="midl-autok",
    help=(
        "Search per-layer, per-epoch Top-k schedules for MID-L networks, record every trial, "
        "and export the schedule you want."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal width
)


def _version(value: bool) -> None:
    if value:
        print(f"midl-autok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """midl-autok: Top-k schedule search for MID-L networks."""


# Options shared by commands that take an experiment (train, search, ...).
ExperimentArg = Annotated[
    str | None,
    typer.Argument(
        help="Experiment: a shipped name (see `midl-autok experiments`) or a YAML file. "
        "Default: digits-mlp.",
        show_default=False,
    ),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option("--experiment", "-e", help="Same as the EXPERIMENT argument.", show_default=False),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Dataset instead of the experiment's: digits, mnist1d, synthetic, "
        "synthetic-tokens, mnist, fashion-mnist, cifar10, cifar100, svhn, csv.",
        show_default=False,
    ),
]
DataPathOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-path",
        help="Folder (mnist, fashion-mnist, cifar10/100, svhn) or file (csv) with the data. "
        "Nothing is downloaded.",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Label column of a csv dataset.", show_default=False),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs", min=1, help="Training epochs (default: the experiment's).", show_default=False
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        min=0,
        help="Seeds data split, init, shuffling (and the search).",
        show_default=False,
    ),
]
GateRankOpt = Annotated[
    int | None,
    typer.Option(
        "--gate-rank",
        min=1,
        help="Rank of every MID-L layer's low-rank gate (default: the experiment's, 16 in the "
        "shipped ones).",
        show_default=False,
    ),
]
LightRankOpt = Annotated[
    int | None,
    typer.Option(
        "--light-rank",
        min=0,
        help="Rank of the light path that unselected neurons get (0: pure top-k gating; "
        "default: the experiment's). On MNIST-1D, 32-64 with a lower k beats 16 at 45%: see "
        "the README's benchmarks.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
]


def experiment_spec(
    positional: str | None,
    option: str | None,
    *,
    dataset: str | None = None,
    data_path: Path | None = None,
    target: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    gate_rank: int | None = None,
    light_rank: int | None = None,
    extra: dict[str, Any] | None = None,
    base: ExperimentSpec | None = None,
) -> ExperimentSpec:
    """Load the experiment (or use ``base`` when none is named) and apply the overrides."""
    from midl_autok.errors import SpecError
    from midl_autok.spec import load_spec

    if positional and option and positional != option:
        raise SpecError(
            f"two experiments given ({positional!r} and --experiment {option!r}); give one"
        )
    named = positional or option
    spec = base if base is not None and named is None else load_spec(named)
    changes: dict[str, Any] = {
        "training.epochs": epochs,
        "seed": seed,
        "model.gate_rank": gate_rank,
        "model.light_rank": light_rank,
    }
    if dataset is not None and dataset != spec.dataset.name:
        # A different dataset: the experiment's path, target and options belonged to the old one.
        old = spec.dataset.model_dump()
        changes["dataset"] = {**old, "name": dataset, "path": None, "target": None, "options": {}}
    if data_path is not None:
        changes["dataset.path"] = str(data_path)
    if target is not None:
        changes["dataset.target"] = target
    changes.update(extra or {})
    spec = spec.override(**{k: v for k, v in changes.items() if v is not None})
    return spec


PIPE_WIDTH = 160  # columns of tables written to a file or a pipe (no COLUMNS given)


def _width(stream: Any) -> int | None:
    """rich's width for ``stream``: the terminal's (rich finds it) on a terminal or when
    ``COLUMNS`` says; else :data:`PIPE_WIDTH`. rich would use 80 there and crop the wider
    tables (``studies | tee log`` lost whole columns)."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS", "").strip() else PIPE_WIDTH


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, width=_width(sys.stderr))


def stdout_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, width=_width(sys.stdout))
