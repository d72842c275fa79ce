"""A Ray search whose Optuna storage and MLflow backend store are a real PostgreSQL server, the
way a cluster user runs it: ``--storage postgresql://...`` and ``MLFLOW_TRACKING_URI``.

The test starts its own PostgreSQL (Debian's ``postgresql``; ``scripts/system-deps.sh``
installs it) in a temporary folder on 127.0.0.1 and a free port, as the ``postgres`` user
when run as root, and stops it at the end.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import cli_env
from raykit import ray_lock, ray_spec
from searchkit import quiet

from midl_autok.results.record import load_study_record
from midl_autok.store import open_store

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]

EXE = [sys.executable, "-m", "midl_autok"]


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed; run scripts/system-deps.sh")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT`` of a server started for this module
    (SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3, which is not a dependency)."""
    root = Path(tempfile.mkdtemp(prefix="midl-pg-"))  # short: it holds the Unix socket too
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, user="postgres", group="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    run(pg_tool("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    run(pg_tool("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE optuna")
            cur.execute("CREATE DATABASE mlflow")
        con.close()
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_ray_search_on_postgres(postgres: str, tmp_path: Path) -> None:
    quiet()
    optuna_url, mlflow_url = f"{postgres}/optuna", f"{postgres}/mlflow"
    spec = tmp_path / "spec.yaml"
    spec.write_text(ray_spec(trials=4, epochs=3, samples=5_000).to_yaml())
    store_dir = tmp_path / "runs"  # still holds reports/ and ray/
    search = [
        *EXE,
        "search",
        str(spec),
        "--store",
        str(store_dir),
        "--storage",
        optuna_url,
        "--backend",
        "ray",
        "--workers",
        "2",
    ]
    with ray_lock():
        proc = subprocess.run(
            search,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # MLflow's default artifact root (./mlruns) for a database store
            env=cli_env(MLFLOW_TRACKING_URI=mlflow_url),
        )
    assert proc.returncode == 0, proc.stderr
    assert f"optuna-dashboard {optuna_url}" in proc.stdout
    assert not (store_dir / "optuna.db").exists()
    assert not (store_dir / "mlflow.db").exists()

    store = open_store(store_dir, storage=optuna_url, tracking_uri=mlflow_url)
    (name,) = [p.name for p in store.reports_dir.iterdir() if p.is_dir()]
    record = load_study_record(store, name)
    assert record.counts() == {"COMPLETE": 4}
    client = store.mlflow_client()
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_id: r for r in found if "mlflow.parentRunId" in r.data.tags}
    assert [p.info.status for p in parents] == ["FINISHED"]
    for t in record.trials:
        child = children[t.user_attrs["mlflow_run_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["ray.node_id"]
        assert "schedule.json" in {f.path for f in client.list_artifacts(child.info.run_id)}

    # the read-only commands need nothing but the URLs
    pareto = subprocess.run(
        [*EXE, "pareto", "--storage", optuna_url, "--study", name, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(MLFLOW_TRACKING_URI=mlflow_url),
    )
    assert pareto.returncode == 0, pareto.stderr
    points = json.loads(pareto.stdout)
    assert {p["trial"] for p in points} <= {0, 1, 2, 3}
    assert points
