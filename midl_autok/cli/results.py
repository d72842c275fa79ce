"""``midl-autok studies``, ``pareto`` and ``export``: read search results from a store."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from midl_autok.cli._app import ThreadsOpt, app, check_threads, chosen_study, stdout_console
from midl_autok.cli._search_output import front_table, front_title, mean_sd
from midl_autok.cli.search import StorageOpt, StoreOpt, StudyOpt

if TYPE_CHECKING:
    from midl_autok.results.record import StudyRecord
    from midl_autok.store import Store
    from midl_autok.trainer import TrainResult

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]


def _open(store: Path | None, storage: str | None) -> Store:
    from midl_autok.store import open_store

    opened = open_store(store, storage=storage)
    opened.require_studies()
    return opened


def shown(text: str) -> str:
    """``text`` safe for a terminal: control characters (newlines, ANSI escapes) as their
    Python escapes, e.g. a study name made before names were checked."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@app.command()
def studies(
    store: StoreOpt = None,
    storage: StorageOpt = None,
    json_out: JsonOpt = False,
    delete: Annotated[
        str | None,
        typer.Option(
            "--delete",
            metavar="NAME",
            help="Delete study NAME: its Optuna trials, its MLflow experiment and runs (with "
            "their artifacts), its reports/ folder and RL policy. Asks first unless --yes.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete without asking (scripts).")
    ] = False,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare",
            metavar="A B",
            help="Compare studies A and B: normalized HV at equal trial counts, how much of "
            "each front the other dominates, and which is more accurate per FLOPs-ratio band.",
        ),
    ] = None,
) -> None:
    """List the store's studies: agent, space, seed, trials, front size, normalized
    hypervolume (HV) and best validation accuracy. --delete NAME deletes one; --compare A B
    compares two."""
    from midl_autok.results.record import list_studies, load_study_record

    opened = _open(store, storage)
    if delete is not None:
        _delete(opened, delete, yes=yes)
        return
    if compare is not None:
        from midl_autok.cli._compare import print_comparison

        print_comparison(opened, *compare, json_out=json_out)
        return
    rows = []
    for name in list_studies(opened):
        record = load_study_record(opened, name)
        confirmations = record.confirmations()
        counts = record.counts()  # the search's trials: confirmations are counted apart
        for t in confirmations:
            counts[t.state.name] -= 1
        best = max(
            (t.user_attrs.get("val_accuracy", float("-inf")) for t in record.feasible()),
            default=None,
        )
        rows.append(
            {
                "study": name,
                "experiment": record.get("experiment", None),
                "agent": record.get("agent", None),
                "space": record.get("space", None),
                "seed": record.get("seed", None),
                "complete": counts.get("COMPLETE", 0),
                "failed": counts.get("FAIL", 0),
                "confirmations": sum(t.state.name == "COMPLETE" for t in confirmations),
                "confirmed": len(record.confirmed()),
                "running": counts.get("RUNNING", 0),
                "front": len(record.front()),
                "hypervolume": record.hypervolume(),
                "hypervolume_normalized": record.normalized_hypervolume(),
                "best_val_accuracy": best,
            }
        )
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"studies in {opened.root}", title_justify="left")
    table.add_column("study", overflow="fold", min_width=20)
    headers = ("agent", "space", "seed", "done", "failed", "front", "confirmed", "HV", "best acc")
    for header in headers:
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        hv = r["hypervolume_normalized"]
        table.add_row(
            Text(shown(r["study"])),
            str(r["agent"] or "-"),
            str(r["space"] or "-"),
            "-" if r["seed"] is None else str(r["seed"]),
            str(r["complete"]),
            str(r["failed"]),
            str(r["front"]),
            str(r["confirmed"] or "-"),
            "-" if hv is None else f"{hv:.4f}",
            "-" if r["best_val_accuracy"] is None else f"{r['best_val_accuracy']:.4f}",
        )
    stdout_console().print(table)
    if not rows:
        stdout_console().print("no studies yet; run `midl-autok search`")


def _delete(store: Store, name: str, *, yes: bool) -> None:
    import sys

    from midl_autok.errors import UserError
    from midl_autok.results.record import list_studies, load_study_record
    from midl_autok.store import delete_study

    if name not in list_studies(store):
        load_study_record(store, name)  # the unknown-study error, with a "did you mean"
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(
                f"studies --delete asks before deleting, but stdin is not a terminal; add "
                f"--yes to delete study {shown(name)!r} in {store.root}"
            )
        trials = len(load_study_record(store, name).trials)
        typer.confirm(
            f"delete study {shown(name)!r} ({trials} trials), its MLflow runs and reports "
            f"from {store.root}?",
            abort=True,
            err=True,
        )
    for line in delete_study(store, name):
        print(f"deleted {shown(line)}")


@app.command()
def pareto(
    study: StudyOpt = None,
    store: StoreOpt = None,
    storage: StorageOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The Pareto front of a study (feasible trials only), cheapest first; * marks the knee."""
    from midl_autok.results.files import pareto_summary
    from midl_autok.results.record import load_study_record

    opened = _open(store, storage)
    record = load_study_record(opened, chosen_study(opened, study))
    summary = pareto_summary(record)
    if json_out:
        print(json.dumps(summary["points"], indent=2))
        return
    title = front_title(record, summary)
    stdout_console().print(front_table(title, summary["points"], summary["knee_trial"]))
    if not summary["points"]:
        stdout_console().print(_no_front(record))


def _no_front(record: StudyRecord) -> str:
    if not record.completed():
        return f"study {record.name!r} has no completed trials yet"
    return f"no completed trial meets the study's FLOPs budget ({record.get('flops_budget')})"


@app.command()
def export(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Schedule file to write: .json, or .yaml/.yml for YAML."
        ),
    ],
    study: StudyOpt = None,
    store: StoreOpt = None,
    storage: StorageOpt = None,
    pick: Annotated[
        str,
        typer.Option(
            "--pick",
            help="Which Pareto trial: knee (the best trade-off), max-accuracy or min-flops.",
        ),
    ] = "knee",
    max_flops_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-flops-ratio",
            help="Consider only trials with inference FLOPs <= R x the dense model's.",
            show_default=False,
        ),
    ] = None,
    trial_number: Annotated[
        int | None,
        typer.Option(
            "--trial",
            help="Export this completed trial instead of a --pick (any trial, on the front or "
            "not; `midl-autok report` shows each point's number).",
            show_default=False,
        ),
    ] = None,
    model_out: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Also replay the schedule (its experiment and seed) and write the trained "
            "model at its final k for inference: a torch.export program (.pt2), then time "
            "it against the dense model (table printed, MODEL.latency.json written).",
            show_default=False,
        ),
    ] = None,
    latency: Annotated[
        bool,
        typer.Option(
            "--latency/--no-latency",
            help="With --model: measure MID-L eval and the exported program against the same "
            "architecture built dense, at batch 1, 16 and 256.",
        ),
    ] = True,
    portable: Annotated[
        bool,
        typer.Option(
            "--portable",
            help="With --model: write the masked dense program, which runs with torch alone "
            "(no midl-autok, any machine) at dense cost, instead of the one that calls the "
            "sparse kernel (op midl_autok::midl_eval; needs midl-autok where it runs).",
        ),
    ] = False,
    threads: ThreadsOpt = 1,
) -> None:
    """Write a Pareto schedule (KSchedule JSON/YAML with metrics and provenance).

    `midl-autok train --schedule FILE` replays it: same experiment, same seed, same
    validation accuracy on CPU. With --model, the replayed model is written too.
    """
    from midl_autok.errors import SpecError, unknown_name
    from midl_autok.results.picks import PICKS
    from midl_autok.results.record import load_study_record

    if pick not in PICKS:
        raise unknown_name("--pick", pick, PICKS, error=SpecError)
    check_threads(threads)
    if max_flops_ratio is not None and not (math.isfinite(max_flops_ratio) and max_flops_ratio > 0):
        raise SpecError(f"--max-flops-ratio must be a number > 0, but got {max_flops_ratio}")
    if output.exists() and output.is_dir():
        raise SpecError(f"-o {output} is a folder; give a file name such as schedule.json")
    opened = _open(store, storage)
    record = load_study_record(opened, chosen_study(opened, study))
    if trial_number is not None:
        done = {t.number: t for t in record.completed()}
        if trial_number not in done:
            shown = sorted(done)
            numbers = ", ".join(str(n) for n in shown[:20]) or "(none)"
            if len(shown) > 20:
                numbers += f", ... ({len(shown)} in all, up to {shown[-1]})"
            raise SpecError(
                f"study {record.name} has no completed trial {trial_number}; completed: {numbers}"
            )
        trial, pick = done[trial_number], f"trial {trial_number}"
    else:
        trial = record.pick(pick, max_flops_ratio=max_flops_ratio)
    schedule = record.schedule(trial, pick=pick)
    try:
        schedule.save(output)
    except OSError as exc:
        raise SpecError(f"cannot write {output}: {exc.strerror or exc}") from None
    m: dict[str, Any] = schedule.metrics
    seeds = m.get("confirm_seeds")
    over = (
        f" (mean of {seeds} seeds {mean_sd(m.get('val_accuracy_mean'), m.get('val_accuracy_sd'))})"
        if seeds
        else ""
    )
    stdout_console().print(
        f"wrote {output}: study {record.name}, trial {trial.number} ({pick}): "
        f"val acc {m.get('val_accuracy', float('nan')):.4f}{over}, "
        f"inference FLOPs x{m.get('inference_flops_ratio', float('nan')):.3f} of dense\n"
        f"replay: midl-autok train --schedule {output}",
        highlight=False,
        soft_wrap=True,
    )
    if model_out is not None:
        import torch

        from midl_autok.deploy import export_schedule_model

        torch.set_num_threads(threads)  # as `search` and `train`: 1 by default

        written, result = export_schedule_model(schedule, model_out, portable=portable)
        stdout_console().print(
            f"wrote {written}: the replayed model at its final k (test acc "
            f"{result.metrics['test_accuracy']:.4f}); load it with "
            "midl_autok.deploy.load_model(path)",
            highlight=False,
            soft_wrap=True,
        )
        if latency:
            _print_latency(result, written)


def _print_latency(result: TrainResult, written: Path) -> None:
    """Time the replayed model (and the program just written) against dense; print + JSON."""
    from midl_autok.deploy import example_input, latency_report, load_program
    from midl_autok.models import MIDLNet
    from midl_autok.schedule import write_atomic

    model = result.model.cpu()
    if not isinstance(model, MIDLNet):  # export_schedule_model trains a MID-L model
        raise TypeError(f"expected a MIDLNet, got {type(model).__name__}")
    program = load_program(written, trusted=True)  # the file this command just wrote
    report = latency_report(model, example=example_input(model), exported=program)
    sidecar = written.with_name(written.name + ".latency.json")
    write_atomic(sidecar, json.dumps({k: v for k, v in report.items() if k != "markdown"}))
    from rich.table import Table

    table = Table(
        title=f"latency, median ms per call ({report['threads']} torch thread(s), "
        f"{report['device']}; dense = the same architecture with nn.Linear; speed-up = dense "
        "ms / ms, above 1x is faster than dense)",
        title_justify="left",
    )
    exported = any("exported_ms" in r for r in report["rows"])
    headers = ["batch", "dense ms", "MID-L ms", "MID-L speed-up"]
    headers += ["exported ms", "exported speed-up"] if exported else []
    for header in headers:
        table.add_column(header, justify="right")
    for r in report["rows"]:
        cells = [str(r["batch"]), f"{r['dense_ms']:.3f}", f"{r['midl_ms']:.3f}"]
        cells.append(_speedup(r["midl_speedup"]))
        if exported:
            cells += [f"{r['exported_ms']:.3f}", _speedup(r["exported_speedup"])]
        table.add_row(*cells)
    console = stdout_console()
    console.print(table)
    console.print(f"wrote {sidecar}", highlight=False, soft_wrap=True)


def _speedup(value: float) -> str:
    """``1.42x`` in green when faster than dense, red when slower."""
    colour = "green" if value >= 1 else "red"
    return f"[{colour}]{value:.2f}x[/]"
