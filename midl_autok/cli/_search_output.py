"""What ``midl-autok search`` shows: the progress bar while it runs, the summary, the front
and (RL agents) where the policy is."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midl_autok.cli._app import stderr_console, stdout_console

if TYPE_CHECKING:
    from midl_autok.results.record import StudyRecord
    from midl_autok.search.session import SearchSession, SearchSummary
    from midl_autok.store import Store

__all__ = ["Progress", "front_table", "print_policy", "print_summary"]


def print_policy(summary: SearchSummary, store: Store) -> None:
    """Where an RL search's policy is, and how to train with it as a controller."""
    from midl_autok.results.record import load_study_record

    policy = load_study_record(store, summary.study).attrs.get("rl_policy")
    if not isinstance(policy, dict):
        return
    path = store.root / str(policy.get("path", ""))
    sweep = policy.get("sweep", {})
    values = sweep.get("values") or [None]
    choose = "" if values[0] is None else f" --{sweep.get('key', 'lam')} {values[0]:g}"
    experiment = policy.get("env", {}).get("spec", "")
    console = stdout_console()
    console.print(f"policy: {path}", highlight=False, soft_wrap=True)
    console.print(
        f"controller: midl-autok train {experiment} --controller {path}{choose}",
        highlight=False,
        soft_wrap=True,
    )


class Progress:
    """Rich progress bar on stderr: trials done, front size, hypervolume, last trial.

    When stderr is not a terminal (``nohup``, a batch job's log, CI) a bar never redraws, so
    each finished trial is also written as one plain line (with a failure's reason), and a
    long search shows its progress in the log while it runs."""

    def __init__(self, name: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]search[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("front {task.fields[front]}  HV {task.fields[hv]}  {task.fields[last]}"),
            TimeElapsedColumn(),
            console=stderr_console(),
            transient=False,
        )
        self.task = self.progress.add_task(name, total=None, front=0, hv="-", last="", start=False)

    def fields(self, session: SearchSession) -> dict[str, Any]:
        hv = session.normalized_hypervolume
        return {"front": session.front_size, "hv": "-" if hv is None else f"{hv:.4f}"}

    # the SearchCallback protocol

    def on_start(self, session: SearchSession, *, target: int, done: int) -> None:
        if done >= target > 0:
            # --trials counts the study's trials in all, not new ones: say so instead of "6/3"
            self.progress.console.print(
                f"midl-autok: study {session.study_name} already has {done} trial(s), and "
                f"--trials {target} counts them all: nothing new to run (--trials "
                f"{done + target} runs {target} more)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        self.progress.update(
            self.task,
            description=session.study_name,
            total=max(target, done),
            completed=done,
            **self.fields(session),
        )
        self.progress.start_task(self.task)
        self.progress.start()  # only now: setup errors print without a bar

    def on_trial_end(self, session: SearchSession, trial: Any, outcome: Any) -> None:
        from optuna.trial import TrialState

        from midl_autok.agents import SamplerAgent
        from midl_autok.results.confirmed import is_confirmation

        # RL agents: training or rollout; --confirm: a retraining of the front
        phase = trial.user_attrs.get("phase") or ("confirm" if is_confirmation(trial) else None)
        label = f"#{trial.number}" + (f" {phase}" if phase else "")
        reason = getattr(outcome, "fail_reason", None) or trial.user_attrs.get("fail_reason")
        if trial.state == TrialState.COMPLETE:
            m = outcome.metrics
            last = f"{label}: acc {m['val_accuracy']:.4f} FLOPs x{m['inference_flops_ratio']:.3f}"
        elif trial.state == TrialState.PRUNED:
            last = f"{label}: [yellow]stopped early[/]"
        else:
            last = f"{label}: [red]failed[/]"
        # a sampler's target counts completed trials; an external agent's plan, every episode;
        # the confirm phase, every retraining
        if isinstance(session.agent, SamplerAgent) and not is_confirmation(trial):
            self.progress.update(self.task, completed=session.counted_trials())
        else:
            self.progress.advance(self.task)
        fields = self.fields(session)
        self.progress.update(self.task, last=last, **fields)
        console = self.progress.console
        if not console.is_terminal:
            from rich.markup import escape

            task = self.progress.tasks[0]
            done = f"{int(task.completed)}" + ("" if task.total is None else f"/{int(task.total)}")
            why = f" ({escape(reason)})" if reason and trial.state != TrialState.COMPLETE else ""
            elapsed = datetime.timedelta(seconds=int(task.elapsed or 0))
            console.print(
                f"search {done}  {last}{why}  front {fields['front']}  HV {fields['hv']}  "
                f"{elapsed}",
                highlight=False,
                soft_wrap=True,
            )

    def on_confirm_start(self, session: SearchSession, *, total: int) -> None:
        """The confirm phase (``--confirm N``): the bar counts its retrainings from 0."""
        description = f"{session.study_name}: confirming the front"
        self.progress.update(self.task, description=description, total=total, completed=0)
        self.progress.console.print(
            f"midl-autok: retraining the front with more seeds: {total} confirmation "
            f"trial(s) (--confirm {session.spec.search.confirm})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def front_title(record: StudyRecord, pareto: dict[str, Any]) -> str:
    """The Pareto table's title from ``pareto`` (:func:`~midl_autok.results.files.pareto_summary`
    of ``record``): front size, hypervolume, the knee mark, and the completed trials left out
    because they are over the FLOPs budget (infeasible)."""
    completed = len(record.completed())
    hv = pareto["hypervolume_normalized"]
    over = completed - len(record.feasible())
    return (
        f"Pareto front of {record.name}: {len(pareto['points'])} of {completed} completed trials"
        + (f", normalized hypervolume {hv:.4f}" if hv is not None else "")
        + (f"; {over} over the FLOPs budget left out" if over else "")
        + ("  (* = knee)" if pareto["knee_trial"] is not None else "")
    )


def front_table(title: str, points: list[dict[str, Any]], knee: int | None = None) -> Any:
    """A rich table of Pareto points (knee marked)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    confirmed = any("confirm_seeds" in p for p in points)  # a study with --confirm N
    headers = ["trial", "val acc", "test acc", "inference FLOPs", "FLOPs ratio", "active"]
    if confirmed:
        headers += ["seeds", "val acc mean ± sd", "test acc mean ± sd"]
    for header in headers:
        table.add_column(header, justify="right")
    for p in points:
        mark = " *" if p["trial"] == knee else ""
        row = [
            f"{p['trial']}{mark}",
            _fmt(p.get("val_accuracy"), "{:.4f}"),
            _fmt(p.get("test_accuracy"), "{:.4f}"),
            _fmt(p.get("inference_flops"), "{:,.0f}"),
            _fmt(p.get("inference_flops_ratio"), "{:.3f}"),
            _fmt(p.get("active_fraction"), "{:.3f}"),
        ]
        if confirmed:
            row += [_fmt(p.get("confirm_seeds"), "{}")]
            row += [mean_sd(p.get(f"{m}_mean"), p.get(f"{m}_sd")) for m in _ACCURACIES]
        table.add_row(*row)
    return table


_ACCURACIES = ("val_accuracy", "test_accuracy")


def mean_sd(mean: Any, sd: Any) -> str:
    """``0.9712 ± 0.0031``, or ``-`` without a mean."""
    if not isinstance(mean, (int, float)):
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if isinstance(sd, (int, float)) else f"{mean:.4f}"


def _fmt(value: Any, pattern: str) -> str:
    return "-" if not isinstance(value, (int, float)) else pattern.format(value)


def print_summary(summary: SearchSummary, store: Store, *, overhead: bool = True) -> None:
    from midl_autok.results.files import pareto_summary
    from midl_autok.results.record import load_study_record

    console = stdout_console()
    record = load_study_record(store, summary.study)
    pareto = pareto_summary(record)
    console.print(front_table(front_title(record, pareto), summary.front, pareto["knee_trial"]))
    new = f"{summary.new_trials - summary.confirmations} new trial(s)"
    if summary.confirmations:
        new += f", {summary.confirmations} confirmation retraining(s) of the front"
    if summary.failed:
        new += f", {summary.failed} failed"
    if summary.pruned:
        new += f", {summary.pruned} stopped early (pruned)"
    per_trial = summary.overhead_per_trial_s if overhead else None
    timing = f" in {summary.wall_s:.1f} s"
    if per_trial is not None:
        timing += f" (tracking overhead {per_trial * 1000:.0f} ms/trial)"
    console.print(f"{new}{timing}")
    console.print(f"store: {store.root}", highlight=False, soft_wrap=True)
    if summary.files:
        console.print(f"pareto files: {summary.files[0].parent}", highlight=False, soft_wrap=True)
    console.print("dashboards:", highlight=False)
    for line in store.dashboard_commands():
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    store_arg = (
        ""
        if store.embedded_optuna and store.root == Path("midl_runs").absolute()
        else (
            f" --store {store.root}" if store.embedded_optuna else f" --storage {store.storage_url}"
        )
    )
    console.print(
        f"export: midl-autok export --study {summary.study}{store_arg} --pick knee "
        "-o schedule.json",
        highlight=False,
        soft_wrap=True,
    )
