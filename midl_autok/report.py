"""The HTML report, now :mod:`midl_autok.results.report` (this name stays importable)."""

from midl_autok.results.figures import (
    export_command,
    front_figure,
    hypervolume_figures,
    pareto_table,
    schedule_heatmap,
)
from midl_autok.results.report import build_report, write_front_png, write_report
from midl_autok.results.studies import (
    ChromeNotFoundError,
    ReportError,
    StudyData,
    TrialPoint,
    load_studies,
)

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
