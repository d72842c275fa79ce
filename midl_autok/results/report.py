"""Plotly figures and the self-contained HTML report of one or more searches.

Reads Optuna studies that follow the tracking contract (DESIGN section 3: every evaluated
schedule is one trial whose values are the objectives and whose user attrs hold the KSchedule
JSON, the metrics and the MLflow run id) and draws what optuna-dashboard and the MLflow UI do
not: several studies' fronts overlaid, hypervolume against trials and wall-clock time for all
of them, each Pareto schedule as a layers x epochs picture of k, and a table of the Pareto
points with the command that exports each one::

    html = build_report("sqlite:///midl_runs/optuna.db", ["digits-tpe", "digits-nsga2"])
    write_report("report.html", "sqlite:///midl_runs/optuna.db", png="front.png")

The page embeds plotly.js by default, so it works offline as one file; ``plotlyjs`` may point
it at a shared copy instead (what a search does for its store's pages, see
:func:`midl_autok.results.files.plotly_script`). The studies are read by
:mod:`midl_autok.results.studies` and drawn by :mod:`midl_autok.results.figures`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from midl_autok import __version__
from midl_autok.results.figures import (
    ExportCommand,
    _fmt,
    export_command,
    front_figure,
    hypervolume_figures,
    pareto_table,
    schedule_heatmap,
    summary_table,
)
from midl_autok.results.studies import (
    X_METRIC,
    Y_METRIC,
    ChromeNotFoundError,
    ReportError,
    StudyData,
    TrialPoint,
    load_studies,
)
from midl_autok.schedule import write_atomic

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from midl_autok.store import Store

__all__ = [
    "ChromeNotFoundError",
    "PngNotWrittenError",
    "ReportError",
    "StudyData",
    "TrialPoint",
    "build_report",
    "export_command",
    "front_figure",
    "hypervolume_figures",
    "load_studies",
    "pareto_table",
    "schedule_heatmap",
    "write_front_png",
    "write_report",
]


def _div(fig: go.Figure, div_id: str, *, modebar: bool = True) -> str:
    config = {"displaylogo": False, "responsive": True, "displayModeBar": modebar}
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=config))


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;width:100%}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6}code{font-size:.95em;word-break:break-all}
.row{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.note{color:#a15c00}
"""


def build_report(
    source: Store | str,
    study_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    export: ExportCommand | None = None,
    studies: Sequence[StudyData] | None = None,
    plotlyjs: str | bool = True,
) -> str:
    """The report as one HTML page (by default self-contained: plotly.js embedded, works
    offline; ``plotlyjs`` as plotly's ``include_plotlyjs``: ``"cdn"`` or the URL/path of a
    ``.js`` file the page loads instead).

    ``source`` is a store or an Optuna storage URL; ``study_names`` default to all its
    studies; ``export`` builds the export command shown for a trial (default
    :func:`export_command`); ``studies`` skips reading when they are already loaded.
    """
    from midl_autok.results.files import plotly_script

    data = list(studies) if studies is not None else load_studies(source, study_names)
    title = title or "midl-autok report: " + ", ".join(s.name for s in data)
    front = front_figure(data, export=export)
    by_trials, by_time = hypervolume_figures(data)
    notes = []
    for s in data:
        if not s.points:
            notes.append(f"{s.name}: no completed trial yet.")
        elif s.reference is None:
            notes.append(
                f"{s.name}: no hypervolume reference point recorded; hypervolume not drawn."
            )
    heatmaps: list[str] = []
    for s in data:
        for p in s.pareto_points():
            if p.schedule is None:
                continue
            star = " ★" if s.knee is not None and s.points[s.knee].number == p.number else ""
            caption = (
                f"{html.escape(s.label)} · trial {p.number}{star}<br>val acc "
                f"{_fmt(p.coord(Y_METRIC, s), '.4f')} · FLOPs ratio "
                f"{_fmt(p.coord(X_METRIC, s), '.3f')}"
            )
            figure = schedule_heatmap(p.schedule, title=caption)
            heatmaps.append(_div(figure, f"k-{len(heatmaps)}", modebar=False))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "".join(
        [
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>",
            f"{plotly_script(plotlyjs)}</head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='meta'>midl-autok {__version__} · generated {generated}</p>",
            summary_table(data),
            "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
            "<h2>Pareto fronts</h2>",
            "<p class='meta'>Every completed trial; lines join each study's Pareto front, the "
            "star marks its knee. Hover a point for its export command.</p>",
            _div(front, "front"),
            "<h2>Hypervolume</h2><div class='row'>",
            _div(by_trials, "hv-trials"),
            _div(by_time, "hv-time"),
            "</div><h2>Pareto points</h2>",
            pareto_table(data, export=export),
            "<h2>Schedules on the front: k per layer and epoch</h2>",
            f"<div class='grid' id='schedules'>{''.join(heatmaps)}</div>"
            if heatmaps
            else "<p>No Pareto schedule recorded.</p>",
            "</body></html>\n",
        ]
    )


def write_front_png(
    studies: Sequence[StudyData],
    path: str | Path,
    *,
    width: int = 1000,
    height: int = 650,
    scale: float = 2.0,
) -> Path:
    """Write the front figure as a PNG with kaleido, which drives a local Chrome/Chromium."""
    try:
        import kaleido
        from kaleido.errors import ChromeNotFoundError as KaleidoNoChrome
    except ImportError:
        raise ReportError("--png needs kaleido (>= 1.0): pip install kaleido") from None

    import logging

    for name in ("choreographer", "kaleido"):  # their warnings (e.g. a watchdog closing the
        logger = logging.getLogger(name)  # browser) stay off stderr: errors are ours to say
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    fig = front_figure(studies)
    fig.update_layout(legend={"orientation": "v", "y": 1, "x": 1.02})
    png = b""
    attempts = 3  # a browser that fails to start, and kaleido's page asked to render before
    for attempt in range(1, attempts + 1):  # its scripts loaded ("kaleido_scopes is not
        try:  # defined", on a loaded machine; once after a failed start in the suite): retry
            png = kaleido.calc_fig_sync(
                fig,
                opts={"format": "png", "width": width, "height": height, "scale": scale},
                kopts={"mathjax": False},
            )
            break
        except KaleidoNoChrome:
            raise ChromeNotFoundError(
                "--png needs Chrome or Chromium to render the image, but none was found: "
                "install one (e.g. apt-get install chromium, or run plotly_get_chrome), or "
                "point BROWSER_PATH at its executable"
            ) from None
        except Exception as exc:  # the browser exits at start, hangs up, times out, ...
            if attempt == attempts:
                raise ReportError(
                    f"--png: Chrome/Chromium failed to render the image ({_first_line(exc)}); "
                    "check that it starts on this machine, or point BROWSER_PATH at one that "
                    "does"
                ) from None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, png)
    return out


def _first_line(exc: BaseException) -> str:
    """The first line of an error (choreographer's errors carry a tuple of advice)."""
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    lines = first.strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


class PngNotWrittenError(ReportError):
    """The HTML report was written, but the static image of the front was not."""


def write_report(
    path: str | Path,
    source: Store | str,
    study_names: Sequence[str] | None = None,
    *,
    png: str | Path | None = None,
    title: str | None = None,
    export: ExportCommand | None = None,
) -> Path:
    """Write the HTML report (atomically) and, with ``png``, a static image of the front.

    The page is written first: when the image cannot be made (no kaleido, no browser, a
    browser that fails to start), :class:`PngNotWrittenError` names the page that was written
    and why the image was not."""
    studies = load_studies(source, study_names)
    page = build_report(source, title=title, export=export, studies=studies)
    out = Path(path)
    write_atomic(out, page)
    if png is not None:
        try:
            write_front_png(studies, png)
        except ReportError as exc:
            raise PngNotWrittenError(f"report written to {out}, but not {png}: {exc}") from None
    return out
