"""``midl-autok report``: one self-contained HTML page of one or more searches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midl_autok.cli._app import app
from midl_autok.cli.search import StorageOpt, StoreOpt


@app.command()
def report(
    study: Annotated[
        list[str] | None,
        typer.Option(
            "--study",
            "-s",
            help="A study to include; repeat for several (their fronts are overlaid). "
            "Default: every study in the store.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="HTML file to write. Default: `STORE/reports/report.html`.",
            show_default=False,
        ),
    ] = None,
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Also write the Pareto front as a PNG image (rendered by kaleido with a local "
            "Chrome/Chromium; BROWSER_PATH selects one).",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="Page title.", show_default=False)
    ] = None,
    store: StoreOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write an HTML report: Pareto fronts of several studies overlaid, hypervolume vs trials
    and vs time, each Pareto schedule as a layers x epochs heatmap, and a table of the Pareto
    points with the command that exports each. Works offline (plotly.js is embedded)."""
    from midl_autok.results.figures import export_command
    from midl_autok.results.report import write_report
    from midl_autok.store import open_store

    opened = open_store(store, storage=storage)
    opened.require_studies()
    where = str(opened.root) if store is not None else None

    def export(name: str, trial: int) -> str:
        return export_command(name, trial, store=where, storage=storage)

    out = output if output is not None else opened.reports_dir / "report.html"
    written = write_report(out, opened, study, png=png, title=title, export=export)
    print(f"report: {written}")
    if png is not None:
        print(f"front image: {png}")
