"""A front confirmed over seeds (``search.confirm``, ``--confirm N``): each retraining is one
Optuna trial and one MLflow child run linked to the schedule it confirms; confirmations do not
count toward the target, stay out of the front, and a resumed confirm phase repeats none."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from clikit import EXE, cli_env, run_cli, started, wait_until
from optuna.trial import TrialState
from searchkit import fresh_store, runs, tiny_spec

from midl_autok.results.confirmed import is_confirmation, schedule_hash
from midl_autok.results.record import load_study_record
from midl_autok.search import run_search
from midl_autok.search.confirm import confirm_seed, front_to_confirm, pending
from midl_autok.store import open_store

REPO = Path(__file__).resolve().parents[2]


def confirmations(record: Any) -> list[Any]:
    return [t for t in record.trials if is_confirmation(t)]


def test_a_confirmed_search_retrains_its_front_with_more_seeds(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent="random", trials=4, seed=3).override(**{"search.confirm": 2})
    summary = run_search(spec, store=store, device="cpu")
    assert summary.completed == 4  # confirmations do not count toward --trials
    record = load_study_record(store, summary.study)
    searched = [t for t in record.trials if not is_confirmation(t)]
    assert len(searched) == 4
    front = record.front()
    assert front and all(not is_confirmation(t) for t in front)
    done = confirmations(record)
    assert len(done) == 2 * len(front)
    assert {(t.user_attrs["confirm_of"], t.user_attrs["confirm_index"]) for t in done} == {
        (f.number, j) for f in front for j in (1, 2)
    }
    by_number = {t.number: t for t in record.trials}
    for t in done:
        original = by_number[t.user_attrs["confirm_of"]]
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["confirm_seed"] == 3 + t.user_attrs["confirm_index"]
        assert t.user_attrs["schedule_hash"] == schedule_hash(original.user_attrs["schedule"])
        assert t.user_attrs["schedule"]["k"] == original.user_attrs["schedule"]["k"]
        assert t.params == original.params  # not sampled: the confirmed trial's parameters
        assert t.user_attrs["schedule"]["provenance"]["seed"] == t.user_attrs["confirm_seed"]
    # one MLflow child run per trial, the confirmations tagged with what they confirm
    _, children = runs(store, summary.study)
    assert len(children) == len(record.trials)
    tagged = {r.info.run_id: r for r in children if r.data.tags.get("origin") == "confirm"}
    assert set(tagged) == {t.user_attrs["mlflow_run_id"] for t in done}
    for t in done:
        tags = tagged[t.user_attrs["mlflow_run_id"]].data.tags
        assert tags["confirm_of"] == str(t.user_attrs["confirm_of"])
        assert tags["schedule_hash"] == t.user_attrs["schedule_hash"]
    # means over the original seed and its confirmations
    stats = record.confirmed()
    assert set(stats) == {f.number for f in front}
    for number, c in stats.items():
        accs = [by_number[number].user_attrs["val_accuracy"]] + [
            t.user_attrs["val_accuracy"] for t in done if t.user_attrs["confirm_of"] == number
        ]
        assert c.n == 3 and c.seeds == [3, 4, 5]
        assert c.mean["val_accuracy"] == pytest.approx(sum(accs) / 3)
    # the confirmed runs carry the means (the MLflow UI); the study a summary (optuna-dashboard)
    client = store.mlflow_client()
    first = front[0]
    metrics = client.get_run(first.user_attrs["mlflow_run_id"]).data.metrics
    assert metrics["val_accuracy_mean"] == pytest.approx(stats[first.number].mean["val_accuracy"])
    assert metrics["confirm_seeds"] == 3.0
    assert record.attrs["confirmed"][str(first.number)]["n"] == 3


def test_rerunning_repeats_no_confirmation_and_more_seeds_add_only_the_new(
    tmp_path: Path,
) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent="random", trials=3).override(**{"search.confirm": 1})
    study = run_search(spec, store=store, device="cpu").study
    first = len(confirmations(load_study_record(store, study)))
    assert first >= 1
    again = run_search(spec, store=store, device="cpu")
    assert again.new_trials == 0  # nothing to retrain, nothing to search
    assert len(confirmations(load_study_record(store, study))) == first
    more = run_search(spec.override(**{"search.confirm": 2}), store=store, device="cpu")
    assert more.study == study  # --confirm is not part of the study's identity
    record = load_study_record(store, study)
    assert len(confirmations(record)) == 2 * first
    assert (
        sorted(t.user_attrs["confirm_index"] for t in confirmations(record))
        == [1] * first + [2] * first
    )
    # a larger target later: the search goes on, confirmations still do not count
    grown = run_search(spec.override(**{"budget.trials": 5}), store=store, device="cpu")
    record = load_study_record(store, study)
    assert grown.completed == 5
    assert len([t for t in record.trials if not is_confirmation(t)]) == 5


def test_the_front_to_confirm_is_capped_and_spread() -> None:
    front = list(range(25))
    assert front_to_confirm(front, 10) == [0, 3, 5, 8, 11, 13, 16, 19, 21, 24]
    assert front_to_confirm(front[:4], 10) == [0, 1, 2, 3]
    assert confirm_seed(2**32 - 1, 1) == 0


class _T:
    def __init__(self, number: int, state: Any, **attrs: Any) -> None:
        self.number, self.state, self.user_attrs = number, state, attrs


def test_pending_reads_done_and_failed_confirmations_from_the_trials() -> None:
    target = _T(0, TrialState.COMPLETE)
    trials = [
        target,
        _T(1, TrialState.COMPLETE, origin="confirm", confirm_of=0, confirm_index=1),
        _T(2, TrialState.FAIL, origin="confirm", confirm_of=0, confirm_index=2, fail_reason="x"),
        _T(3, TrialState.FAIL, origin="confirm", confirm_of=0, confirm_index=2, fail_reason="y"),
        # killed: an interruption is no failure of the schedule, it is retried
        _T(4, TrialState.FAIL, origin="confirm", confirm_of=0, confirm_index=3,
           fail_reason="interrupted: process 7 ended before the trial finished"),
        _T(5, TrialState.FAIL, origin="confirm", confirm_of=0, confirm_index=3,
           fail_reason="interrupted: process 8 ended before the trial finished"),
    ]  # fmt: skip
    todo = pending(trials, [target], 4, seed=10)  # type: ignore[arg-type]
    assert [(t.index, t.seed) for t in todo] == [(3, 13), (4, 14)]


def _confirmations_in(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute(
                "SELECT COUNT(*) FROM trial_user_attributes a JOIN trials t "
                "ON a.trial_id = t.trial_id WHERE a.key = 'origin' "
                "AND a.value_json = '\"confirm\"' AND t.state = 'COMPLETE'"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


@pytest.mark.slow
def test_a_confirm_phase_killed_by_sigkill_resumes_without_repeating(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    fresh_store(store_dir)
    env = cli_env(PYTHONPATH=str(REPO), MIDL_AUTOK_NO_EXTENSIONS="1")
    command = [
        "search", "synthetic-mlp", "--epochs", "2",
        "--agent", "random", "--space", "linear", "--trials", "4", "--confirm", "5",
        "--store", str(store_dir), "--study", "killed",
    ]  # fmt: skip
    with started([*EXE, *command], env=env) as proc:
        wait_until(
            proc,
            lambda: _confirmations_in(store_dir / "optuna.db") >= 2,
            what="the confirm phase made no progress",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    store = open_store(store_dir)
    before = load_study_record(store, "killed")
    done_before = {
        t.number: (t.user_attrs["confirm_of"], t.user_attrs["confirm_index"])
        for t in confirmations(before)
        if t.state == TrialState.COMPLETE
    }
    n_front = len(before.front())
    assert 2 <= len(done_before) < 5 * n_front  # killed in the middle of the phase
    resumed = run_cli(*command, env=env)
    assert resumed.returncode == 0, resumed.stderr
    after = load_study_record(store, "killed")
    done = [t for t in confirmations(after) if t.state == TrialState.COMPLETE]
    pairs = [(t.user_attrs["confirm_of"], t.user_attrs["confirm_index"]) for t in done]
    assert len(pairs) == len(set(pairs)) == 5 * n_front  # all of them, none twice
    for number, pair in done_before.items():  # the ones done before the kill were kept
        assert pairs.count(pair) == 1
        assert next(t for t in done if t.number == number)
    assert len([t for t in after.trials if not is_confirmation(t)]) == 4  # no search trial added
    assert not [t for t in after.trials if t.state == TrialState.RUNNING]
