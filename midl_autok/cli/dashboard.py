"""``midl-autok dashboard``: optuna-dashboard and the MLflow UI over a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midl_autok.cli._app import app


@app.command()
def dashboard(
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            help="Store folder (default: $MIDL_AUTOK_HOME or ./midl_runs).",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage URL instead of the store's optuna.db. MLflow follows "
            "MLFLOW_TRACKING_URI when set (an http(s) server is shown, not started).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address both servers listen on. Keep 127.0.0.1 unless others must reach "
            "them; there is no login.",
        ),
    ] = "127.0.0.1",
    optuna_port: Annotated[
        int,
        typer.Option("--optuna-port", min=0, max=65535, help="optuna-dashboard port (0: free)."),
    ] = 8080,
    mlflow_port: Annotated[
        int,
        typer.Option("--mlflow-port", min=0, max=65535, help="MLflow UI port (0: free)."),
    ] = 5000,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds to wait for both servers to answer."),
    ] = 120.0,
) -> None:
    """Start optuna-dashboard (Pareto front, hypervolume history, trials) and the MLflow UI
    (runs, metrics, artifacts) over the store, print their URLs, and run until Ctrl-C."""
    from midl_autok.dashboard import Dashboards, serve
    from midl_autok.store import open_store

    opened = open_store(store, storage=storage)
    dashboards = Dashboards.for_store(
        opened, host=host, optuna_port=optuna_port, mlflow_port=mlflow_port
    )
    code = serve(dashboards, timeout=timeout, echo=lambda line: print(line, flush=True))
    raise typer.Exit(code)
