"""`--model-factory` / `--data-factory` as a user runs them: a project folder of their own
on PYTHONPATH, a real subprocess; every bad factory is one line on stderr, exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clikit import assert_user_error

from midl_autok.cli import main

EXE = [sys.executable, "-m", "midl_autok"]

PROJECT = """
import numpy as np
from torch import nn

from midl_autok import MIDL

NOT_CALLABLE = 3


def good(input_shape, num_classes, *, width=16):
    return nn.Sequential(nn.Flatten(), MIDL(input_shape[0], width), nn.Linear(width, num_classes))


def raises(input_shape, num_classes):
    raise RuntimeError("no GPU in this room\\nsecond line")


def not_a_module(input_shape, num_classes):
    return 42


def dense_only(input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], num_classes))


def wrong_output(input_shape, num_classes):
    return nn.Sequential(MIDL(input_shape[0], 7))


def blobs(n=120):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.3, (n, 5)).astype(np.float32) + y[:, None]
    return x, y


def data_string():
    return "digits"


def data_float_labels():
    return np.zeros((20, 4), np.float32), np.zeros(20, np.float32)


def data_raises():
    raise FileNotFoundError("blobs.csv is not there")
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "userpkg.py").write_text(textwrap.dedent(PROJECT))
    (root / "broken.py").write_text('raise ImportError("needs the package foo")\n')
    return root


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("MIDL_AUTOK_HOME", None)
    env["PYTHONPATH"] = os.pathsep.join([str(project), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=300, cwd=project, env=env
    )


BAD = [
    (
        ["--model-factory", "nosuchpkg.models:make"],
        r"model factory nosuchpkg\.models:make: cannot import module 'nosuchpkg\.models' "
        r"\(ModuleNotFoundError: No module named 'nosuchpkg'\); make its folder importable",
    ),
    (
        ["--model-factory", "broken:make"],
        r"cannot import module 'broken' \(ImportError: needs the package foo\)$",
    ),
    (
        ["--model-factory", "userpkg:godo"],
        r"model factory userpkg:godo: 'userpkg' has no attribute 'godo'; did you mean 'good'\?",
    ),
    (["--model-factory", "userpkg:NOT_CALLABLE"], r"userpkg:NOT_CALLABLE is a int, not a funct"),
    (["--model-factory", "userpkg.good"], r"must be an import path 'package.module:function'"),
    (
        ["--model-factory", "userpkg:raises"],
        r"model factory userpkg:raises raised RuntimeError: no GPU in this room$",
    ),
    (
        ["--model-factory", "userpkg:not_a_module"],
        r"userpkg:not_a_module returned a int, not a torch\.nn\.Module",
    ),
    (
        ["--model-factory", "userpkg:dense_only"],
        r"userpkg:dense_only returned a Sequential without any MID-L layer",
    ),
    (
        ["--model-factory", "userpkg:wrong_output"],
        r"must return logits of shape \(batch, num_classes\) = \(2, 10\) .* returned \(2, 7\)",
    ),
    (
        ["--model-factory", "userpkg:good", "--gate-rank", "4"],
        r"--gate-rank is for the built-in models; --model-factory replaces it",
    ),
    (
        ["--data-factory", "userpkg:data_string"],
        r"data factory userpkg:data_string returned a str; return a midl_autok\.Dataset",
    ),
    (
        ["--data-factory", "userpkg:data_float_labels"],
        r"y must be a 1-D array of integer labels, got float32",
    ),
    (
        ["--data-factory", "userpkg:data_raises"],
        r"data factory userpkg:data_raises raised FileNotFoundError: blobs\.csv is not there",
    ),
    (
        ["--data-factory", "userpkg:blobs", "--dataset", "mnist1d"],
        r"--dataset is for the built-in datas; --data-factory replaces it",
    ),
]


@pytest.mark.parametrize(("args", "pattern"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_factory_is_one_line_exit_2(
    project: Path,
    args: list[str],
    pattern: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process (one subprocess each would take minutes on a shared machine); the
    three after this one run the real command."""
    monkeypatch.syspath_prepend(str(project))
    for name in ("userpkg", "broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "1", *args])
    err = capsys.readouterr().err
    proc = subprocess.CompletedProcess(args, exit_info.value.code, "", err)
    assert_user_error(proc, pattern)


@pytest.mark.parametrize("index", [0, 5, 7])
def test_bad_factory_in_a_subprocess(project: Path, index: int) -> None:
    args, pattern = BAD[index]
    assert_user_error(run(project, "train", "--epochs", "1", *args), pattern)


def test_search_with_bad_factory_records_nothing(project: Path) -> None:
    proc = run(
        project,
        "search",
        "--model-factory",
        "userpkg:dense_only",
        "--trials",
        "1",
        "--store",
        str(project / "runs"),
    )
    assert_user_error(proc, r"without any MID-L layer")


def test_train_with_both_factories(project: Path) -> None:
    proc = run(
        project,
        "train",
        "--model-factory",
        "userpkg:good",
        "--data-factory",
        "userpkg:blobs",
        "--epochs",
        "2",
        "--k-fraction",
        "0.5",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert metrics["active_fraction"] == 0.5
    assert metrics["k/net.1"] == 8  # the MID-L layer's name in the user's module, under net.
    assert metrics["val_accuracy"] > 0.5  # three well separated blobs
