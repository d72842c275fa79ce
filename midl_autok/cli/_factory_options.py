"""``--model-factory`` and ``--data-factory``: a user's model and data by import path
(``search`` and ``train``; ``export`` replays the spec recorded in the schedule)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

__all__ = ["DataFactoryOpt", "ModelFactoryOpt", "with_factory_options"]

ModelFactoryOpt = Annotated[
    str | None,
    typer.Option(
        "--model-factory",
        metavar="MODULE:FUNCTION",
        help="Your own model: a function called as f(input_shape=..., num_classes=..., "
        "**model.options) that returns an nn.Module with MID-L layers (replaces model.arch).",
        show_default=False,
    ),
]
DataFactoryOpt = Annotated[
    str | None,
    typer.Option(
        "--data-factory",
        metavar="MODULE:FUNCTION",
        help="Your own data: a function called with dataset.options that returns a "
        "midl_autok.Dataset, (X, y) or ((X, y), (X, y), (X, y)) (replaces dataset.name).",
        show_default=False,
    ),
]


def with_factory_options(
    spec: ExperimentSpec,
    model_factory: str | None,
    data_factory: str | None,
    given: Mapping[str, Any],
) -> ExperimentSpec:
    """``spec`` with the factories given on the command line. ``given``: the values of the
    options that a factory replaces (``{"gate_rank": ..., "dataset": ...}``): errors if set."""
    from midl_autok.errors import SpecError
    from midl_autok.factories import with_factories

    data_flags = ("dataset", "data_path", "target")
    for name, value in given.items():
        if value is None:
            continue
        what = "data" if name in data_flags else "model"
        if (data_factory if what == "data" else model_factory) is not None:
            flag = "--" + name.replace("_", "-")
            raise SpecError(
                f"{flag} is for the built-in {what}s; --{what}-factory replaces it: drop {flag}"
            )
    return with_factories(spec, model=model_factory, data=data_factory)
