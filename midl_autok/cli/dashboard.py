"""``midl-autok dashboard``: optuna-dashboard and the MLflow UI over a store."""

from __future__ import annotations

from typing import Annotated

import typer

from midl_autok.cli._app import app
from midl_autok.cli.search import StorageOpt, StoreOpt


@app.command()
def dashboard(
    store: StoreOpt = None,
    storage: StorageOpt = None,
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
    """Start optuna-dashboard (Pareto front with named objectives, trials) and the MLflow UI
    (runs, metrics, artifacts; each search's hypervolume per trial is a metric of its parent
    run) over the store, print their URLs, and run until Ctrl-C.

    An http(s) MLFLOW_TRACKING_URI is a server that already runs: its URL is shown instead.
    """
    from midl_autok.dashboard import Dashboards, serve
    from midl_autok.store import open_store

    opened = open_store(store, storage=storage)
    dashboards = Dashboards.for_store(
        opened, host=host, optuna_port=optuna_port, mlflow_port=mlflow_port
    )
    code = serve(dashboards, timeout=timeout, echo=lambda line: print(line, flush=True))
    raise typer.Exit(code)
