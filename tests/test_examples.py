"""examples/own_model as a user runs it: the folder copied outside the package, on
PYTHONPATH as its README says, `midl-autok search` (locally and on Ray), then `export` and
`train --schedule` replay the exported schedule exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
CLI = str(Path(sys.executable).parent / "midl-autok")  # the console script a user runs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "own_model"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MIDL_AUTOK_HOME", "RAY_ADDRESS")
    }
    env["COLUMNS"] = "200"
    # the README's `PYTHONPATH=$PWD`, kept in front of what runs this test suite
    env["PYTHONPATH"] = os.pathsep.join([str(project), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=900, cwd=project, env=env
    )


def search_export_replay(project: Path, *backend: str) -> dict[str, float]:
    store = project / "runs"
    found = run(project, "search", "spirals.yaml", "--trials", "3", "--store", str(store), *backend)
    assert found.returncode == 0, found.stderr
    assert "3 new trial(s)" in found.stdout
    exported = project / "knee.json"
    out = run(project, "export", "--store", str(store), "--pick", "knee", "-o", str(exported))
    assert out.returncode == 0, out.stderr
    schedule = json.loads(exported.read_text())
    assert schedule["model"]["arch"] == "factory"
    assert schedule["provenance"]["spec"]["model"]["factory"] == "tinyres.model:make_model"
    assert [layer["name"] for layer in schedule["layers"]] == [
        "net.blocks.0.mix",
        "net.blocks.1.mix",
    ]
    replay = run(project, "train", "--schedule", str(exported), "--json", "--device", "cpu")
    assert replay.returncode == 0, replay.stderr
    metrics = json.loads(replay.stdout)
    for key in ("val_accuracy", "test_accuracy", "val_loss", "inference_flops"):
        assert metrics[key] == schedule["metrics"][key], key
    return metrics


@pytest.mark.slow
def test_own_model_search_export_replay(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = search_export_replay(project)
    assert metrics["val_accuracy"] > 0.6  # three spirals, three classes: better than chance
    model_file = project / "model.pt2"
    written = run(
        project,
        "export",
        "--store",
        str(project / "runs"),
        "--pick",
        "knee",
        "-o",
        str(project / "again.json"),
        "--model",
        str(model_file),
        "--no-latency",
        "--portable",
    )
    assert written.returncode == 0, written.stderr
    from midl_autok.deploy import ModelFileError, load_model

    with pytest.raises(ModelFileError, match=r"built by the factory 'tinyres.model:make_model'"):
        load_model(model_file)  # rebuilding runs the user's code: only when asked
    monkeypatch.syspath_prepend(str(project))
    deployed = load_model(model_file, allow_factory=True)
    k = json.loads((project / "again.json").read_text())["k"]
    assert deployed.current_k() == {"net.blocks.0.mix": k[0][-1], "net.blocks.1.mix": k[1][-1]}


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_own_model_on_ray_workers(project: Path) -> None:
    from raykit import ray_lock

    with ray_lock():
        search_export_replay(project, "--backend", "ray", "--workers", "2")
