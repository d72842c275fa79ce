"""A study name every part of the store accepts, studies of other tools refused, and the
names the dashboards show (issue 17, points 4, 5, 8, 9): real Optuna storage, real MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from searchkit import fresh_store, runs, tiny_spec

from midl_autok.errors import SpecError
from midl_autok.search import opening, run_search
from midl_autok.search.identity import MAX_STUDY_NAME, check_study_name
from midl_autok.search.opening import open_search
from midl_autok.tracking import KIND_TAG, KIND_TRAINING


def _studies(store) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.study_name for s in optuna.get_all_study_summaries(store.optuna_storage())]


def test_a_study_of_another_tool_is_refused_before_any_training(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    optuna.create_study(storage=store.optuna_storage(), study_name="theirs")  # 1 objective
    with pytest.raises(
        SpecError,
        match=r"study 'theirs' in .* exists but was not made by "
        r"midl-autok search \(1 objective, .*choose another --study name",
    ):
        open_search(tiny_spec(), store=store, study="theirs")
    assert store.mlflow_client().get_experiment_by_name("theirs") is None  # nothing trained
    assert optuna.load_study(study_name="theirs", storage=store.optuna_storage()).trials == []


def test_an_empty_two_objective_study_of_another_tool_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opening, "ATTRS_WAIT_S", 0.3)  # it waits for a concurrent creator
    store = fresh_store(tmp_path / "store")
    optuna.create_study(
        storage=store.optuna_storage(), study_name="same", directions=["maximize", "minimize"]
    )
    with pytest.raises(SpecError, match=r"'same' .* not made by midl-autok search \(2 obj"):
        open_search(tiny_spec(), store=store, study="same")


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("two\nlines", r"printable characters only, but 'two\\nlines' holds '\\n' at position 3"),
        ("\x1b[31mred", r"printable characters only, but '\\x1b\[31mred' holds '\\x1b'"),
        ("tab\there", r"holds '\\t'"),
        ("", r"must be non-empty"),
        (" padded", r"without spaces at either end"),
        (
            "x" * (MAX_STUDY_NAME + 1),
            rf"at most {MAX_STUDY_NAME} bytes .* has {MAX_STUDY_NAME + 1}",
        ),
        ("é" * 126, r"at most 250 bytes in UTF-8 .* has 252"),
    ],
)
def test_bad_study_names_are_refused_and_leave_nothing(
    name: str, pattern: str, tmp_path: Path
) -> None:
    store = fresh_store(tmp_path / "store")
    with pytest.raises(SpecError, match=pattern):
        open_search(tiny_spec(), store=store, study=name)
    assert not store.optuna_db.exists() or _studies(store) == []
    assert [e.name for e in store.mlflow_client().search_experiments()] == ["Default"]


def test_names_at_the_limit_work_everywhere(tmp_path: Path) -> None:
    name = "n" * MAX_STUDY_NAME
    assert check_study_name(name) == name
    assert check_study_name("ünïcode name/with-parts") == "ünïcode name/with-parts"
    store = fresh_store(tmp_path / "store")
    summary = run_search(tiny_spec(trials=1), store=store, study=name, device="cpu")
    assert summary.study == name and _studies(store) == [name]
    parents, children = runs(store, name)
    assert [p.info.run_name for p in parents] == [name] and len(children) == 1
    assert (store.report_dir(name) / "pareto.json").exists()


def test_objective_names_and_experiment_kind(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    run_search(tiny_spec(trials=1), store=store, study="named", device="cpu")
    study = optuna.load_study(study_name="named", storage=store.optuna_storage())
    assert study.metric_names == ["val_accuracy", "inference_flops"]
    client = store.mlflow_client()
    exp = client.get_experiment_by_name("named")
    assert exp is not None and exp.tags[KIND_TAG] == KIND_TRAINING

    # a study and an experiment made before: both get the names and the tag on open
    storage = store.optuna_storage()
    storage.set_study_system_attr(study._study_id, "study:metric_names", None)
    client.delete_experiment_tag(exp.experiment_id, KIND_TAG)
    assert optuna.load_study(study_name="named", storage=storage).metric_names is None
    run_search(tiny_spec(trials=2), store=store, study="named", device="cpu")
    assert optuna.load_study(study_name="named", storage=storage).metric_names == [
        "val_accuracy",
        "inference_flops",
    ]
    exp = client.get_experiment_by_name("named")
    assert exp is not None and exp.tags[KIND_TAG] == KIND_TRAINING


@pytest.mark.parametrize(
    ("study", "pattern"),
    [
        ("\x1b[2Jwipe", r"^study name must|printable characters only, but '\\x1b\[2Jwipe'"),
        ("theirs", r"study 'theirs' in .* exists but was not made by midl-autok search"),
    ],
)
def test_cli_refuses_with_one_line_and_exit_2(study: str, pattern: str, tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    optuna.create_study(storage=store.optuna_storage(), study_name="theirs")
    search = ["search", "synthetic-mlp", "--epochs", "1", "--trials", "1", "--agent", "random"]
    where = ["--store", str(store.root), "--study", study]
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", *search, *where],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "\x1b" not in proc.stderr and "Traceback" not in proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert _studies(store) == ["theirs"]
