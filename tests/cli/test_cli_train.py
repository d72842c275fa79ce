"""`midl-autok train` as a user runs it: a real subprocess, real data, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from clikit import assert_user_error, cli_env

from midl_autok.schedule import KSchedule

EXE = [sys.executable, "-m", "midl_autok", "train"]
TINY = ["synthetic-mlp", "--epochs", "2"]
REQUIRED = (
    "val_accuracy",
    "test_accuracy",
    "inference_flops",
    "inference_flops_ratio",
    "training_flops",
    "active_fraction",
)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_json_output_and_replay(tmp_path: Path) -> None:
    out = tmp_path / "used.json"
    first = run(*TINY, "--k-fraction", "0.5", "--json", "--save-schedule", str(out))
    assert first.returncode == 0, first.stderr
    metrics = json.loads(first.stdout)  # stdout is exactly one JSON object
    for key in REQUIRED:
        assert key in metrics
    assert metrics["active_fraction"] == 0.5
    assert isinstance(metrics["inference_flops"], int)
    saved = KSchedule.load(out)
    assert saved.k == ((32, 32), (32, 32))
    assert saved.metrics["val_accuracy"] == metrics["val_accuracy"]
    # replaying the saved schedule with the same seed gives the same result
    again = run(*TINY, "--schedule", str(out), "--json")
    assert again.returncode == 0, again.stderr
    replay = json.loads(again.stdout)
    assert replay["val_accuracy"] == metrics["val_accuracy"]
    assert replay["training_flops"] == metrics["training_flops"]


def test_rich_table_without_json() -> None:
    proc = run(*TINY)
    assert proc.returncode == 0, proc.stderr
    assert "per-epoch metrics" in proc.stdout and "val acc" in proc.stdout
    assert "test_accuracy" in proc.stdout


def test_dense_baseline_and_dataset_switch() -> None:
    proc = run("--epochs", "1", "--dataset", "synthetic", "--variant", "dense", "--json")
    # the default experiment (digits-mlp) on another dataset: input size follows the data
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inference_flops_ratio"] == 1


def _schedule_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": "midl-autok/kschedule",
        "version": 1,
        "model": {"arch": "mlp", "signature": ""},
        "layers": [{"name": "body.0", "width": 64}, {"name": "body.1", "width": 64}],
        "epochs": 2,
        "k": [[64, 32], [64, 16]],
    }
    doc.update(changes)
    return doc


BAD_SCHEDULES = {
    "malformed": ("{not json", r"not valid JSON"),
    "k0": (_schedule_doc(k=[[64, 0], [64, 16]]), r"layer body\.0 at epoch 1.*got 0"),
    "k_above": (_schedule_doc(k=[[64, 32], [65, 16]]), r"layer body\.1 at epoch 0.*got 65"),
    "k_float": (_schedule_doc(k=[[64, 32.5], [64, 16]]), r"integer.*32\.5"),
    "format": (_schedule_doc(format="other/thing"), r"format"),
    "version": (_schedule_doc(version=9), r"version"),
    "width": (
        _schedule_doc(
            layers=[{"name": "body.0", "width": 64}, {"name": "body.1", "width": 32}],
            k=[[64, 32], [32, 16]],
        ),
        r"layer body\.1 has width 32 in the schedule but 64",
    ),
    "names": (
        _schedule_doc(layers=[{"name": "body.0", "width": 64}, {"name": "fc9", "width": 64}]),
        r"fc9 does not exist",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEDULES))
def test_bad_schedule_files(tmp_path: Path, case: str) -> None:
    doc, pattern = BAD_SCHEDULES[case]
    path = tmp_path / "s.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    assert_user_error(run("synthetic-mlp", "--schedule", str(path), "--json"), pattern)


def test_rank_options_change_the_model_and_its_cost() -> None:
    from midl_autok.flops import cost_model
    from midl_autok.spec import load_spec
    from midl_autok.trainer import build_for_spec, dataset_for_spec

    proc = run(*TINY, "--k-fraction", "0.5", "--gate-rank", "4", "--light-rank", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)["inference_flops"]
    default = json.loads(run(*TINY, "--k-fraction", "0.5", "--json").stdout)["inference_flops"]
    spec = load_spec("synthetic-mlp").override(**{"model.gate_rank": 4, "model.light_rank": 0})
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data).eval()
    layers = model.midl_layers()
    assert [(m.gate_rank, m.light_rank) for _, m in layers] == [(4, 0), (4, 0)]
    expected = cost_model(model, data.x_train[:1]).inference_flops({n: 32 for n, _ in layers})
    assert got == expected < default
    assert_user_error(run(*TINY, "--light-rank", "-1"), r"--light-rank")
    assert_user_error(run(*TINY, "--gate-rank", "0"), r"--gate-rank")


def test_bad_command_lines(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n1,2,x\n3,4,y\n" * 20)
    bad_spec = tmp_path / "spec.yaml"
    bad_spec.write_text("dataset:\n  name: digits\ntraining:\n  epocs: 3\n")
    cases = [
        (["--k-fraction", "0"], r"--k-fraction must satisfy 0 < F <= 1"),
        (["--k-fraction", "1.5"], r"--k-fraction must satisfy"),
        (["--dataset", "digts"], r"unknown dataset 'digts'; did you mean 'digits'"),
        (["--dataset", "mnist"], r"dataset 'mnist' is read from disk"),
        (["--dataset", "mnist", "--data-path", str(tmp_path / "none")], r"does not exist"),
        (["--dataset", "csv", "--data-path", str(csv), "--target", "nope"], r"nope"),
        ([str(bad_spec)], r"training\.epocs: Extra inputs are not permitted"),
        (["no-such-experiment"], r"unknown experiment 'no-such-experiment'"),
        (["--schedule", str(tmp_path / "missing.json")], r"schedule file not found"),
        (
            ["--variant", "sparse"],
            r"--variant must be one of midl, dense, dropout, but got 'sparse'$",
        ),
    ]
    for args, pattern in cases:
        assert_user_error(run(*args, "--epochs", "1", "--json"), pattern)


_REFUSED = """
import sys
from midl_autok.cli import main
try:
    main(["train", *sys.argv[1:]])
except SystemExit as end:
    print(end.code, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "args", [["--k-fraction", "0"], ["--variant", "sparse"], ["no-such-experiment"]]
)
def test_a_bad_command_line_is_refused_before_torch_is_imported(args: list[str]) -> None:
    # the command line and the spec are checked first: a typo costs no torch import (~2 s)
    out = subprocess.run(
        [sys.executable, "-c", _REFUSED, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
        check=False,
    )
    assert out.stdout.split() == ["2", "False"], (out.stdout, out.stderr)


def test_usage_errors_exit_2() -> None:
    proc = run("--epochs", "zero")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_experiments_lists_and_prints_specs() -> None:
    base = [sys.executable, "-m", "midl_autok", "experiments"]
    listing = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False)
    assert listing.returncode == 0, listing.stderr
    assert "digits-mlp" in listing.stdout and "(default)" in listing.stdout
    one = subprocess.run([*base, "tokens-lstm"], capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and "arch: lstm" in one.stdout
    bad = subprocess.run([*base, "nope"], capture_output=True, text=True, timeout=120)
    assert_user_error(bad, r"unknown experiment 'nope'")
