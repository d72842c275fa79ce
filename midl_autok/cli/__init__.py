"""The ``midl-autok`` command.

Each command lives in its own module of this package and registers itself on :data:`app`.
:func:`main` is the console-script entry point: user errors (:class:`UserError`) become one
line on stderr and exit status 2, never a traceback; failures of the machine (a full disk, a
read-only or locked database, no memory) one line and exit status 1; Ctrl-C and SIGTERM one
line (``midl-autok: interrupted``, with what the command registered through
:func:`~midl_autok.cli._app.on_interrupt`) and exit status 128 + the signal: 130 and 143.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import typer

from midl_autok.cli._app import Interrupted, app, interrupt_note, on_interrupt

__all__ = ["app", "main"]

# Commands register themselves on import (keep each module's heavy imports inside functions).
from midl_autok.cli import dashboard as _dashboard  # noqa: F401
from midl_autok.cli import experiments as _experiments  # noqa: F401
from midl_autok.cli import report as _report  # noqa: F401
from midl_autok.cli import results as _results  # noqa: F401
from midl_autok.cli import search as _search  # noqa: F401
from midl_autok.cli import show as _show  # noqa: F401
from midl_autok.cli import train as _train  # noqa: F401


def _click_exceptions() -> Any:
    """The exception module of the click that typer runs on (typer >= 0.2x vendors click)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer on the real click
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def _optional(module: Any, name: str) -> tuple[type[BaseException], ...]:
    found = getattr(module, name, None)
    return (found,) if isinstance(found, type) else ()


class _StderrLines(logging.Handler):
    """``midl-autok: <message>`` on the current ``sys.stderr`` (looked up at each record, so
    a live progress display that wraps stderr keeps its place)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"midl-autok: {self.format(record)}", file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


def _show_kernel_build() -> None:
    """Say so when the first use compiles the CPU kernels (~30 s that would look like a hang);
    their failure warnings too."""
    kernels = logging.getLogger("midl_autok.kernels")
    if not any(isinstance(h, _StderrLines) for h in kernels.handlers):
        kernels.addHandler(_StderrLines(logging.INFO))  # then no last-resort copy either
    if kernels.level == logging.NOTSET or kernels.level > logging.INFO:
        kernels.setLevel(logging.INFO)


_STOPS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_seen() -> Iterator[Callable[[], int | None]]:
    """While a command runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (unless a
    handler is installed already), and the yielded function tells which of the two arrived
    last, whichever Python handler ran for it (a search installs its own): Python writes the
    number of every signal it handles to the :func:`signal.set_wakeup_fd` pipe."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def on_term(signum: int, frame: Any) -> None:
        seen.append(signum)  # also here, in case a library takes the wakeup fd over
        raise KeyboardInterrupt

    read_fd, write_fd = os.pipe()
    for fd in (read_fd, write_fd):
        os.set_blocking(fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_term)

    def last() -> int | None:
        with contextlib.suppress(OSError):
            while chunk := os.read(read_fd, 4096):
                seen.extend(chunk)
        stops = [s for s in seen if s in _STOPS]
        return stops[-1] if stops else None

    try:
        yield last
    finally:
        if previous_term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)


def _interrupted(signum: int | None) -> None:
    """The one line of an interrupted command, then exit 128 + the signal (130 without)."""
    by = " by SIGTERM" if signum == signal.SIGTERM else ""
    note = interrupt_note()
    print(f"midl-autok: interrupted{by}" + (f"; {note}" if note else ""), file=sys.stderr)
    sys.exit(128 + (signum or signal.SIGINT))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every user error -- a bad option value, an unknown name, a malformed
    file -- ends with one line on stderr and exit status 2, never a traceback; a failure of
    the machine (disk full, database read-only or locked, out of memory) with one line and
    exit status 1; Ctrl-C with one line and 130, SIGTERM 143. Anything else is a bug and
    shows its traceback."""
    from midl_autok.errors import UserError, system_error_message

    click = _click_exceptions()
    # typer >= 0.2x vendors click without its Abort; typer.Abort is what it raises then
    interrupts: tuple[type[BaseException], ...] = (
        Interrupted,
        KeyboardInterrupt,
        typer.Abort,
        *_optional(click, "Abort"),
    )
    # MLflow logs every database error with its traceback before raising it to us
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    _show_kernel_build()
    on_interrupt(None)  # what an earlier command of this process registered

    with _signals_seen() as last_signal:
        try:
            code = app(args=argv, prog_name="midl-autok", standalone_mode=False)
        except click.NoArgsIsHelpError as exc:
            exc.show()  # the command's help; not an error worth a one-liner
            sys.exit(2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "midl-autok"
            message = " ".join(exc.format_message().split())
            print(f"midl-autok: error: {message} (see '{where} --help')", file=sys.stderr)
            sys.exit(2)
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            print(f"midl-autok: error: {message}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except UserError as exc:
            print(f"midl-autok: error: {' '.join(str(exc).split())}", file=sys.stderr)
            sys.exit(2)
        except interrupts:
            _interrupted(last_signal())
        except Exception as exc:  # a full disk, a locked database, ...: one line; a bug: raise
            line = system_error_message(exc)
            if line is None:
                raise
            print(f"midl-autok: error: {line}", file=sys.stderr)
            sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # python -m midl_autok.cli
    main()
