"""`midl-autok studies --delete NAME` and names shown safely by `studies` (issue 17, points 5
and 16): real searches, the real Optuna storage and MLflow store, the CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from searchkit import fresh_store, runs, tiny_spec

from midl_autok.search import run_search


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midl_autok", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_delete_a_study_with_its_runs_and_reports(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    for name in ("gone", "kept"):
        run_search(tiny_spec(trials=2), store=store, study=name, device="cpu")
    client = store.mlflow_client()
    exp = client.get_experiment_by_name("gone")
    assert exp is not None
    parents, children = runs(store, "gone")
    artifact_dirs = [Path(r.info.artifact_uri.removeprefix("file://")) for r in parents + children]
    assert artifact_dirs and all(d.is_dir() for d in artifact_dirs)

    asked = cli("studies", "--store", str(store.root), "--delete", "gone")  # stdin: no tty
    assert asked.returncode == 2, asked.stderr
    assert asked.stderr.strip().splitlines() == [
        f"midl-autok: error: studies --delete asks before deleting, but stdin is not a terminal; "
        f"add --yes to delete study 'gone' in {store.root}"
    ]
    typo = cli("studies", "--store", str(store.root), "--delete", "gon", "--yes")
    assert typo.returncode == 2 and "did you mean 'gone'" in typo.stderr

    done = cli("studies", "--store", str(store.root), "--delete", "gone", "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted Optuna study gone (2 trials)" in done.stdout
    assert "deleted MLflow experiment gone (3 runs)" in done.stdout
    names = [s.study_name for s in optuna.get_all_study_summaries(store.optuna_storage())]
    assert names == ["kept"]
    assert client.get_experiment(exp.experiment_id).lifecycle_stage == "deleted"
    assert not any(d.exists() for d in artifact_dirs)
    assert not store.report_dir("gone").exists() and store.report_dir("kept").is_dir()
    assert len(runs(store, "kept")[1]) == 2

    # the name is free again: a new search of it starts with no old run
    run_search(tiny_spec(trials=1), store=store, study="gone", device="cpu")
    parents, children = runs(store, "gone")
    assert len(parents) == 1 and len(children) == 1


def test_studies_shows_control_characters_as_escapes(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    # a study made before names were checked (or by hand)
    optuna.create_study(storage=store.optuna_storage(), study_name="\x1b[2Jevil\nname")
    proc = cli("studies", "--store", str(store.root))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    assert "\\x1b[2Jevil\\nname" in proc.stdout.replace("\n", "").replace("│", "").replace(" ", "")
