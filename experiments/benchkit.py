"""What several benchmark scripts share: the start of their argument parser, writing a JSON
result, and the wall-time line that ends a report.

A script imports it as ``from benchkit import ...``: ``experiments/`` is the folder of the
script that runs, so it is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from midl_autok.spec import ExperimentSpec, load_spec

#: The two shipped MLP experiments a benchmark runs by default.
SHIPPED_MLPS = ["digits-mlp", "mnist1d-mlp"]


def parser(doc: str | None, *, seeds: int) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` (the script's ``__doc__``) with
    ``--experiments`` (default :data:`SHIPPED_MLPS`) and ``--seeds`` (default ``seeds``)."""
    out = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    out.add_argument("--experiments", nargs="+", default=SHIPPED_MLPS)
    out.add_argument("--seeds", type=int, default=seeds)
    return out


def experiment(name: str, *, epochs: int | None) -> ExperimentSpec:
    """The shipped experiment ``name``, trained for ``epochs`` where given (0 or None: the
    spec's own)."""
    spec = load_spec(name)
    return spec.override(**{"training.epochs": epochs}) if epochs else spec


def assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (a ``--set`` argument) as ``(KEY, VALUE)``, the value read as YAML
    (``32`` an int, ``[64, 64]`` a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set wants KEY=VALUE (a dotted spec key), not {text!r}")
    return key, yaml.safe_load(value)


def write_json(path: Path, result: dict[str, Any]) -> None:
    """``result`` as indented JSON at ``path`` (its folder made), atomically: the file is the
    last complete result at any time, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)


def finish(out: Path, result: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> None:
    """Store the markdown ``table(result)`` in ``result['table']``, print it, and write
    ``result`` to ``out`` (:func:`write_json`)."""
    result["table"] = table(result)
    print(result["table"])
    write_json(out, result)


def wall_time_lines(result: dict[str, Any]) -> list[str]:
    """A report's closing lines: the wall time, the CPUs and the load average at the end
    (``result['wall_s']``, ``result['machine']['cpus']`` and ``['load_average_end']``)."""
    load = result["machine"]["load_average_end"]
    return [
        "",
        f"Wall time {result['wall_s']:.0f} s on {result['machine']['cpus']} CPUs "
        f"(load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}).",
    ]
