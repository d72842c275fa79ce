"""Ctrl-C / SIGTERM are held while a storage call runs, and raised as soon as it returns."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from searchkit import fresh_store

from midl_autok.interrupts import deferred, handling_signals


def _term() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_outside_a_storage_call_a_signal_interrupts_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    steps: list[str] = []

    def search() -> None:
        with handling_signals():
            _term()
            steps.append("not reached")

    with pytest.raises(KeyboardInterrupt):
        search()
    assert steps == []
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_inside_a_storage_call_the_signal_waits_for_its_end() -> None:
    steps: list[str] = []

    def search() -> None:
        with handling_signals():
            with deferred():
                with deferred():  # nested calls: held until the outermost ends
                    _term()
                    steps.append("inner finished")
                steps.append("outer finished")
            steps.append("not reached")  # raised when the outer block ended

    with pytest.raises(KeyboardInterrupt):
        search()
    assert steps == ["inner finished", "outer finished"]


def test_a_second_signal_interrupts_at_once() -> None:
    steps: list[str] = []

    def search() -> None:
        with handling_signals(), deferred():
            _term()
            steps.append("held")
            _term()  # e.g. Ctrl-C pressed twice
            steps.append("not reached")

    with pytest.raises(KeyboardInterrupt):
        search()
    assert steps == ["held"]


def test_an_error_inside_carries_the_held_interrupt() -> None:
    def search() -> None:
        with handling_signals(), deferred():
            _term()
            raise ValueError("the call failed too")

    with pytest.raises(KeyboardInterrupt) as info:
        search()
    assert isinstance(info.value.__cause__, ValueError)


def test_an_interrupted_optuna_write_commits_and_leaves_no_lock(tmp_path: Path) -> None:
    import optuna
    from sqlalchemy import event

    store = fresh_store(tmp_path / "store")
    storage = store.optuna_storage()
    study = optuna.create_study(storage=storage, study_name="s")
    study_id = storage.get_study_id_from_name("s")

    def signal_mid_write(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            _term()  # lands while the write transaction is open

    event.listen(storage.engine, "before_cursor_execute", signal_mid_write)
    try:
        with pytest.raises(KeyboardInterrupt), handling_signals():
            storage.set_study_user_attr(study_id, "key", "value")
    finally:
        event.remove(storage.engine, "before_cursor_execute", signal_mid_write)
    assert storage.get_study_user_attrs(study_id) == {"key": "value"}  # the write completed
    db = sqlite3.connect(tmp_path / "store" / "optuna.db", timeout=1)
    db.execute("BEGIN IMMEDIATE")  # no transaction left holding the write lock
    db.rollback()
    study.tell(study.ask(), 0.5)  # the study goes on
    assert len(study.trials) == 1


def test_tracking_calls_hold_signals_too(tmp_path: Path) -> None:
    from midl_autok.search.recording import start_run
    from midl_autok.tracking import Tracker

    store = fresh_store(tmp_path / "store")
    tracker = Tracker.for_experiment(store.mlflow_client(), "e")
    run = start_run(tracker, "r")
    steps: list[str] = []
    original = tracker.client.set_terminated

    def end_and_signal(*args, **kwargs):  # type: ignore[no-untyped-def]
        _term()  # arrives inside Tracker.end_run
        steps.append("end_run went on")
        return original(*args, **kwargs)

    tracker.client.set_terminated = end_and_signal  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), handling_signals():
        tracker.end_run(run)
    assert steps == ["end_run went on"]
    assert store.mlflow_client().get_run(run).info.status == "FINISHED"
