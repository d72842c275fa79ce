"""Plotly figures and the self-contained HTML report of one or more searches.

Reads Optuna studies that follow the tracking contract (DESIGN section 3: every evaluated
schedule is one trial whose values are the objectives and whose user attrs hold the KSchedule
JSON, the metrics and the MLflow run id) and draws what optuna-dashboard and the MLflow UI do
not: several studies' fronts overlaid, hypervolume against trials and wall-clock time for all
of them, each Pareto schedule as a layers x epochs picture of k, and a table of the Pareto
points with the command that exports each one::

    html = build_report("sqlite:///midl_runs/optuna.db", ["digits-tpe", "digits-nsga2"])
    write_report("report.html", "sqlite:///midl_runs/optuna.db", png="front.png")

The page embeds plotly.js, so it works offline. Fronts and hypervolume use
:mod:`midl_autok.pareto`; the hypervolume reference point is the one the search fixed
before it started (study user attr), never one derived from the trials.
"""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from midl_autok import __version__
from midl_autok.errors import ScheduleError, UserError
from midl_autok.pareto import hypervolume_history, knee_point
from midl_autok.schedule import KSchedule, write_atomic

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

    from midl_autok.store import Store, StudyRecord

__all__ = [
    "ChromeNotFoundError",
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

# The best value each objective can reach, when the study has no ``ideal`` user attr:
# normalizes hypervolume to [0, 1] so studies on different models compare.
IDEAL = {
    "val_accuracy": 1.0,
    "inference_flops": 0.0,
    "inference_flops_ratio": 0.0,
    "training_flops": 0.0,
    "active_fraction": 0.0,
}
X_METRIC = "inference_flops_ratio"
Y_METRIC = "val_accuracy"


class ReportError(UserError):
    """A report cannot be built from what was asked (no such study, nothing completed...)."""


class ChromeNotFoundError(ReportError):
    """A static image was asked for but kaleido finds no Chrome/Chromium to render it."""


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial as the report sees it."""

    number: int
    values: tuple[float, ...]
    metrics: dict[str, Any]
    schedule: KSchedule | None
    mlflow_run_id: str | None
    start: datetime | None
    complete: datetime | None
    feasible: bool = True

    def coord(self, metric: str, study: StudyData) -> float:
        """The trial's value of ``metric``: a recorded metric, else the objective of that name."""
        value = self.metrics.get(metric)
        if value is None and metric in study.objectives:
            value = self.values[study.objectives.index(metric)]
        try:
            return float(value) if value is not None else math.nan
        except (TypeError, ValueError):
            return math.nan


@dataclass
class StudyData:
    """A study's completed trials, its Pareto front and its fixed reference point."""

    name: str
    agent: str
    directions: list[str]
    objectives: list[str]
    reference: list[float] | None
    ideal: list[float] | None  # best reachable objective values (hypervolume normalization)
    points: list[TrialPoint]  # completed trials, by trial number
    states: dict[str, int]  # trial count per state name (COMPLETE, FAIL, PRUNED, ...)
    first_start: datetime | None = None
    front: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    knee: int | None = None  # index into points

    @property
    def label(self) -> str:
        return f"{self.name} ({self.agent})" if self.agent else self.name

    def pareto_points(self) -> list[TrialPoint]:
        """Front points ordered by their FLOPs ratio (cheapest first)."""
        chosen = [p for p, on in zip(self.points, self.front, strict=True) if on]
        return sorted(chosen, key=lambda p: (p.coord(X_METRIC, self), p.number))


# -- reading studies ------------------------------------------------------------------------


def load_studies(source: Store | str, study_names: Sequence[str] | None = None) -> list[StudyData]:
    """Read the named studies (all of the store's studies when none are named).

    ``source`` is a :class:`~midl_autok.store.Store` or an Optuna storage URL. Studies are
    read through :mod:`midl_autok.store`, so fronts, feasibility and knees are the ones
    ``midl-autok pareto`` shows.
    """
    from midl_autok.store import Store, list_studies, load_study_record, open_store

    store = source if isinstance(source, Store) else open_store(storage=source)
    names = list(dict.fromkeys(study_names or list_studies(store)))
    if not names:
        raise ReportError(f"the store {store.root} holds no studies yet; run `midl-autok search`")
    return [_study_data(load_study_record(store, name)) for name in names]


def _study_data(record: StudyRecord) -> StudyData:
    feasible = {t.number for t in record.feasible()}
    front = record.front()
    on_front = {t.number for t in front}
    points = [_trial_point(record, t, t.number in feasible) for t in record.completed()]
    knee = None
    if front:
        best = front[knee_point(np.array([t.values for t in front]), record.directions)]
        knee = next(i for i, p in enumerate(points) if p.number == best.number)
    starts = [t.datetime_start for t in record.trials if t.datetime_start is not None]
    agent = record.attrs.get("agent")
    return StudyData(
        name=record.name,
        agent=agent if isinstance(agent, str) else "",
        directions=record.directions,
        objectives=record.objectives,
        reference=record.reference_point,
        ideal=_ideal(record.attrs, record.objectives),
        points=points,
        states=record.counts(),
        first_start=min(starts) if starts else None,
        front=np.array([p.number in on_front for p in points], dtype=bool),
        knee=knee,
    )


def _trial_point(
    record: StudyRecord, trial: optuna.trial.FrozenTrial, feasible: bool
) -> TrialPoint:
    schedule = None
    raw = trial.user_attrs.get("schedule")
    if isinstance(raw, dict):
        try:
            schedule = KSchedule.from_dict(raw, source=f"trial {trial.number}")
        except ScheduleError:
            schedule = None  # drawn without its heatmap
    run_id = trial.user_attrs.get("mlflow_run_id")
    return TrialPoint(
        number=trial.number,
        values=tuple(float(v) for v in trial.values),
        metrics=record.metrics(trial),
        schedule=schedule,
        mlflow_run_id=str(run_id) if run_id else None,
        start=trial.datetime_start,
        complete=trial.datetime_complete,
        feasible=feasible,
    )


def _ideal(attrs: dict[str, Any], objectives: list[str]) -> list[float] | None:
    ideal = attrs.get("ideal")
    if isinstance(ideal, list | tuple) and len(ideal) == len(objectives):
        return [float(x) for x in ideal]
    if all(o in IDEAL for o in objectives):
        return [IDEAL[o] for o in objectives]
    return None


# -- figures --------------------------------------------------------------------------------


def export_command(
    study: str, trial: int, *, store: str | None = None, storage: str | None = None
) -> str:
    """The shell command that exports one trial's schedule."""
    parts = ["midl-autok", "export", "--study", study, "--trial", str(trial)]
    if store:
        parts += ["--store", store]
    if storage:
        parts += ["--storage", storage]
    parts += ["-o", f"trial{trial}.json"]
    return shlex.join(parts)


ExportCommand = Callable[[str, int], str]


def _colors() -> list[str]:
    import plotly.colors

    return list(plotly.colors.qualitative.Plotly)


def _hover_data(
    study: StudyData, points: Sequence[TrialPoint], cmd: ExportCommand
) -> list[list[Any]]:
    return [
        [
            study.label,
            p.number,
            _fmt_int(p.metrics.get("inference_flops")),
            cmd(study.name, p.number),
            p.mlflow_run_id or "-",
            "" if p.feasible else " (infeasible)",
        ]
        for p in points
    ]


_HOVER = (
    "<b>%{customdata[0]}</b><br>trial %{customdata[1]}%{customdata[5]}<br>"
    f"{Y_METRIC} %{{y:.4f}}<br>FLOPs ratio %{{x:.4f}}<br>inference FLOPs %{{customdata[2]}}<br>"
    "MLflow run %{customdata[4]}<br>%{customdata[3]}<extra></extra>"
)


def front_figure(studies: Sequence[StudyData], *, export: ExportCommand | None = None) -> go.Figure:
    """Accuracy vs FLOPs ratio: every completed trial of every study, fronts drawn as lines.

    One ``scatter`` trace per study holds all its completed trials (``meta.kind == "trials"``),
    one more its Pareto front (``"front"``) and one its knee point (``"knee"``).
    """
    import plotly.graph_objects as go

    cmd = export or (lambda s, n: export_command(s, n))
    fig = go.Figure()
    colors = _colors()
    for i, study in enumerate(studies):
        color = colors[i % len(colors)]
        pts = study.points
        fig.add_trace(
            go.Scatter(
                x=[p.coord(X_METRIC, study) for p in pts],
                y=[p.coord(Y_METRIC, study) for p in pts],
                mode="markers",
                name=f"{study.label}: trials",
                legendgroup=study.name,
                marker={
                    "color": color,
                    "opacity": 0.45,
                    "size": 7,
                    "symbol": ["circle" if p.feasible else "x" for p in pts],
                },
                customdata=_hover_data(study, pts, cmd),
                hovertemplate=_HOVER,
                meta={"kind": "trials", "study": study.name},
            )
        )
        front = study.pareto_points()
        fig.add_trace(
            go.Scatter(
                x=[p.coord(X_METRIC, study) for p in front],
                y=[p.coord(Y_METRIC, study) for p in front],
                mode="lines+markers",
                line={"color": color, "shape": "hv", "width": 2},
                marker={"color": color, "size": 10, "line": {"width": 1, "color": "white"}},
                name=f"{study.label}: Pareto front",
                legendgroup=study.name,
                customdata=_hover_data(study, front, cmd),
                hovertemplate=_HOVER,
                meta={"kind": "front", "study": study.name},
            )
        )
        if study.knee is not None:
            knee = study.points[study.knee]
            fig.add_trace(
                go.Scatter(
                    x=[knee.coord(X_METRIC, study)],
                    y=[knee.coord(Y_METRIC, study)],
                    mode="markers",
                    marker={"color": color, "size": 18, "symbol": "star", "line": {"width": 1}},
                    name=f"{study.label}: knee",
                    legendgroup=study.name,
                    customdata=_hover_data(study, [knee], cmd),
                    hovertemplate=_HOVER,
                    meta={"kind": "knee", "study": study.name},
                )
            )
    fig.update_layout(
        title="Pareto fronts: validation accuracy vs inference FLOPs",
        xaxis_title="inference FLOPs / dense model's (lower is cheaper)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        hovermode="closest",
        legend={"orientation": "h", "y": -0.18},
        margin={"t": 60, "r": 20},
    )
    return fig


def hypervolume_figures(studies: Sequence[StudyData]) -> tuple[go.Figure, go.Figure]:
    """Hypervolume against completed trials and against elapsed wall-clock time.

    Trials count in the order they completed (parallel trials finish out of number order).
    When every objective has a known ideal value (accuracy 1, FLOPs 0), the hypervolume is
    divided by the area between the reference point and the ideal point, so studies with
    different models compare on one [0, 1] scale.
    """
    import plotly.graph_objects as go

    normalized = all(s.reference is None or s.ideal is not None for s in studies)
    unit = "fraction of the reference-to-ideal box" if normalized else "raw"
    by_trials, by_time = go.Figure(), go.Figure()
    colors = _colors()
    for i, study in enumerate(studies):
        if study.reference is None or len(study.directions) != 2 or not study.points:
            continue
        order = sorted(study.points, key=lambda p: (p.complete or datetime.max, p.number))
        values = np.array([p.values for p in order])
        ok = np.array([p.feasible and bool(np.isfinite(p.values).all()) for p in order])
        values[~ok] = np.nan
        hv = hypervolume_history(values, study.reference, study.directions, include=ok)
        if normalized and study.ideal is not None:
            box = float(np.prod(np.abs(np.subtract(study.ideal, study.reference))))
            hv = hv / box if box > 0 else hv
        numbers = [p.number for p in order]
        common = {
            "mode": "lines+markers",
            "line": {"color": colors[i % len(colors)], "shape": "hv"},
            "name": study.label,
            "customdata": numbers,
            "meta": {"kind": "hypervolume", "study": study.name},
        }
        by_trials.add_trace(
            go.Scatter(
                x=list(range(1, len(order) + 1)),
                y=hv.tolist(),
                hovertemplate="%{y:.4f} after %{x} trials (last: trial %{customdata})<extra>"
                + html.escape(study.label)
                + "</extra>",
                **common,
            )
        )
        t0 = study.first_start
        elapsed = [
            (p.complete - t0).total_seconds() if p.complete and t0 else math.nan for p in order
        ]
        by_time.add_trace(
            go.Scatter(
                x=elapsed,
                y=hv.tolist(),
                hovertemplate="%{y:.4f} at %{x:.1f} s (trial %{customdata})<extra>"
                + html.escape(study.label)
                + "</extra>",
                **common,
            )
        )
    for fig, xtitle, title in (
        (by_trials, "completed trials", "Hypervolume vs trials"),
        (by_time, "wall-clock time since the study started (s)", "Hypervolume vs time"),
    ):
        fig.update_layout(
            title=title,
            xaxis_title=xtitle,
            yaxis_title=f"hypervolume ({unit})",
            template="plotly_white",
            legend={"orientation": "h", "y": -0.25},
            margin={"t": 50, "r": 20},
        )
    return by_trials, by_time


def schedule_heatmap(schedule: KSchedule, *, title: str = "") -> go.Figure:
    """Layers x epochs picture of a schedule: colour = k / width, cell text = k."""
    import plotly.graph_objects as go

    labels = [f"{s.name} ({s.width})" for s in schedule.layers]
    widths = [[s.width] * schedule.epochs for s in schedule.layers]
    small = schedule.epochs <= 24 and len(schedule.layers) <= 12
    fig = go.Figure(
        go.Heatmap(
            z=schedule.fractions(),
            x=list(range(schedule.epochs)),
            y=labels,
            text=[list(row) for row in schedule.k],
            customdata=widths,
            texttemplate="%{text}" if small else None,
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            colorbar={"title": {"text": "k / width"}, "thickness": 12},
            hovertemplate="%{y}<br>epoch %{x}: k = %{text} of %{customdata} (%{z:.2f})"
            "<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 13}},
        xaxis_title="epoch",
        yaxis={"autorange": "reversed"},
        height=140 + 34 * len(schedule.layers),
        margin={"t": 56, "l": 10, "r": 10, "b": 40},
        template="plotly_white",
    )
    return fig


# -- the page -------------------------------------------------------------------------------


def pareto_table(studies: Sequence[StudyData], *, export: ExportCommand | None = None) -> str:
    """HTML table of every study's Pareto points (cheapest first; the knee is starred)."""
    cmd = export or (lambda s, n: export_command(s, n))
    head = (
        "study", "trial", "val accuracy", "test accuracy", "FLOPs ratio",
        "inference FLOPs", "active fraction", "MLflow run", "export",
    )  # fmt: skip
    rows = []
    for study in studies:
        knee = study.points[study.knee].number if study.knee is not None else None
        for p in study.pareto_points():
            cells = [
                html.escape(study.label),
                f"{p.number}{' ★ knee' if p.number == knee else ''}",
                _fmt(p.metrics.get("val_accuracy"), ".4f"),
                _fmt(p.metrics.get("test_accuracy"), ".4f"),
                _fmt(p.coord(X_METRIC, study), ".4f"),
                _fmt_int(p.metrics.get("inference_flops")),
                _fmt(p.metrics.get("active_fraction"), ".3f"),
                f"<code>{html.escape(p.mlflow_run_id or '-')}</code>",
                f"<code>{html.escape(cmd(study.name, p.number))}</code>",
            ]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return (
        f'<table id="pareto-table"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _summary_table(studies: Sequence[StudyData]) -> str:
    rows = []
    for s in studies:
        objectives = ", ".join(
            f"{o} ({d[:3]})" for o, d in zip(s.objectives, s.directions, strict=True)
        )
        states = ", ".join(f"{n.lower()} {c}" for n, c in sorted(s.states.items()))
        ref = ", ".join(f"{r:g}" for r in s.reference) if s.reference else "-"
        cells = [s.name, s.agent or "-", objectives, states, str(int(s.front.sum())), ref]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = ("study", "agent", "objectives", "trials", "Pareto points", "HV reference")
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    return f'<table id="studies"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


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
) -> str:
    """The report as one self-contained HTML page (plotly.js embedded; works offline).

    ``source`` is a store or an Optuna storage URL; ``study_names`` default to all its
    studies; ``export`` builds the export command shown for a trial (default
    :func:`export_command`); ``studies`` skips reading when they are already loaded.
    """
    from plotly.offline import get_plotlyjs

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
            f"<script>{get_plotlyjs()}</script></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p class='meta'>midl-autok {__version__} · generated {generated}</p>",
            _summary_table(data),
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

    fig = front_figure(studies)
    fig.update_layout(legend={"orientation": "v", "y": 1, "x": 1.02})
    try:
        png = kaleido.calc_fig_sync(
            fig,
            opts={"format": "png", "width": width, "height": height, "scale": scale},
            kopts={"mathjax": False},
        )
    except KaleidoNoChrome:
        raise ChromeNotFoundError(
            "--png needs Chrome or Chromium to render the image, but none was found: install "
            "one (e.g. apt-get install chromium, or run plotly_get_chrome), or point "
            "BROWSER_PATH at its executable"
        ) from None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return out


def write_report(
    path: str | Path,
    source: Store | str,
    study_names: Sequence[str] | None = None,
    *,
    png: str | Path | None = None,
    title: str | None = None,
    export: ExportCommand | None = None,
) -> Path:
    """Write the HTML report (atomically) and, with ``png``, a static image of the front."""
    studies = load_studies(source, study_names)
    page = build_report(source, title=title, export=export, studies=studies)
    if png is not None:
        write_front_png(studies, png)
    out = Path(path)
    write_atomic(out, page)
    return out


def _fmt(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def _fmt_int(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError, OverflowError):
        return "-"
