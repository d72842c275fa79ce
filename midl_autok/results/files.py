"""The Pareto files of a study: ``pareto.json``, ``pareto.csv`` and ``pareto.html``.

A search writes them to ``reports/<study>/`` (and its MLflow parent run) when it ends with
new trials; the pages there load the store's one copy of plotly.js,
``reports/plotly-<version>.min.js`` (:func:`shared_plotlyjs`), so they stay light and open
offline;
``midl-autok pareto --json`` prints :func:`pareto_summary`. The figure in ``pareto.html`` is
the report's front figure (:func:`midl_autok.results.figures.front_figure`) for this one study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midl_autok.results.record import StudyRecord

__all__ = ["pareto_summary", "plotly_script", "shared_plotlyjs", "write_pareto_files"]


def pareto_summary(record: StudyRecord) -> dict[str, Any]:
    """The Pareto front of a study as JSON data."""
    import numpy as np

    from midl_autok import pareto

    front = record.front()
    knee = None
    if front and record.confirmed():  # the knee of the confirmed means (the pick's)
        knee = record.pick("knee")
    elif front:
        knee = front[pareto.knee_point(np.array([t.values for t in front]), record.directions)]
    extra = {}
    if record.confirmations():
        extra["confirmed_trials"] = sorted(record.confirmed())
    return {
        "study": record.name,
        "experiment": record.get("experiment", None),
        "agent": record.get("agent", None),
        "space": record.get("space", None),
        "objectives": record.objectives,
        "directions": record.directions,
        "reference_point": record.reference_point,
        "flops_budget": record.get("flops_budget", None),
        "trials": record.counts(),
        "hypervolume": record.hypervolume(),
        "hypervolume_normalized": record.normalized_hypervolume(),
        "knee_trial": None if knee is None else knee.number,
        "points": [
            {**record.point(t), "knee": knee is not None and t.number == knee.number} for t in front
        ],
        **extra,
    }


def write_pareto_files(
    record: StudyRecord, folder: Path, *, plotlyjs: str | bool = True
) -> list[Path]:
    """Write ``pareto.json``, ``pareto.csv`` and ``pareto.html`` for a study into ``folder``
    (atomically); ``plotlyjs`` is plotly's ``include_plotlyjs`` (True: self-contained)."""
    import csv
    import io

    from midl_autok.results.figures import export_command, front_figure
    from midl_autok.results.studies import study_data
    from midl_autok.schedule import write_atomic

    summary = pareto_summary(record)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "pareto.json", folder / "pareto.csv", folder / "pareto.html"]
    write_atomic(paths[0], json.dumps(summary, indent=2, default=_json_default) + "\n")
    buf = io.StringIO()
    columns = [*summary["points"][0].keys()] if summary["points"] else ["trial"]
    writer = csv.DictWriter(buf, fieldnames=[*columns, "knee"], lineterminator="\n")
    writer.writeheader()
    for point in summary["points"]:
        writer.writerow({**point, "knee": int(point["trial"] == summary["knee_trial"])})
    write_atomic(paths[1], buf.getvalue())
    study = study_data(record)
    fig = front_figure([study], export=export_command)
    hv = summary["hypervolume_normalized"]
    front, completed = int(study.front.sum()), len(study.points)
    title = f"{record.name}: {front} Pareto trials of {completed} completed"
    if hv is not None:
        title += f" (normalized hypervolume {hv:.4f})"
    fig.update_layout(title=title)
    write_atomic(paths[2], fig.to_html(include_plotlyjs=plotlyjs, full_html=True))
    return paths


def shared_plotlyjs(folder: Path) -> Path:
    """``folder/plotly-<version>.min.js``, written (atomically) unless it is already there:
    the one copy of plotly.js the pages of a store load (~4.7 MB, instead of one per page)."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    from midl_autok.schedule import write_atomic

    path = folder / f"plotly-{get_plotlyjs_version()}.min.js"
    text = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(text.encode("utf-8")):
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    return path


def plotly_script(plotlyjs: str | bool) -> str:
    """The ``<script>`` that gives a page plotly.js, as plotly's ``include_plotlyjs``: True
    embeds it, ``"cdn"`` loads it from plotly's CDN, a string ending in ``.js`` loads that
    URL or relative path, False gives none."""
    import html

    from plotly.io._utils import plotly_cdn_url
    from plotly.offline import get_plotlyjs

    if plotlyjs is True:
        return f"<script>{get_plotlyjs()}</script>"
    if plotlyjs == "cdn":
        return f'<script charset="utf-8" src="{plotly_cdn_url()}"></script>'
    if isinstance(plotlyjs, str) and plotlyjs.endswith(".js"):
        return f'<script charset="utf-8" src="{html.escape(plotlyjs)}"></script>'
    return ""


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
