"""Helpers for the search tests: a tiny experiment, a fresh store, reading MLflow runs.

A new store's MLflow database is a copy of the empty migrated one that the package keeps in
its cache (midl_autok.mlflow_db), as in every store a user makes: no test pays MLflow's
~70 Alembic migrations again.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pytest

from midl_autok import metrics as M
from midl_autok.agents import SamplerAgent
from midl_autok.mlflow_db import seed_new_database
from midl_autok.results.record import load_study_record
from midl_autok.schedule import KSchedule
from midl_autok.search.quiet import quiet
from midl_autok.search_spaces import SearchSpace
from midl_autok.spec import ExperimentSpec, validate_spec
from midl_autok.store import Store, open_store

__all__ = [
    "PlannedAgent",
    "assert_pruned",
    "completed_trials",
    "fresh_store",
    "quiet",
    "runs",
    "tiny_spec",
]


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


def fresh_store(root: Path) -> Store:
    """An empty store at ``root`` whose MLflow database already has its tables."""
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(root)
    # the package's copy of its template; no client opened here (MLflow would keep its engine
    # for the URL, and a test that damages the file afterwards would never see it read again)
    assert seed_new_database(store.mlflow_db), (
        f"no copy of the MLflow template in {root} (MIDL_AUTOK_MLFLOW_TEMPLATE=0, an existing "
        "mlflow.db, or a cache folder that cannot be written?)"
    )
    return store


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


class PlannedAgent(SamplerAgent):
    """Proposes a fixed plan (register it as ``searchkit:PlannedAgent``): even trials keep
    half the neurons every epoch; odd trials train on one neuron per layer until the last
    epoch, then on all of them: after epoch 1 they are both less accurate and (by their
    final k) more expensive than an even trial, i.e. dominated."""

    name = "planned"

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> KSchedule:
        layers, epochs = space.layers, space.epochs
        if trial.number % 2 == 0:
            return KSchedule.constant(layers, epochs, 0.5)
        k = [[1] * (epochs - 1) + [s.width] for s in layers]
        return KSchedule(layers=layers, epochs=epochs, k=k)


def assert_pruned(store: Store, study: str, number: int, reason: str) -> None:
    """Trial ``number`` of a :class:`PlannedAgent` search (2 layers) was stopped after epoch
    1: PRUNED with the metrics of that epoch, its child run KILLED with tag ``pruned``."""
    record = load_study_record(store, study)
    trial = record.trials[number]
    assert trial.state.name == "PRUNED"
    assert trial.values is None
    assert trial.user_attrs["pruned_reason"] == reason
    # its last metrics: epoch 1, trained on one neuron per layer
    assert trial.user_attrs["epochs"] == 1
    assert trial.user_attrs[M.ACTIVE_FRACTION] == pytest.approx(1 / 32)
    assert trial.user_attrs[M.VAL_ACCURACY] < record.trials[0].user_attrs[M.VAL_ACCURACY]
    assert trial.user_attrs["schedule"]["epochs"] == 1
    assert trial.user_attrs["schedule"]["k"] == [[1], [1]]
    # the values its rung compared, kept on the trial (a resumed search judges by them)
    acc, flops = trial.user_attrs["rungs"]["1"]
    assert acc == pytest.approx(trial.user_attrs[M.VAL_ACCURACY])
    assert flops > record.trials[0].user_attrs[M.INFERENCE_FLOPS]  # dense at its end
    # its child run: the epoch it trained, ended KILLED with the reason
    _, children = runs(store, study)
    child = {int(c.data.tags["trial"]): c for c in children}[number]
    assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
    assert child.info.status == "KILLED"
    assert child.data.tags["pruned"] == reason
    client = store.mlflow_client()
    history = client.get_metric_history(child.info.run_id, M.VAL_ACCURACY)
    assert [m.step for m in history] == [0]
    saved = json.loads(
        Path(client.download_artifacts(child.info.run_id, "schedule.json")).read_text()
    )
    assert saved["epochs"] == 1
