"""Plotly figures of studies: fronts overlaid, hypervolume against trials and time, each
Pareto schedule as a layers x epochs picture of k, and the table of Pareto points."""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from midl_autok.pareto import hypervolume_history
from midl_autok.results.hypervolume import reference_box
from midl_autok.results.studies import X_METRIC, Y_METRIC, StudyData, TrialPoint

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from midl_autok.schedule import KSchedule

__all__ = [
    "ExportCommand",
    "export_command",
    "front_figure",
    "hypervolume_figures",
    "pareto_table",
    "schedule_heatmap",
    "summary_table",
]


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
        confirmed = [p for p in study.points if "confirm_seeds" in p.metrics]
        if confirmed:  # --confirm N: the mean over the seeds, +- one sd
            fig.add_trace(
                go.Scatter(
                    x=[p.coord(X_METRIC, study) for p in confirmed],
                    y=[p.metrics.get(f"{Y_METRIC}_mean") for p in confirmed],
                    error_y={
                        "type": "data",
                        "array": [p.metrics.get(f"{Y_METRIC}_sd", 0.0) for p in confirmed],
                        "visible": True,
                    },
                    mode="markers",
                    marker={"color": color, "size": 9, "symbol": "diamond-open"},
                    name=f"{study.label}: confirmed mean ± sd",
                    legendgroup=study.name,
                    customdata=_hover_data(study, confirmed, cmd),
                    hovertemplate=_HOVER.replace(f"{Y_METRIC} ", f"{Y_METRIC} mean ", 1),
                    meta={"kind": "confirmed", "study": study.name},
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
            box = reference_box(study.reference, study.ideal)
            hv = hv / box if box is not None else hv
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
            textfont={"size": 11},  # plotly's automatic size shrinks to ~5 px in small cells
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
        xaxis={"title": "epoch", "tickfont": {"size": 12}},
        yaxis={"autorange": "reversed", "tickfont": {"size": 12}},
        height=140 + 34 * len(schedule.layers),
        margin={"t": 56, "l": 10, "r": 10, "b": 40},
        template="plotly_white",
    )
    return fig


def pareto_table(studies: Sequence[StudyData], *, export: ExportCommand | None = None) -> str:
    """HTML table of every study's Pareto points (cheapest first; the knee is starred)."""
    cmd = export or (lambda s, n: export_command(s, n))
    head: tuple[str, ...] = (
        "study", "trial", "val accuracy", "test accuracy", "FLOPs ratio",
        "inference FLOPs", "active fraction", "MLflow run", "export",
    )  # fmt: skip
    confirmed = any("confirm_seeds" in p.metrics for s in studies for p in s.points)
    if confirmed:  # --confirm N: mean and sd over the seeds
        head = (*head[:4], "seeds", "val accuracy mean ± sd", "test accuracy mean ± sd", *head[4:])
    rows = []
    for study in studies:
        knee = study.points[study.knee].number if study.knee is not None else None
        for p in study.pareto_points():
            over = [
                _fmt(p.metrics.get("confirm_seeds"), ".0f"),
                *(_mean_sd(p.metrics, m) for m in ("val_accuracy", "test_accuracy")),
            ]
            cells = [
                html.escape(study.label),
                f"{p.number}{' ★ knee' if p.number == knee else ''}",
                _fmt(p.metrics.get("val_accuracy"), ".4f"),
                _fmt(p.metrics.get("test_accuracy"), ".4f"),
                *(over if confirmed else []),
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


def summary_table(studies: Sequence[StudyData]) -> str:
    """HTML table: one row per study (agent, objectives, trial states, front size, reference)."""
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


def _fmt(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else format(number, spec)


def _mean_sd(metrics: dict[str, Any], name: str) -> str:
    mean, sd = _fmt(metrics.get(f"{name}_mean"), ".4f"), _fmt(metrics.get(f"{name}_sd"), ".4f")
    return "-" if mean == "-" else f"{mean} ± {sd}"


def _fmt_int(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError, OverflowError):
        return "-"
