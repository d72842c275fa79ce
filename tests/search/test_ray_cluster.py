"""`midl-autok search --backend ray` as a user runs it: real subprocesses, real Ray.

* The driver is killed with SIGKILL mid-search (its local Ray dies with it); the same
  command run again completes the study: completed trials kept, none duplicated, the target
  reached, no trial or run left RUNNING.
* SIGTERM ends a Ray search like Ctrl-C: live trials failed, their runs ended, exit 143.
* A search joins a two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``)
  through ``--ray-address``, and its trials run on both nodes; a wrong address is one line.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clikit import EXE, cli_env, started, wait_until
from raykit import kill_session_of, ray_lock, ray_spec
from searchkit import quiet, runs

from midl_autok.results.record import load_study_record
from midl_autok.search.ray import node_ids
from midl_autok.store import open_store

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _one_ray_at_a_time() -> Iterator[None]:
    quiet()
    with ray_lock():
        yield


def write_spec(folder: Path, *, trials: int, samples: int = 20_000, epochs: int = 3) -> Path:
    """A tiny experiment as a YAML file (about a second per trial)."""
    path = folder / "spec.yaml"
    path.write_text(ray_spec(trials=trials, epochs=epochs, samples=samples).to_yaml())
    return path


def search_args(spec: Path, store: Path, *extra: str) -> list[str]:
    return [*EXE, "search", str(spec), "--store", str(store), "--backend", "ray", *extra]


def count(db: Path, state: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute("SELECT COUNT(*) FROM trials WHERE state = ?", (state,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def stop_after(args: list[str], db: Path, done: int, sig: signal.Signals) -> int:
    """Start a search, send ``sig`` once ``done`` trials completed; return its exit code."""
    # kill_session_of: what a killed driver's Ray leaves behind
    with started(args, after=kill_session_of) as proc:
        wait_until(proc, lambda: count(db, "COMPLETE") >= done)
        proc.send_signal(sig)
        return proc.wait(timeout=120)


def assert_nothing_running(store_dir: Path, study: str) -> tuple[Any, list[Any], list[Any]]:
    store = open_store(store_dir)
    record = load_study_record(store, study)
    parents, children = runs(store, study)
    assert all(t.state.name != "RUNNING" for t in record.trials)
    assert all(r.info.status != "RUNNING" for r in [*parents, *children])
    return record, parents, children


def test_killed_driver_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    spec, store = write_spec(tmp_path, trials=6), tmp_path / "runs"
    args = search_args(spec, store, "--workers", "2")
    code = stop_after(args, store / "optuna.db", done=2, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    before = count(store / "optuna.db", "COMPLETE")
    assert 2 <= before < 6

    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    study = open_store(store)
    (name,) = [p.name for p in study.reports_dir.iterdir() if p.is_dir()]
    record, parents, children = assert_nothing_running(store, name)
    states = [t.state.name for t in record.trials]
    assert states.count("COMPLETE") == 6  # the target, not more
    failed = [t for t in record.trials if t.state.name == "FAIL"]
    assert len(failed) <= 2  # at most the two trials running when the driver died
    assert all(t.user_attrs["fail_reason"].startswith("interrupted: process") for t in failed)
    completed_runs = {t.user_attrs["mlflow_run_id"] for t in record.completed()}
    assert len(completed_runs) == 6  # one child run each, none shared
    assert all(c.info.status == "FINISHED" for c in children if c.info.run_id in completed_runs)
    assert len(children) <= len(record.trials)  # no run without its trial
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
    # no schedule was evaluated twice: every completed trial has its own parameters
    params = [tuple(sorted(t.params.items())) for t in record.completed()]
    assert len(set(params)) == 6


def test_sigterm_fails_the_live_trials_and_ends_their_runs(tmp_path: Path) -> None:
    spec, store = write_spec(tmp_path, trials=50), tmp_path / "runs"
    code = stop_after(
        search_args(spec, store, "--workers", "2"), store / "optuna.db", 1, signal.SIGTERM
    )
    assert code == 143  # 128 + SIGTERM
    (name,) = [
        p.name for p in open_store(store).reports_dir.iterdir() if p.is_dir()
    ]  # Pareto files written
    record, parents, _ = assert_nothing_running(store, name)
    assert [p.info.status for p in parents] == ["KILLED"]
    interrupted = [t for t in record.trials if t.state.name == "FAIL"]
    assert interrupted, "the trials running at SIGTERM are failed"
    for t in interrupted:
        assert t.user_attrs["fail_reason"].startswith("interrupted")


@pytest.fixture
def two_nodes() -> Iterator[Any]:
    """A Ray cluster of two nodes on this machine with one CPU each (stopped afterwards).

    The nodes use the machine's address: Ray resolves 127.0.0.1 in a cluster address to that
    address, so a cluster bound to 127.0.0.1 cannot be joined by address.
    """
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


def test_search_runs_on_both_nodes_of_a_cluster(two_nodes: Any, tmp_path: Path) -> None:
    spec, store = write_spec(tmp_path, trials=4), tmp_path / "runs"
    args = search_args(
        spec, store, "--ray-address", two_nodes.address, "--workers", "2", "--cpus-per-trial", "1"
    )
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    (name,) = [p.name for p in open_store(store).reports_dir.iterdir() if p.is_dir()]
    record, _, _ = assert_nothing_running(store, name)
    assert record.counts() == {"COMPLETE": 4}
    used = node_ids(open_store(store), name)
    assert sorted(used) == [0, 1, 2, 3]
    nodes = {node.node_id for node in two_nodes.list_all_nodes()}
    assert set(used.values()) == nodes  # one CPU per node: trials ran on both


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    spec, store = write_spec(tmp_path, trials=1), tmp_path / "runs"
    args = search_args(spec, store, "--ray-address", "127.0.0.1:9")  # the discard port
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=cli_env())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in lines[0]
