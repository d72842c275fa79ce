"""Multi-fidelity search (``--early-stop``) on the local backend, and the rung rule both backends
share: dominated trials are PRUNED at a rung with their last metrics, count toward
``--trials``, stay off the front; a resumed search judges new trials against the earlier ones.

The same rule on a real Ray is tested in ``test_ray_backend.py``
(``test_early_stop_prunes_the_dominated_trial``, with the same agent and checks).
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from searchkit import assert_pruned, fresh_store, tiny_spec

from midl_autok.agents import AGENTS
from midl_autok.errors import SpecError
from midl_autok.results.record import list_studies, load_study_record
from midl_autok.search import SearchSummary, default_study_name, run_search
from midl_autok.search.ray.schedulers import ParetoSuccessiveHalving, make_scheduler
from midl_autok.search.rungs import EarlyStop, RungRule
from midl_autok.store import Store, open_store
from midl_autok.trainer import TrainHooks

MAX_MIN = ["maximize", "minimize"]


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent ``planned``: even trials dominate odd ones at epoch 1 (see searchkit)."""
    monkeypatch.setitem(AGENTS, "planned", "searchkit:PlannedAgent")


# --------------------------------------------------------------------------- the rule


def test_mo_asha_rule_by_hand() -> None:
    rule = RungRule("mo-asha", directions=MAX_MIN, epochs=8, grace_period=1, reduction_factor=2)
    assert rule.rungs == [1, 2, 4]
    assert rule.judge("a", 1, [0.6, 100]) is None  # alone at rung 1
    assert rule.judge("b", 1, [0.5, 150]) == 1  # dominated by a
    assert rule.judge("c", 1, [0.7, 200]) is None  # non-dominated
    assert rule.judge("a", 1, [0.1, 900]) is None  # judged at rung 1 already
    assert rule.judge("a", 3, [0.7, 100]) is None  # epoch 3: rung 2, alone there
    assert rule.judge("d", 2, [math.nan, 50]) is None  # not comparable: never ranked
    assert rule.stopped == {"b": 1}
    assert rule.reason(1) == "stopped early by mo-asha after epoch 1 of 8"
    # values noted from an earlier search take part in the next judgement
    later = RungRule("mo-asha", directions=MAX_MIN, epochs=8)
    later.record(0, 1, [0.6, 100])
    assert later.judge(1, 1, [0.5, 150]) == 1


def test_asha_ranks_the_scalarized_score() -> None:
    rule = RungRule("asha", directions=MAX_MIN, epochs=4, reference=[0.0, 100.0], ideal=[1.0, 0.0])
    # score = (accuracy + 1 - flops / 100) / 2
    assert rule.judge("a", 1, [0.5, 50.0]) is None  # 0.5, alone
    assert rule.judge("b", 1, [0.5, 50.0]) is None  # 0.5 too: ties promote
    assert rule.judge("c", 1, [0.8, 90.0]) == 1  # 0.45: 2 of 3 ahead (mo-asha would keep it)
    assert rule.judge("d", 1, [0.9, 10.0]) is None  # 0.9: the best
    with pytest.raises(ValueError, match="reference and ideal"):
        RungRule("asha", directions=MAX_MIN, epochs=4)


def test_the_ray_scheduler_follows_the_shared_rule() -> None:
    """Same sequence of results, same decisions: the Tune scheduler is the rule."""
    keys = ["objective/val_accuracy", "objective/inference_flops"]
    rule = RungRule("mo-asha", directions=MAX_MIN, epochs=6)
    sched = make_scheduler(
        RungRule("mo-asha", directions=MAX_MIN, epochs=6),
        objectives=["val_accuracy", "inference_flops"],
    )
    assert isinstance(sched, ParetoSuccessiveHalving)
    results = [
        (f"t{i % 5}", 1 + i // 5, [0.5 + 0.07 * ((3 * i) % 7), 10.0 + (5 * i) % 11])
        for i in range(20)
    ]
    for trial, epoch, values in results:
        expected = "STOP" if rule.judge(trial, epoch, values) is not None else "CONTINUE"
        assert sched.decide(trial, epoch, dict(zip(keys, values, strict=True))) == expected
    assert sched.stopped == rule.stopped
    assert rule.stopped  # the sequence does stop some trials
    # the rung values a study already holds seed the scheduler (a resumed Ray search)
    seeded = make_scheduler(
        RungRule("mo-asha", directions=MAX_MIN, epochs=6),
        objectives=["val_accuracy", "inference_flops"],
        prior=[(0, 1, [0.9, 1.0])],
    )
    assert isinstance(seeded, ParetoSuccessiveHalving)
    assert seeded.decide("x", 1, dict(zip(keys, [0.5, 5.0], strict=True))) == "STOP"
    # no rule (--early-stop none), or no rung before the last epoch: no scheduler
    assert make_scheduler(None, objectives=["val_accuracy"]) is None
    assert make_scheduler(RungRule("mo-asha", directions=MAX_MIN, epochs=1), objectives=[]) is None


def test_early_stop_options_are_checked() -> None:
    with pytest.raises(SpecError, match="unknown --early-stop 'hyperband'"):
        EarlyStop("hyperband").check()
    with pytest.raises(SpecError, match="reduction factor must be > 1"):
        EarlyStop("mo-asha", reduction_factor=1).check()
    assert EarlyStop("mo-asha").grace(12) == 3
    assert EarlyStop("mo-asha", grace_period=2).grace(12) == 2


# --------------------------------------------------------------------------- local searches


def planned_search(store: Store, *, trials: int, **options: Any) -> SearchSummary:
    """A local search of ``trials`` planned-agent trials (4 epochs each) on the CPU."""
    spec = tiny_spec(agent="planned", trials=trials, epochs=4)
    return run_search(spec, store=store, device="cpu", **options)


@pytest.mark.parametrize("early_stop", ["mo-asha", "asha"])
def test_local_search_prunes_the_dominated_trials(
    early_stop: str, planned: None, tmp_path: Path
) -> None:
    store = fresh_store(tmp_path / "store")
    summary = planned_search(store, trials=4, early_stop=early_stop)
    # pruned trials count toward --trials: 4 trials reach the target of 4
    assert (summary.completed, summary.new_trials, summary.pruned) == (4, 4, 2)
    record = load_study_record(store, summary.study)
    assert [t.state.name for t in record.trials] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    for number in (1, 3):
        reason = f"stopped early by {early_stop} after epoch 1 of 4"
        assert_pruned(store, summary.study, number, reason)
    # completed trials trained every epoch and kept the values of both rungs
    assert record.trials[2].user_attrs["epochs"] == 4
    assert sorted(record.trials[2].user_attrs["rungs"]) == ["1", "2"]
    # the front holds completed trials only
    assert {p["trial"] for p in summary.front} <= {0, 2}


def test_without_early_stop_nothing_is_pruned(planned: None, tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    summary = planned_search(store, trials=2)
    assert (summary.completed, summary.pruned) == (2, 0)
    record = load_study_record(store, summary.study)
    assert all("rungs" not in t.user_attrs for t in record.trials)


def test_a_resumed_search_judges_new_trials_by_the_earlier_ones(
    planned: None, tmp_path: Path
) -> None:
    store = fresh_store(tmp_path / "store")
    first = planned_search(store, trials=1, early_stop="mo-asha")
    assert (first.completed, first.pruned) == (1, 0)
    # trial 1 is alone at rung 1 in this process: only trial 0's values from the study
    # (user attr rungs) can stop it
    again = planned_search(store, trials=2, early_stop="mo-asha")
    assert (again.study, again.completed, again.new_trials, again.pruned) == (first.study, 2, 1, 1)
    assert_pruned(store, again.study, 1, "stopped early by mo-asha after epoch 1 of 4")


class _InterruptAtEpoch2(TrainHooks):
    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if epoch == 1:  # after rung 1 judged the trial
            raise KeyboardInterrupt


def test_an_interrupted_search_with_early_stop_resumes(planned: None, tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent="planned", trials=4, epochs=4)

    def hooks(request: Any) -> list[TrainHooks]:
        return [_InterruptAtEpoch2()] if request.trial_number == 2 else []

    with pytest.raises(KeyboardInterrupt):
        run_search(spec, store=store, device="cpu", train_hooks=hooks, early_stop="mo-asha")
    name = default_study_name(spec)
    record = load_study_record(store, name)
    assert [t.state.name for t in record.trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert "1" in record.trials[2].user_attrs["rungs"]  # it reached rung 1 before the stop

    summary = run_search(spec, store=store, device="cpu", early_stop="mo-asha")
    record = load_study_record(store, name)
    states = [t.state.name for t in record.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "PRUNED", "COMPLETE"]
    assert (summary.completed, summary.new_trials, summary.pruned) == (4, 2, 1)
    assert_pruned(store, name, 3, "stopped early by mo-asha after epoch 1 of 4")


def test_early_stop_from_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["search", "synthetic-mlp", "--epochs", "2", "--agent", "random", "--space", "cubic"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "midl_autok",
            *args,
            "--trials",
            "3",
            "--store",
            str(store),
            "--early-stop",
            "mo-asha",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (study,) = list_studies(open_store(store))
    trials = load_study_record(open_store(store), study).trials
    assert len(trials) == 3
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert all(list(t.user_attrs["rungs"]) == ["1"] for t in trials)  # epoch 1 of 2 judged
