"""A search on a real, imperfect machine: failing trials, locked, read-only and full stores.

Kill-and-resume (SIGKILL, SIGTERM, KeyboardInterrupt, orphaned trials) is tested in
test_cli_search.py and test_search.py, and raising/NaN/inf trials for every agent in
test_agents.py. Here:

* failed trials -- a raising one, one whose loss becomes NaN, and one whose partial metrics
  look better than any real trial -- are FAIL with their reason in Optuna and FAILED in
  MLflow, the search goes on, and ``pareto``/``export`` never return them;
* a writer waits for a locked sqlite database instead of failing ("database is locked");
* a store that cannot be written is refused before the first trial, with one line, and a
  read-only store can still be read (``pareto``, ``export`` elsewhere);
* a disk that fills up during a search stops it with one line, keeps every completed trial,
  and the same command resumes once there is space again.

Read-only and full file systems need a tmpfs or bind mount, i.e. root (as in this project's
containers); as another user, the read-only store is made with chmod instead and the full
disk test is skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from clikit import EXE, in_process, run_cli, started, wait_until
from searchkit import completed_trials, fresh_store, quiet, runs, tiny_spec

from midl_autok import metrics as M
from midl_autok.results.record import load_study_record
from midl_autok.schedule import KSchedule
from midl_autok.search import run_search
from midl_autok.search.outcome import TrialRequest
from midl_autok.store import SQLITE_TIMEOUT_S, StoreError, open_store
from midl_autok.trainer import TrainHooks, TrainResult, TrainSession

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


# --------------------------------------------------------------------------- failing trials


class _Raise(TrainHooks):
    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise RuntimeError("injected failure")


class _NanWeights(TrainHooks):
    """After epoch 0 every weight becomes NaN: the next step's loss is NaN."""

    def on_run_start(self, session: TrainSession) -> None:
        self.model = session.model

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        import torch

        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(math.nan)


class _TooGoodToBeTrue(TrainHooks):
    """Reports perfect accuracy at almost no cost, and a NaN loss: a failed trial whose
    finite metrics (stored on the trial) would win every pick if it were not failed."""

    def on_run_end(self, result: TrainResult) -> None:
        result.metrics[M.VAL_ACCURACY] = 1.0
        result.metrics[M.TEST_ACCURACY] = 1.0
        result.metrics[M.INFERENCE_FLOPS_RATIO] = 0.001
        result.metrics[M.INFERENCE_FLOPS] = 1
        result.metrics[M.VAL_LOSS] = math.nan


def _failures(request: TrialRequest) -> list[TrainHooks]:
    return {1: [_Raise()], 2: [_NanWeights()], 4: [_TooGoodToBeTrue()]}.get(
        request.trial_number, []
    )


@pytest.fixture(scope="module")
def failed_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 4-trial random search (3 epochs) in which trials 1, 2 and 4 fail."""
    quiet()
    root = tmp_path_factory.mktemp("failing") / "store"
    store = fresh_store(root)
    spec = tiny_spec(agent="random", trials=4, epochs=3)
    summary = run_search(spec, store=store, device="cpu", train_hooks=_failures)
    assert summary.stopped is None  # three failures, never five in a row: it went on
    return root, summary.study


def test_a_log_gets_one_line_per_trial_with_the_failure_reason(tmp_path: Path) -> None:
    """stderr not a terminal (nohup, a batch job): the search's progress appears as lines
    while it runs, a failed trial's reason included, not only as a last bar at the end."""
    from midl_autok.cli._search_output import Progress

    quiet()
    spec = tiny_spec(agent="random", trials=2, epochs=2)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        progress = Progress(spec.name)
        with progress:
            run_search(
                spec,
                store=fresh_store(tmp_path / "store"),
                device="cpu",
                callbacks=[progress],
                train_hooks=lambda r: [_Raise()] if r.trial_number == 1 else [],
            )
    lines = [line for line in err.getvalue().splitlines() if re.match(r"search \d", line)]
    tail = r"  front \d+  HV \d\.\d{4}  \d+:\d\d:\d\d$"
    assert len(lines) == 3, err.getvalue()
    assert re.match(r"search 1/2  #0: acc \d\.\d{4} FLOPs x\d\.\d{3}" + tail, lines[0]), lines
    assert re.match(r"search 1/2  #1: failed \(RuntimeError: injected failure\)" + tail, lines[1])
    assert re.match(r"search 2/2  #2: acc ", lines[2]), lines


def test_failed_trials_are_recorded_with_their_reason(failed_search: tuple[Path, str]) -> None:
    root, study = failed_search
    store = open_store(root)
    record = load_study_record(store, study)
    states = [t.state.name for t in record.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in record.trials}
    assert reasons[1] == "RuntimeError: injected failure"
    assert reasons[2] == "training diverged: the loss became nan in epoch 1"
    assert reasons[4] == "metric val_loss is nan"
    _, children = runs(store, study)
    by_id = {c.info.run_id: c for c in children}
    for t in record.trials:
        child = by_id[t.user_attrs["mlflow_run_id"]]
        if t.state.name == "FAIL":
            assert child.info.status == "FAILED"
            assert child.data.tags["fail_reason"] == t.user_attrs["fail_reason"]
        else:
            assert child.info.status == "FINISHED"


def test_a_nan_loss_stops_the_trial_at_once(failed_search: tuple[Path, str]) -> None:
    """The NaN trial trained epoch 0, then stopped at the first step of epoch 1: its child
    run has one epoch of metrics, not three, and no final test accuracy."""
    root, study = failed_search
    store = open_store(root)
    diverged = load_study_record(store, study).trials[2]
    client = store.mlflow_client()
    run_id = diverged.user_attrs["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run_id, M.VAL_ACCURACY)] == [0]
    assert M.TEST_ACCURACY not in client.get_run(run_id).data.metrics
    assert M.TEST_ACCURACY not in diverged.user_attrs


def test_pareto_and_export_ignore_failed_trials(
    failed_search: tuple[Path, str], tmp_path: Path
) -> None:
    root, study = failed_search
    record = load_study_record(open_store(root), study)
    failed = {t.number for t in record.trials if t.state.name == "FAIL"}
    assert record.trials[4].user_attrs[M.VAL_ACCURACY] == 1.0  # the bait is on the trial
    code, out, err = in_process("pareto", "--store", str(root), "--study", study, "--json")
    assert code == 0, err
    points = {p["trial"] for p in json.loads(out)}
    assert points
    assert not points & failed
    assert points == {t.number for t in record.front()}
    for pick in ("knee", "max-accuracy", "min-flops"):
        path = tmp_path / f"{pick}.json"
        code, _, err = in_process("export", "--store", str(root), "--pick", pick, "-o", str(path))
        assert code == 0, err
        exported = KSchedule.load(path)
        assert exported.provenance["trial"] not in failed
        assert exported.metrics[M.VAL_ACCURACY] < 1.0
    # asking for a failed trial by number is refused too
    code, _, err = in_process(
        "export", "--store", str(root), "--trial", "4", "-o", str(tmp_path / "x.json")
    )
    assert code == 2, err
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- locked databases


@contextlib.contextmanager
def locked(db: Path, seconds: float) -> Iterator[threading.Event]:
    """Hold an exclusive lock on the sqlite database ``db`` for ``seconds`` (in a thread)."""
    taken = threading.Event()

    def hold() -> None:
        con = sqlite3.connect(db, timeout=30, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        taken.set()
        time.sleep(seconds)
        con.execute("COMMIT")
        con.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(30)
    try:
        yield taken
    finally:
        thread.join()


def test_writers_wait_for_a_locked_database(tmp_path: Path) -> None:
    """Another process (a dashboard, a second search) holding the write lock for a moment
    makes Optuna and MLflow writes wait, not fail with "database is locked"."""
    import optuna

    assert SQLITE_TIMEOUT_S >= 30
    store = fresh_store(tmp_path / "store")
    store.ensure_writable()
    storage = store.optuna_storage()
    study = optuna.create_study(storage=storage, study_name="s")
    client = store.mlflow_client()
    exp = client.create_experiment("e")
    with locked(store.optuna_db, 1.5):
        start = time.perf_counter()
        study.set_user_attr("written", True)  # waits for the lock
        waited = time.perf_counter() - start
    assert study.user_attrs["written"] is True
    assert waited > 0.5
    with locked(store.mlflow_db, 1.5):
        run = client.create_run(exp)  # MLflow's own busy_timeout (20 s) applies
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


# --------------------------------------------------------------------------- unwritable stores


def _mount(*args: str) -> bool:
    if not ROOT or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _tmpfs(mount: Path, options: str, *, why: str) -> Path:
    """A tmpfs mounted at ``mount`` (made here) with ``options``; the test skipped, saying it
    ``why``, where this process cannot mount one."""
    if not ROOT:
        pytest.skip(f"{why} (root)")
    mount.mkdir()
    if not _mount("-t", "tmpfs", "-o", options, "tmpfs", str(mount)):
        pytest.skip("cannot mount a tmpfs here")
    return mount


@contextlib.contextmanager
def read_only(folder: Path, view: Path) -> Iterator[Path]:
    """``folder`` seen read-only: a read-only bind mount at ``view`` (root), or ``folder``
    itself with its write permissions removed (any other user; chmod does not stop root)."""
    if ROOT:
        view.mkdir(parents=True)
        if not _mount("--bind", str(folder), str(view)):
            pytest.skip("cannot bind-mount here")
        try:
            if not _mount("-o", "remount,bind,ro", str(view)):
                pytest.skip("cannot remount read-only here")
            yield view
        finally:
            _umount(view)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield folder
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_a_read_only_store_is_refused_before_the_first_trial_and_can_still_be_read(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    store = fresh_store(root)
    spec = tiny_spec(trials=1)
    study = run_search(spec, store=store, device="cpu").study
    with read_only(root, tmp_path / "view") as ro:
        with pytest.raises(StoreError, match=rf"cannot write to the store {re.escape(str(ro))}: "):
            run_search(tiny_spec(trials=3), store=open_store(ro), device="cpu")
        with pytest.raises(
            StoreError, match=rf"cannot write to the store {re.escape(str(ro / 'new'))}: "
        ):
            open_store(ro / "new").ensure_writable()
        # the read-only commands still work on it
        code, out, err = in_process("pareto", "--store", str(ro), "--json")
        assert code == 0, err
        assert len(json.loads(out)) >= 1
        exported = tmp_path / "knee.json"
        code, _, err = in_process("export", "--store", str(ro), "-o", str(exported))
        assert code == 0, err
        assert KSchedule.load(exported).provenance["study"] == study
    assert load_study_record(open_store(root), study).counts() == {"COMPLETE": 1}  # untouched


def test_a_read_only_store_through_the_command_is_one_line(tmp_path: Path) -> None:
    mount = _tmpfs(tmp_path / "ro", "size=1m,ro", why="needs a read-only mount")
    try:
        code, _, err = in_process("search", "synthetic-mlp", "--epochs", "1", "--store", str(mount))
    finally:
        _umount(mount)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines == [
        f"midl-autok: error: cannot write to the store {mount}: Read-only file system; "
        "choose another folder with --store DIR or MIDL_AUTOK_HOME"
    ]


# --------------------------------------------------------------------------- a full disk


def _fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its file system is full."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(b"\0" * (1 << 16))
            fh.flush()
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_search_cleanly_and_the_rerun_resumes(tmp_path: Path) -> None:
    mount = _tmpfs(tmp_path / "disk", "size=40m", why="needs a small tmpfs mount")
    store_dir = mount / "store"
    search = [
        "search", "synthetic-mlp", "--epochs", "2", "--agent", "random", "--space", "cubic",
        "--store", str(store_dir),
    ]  # fmt: skip
    try:
        with started([*EXE, *search, "--trials", "500"]) as proc:
            wait_until(proc, lambda: completed_trials(store_dir / "optuna.db") >= 2)
            filler = _fill(mount)
            _, stderr = proc.communicate(timeout=300)  # it stops by itself
        errors = [line for line in stderr.splitlines() if line.startswith("midl-autok:")]
        assert proc.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        assert len(errors) == 1, stderr[-3000:]
        assert errors[0].startswith("midl-autok: error: no space left on the device; ")
        assert "rerun the same command" in errors[0]

        filler.unlink()  # space again: every completed trial is still there
        store = open_store(store_dir)
        record = load_study_record(store)
        kept = len(record.completed())
        assert kept >= 2
        target = kept + 2
        rerun = run_cli(*search, "--trials", str(target), timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        record = load_study_record(store, record.name)
        assert len(record.completed()) == target
        assert "RUNNING" not in record.counts()
        numbers = [t.number for t in record.trials]
        assert numbers == list(range(len(numbers)))
        parents, children = runs(store, record.name)
        assert "RUNNING" not in {r.info.status for r in [*parents, *children]}
        assert parents[-1].info.status == "FINISHED"
    finally:
        _umount(mount)


# --------------------------------------------------------------------------- servers


def test_dashboards_bind_to_loopback_unless_host_says_otherwise(tmp_path: Path) -> None:
    """Both servers get ``--host 127.0.0.1`` by default and exactly the --host given
    otherwise (test_dashboard.py checks the sockets of real servers on the default)."""
    import optuna

    from midl_autok.dashboard import Dashboards

    store = fresh_store(tmp_path / "store")
    store.ensure_writable()
    optuna.create_study(storage=store.optuna_storage(), study_name="s")
    for host in (None, "0.0.0.0", "::1"):
        kwargs = {} if host is None else {"host": host}
        services = Dashboards.for_store(store, **kwargs).services
        assert [s.name for s in services] == ["optuna-dashboard", "MLflow UI"]
        for s in services:
            assert s.argv[s.argv.index("--host") + 1] == (host or "127.0.0.1")


class _FakeClient:
    tracking_uri = "http://user:secret@mlflow.example:5000"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_experiment_by_name(self, name: str) -> Any:
        raise self.exc

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("code", "text", "match"),
    [
        ("UNAUTHENTICATED", "error code 401", r"not authenticated \(401\); set MLFLOW_TRACKING_U"),
        ("PERMISSION_DENIED", "error code 403", r"permission denied \(403\); ask its admin"),
        ("TEMPORARILY_UNAVAILABLE", "Max retries exceeded", r"cannot reach the MLflow server"),
    ],
)
def test_an_mlflow_server_that_refuses_is_one_clear_line(code: str, text: str, match: str) -> None:
    """A basic-auth MLflow server without (or with wrong) credentials, a user without
    permission, a server that is down: a user error naming the server (password hidden),
    checked against a real `mlflow server --app-name basic-auth` by hand (issue 8)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from midl_autok.errors import UserError
    from midl_autok.search.recording import start_run
    from midl_autok.tracking import Tracker

    exc = MlflowException(text, error_code=getattr(databricks_pb2, code))
    client: Any = _FakeClient(exc)
    with pytest.raises(UserError, match=match) as info:
        Tracker.for_experiment(client, "study")
    assert "secret" not in str(info.value)
    assert "user:***@mlflow.example" in str(info.value)
    with pytest.raises(UserError, match=match):
        start_run(Tracker(client, "1"), "trial-0")
    other: Any = _FakeClient(
        MlflowException("something else", error_code=databricks_pb2.INTERNAL_ERROR)
    )
    with pytest.raises(MlflowException, match="something else"):
        Tracker.for_experiment(other, "study")


# --------------------------------------------------------------------------- long runs


def test_counting_trials_reads_no_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's storage counts with one COUNT query: Optuna's get_n_trials loaded every
    trial with its user attrs, twice per trial of a search, which made a 1,000-trial search
    quadratic (experiments/long_run.py). Same answers as Optuna's, for every state filter;
    and it pickles (Ray workers get the storage)."""
    import pickle

    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import TrialState

    store = open_store(tmp_path / "store")
    store.ensure_writable()
    storage = store.optuna_storage()
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize"])
    for i in range(7):
        trial = study.ask()
        if i % 3 == 0:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 3 == 1:
            study.tell(trial, float(i))
    study_id = storage.get_study_id_from_name("s")
    filters: list[Any] = [
        None,
        TrialState.COMPLETE,
        TrialState.RUNNING,
        (TrialState.COMPLETE, TrialState.PRUNED),
        (TrialState.FAIL,),
        (),
    ]
    expected = [BaseStorage.get_n_trials(storage, study_id, f) for f in filters]
    assert expected == [7, 2, 2, 2, 3, 0]

    def loads_trials(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("get_n_trials loaded the trials")

    monkeypatch.setattr(type(storage), "_get_trials", loads_trials)
    assert [storage.get_n_trials(study_id, f) for f in filters] == expected
    with pytest.raises(KeyError):
        storage.get_n_trials(study_id + 100)
    monkeypatch.undo()
    again = pickle.loads(pickle.dumps(storage))
    assert type(again) is type(storage)
    assert again.get_n_trials(study_id) == 7
