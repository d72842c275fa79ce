"""The typer application and the helpers every command shares."""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from midl_autok import __version__

if TYPE_CHECKING:
    from typer import _click as click  # the click that typer runs on (vendored)

    from midl_autok.spec import ExperimentSpec
    from midl_autok.store import Store


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM stopped a command. Raised in place of the ``KeyboardInterrupt`` that
    typer would turn into a silent exit status 130; :func:`midl_autok.cli.main` prints the
    one line (with the note of :func:`on_interrupt`) and exits 128 + the signal."""


def _metavar(param: click.Parameter) -> str:
    """What ``--help`` shows after an option: nothing for a flag, N for an integer, X for a
    number, else the option's long name in capitals (typer shows ``<bool>``, ``<str>``)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    descriptor = getattr(param, "type_descriptor", None)  # typer's; click's: param.type
    kind = getattr(descriptor, "annotation", None) or getattr(param, "type", None)
    if kind is int or str(getattr(kind, "name", "")).startswith("integer"):
        return "N"
    if kind is float or str(getattr(kind, "name", "")).startswith("float"):
        return "X"
    longest = max(param.opts, key=len) if param.opts else str(param.name)
    return longest.lstrip("-").replace("-", "_").upper()


def _with_metavars(params: Iterable[click.Parameter]) -> None:
    for param in params:
        if param.param_type_name == "option" and param.metavar is None:
            param.metavar = _metavar(param)
        elif param.param_type_name == "argument":
            if param.metavar is None:
                param.metavar = str(param.name).upper()  # EXPERIMENT, as the help text says
            param.display_type_rich = _no_type  # type: ignore[attr-defined]  # not <str>


def _no_type(ctx: click.Context) -> None:
    return None


class _Group(TyperGroup):
    """The root command: options get meaningful metavars (:func:`_metavar`) unless they name
    one, and an interrupted command raises :class:`Interrupted`."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        _with_metavars(params)
        return params

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _with_metavars(command.get_params(ctx))  # --help included (built on first use)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise Interrupted from exc


app = typer.Typer(
    name="midl-autok",
    cls=_Group,
    help=(
        "Search per-layer, per-epoch Top-k schedules for MID-L networks, record every trial, "
        "and export the schedule you want."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal width
)


def _version(value: bool) -> None:
    if value:
        print(f"midl-autok {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """midl-autok: Top-k schedule search for MID-L networks."""


# Options shared by commands that take an experiment (train, search, ...).
ExperimentArg = Annotated[
    str | None,
    typer.Argument(
        help="Experiment: a shipped name (see `midl-autok experiments`) or a YAML file. "
        "Default: digits-mlp.",
        show_default=False,
    ),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        "-e",
        metavar="NAME|FILE",
        help="Same as the EXPERIMENT argument.",
        show_default=False,
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        metavar="NAME",
        help="Dataset instead of the experiment's: digits, mnist1d, synthetic, "
        "synthetic-tokens, mnist, fashion-mnist, cifar10, cifar100, svhn, csv.",
        show_default=False,
    ),
]
DataPathOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-path",
        metavar="PATH",
        help="Folder (mnist, fashion-mnist, cifar10/100, svhn) or file (csv) with the data. "
        "Nothing is downloaded.",
        show_default=False,
    ),
]
InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-from",
        metavar="FILE",
        help="Start from a dense model's weights (torch.save(state_dict) of the same "
        "architecture with variant dense, or its `export`; with --model-factory, of the "
        "factory's model with an nn.Linear where each MID-L layer is): MID-L layers take W, b, "
        "an SVD light path and a neutral gate (model.init_from).",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target", metavar="COL", help="Label column of a csv dataset.", show_default=False
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        min=1,
        metavar="N",
        help="Training epochs (default: the experiment's).",
        show_default=False,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        "--seed",
        min=0,
        metavar="S",
        help="Seeds data split, init, shuffling (and the search).",
        show_default=False,
    ),
]
GateRankOpt = Annotated[
    int | None,
    typer.Option(
        "--gate-rank",
        min=1,
        metavar="R",
        help="Rank of every MID-L layer's low-rank gate (default: the experiment's, 16 in the "
        "shipped ones).",
        show_default=False,
    ),
]
LightRankOpt = Annotated[
    int | None,
    typer.Option(
        "--light-rank",
        min=0,
        metavar="R",
        help="Rank of the light path that unselected neurons get (0: pure top-k gating; "
        "default: the experiment's). On MNIST-1D, 32-64 with a lower k beats 16 at 45%: see "
        "the README's benchmarks.",
        show_default=False,
    ),
]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads",
        metavar="N",
        help="Torch CPU threads. One is fastest for small models and keeps a shared machine "
        "responsive; raise it for large CNNs.",
    ),
]
MAX_THREADS = 1024
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda|cuda:N",
        help="auto (CUDA when available), cpu, cuda or cuda:N.",
    ),
]


def experiment_spec(
    positional: str | None,
    option: str | None,
    *,
    dataset: str | None = None,
    data_path: Path | None = None,
    target: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    gate_rank: int | None = None,
    light_rank: int | None = None,
    extra: dict[str, Any] | None = None,
    base: ExperimentSpec | None = None,
    factories: tuple[str | None, str | None] = (None, None),
) -> ExperimentSpec:
    """Load the experiment (or use ``base`` when none is named) and apply the overrides;
    ``factories``: ``--model-factory`` and ``--data-factory``."""
    from midl_autok.errors import SpecError
    from midl_autok.spec import load_spec

    if positional and option and positional != option:
        raise SpecError(
            f"two experiments given ({positional!r} and --experiment {option!r}); give one"
        )
    named = positional or option
    spec = base if base is not None and named is None else load_spec(named)
    changes: dict[str, Any] = {
        "training.epochs": epochs,
        "seed": seed,
        "model.gate_rank": gate_rank,
        "model.light_rank": light_rank,
    }
    if dataset is not None and dataset != spec.dataset.name:
        # A different dataset: the experiment's path, target and options belonged to the old one.
        old = spec.dataset.model_dump()
        changes["dataset"] = {**old, "name": dataset, "path": None, "target": None, "options": {}}
    if data_path is not None:
        changes["dataset.path"] = str(data_path)
    if target is not None:
        changes["dataset.target"] = target
    changes.update(extra or {})
    spec = spec.override(**{k: v for k, v in changes.items() if v is not None})
    if factories != (None, None):
        from midl_autok.cli._factory_options import with_factory_options

        given: dict[str, Any] = {"dataset": dataset, "data_path": data_path, "target": target}
        given.update(gate_rank=gate_rank, light_rank=light_rank)
        given["variant"] = (extra or {}).get("model.variant")
        spec = with_factory_options(spec, *factories, given)
    return spec


PIPE_WIDTH = 160  # columns of tables written to a file or a pipe (no COLUMNS given)


def _width(stream: Any) -> int | None:
    """rich's width for ``stream``: the terminal's (rich finds it) on a terminal or when
    ``COLUMNS`` says; else :data:`PIPE_WIDTH`. rich would use 80 there and crop the wider
    tables (``studies | tee log`` lost whole columns)."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS", "").strip() else PIPE_WIDTH


def stderr_console() -> Any:
    """rich's console on stderr (progress displays), see :func:`_stderr_console_class`."""
    return _stderr_console_class()(file=_StderrStream(), width=_width(sys.stderr))


class _StderrStream:
    """``sys.stderr`` (looked up at each write, as rich does: past the proxy a live display
    puts there) that knows whether its output ends a line."""

    at_line_start = True

    @staticmethod
    def _stream() -> Any:
        return getattr(sys.stderr, "rich_proxied_file", sys.stderr)

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return int(self._stream().write(text))

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, flush, encoding, ...
        return getattr(self._stream(), name)


@functools.cache
def _stderr_console_class() -> type:
    """A rich console that drops a print of nothing at the start of a line when stderr is not
    a terminal: rich's progress display prints one when it stops (to end its last line),
    which was a blank line before every error line (``train --device cuda`` without CUDA
    wrote two lines)."""
    from rich.console import Console

    class StderrConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            if objects or self.is_interactive or not getattr(self.file, "at_line_start", False):
                super().print(*objects, **kwargs)

    return StderrConsole


def stdout_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stdout, width=_width(sys.stdout))


# -- checks of option values -----------------------------------------------------------------


def check_threads(threads: int) -> int:
    """``--threads`` within 1..:data:`MAX_THREADS` (a SpecError otherwise)."""
    if not 1 <= threads <= MAX_THREADS:
        from midl_autok.errors import SpecError

        raise SpecError(f"--threads must satisfy 1 <= N <= {MAX_THREADS}, but got {threads}")
    return threads


def check_choice(flag: str, value: str | None, choices: Iterable[str]) -> None:
    """``value`` (when given) must be one of ``choices``: a SpecError in the flag's words,
    "--variant must be one of midl, dense, dropout, but got 'dnse' (did you mean 'dense'?)"."""
    options = list(choices)
    if value is None or value in options:
        return
    from midl_autok.errors import SpecError

    close = difflib.get_close_matches(value.lower(), options, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SpecError(f"{flag} must be one of {', '.join(options)}, but got {value!r}{hint}")


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------


class _InterruptNote:
    note: Callable[[], str | None] | None = None


def on_interrupt(note: Callable[[], str | None] | None) -> None:
    """Register what ``midl-autok: interrupted`` adds when Ctrl-C or SIGTERM stops the
    running command: a function called then, returning the rest of the line (e.g. "12
    completed trials kept; rerun the same command to continue") or None. ``None`` clears."""
    _InterruptNote.note = note


def on_search_interrupt(progress: Any, store: Store) -> None:
    """:func:`on_interrupt` for a search shown by a rich progress display whose first task is
    named after the study once it started: "N completed trials kept; rerun the same command
    to continue", N counted in the store then."""

    def note() -> str:
        task = progress.tasks[0]
        kept = ""
        if task.started:
            from optuna.trial import TrialState

            storage = store.optuna_storage()
            study_id = storage.get_study_id_from_name(str(task.description))
            done = storage.get_n_trials(study_id, state=TrialState.COMPLETE)
            kept = f"{done} completed trial{'' if done == 1 else 's'} kept; "
        return f"{kept}rerun the same command to continue"

    on_interrupt(note)


def interrupt_note() -> str | None:
    """The registered note (None when there is none or it fails: the line must print)."""
    note = _InterruptNote.note
    if note is None:
        return None
    try:
        text = note()
    except Exception:
        return None
    return " ".join(text.split()) if text else None


# -- choosing a study ------------------------------------------------------------------------


def chosen_study(store: Store, name: str | None) -> str | None:
    """``name``, or without one the store's latest study (the one whose last trial started
    last; the latest created among those without trials), named on stderr when the store
    holds several. None when the
    store holds no study (``load_study_record`` then says so)."""
    if name is not None:
        return name
    import datetime

    from midl_autok.store import list_studies

    names = list_studies(store)
    if not names:
        return None
    storage = store.optuna_storage()

    def last_activity(study: str) -> tuple[datetime.datetime, int]:
        study_id = storage.get_study_id_from_name(study)
        starts = [t.datetime_start for t in storage.get_all_trials(study_id, deepcopy=False)]
        return max((s for s in starts if s is not None), default=datetime.datetime.min), study_id

    if len(names) == 1:
        return names[0]  # no choice was made: nothing to announce (errors stay one line)
    latest = max(names, key=last_activity)
    print(
        f"midl-autok: study {latest} (the latest of {len(names)} in {store.root}; "
        "choose one with --study NAME)",
        file=sys.stderr,
    )
    return latest
