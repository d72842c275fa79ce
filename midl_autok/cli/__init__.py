"""The ``midl-autok`` command.

Each command lives in its own module of this package and registers itself on :data:`app`.
:func:`main` is the console-script entry point: user errors (:class:`UserError`) become one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

from midl_autok.cli._app import app

__all__ = ["app", "main"]

# Commands register themselves on import (keep each module's heavy imports inside functions).
from midl_autok.cli import train as _train  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map user errors to exit status 2 and a one-line message."""
    from midl_autok.errors import UserError

    try:
        app(args=argv, prog_name="midl-autok")
    except UserError as exc:
        print(f"midl-autok: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("midl-autok: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # python -m midl_autok.cli
    main()
