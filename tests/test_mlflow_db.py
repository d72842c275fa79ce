"""A new sqlite MLflow database is a copy of an empty migrated one (midl_autok.mlflow_db): the
copy is the database MLflow would have built, a bad template is rebuilt, the switch turns the
copy off."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from midl_autok import mlflow_db
from midl_autok.store import make_client


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def read(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql).fetchall()


def schema(db: Path) -> list[tuple[object, ...]]:
    """Every table and index, its SQL as a sorted list of lines: MLflow's own migrations write
    a table's constraints in varying order (two databases built in one process differ)."""
    rows = read(db, "SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
    return [(kind, name, sorted(str(sql).splitlines())) for kind, name, sql in rows]


def default_experiment(db: Path) -> tuple[object, ...]:
    (row,) = read(db, "SELECT * FROM experiments")
    return row


def test_the_copy_is_the_database_mlflow_builds(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the template is built in another folder, long ago
    template = mlflow_db.template_database()
    assert template is not None
    with contextlib.closing(sqlite3.connect(template)) as con, con:
        con.execute("UPDATE experiments SET creation_time = 0, last_update_time = 0")
    monkeypatch.chdir(tmp_path)
    built = tmp_path / "built.db"
    MlflowClient(tracking_uri=f"sqlite:///{built}").search_experiments()  # MLflow's migrations
    copied = tmp_path / "copied.db"
    make_client(f"sqlite:///{copied}")
    assert list(cache.glob("mlflow-*-empty.db")) == [template]
    assert schema(copied) == schema(built)
    assert read(copied, "SELECT * FROM alembic_version") == read(
        built, "SELECT * FROM alembic_version"
    )
    cols = [c[1] for c in read(built, "PRAGMA table_info(experiments)")]
    mine, theirs = default_experiment(copied), default_experiment(built)
    for name, a, b in zip(cols, mine, theirs, strict=True):
        if name in ("creation_time", "last_update_time"):
            assert isinstance(a, int) and abs(a - int(b)) < 120_000  # now, not the template's
        else:
            assert a == b, name  # artifact location included: this process's ./mlruns/0
    # the copy is a working store
    client = make_client(f"sqlite:///{copied}")
    exp = client.create_experiment("x")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_an_existing_database_is_never_replaced(cache: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    client = make_client(f"sqlite:///{db}")
    client.create_experiment("kept")
    assert not mlflow_db.seed_new_database(db)
    assert [e.name for e in make_client(f"sqlite:///{db}").search_experiments()] == [
        "kept",
        "Default",
    ]


@pytest.mark.parametrize("damage", ["garbage", "a run in it", "empty file"])
def test_a_bad_template_is_rebuilt(damage: str, cache: Path, tmp_path: Path) -> None:
    template = mlflow_db.template_database()
    assert template is not None
    if damage == "garbage":
        template.write_bytes(b"not a database" * 100)
    elif damage == "empty file":
        template.write_bytes(b"")
    else:
        client = make_client(f"sqlite:///{template}")
        client.create_run(client.create_experiment("leaked"))
    db = tmp_path / "new.db"
    assert mlflow_db.seed_new_database(db)
    assert read(db, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert [n for (n,) in read(db, "SELECT name FROM experiments")] == ["Default"]
    assert mlflow_db._is_empty_mlflow_db(template)


def test_the_switch_turns_the_copy_off(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mlflow_db.ENV_SWITCH, "0")
    db = tmp_path / "mlflow.db"
    assert not mlflow_db.seed_new_database(db)
    make_client(f"sqlite:///{db}").search_experiments()
    assert db.exists() and not cache.exists()  # MLflow built it; no template was made


def test_a_cache_that_cannot_be_written_falls_back_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(blocker / "cache"))  # under a regular file
    db = tmp_path / "mlflow.db"
    assert not mlflow_db.seed_new_database(db)
    client = make_client(f"sqlite:///{db}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
