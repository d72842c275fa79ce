"""The read side of a search: what a store's studies hold, and the files made from them.

* :mod:`~midl_autok.results.record`: :class:`StudyRecord`, :func:`load_study_record`,
  :func:`list_studies` (one study as the search wrote it);
* :mod:`~midl_autok.results.picks`: one Pareto trial by ``knee``, ``max-accuracy`` or
  ``min-flops``;
* :mod:`~midl_autok.results.hypervolume` and :mod:`~midl_autok.results.feasibility`: the one
  copy of the normalized-hypervolume and feasibility rules;
* :mod:`~midl_autok.results.files`: ``pareto.{json,csv,html}``;
* :mod:`~midl_autok.results.studies`, :mod:`~midl_autok.results.figures`,
  :mod:`~midl_autok.results.report`: the HTML report of one or more studies.

Names load on first use (no Optuna, plotly or MLflow import until then). Nothing here
writes to a study.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from midl_autok._lazy import lazy_getattr

__all__ = [
    "PICKS",
    "StudyRecord",
    "build_report",
    "hypervolume",
    "is_feasible",
    "list_studies",
    "load_study_record",
    "normalized_hypervolume",
    "pareto_summary",
    "pick",
    "write_pareto_files",
    "write_report",
]

_EXPORTS = {
    "StudyRecord": "midl_autok.results.record",
    "list_studies": "midl_autok.results.record",
    "load_study_record": "midl_autok.results.record",
    "PICKS": "midl_autok.results.picks",
    "pick": "midl_autok.results.picks",
    "hypervolume": "midl_autok.results.hypervolume",
    "normalized_hypervolume": "midl_autok.results.hypervolume",
    "is_feasible": "midl_autok.results.feasibility",
    "pareto_summary": "midl_autok.results.files",
    "write_pareto_files": "midl_autok.results.files",
    "build_report": "midl_autok.results.report",
    "write_report": "midl_autok.results.report",
}

if TYPE_CHECKING:
    from midl_autok.results.feasibility import is_feasible
    from midl_autok.results.files import pareto_summary, write_pareto_files
    from midl_autok.results.hypervolume import hypervolume, normalized_hypervolume
    from midl_autok.results.picks import PICKS, pick
    from midl_autok.results.record import StudyRecord, list_studies, load_study_record
    from midl_autok.results.report import build_report, write_report


__getattr__ = lazy_getattr(__name__, _EXPORTS)
