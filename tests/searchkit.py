"""Helpers for the search tests: a tiny experiment, a fresh store, reading MLflow runs.

The MLflow tracking database of every test store is copied from one template created once
per process: MLflow builds its tables with ~40 Alembic migrations, which costs seconds.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from midl_autok.search.quiet import quiet
from midl_autok.spec import ExperimentSpec, validate_spec
from midl_autok.store import Store, open_store

_TEMPLATE: Path | None = None


def tiny_spec(
    *,
    agent: str = "tpe",
    space: str = "linear",
    trials: int = 3,
    epochs: int = 2,
    seed: int = 1,
    lr: float = 0.01,
    optimizer: str = "adam",
    flops_budget: float | None = None,
    options: dict[str, Any] | None = None,
    name: str = "tiny",
    seed_grid: int = 0,
) -> ExperimentSpec:
    """A 2 x 32 MID-L MLP on 600 synthetic samples: ~0.1 s per trial. No seed grid unless
    asked (the tests of samplers see the samplers' own trials)."""
    return validate_spec(
        {
            "name": name,
            "seed": seed,
            "dataset": {"name": "synthetic", "options": {"n_samples": 600}},
            "model": {"arch": "mlp", "hidden": [32, 32], "gate_rank": 4, "light_rank": 4},
            "training": {"epochs": epochs, "batch_size": 64, "lr": lr, "optimizer": optimizer},
            "budget": {"trials": trials, "flops_budget": flops_budget},
            "search": {
                "agent": agent,
                "space": space,
                "options": options or {},
                "seed_grid": seed_grid,
            },
        }
    )


def _template() -> Path:
    global _TEMPLATE
    if _TEMPLATE is None:
        quiet()
        from midl_autok.store import make_client

        folder = Path(tempfile.mkdtemp(prefix="midl-autok-mlflow-template-"))
        make_client(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        _TEMPLATE = folder
    return _TEMPLATE


def fresh_store(root: Path) -> Store:
    """An empty store at ``root`` whose MLflow database already has its tables."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(_template() / "mlflow.db", root / "mlflow.db")
    return open_store(root)


def runs(store: Store, experiment: str) -> tuple[Any, list[Any]]:
    """(the parent runs, the child runs) of an MLflow experiment (= a study), oldest first."""
    client = store.mlflow_client()
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    all_runs = client.search_runs([exp.experiment_id], max_results=1000, order_by=["start_time"])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def completed_trials(db: Path) -> int:
    """COMPLETE trials in an Optuna sqlite file, read while a search may write it (0 until
    its tables exist; the file is never created here: sqlite would make an empty one)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])
