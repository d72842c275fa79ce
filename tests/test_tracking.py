"""Tracking: metric keys, batched logging past MLflow's limits, run status, Pareto files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from searchkit import fresh_store

from midl_autok.results.files import write_pareto_files
from midl_autok.results.record import StudyRecord
from midl_autok.search.recording import start_run
from midl_autok.tracking import (
    FAILED,
    Tracker,
    TrackingRef,
    git_sha,
    metric_key,
    package_versions,
)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("active_fraction/body.0", "active_fraction/body.0"),  # valid as it is
        ("k/features.3", "k/features.3"),
        ("k/rnn:cell", "k/rnn_cell"),
        ("k//x", "k/x"),
        ("/k/../x", "k/x"),
        ("", "_"),
    ],
)
def test_metric_keys(name: str, key: str) -> None:
    assert metric_key(name) == key


def test_runs_metrics_and_artifacts(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    tracker = Tracker.for_experiment(
        store.mlflow_client(), "exp", artifact_location=store.artifact_location
    )
    assert Tracker.for_experiment(store.mlflow_client(), "exp").experiment_id == (
        tracker.experiment_id
    )
    parent = start_run(tracker, "search", tags={"agent": "tpe"}, params={"a": 1.5, "b": [1, 2]})
    child = start_run(tracker, "trial-0", parent_run_id=parent, params={"x": 0.25})
    # 30 epochs x 40 keys = 1200 points: more than one MLflow batch
    history = [{"epoch": e, **{f"k/layer.{i}": float(e * i) for i in range(40)}} for e in range(30)]
    final = {"k/layer.1": 29.0, "test_accuracy": 0.5}
    worker = Tracker.from_ref(TrackingRef(tracker.tracking_uri, tracker.experiment_id, parent))
    worker.log_trial(child, history=history, metrics=final, schedule={"k": [[1]]})
    worker.end_run(child, FAILED, reason="x" * 9000)
    client = store.mlflow_client()
    run = client.get_run(child)
    assert run.info.status == "FAILED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert len(run.data.tags["fail_reason"]) == 5000  # truncated, not rejected
    assert run.data.params == {"x": "0.25"}
    assert run.data.metrics["test_accuracy"] == 0.5
    assert len(client.get_metric_history(child, "k/layer.39")) == 30
    assert len(client.get_metric_history(child, "k/layer.1")) == 30  # no duplicate final point
    assert json.loads(Path(client.download_artifacts(child, "schedule.json")).read_text()) == {
        "k": [[1]]
    }
    assert client.get_run(parent).data.params == {"a": "1.5", "b": "[1, 2]"}
    assert tracker.run_status(parent) == "RUNNING"
    assert tracker.run_status("no-such-run") is None


def test_versions() -> None:
    versions = package_versions()
    assert {"python", "torch", "optuna", "mlflow"} <= set(versions)


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_SYSTEM": os.devnull,
    }
    done = subprocess.run(
        ["git", *args], cwd=folder, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_sha_of_a_checkout_clean_dirty_and_none(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert len(head) == 40
    assert git_sha(repo) == head
    (repo / "code.py").write_text("x = 2\n")  # a local change to a tracked file
    git_sha.cache_clear()
    assert git_sha(repo) == head + "+dirty"
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    assert git_sha(outside) is None


def test_pareto_files_of_a_study_without_completed_trials(tmp_path: Path) -> None:
    record = StudyRecord(
        name="empty",
        attrs={"objectives": ["val_accuracy", "inference_flops"], "reference_point": [0, 10]},
        directions=["maximize", "minimize"],
        trials=[],
    )
    paths = write_pareto_files(record, tmp_path, plotlyjs="cdn")
    data = json.loads(paths[0].read_text())
    assert data["points"] == []
    assert data["knee_trial"] is None
    assert data["hypervolume"] == 0.0
    assert paths[1].read_text() == "trial,knee\n"
    assert "<html>" in paths[2].read_text()
