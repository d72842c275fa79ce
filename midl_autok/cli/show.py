"""``midl-autok show``: one trial of a study -- its state, values, metrics and k per layer and
epoch."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midl_autok.cli._app import app, chosen_study, stdout_console
from midl_autok.cli.search import StorageOpt, StoreOpt, StudyOpt

if TYPE_CHECKING:
    from midl_autok.schedule import KSchedule
    from midl_autok.store import StudyRecord

#: Trial user attrs shown as the schedule table or the values, not as attributes.
_SCHEDULE_ATTR = "schedule"


@app.command()
def show(
    trial_number: Annotated[
        int,
        typer.Argument(
            metavar="TRIAL",
            help="Trial number (`midl-autok pareto` and the report show them).",
            show_default=False,
        ),
    ],
    study: StudyOpt = None,
    store: StoreOpt = None,
    storage: StorageOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the trial as one JSON object on stdout.")
    ] = False,
) -> None:
    """One trial: its state, objective values, metrics, and the k of each layer at each
    epoch (a layers x epochs table). Without --study: the latest study of the store."""
    from midl_autok.store import load_study_record, open_store

    opened = open_store(store, storage=storage)
    opened.require_studies()
    record = load_study_record(opened, chosen_study(opened, study))
    trial = _trial(record, trial_number)
    schedule = _schedule(record, trial)
    if json_out:
        print(json.dumps(trial_dict(record, trial), indent=2, default=str))
        return
    _print_trial(record, trial, schedule)


def _trial(record: StudyRecord, number: int) -> Any:
    """The trial numbered ``number``; an unknown number is one line naming the range."""
    from midl_autok.store import StoreError

    by_number = {t.number: t for t in record.trials}
    if number in by_number:
        return by_number[number]
    if not by_number:
        raise StoreError(f"study {record.name} has no trials yet")
    numbers = sorted(by_number)
    raise StoreError(
        f"study {record.name} has no trial {number}; its trials are numbered "
        f"{numbers[0]}-{numbers[-1]}"
    )


def _schedule(record: StudyRecord, trial: Any) -> KSchedule | None:
    from midl_autok.schedule import KSchedule

    raw = trial.user_attrs.get(_SCHEDULE_ATTR)
    if raw is None:
        return None
    return KSchedule.from_dict(raw, source=f"study {record.name} trial {trial.number}")


def trial_dict(record: StudyRecord, trial: Any) -> dict[str, Any]:
    """The trial as ``show --json`` prints it."""
    metrics = record.metrics(trial)
    values = (
        None if trial.values is None else dict(zip(record.objectives, trial.values, strict=False))
    )
    attrs = {k: v for k, v in trial.user_attrs.items() if k != _SCHEDULE_ATTR and k not in metrics}
    return {
        "study": record.name,
        "trial": trial.number,
        "state": trial.state.name,
        "values": values,
        "directions": dict(zip(record.objectives, record.directions, strict=False)),
        "metrics": metrics,
        "attrs": attrs,
        "params": dict(trial.params),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
        "schedule": trial.user_attrs.get(_SCHEDULE_ATTR),
    }


def _number(key: str, value: float) -> str:
    if "flops" in key and "ratio" not in key:
        return f"{value:,.0f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_trial(record: StudyRecord, trial: Any, schedule: KSchedule | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    head = f"study {escape(record.name)}, trial {trial.number}: {trial.state.name}"
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        head += f" ({seconds:.1f} s)"
    console.print(head, highlight=False, soft_wrap=True)
    if trial.values is not None:
        values = ", ".join(
            f"{name} {_number(name, v)} ({d})"
            for name, v, d in zip(record.objectives, trial.values, record.directions, strict=False)
        )
        console.print(f"values: {values}", highlight=False, soft_wrap=True)
    data = trial_dict(record, trial)
    for key, value in sorted(data["attrs"].items()):
        console.print(f"{key}: {escape(str(value))}", highlight=False, soft_wrap=True)
    if data["metrics"]:
        table = Table(title="metrics", title_justify="left", show_header=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in sorted(data["metrics"].items()):
            table.add_row(key, _number(key, value))
        console.print(table)
    if schedule is not None:
        console.print(k_table(schedule, width=console.width))


def k_table(schedule: KSchedule, *, width: int) -> Any:
    """k of each layer (rows) at each epoch (columns); epochs as rows when the columns would
    not fit ``width``."""
    from rich.table import Table

    digits = max(len(str(k)) for row in schedule.k for k in row)
    name_width = max(len(s.name) for s in schedule.layers) + len(" (d 00000)")
    title = f"k per layer and epoch ({schedule.epochs} epochs)"
    if name_width + 4 + schedule.epochs * (max(digits, 2) + 3) <= width:
        table = Table(title=title, title_justify="left")
        table.add_column("layer (width)")
        for epoch in range(schedule.epochs):
            table.add_column(str(epoch), justify="right")
        for spec, row in zip(schedule.layers, schedule.k, strict=True):
            table.add_row(f"{spec.name} ({spec.width})", *(str(k) for k in row))
        return table
    table = Table(title=title, title_justify="left")
    table.add_column("epoch", justify="right")
    for spec in schedule.layers:
        table.add_column(f"{spec.name} ({spec.width})", justify="right")
    for epoch in range(schedule.epochs):
        table.add_row(str(epoch), *(str(row[epoch]) for row in schedule.k))
    return table
