"""Consistency windows (issue 17 point 6): what a kill between two writes leaves behind.

* A search killed after a trial's MLflow run FINISHED and before Optuna's ``tell`` leaves the
  trial RUNNING with its result in MLflow: the next search on the study completes it from the
  run (values, schedule) instead of failing it, and does not train it again.
* Two searches started on the same study at the same time do not train the same schedule:
  each sampler is seeded from the trial number it reserved, not from a count read before
  another search's ``ask``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from searchkit import fresh_store, quiet, runs, tiny_spec

from midl_autok.results.record import load_study_record
from midl_autok.search import run_search
from midl_autok.store import open_store

KILL_AT_TELL = textwrap.dedent(
    """
    import os, signal, sys
    from midl_autok.search import recording, run_search
    from midl_autok.spec import validate_spec
    from midl_autok.store import open_store
    from midl_autok.search.quiet import quiet

    real = recording.tell_outcome

    def tell(study, trial, outcome, **kw):
        if trial.number == 1:  # the child run is FINISHED by now: die before tell
            os.kill(os.getpid(), signal.SIGKILL)
        return real(study, trial, outcome, **kw)

    recording.tell_outcome = tell
    quiet()
    spec = validate_spec(__import__("json").loads(sys.argv[2]))
    run_search(spec, store=open_store(sys.argv[1]), study="window", device="cpu")
    """
)


def test_a_kill_between_the_runs_end_and_tell_completes_the_trial_from_mlflow(
    tmp_path: Path,
) -> None:
    quiet()
    root = tmp_path / "runs"
    store = fresh_store(root)
    spec = tiny_spec(trials=3, agent="random", seed=5)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT_TELL, str(root), json.dumps(spec.model_dump(mode="json"))],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    _, children = runs(store, "window")
    killed = [r for r in children if r.data.tags.get("trial") == "1"]
    assert [r.info.status for r in killed] == ["FINISHED"]  # the window: run ended, no tell
    run_metrics = killed[0].data.metrics

    summary = run_search(spec, store=open_store(root), study="window", device="cpu")
    record = load_study_record(open_store(root), "window")
    by_number = {t.number: t for t in record.trials}
    trial = by_number[1]
    assert trial.state.name == "COMPLETE"
    assert trial.values == [run_metrics[name] for name in record.objectives]
    assert trial.user_attrs["mlflow_run_id"] == killed[0].info.run_id
    assert trial.user_attrs["schedule"]["layers"]
    assert summary.new_trials == 1  # trial 2 only: trial 1 is not trained again
    assert [t.state.name for t in record.trials] == ["COMPLETE"] * 3
    _, children = runs(store, "window")
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}


@pytest.mark.parametrize("agent", ["random", "tpe"])
def test_two_searches_started_together_train_different_schedules(
    tmp_path: Path, agent: str
) -> None:
    """B's whole ``ask`` runs inside A's, after A chose its sampler seed and before A's
    Optuna ``ask`` (the window two processes hit): they must still propose differently."""
    from midl_autok.search.opening import open_search

    quiet()
    root = tmp_path / "runs"
    fresh_store(root)
    spec = tiny_spec(trials=4, agent=agent, seed=9)
    a = open_search(spec, store=open_store(root), study="twins", device="cpu")
    b = open_search(spec, store=open_store(root), study="twins", device="cpu")
    try:
        inner: list[Any] = []
        real_ask = a.study.ask

        def ask_after_b(*args: Any, **kwargs: Any) -> Any:
            inner.append(b.ask())
            return real_ask(*args, **kwargs)

        a.study.ask = ask_after_b  # type: ignore[method-assign]
        first = a.ask()
        (second,) = inner
        assert first.number != second.number
        one = a.agent.propose(first, a.space)
        two = b.agent.propose(second, b.space)
        assert one.k != two.k
        waiting = a.study.get_trials(states=(TrialState.WAITING,))
        assert waiting == []  # both reservations were taken by the two asks
    finally:
        for session in (a, b):
            session.close()


def test_a_search_alone_seeds_from_the_trial_numbers_it_gets(tmp_path: Path) -> None:
    """Reserving keeps a search alone on its study reproducible (the same parameters in two
    stores) and leaves no WAITING trial behind, with a seed grid too."""
    quiet()
    fresh_store(tmp_path / "runs")
    spec = tiny_spec(trials=4, agent="random", seed=2, seed_grid=2)
    run_search(spec, store=open_store(tmp_path / "runs"), study="alone", device="cpu")
    again = tiny_spec(trials=4, agent="random", seed=2, seed_grid=2)
    fresh_store(tmp_path / "other")
    run_search(again, store=open_store(tmp_path / "other"), study="alone", device="cpu")
    one = load_study_record(open_store(tmp_path / "runs"), "alone")
    two = load_study_record(open_store(tmp_path / "other"), "alone")
    assert [t.state.name for t in one.trials] == ["COMPLETE"] * 4
    assert [t.params for t in one.trials] == [t.params for t in two.trials]
    assert [t.user_attrs.get("seed_grid") is not None for t in one.trials][:2] == [True, True]


def test_a_block_gated_search_trains_whole_groups(tmp_path: Path) -> None:
    """A space proposes any k; with block:8 gating the search snaps it to whole groups of 8
    before training, so no trial fails on a k the layer refuses."""
    quiet()
    fresh_store(tmp_path / "runs")
    spec = tiny_spec(trials=4, agent="random", seed=4).override(**{"model.gating": "block:8"})
    summary = run_search(spec, store=open_store(tmp_path / "runs"), study="blocks", device="cpu")
    record = load_study_record(open_store(tmp_path / "runs"), "blocks")
    assert summary.failed == 0
    assert [t.state.name for t in record.trials] == ["COMPLETE"] * 4
    rows = [row for t in record.trials for row in t.user_attrs["schedule"]["k"]]
    assert rows and all(k % 8 == 0 for row in rows for k in row)


def test_a_search_stopped_before_ask_fails_what_it_enqueued_and_the_grid_retries(
    tmp_path: Path,
) -> None:
    """A stop between enqueueing the seed-grid point and ``ask`` (the window CI hit with
    SIGTERM) leaves no WAITING trial; the next search trains that grid point again."""
    from midl_autok.search.opening import open_search

    quiet()
    root = tmp_path / "runs"
    fresh_store(root)
    spec = tiny_spec(trials=2, agent="random", seed=3, seed_grid=2)
    session = open_search(spec, store=open_store(root), study="stopped", device="cpu")

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    session.study.ask = stopped  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt), session:
        session.ask()
    record = load_study_record(open_store(root), "stopped")
    assert [(t.state.name, t.user_attrs.get("seed_grid")) for t in record.trials] == [("FAIL", 0)]

    run_search(spec, store=open_store(root), study="stopped", device="cpu")
    record = load_study_record(open_store(root), "stopped")
    done = [t.user_attrs.get("seed_grid") for t in record.trials if t.state.name == "COMPLETE"]
    assert done == [0, 1]  # the failed point first, then the rest of the grid
    assert not [t for t in record.trials if t.state.name not in ("COMPLETE", "FAIL")]


def test_a_reservation_left_by_a_dead_search_does_not_make_a_schedule_train_twice(
    tmp_path: Path,
) -> None:
    """A killed search leaves its reserved number WAITING; the next search's ``ask`` takes that
    trial first, while its own reservation waits for the next ``ask``. Seeding that next ask
    from the same reserved number again proposed the same schedule twice (seen on Ray)."""
    from midl_autok.search.opening import open_search
    from midl_autok.search.reserve import ATTR_RESERVED_BY

    quiet()
    root = tmp_path / "runs"
    fresh_store(root)
    spec = tiny_spec(trials=4, agent="random", seed=4, seed_grid=0)
    first = open_search(spec, store=open_store(root), study="stale", device="cpu")
    first.study.enqueue_trial({}, user_attrs={ATTR_RESERVED_BY: "a-search-killed-by-sigkill"})
    first.close()
    run_search(spec, store=open_store(root), study="stale", device="cpu")
    record = load_study_record(open_store(root), "stale")
    params = [tuple(sorted(t.params.items())) for t in record.completed()]
    assert len(params) == 4 and len(set(params)) == 4
