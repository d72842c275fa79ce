"""The ``midl-autok`` command.

Each command lives in its own module of this package and registers itself on :data:`app`.
:func:`main` is the console-script entry point: user errors (:class:`UserError`) become one
line on stderr and exit status 2, never a traceback; failures of the machine (a full disk, a
read-only or locked database, no memory) one line and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer

from midl_autok.cli._app import app

__all__ = ["app", "main"]

# Commands register themselves on import (keep each module's heavy imports inside functions).
from midl_autok.cli import dashboard as _dashboard  # noqa: F401
from midl_autok.cli import experiments as _experiments  # noqa: F401
from midl_autok.cli import report as _report  # noqa: F401
from midl_autok.cli import results as _results  # noqa: F401
from midl_autok.cli import search as _search  # noqa: F401
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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every user error -- a bad option value, an unknown name, a malformed
    file -- ends with one line on stderr and exit status 2, never a traceback; a failure of
    the machine (disk full, database read-only or locked, out of memory) with one line and
    exit status 1. Anything else is a bug and shows its traceback."""
    from midl_autok.errors import UserError, system_error_message

    click = _click_exceptions()
    # typer >= 0.2x vendors click without its Abort; typer.Abort is what it raises then
    interrupts: tuple[type[BaseException], ...] = (
        KeyboardInterrupt,
        typer.Abort,
        *_optional(click, "Abort"),
    )
    # MLflow logs every database error with its traceback before raising it to us
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    _show_kernel_build()

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
        print(f"midl-autok: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except UserError as exc:
        print(f"midl-autok: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except interrupts:
        print("midl-autok: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a full disk, a locked database, ...: one line; a bug: raise
        line = system_error_message(exc)
        if line is None:
            raise
        print(f"midl-autok: error: {line}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # python -m midl_autok.cli
    main()
