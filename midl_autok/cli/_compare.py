"""``midl-autok studies --compare A B``: the tables of :mod:`midl_autok.results.compare`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from midl_autok.cli._app import stdout_console

if TYPE_CHECKING:
    from midl_autok.store import Store

__all__ = ["print_comparison"]


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def print_comparison(store: Store, a: str, b: str, *, json_out: bool = False) -> None:
    """Print the comparison of studies ``a`` and ``b`` (tables, or JSON on stdout)."""
    from rich.table import Table
    from rich.text import Text

    from midl_autok.errors import UserError
    from midl_autok.results.compare import compare_studies
    from midl_autok.results.record import load_study_record

    if a == b:
        raise UserError(f"studies --compare needs two different studies, but got {a!r} twice")
    data = compare_studies(load_study_record(store, a), load_study_record(store, b))
    if json_out:
        print(json.dumps(data, indent=2))
        return
    console = stdout_console()
    for name in (a, b):
        if data["values"][name] != "single runs":
            console.print(
                Text(
                    f"{name}: its front by the confirmed means over its seeds; the trial "
                    "counts are its search trials (not its confirmation retrainings)"
                )
            )
    hv = Table(title="normalized hypervolume after the first N trials", title_justify="left")
    for header in ("trials", a, b):
        hv.add_column(Text(header), justify="right")
    for row in data["hypervolume_normalized"]:
        hv.add_row(str(row["trials"]), _cell(row[a]), _cell(row[b]))
    console.print(hv)
    for name, other in ((a, b), (b, a)):
        d = data["front_dominance"][name]
        console.print(
            Text(
                f"{d['dominated_by_other']} of the {d['front']} front points of {name} are "
                f"dominated by {other}'s front (val accuracy vs inference-FLOPs ratio)"
            )
        )
    where = Table(title="best val accuracy on the front, by FLOPs ratio", title_justify="left")
    for header in ("FLOPs ratio", a, b, "better"):
        where.add_column(Text(header), justify="right")
    for row in data["by_flops_ratio"]:
        where.add_row(row["flops_ratio"], _cell(row[a]), _cell(row[b]), Text(row["better"]))
    console.print(where)
