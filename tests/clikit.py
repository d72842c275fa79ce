"""Helpers for the tests that run ``midl-autok`` as a user does: a subprocess (``run_cli``,
``started``) or :func:`midl_autok.cli.main` in this process (``in_process``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: ``python -m midl_autok``: the command a subprocess runs.
EXE = [sys.executable, "-m", "midl_autok"]

#: Environment variables that would point a test at the user's own store, MLflow server or
#: Ray cluster instead of the temporary ones the tests make.
USER_ENV = ("MLFLOW_TRACKING_URI", "MIDL_AUTOK_HOME", "RAY_ADDRESS")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one's without :data:`USER_ENV`, 200 columns
    wide (Rich wraps no message), then ``extra``."""
    out = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    out["COLUMNS"] = "200"
    out.update(extra)
    return out


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """``midl-autok ARGS`` to its end, output captured; ``env`` defaults to :func:`cli_env`."""
    return subprocess.run(
        [*EXE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=cli_env() if env is None else env,
        check=False,
    )


def in_process(*argv: str) -> tuple[int, str, str]:
    """``midl-autok ARGV`` run by :func:`midl_autok.cli.main` in this process:
    (exit status, stdout, stderr)."""
    from midl_autok.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
    return code, out.getvalue(), err.getvalue()


def imported_by(statement: str, packages: Iterable[str]) -> list[str]:
    """Which of ``packages`` (top-level names) a fresh interpreter has imported once it ran
    ``statement``, sorted: what ``import midl_autok`` and friends cost a user."""
    wanted = sorted(packages)
    code = (
        f"import sys, json; {statement}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({wanted!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout))


@contextlib.contextmanager
def started(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    after: Callable[[int], object] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """``args`` running in a subprocess (stdout dropped, stderr kept for a failure's message;
    ``env`` defaults to :func:`cli_env`), killed on the way out if it still runs; then
    ``after(pid)`` (to clean up what the process left behind)."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env() if env is None else env,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if after is not None:
            after(proc.pid)


def wait_until(
    proc: subprocess.Popen[str],
    ready: Callable[[], bool],
    *,
    what: str = "the search made no progress",
    timeout_s: float = 300,
) -> None:
    """Poll ``ready`` until it holds; fail with ``proc``'s stderr if it ends first, or with
    ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def assert_user_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Exit status 2, exactly one line on stderr matching ``pattern``, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
