"""``midl-autok experiments``: list the shipped experiment specs, or print one."""

from __future__ import annotations

from typing import Annotated

import typer

from midl_autok.cli._app import app, stdout_console


@app.command()
def experiments(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Print this experiment's YAML (a starting point for your own).", show_default=False
        ),
    ] = None,
) -> None:
    """List the shipped experiments (usable by name in train/search), or print one as YAML."""
    from midl_autok.spec import DEFAULT_EXPERIMENT, list_experiments, load_spec

    if name is not None:
        print(load_spec(name).to_yaml(), end="")
        return
    from rich.table import Table

    table = Table(title="shipped experiments", title_justify="left")
    for column in ("name", "dataset", "model", "epochs", "description"):
        table.add_column(column)
    for exp in list_experiments():
        spec = load_spec(exp)
        label = f"{exp} (default)" if exp == DEFAULT_EXPERIMENT else exp
        model = spec.model.arch + (f" {spec.model.hidden}" if spec.model.hidden else "")
        table.add_row(label, spec.dataset.name, model, str(spec.training.epochs), spec.description)
    stdout_console().print(table)
