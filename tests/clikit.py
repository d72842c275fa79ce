"""Helpers for the tests that run ``midl-autok`` as a user does (a subprocess)."""

from __future__ import annotations

import re
import subprocess


def assert_user_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Exit status 2, exactly one line on stderr matching ``pattern``, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
