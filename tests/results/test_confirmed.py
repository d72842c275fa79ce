"""The read side of confirmed trials: means and sd over the seeds, picks from the means,
points and Pareto files unchanged for a study without confirmations."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from midl_autok.results.files import pareto_summary
from midl_autok.results.record import POINT_KEYS, StudyRecord
from midl_autok.results.studies import study_data

DIRECTIONS = ["maximize", "minimize"]
ATTRS = {"objectives": ["val_accuracy", "inference_flops"], "seed": 7}


def trial(number: int, acc: float, flops: float, **attrs: Any) -> Any:
    t = create_trial(
        state=TrialState.COMPLETE,
        values=[acc, flops],
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={
            "val_accuracy": acc,
            "test_accuracy": acc - 0.01,
            "inference_flops": flops,
            "inference_flops_ratio": flops / 1000,
            **attrs,
        },
    )
    t.number = number
    return t


def confirmation(number: int, of: int, index: int, acc: float, flops: float) -> Any:
    return trial(
        number, acc, flops, origin="confirm", confirm_of=of, confirm_index=index,
        confirm_seed=7 + index,
    )  # fmt: skip


def searched() -> list[Any]:
    # A is the most accurate on one seed; its confirmations say it was lucky
    return [trial(0, 0.96, 200.0), trial(1, 0.955, 190.0), trial(2, 0.90, 100.0)]


def confirmed_study() -> StudyRecord:
    trials = [
        *searched(),
        confirmation(3, 0, 1, 0.90, 200.0),
        confirmation(4, 0, 2, 0.91, 200.0),
        confirmation(5, 1, 1, 0.95, 190.0),
        confirmation(6, 1, 2, 0.96, 190.0),
    ]
    return StudyRecord(name="s", attrs=dict(ATTRS), directions=DIRECTIONS, trials=trials)


def test_confirmations_stay_out_of_the_front_and_give_means() -> None:
    record = confirmed_study()
    assert [t.number for t in record.completed()] == [0, 1, 2]
    assert [t.number for t in record.front()] == [2, 1, 0]
    stats = record.confirmed()
    assert set(stats) == {0, 1}
    assert stats[0].n == 3 and stats[0].seeds == [7, 8, 9]
    assert stats[0].mean["val_accuracy"] == pytest.approx((0.96 + 0.90 + 0.91) / 3)
    assert stats[0].sd["val_accuracy"] == pytest.approx(statistics.stdev([0.96, 0.90, 0.91]))
    assert stats[0].confirmations == [3, 4]


def test_picks_use_the_confirmed_means() -> None:
    plain = StudyRecord(name="s", attrs=dict(ATTRS), directions=DIRECTIONS, trials=searched())
    assert plain.pick("max-accuracy").number == 0  # one lucky seed
    record = confirmed_study()
    assert record.pick("max-accuracy").number == 1  # the better mean
    assert record.pick("min-flops").number == 1  # only confirmed trials are candidates
    assert record.pick("knee").number in (0, 1)


def test_points_schedules_and_files_say_how_each_stands() -> None:
    record = confirmed_study()
    points = {p["trial"]: p for p in pareto_summary(record)["points"]}
    assert points[2]["confirm_seeds"] is None and points[2]["val_accuracy_mean"] is None
    assert points[1]["confirm_seeds"] == 3
    assert points[1]["val_accuracy_mean"] == pytest.approx((0.955 + 0.95 + 0.96) / 3)
    assert pareto_summary(record)["confirmed_trials"] == [0, 1]
    data = study_data(record)
    assert [p.number for p in data.points] == [0, 1, 2]  # no confirmation drawn as a trial
    assert data.points[1].metrics["confirm_seeds"] == 3


def test_without_confirmations_the_outputs_are_as_before() -> None:
    record = StudyRecord(name="s", attrs=dict(ATTRS), directions=DIRECTIONS, trials=searched())
    summary = pareto_summary(record)
    assert "confirmed_trials" not in summary
    assert all(list(p) == [*POINT_KEYS, "mlflow_run_id", "knee"] for p in summary["points"])
    assert record.confirmed() == {}


def test_compare_uses_the_search_trials_and_the_confirmed_means() -> None:
    """``studies --compare``: a confirmed study's trial counts are its search trials, and its
    front is judged by the means over the seeds (trial 0's lucky 0.96 is 0.923 on average)."""
    from midl_autok.results.compare import compare_studies

    a = confirmed_study()
    b = StudyRecord(
        name="b",
        attrs=dict(ATTRS),
        directions=DIRECTIONS,
        trials=[trial(0, 0.958, 200.0), trial(1, 0.5, 300.0)],
    )
    data = compare_studies(a, b)
    assert data["values"] == {"s": "confirmed means", "b": "single runs"}
    assert [row["trials"] for row in data["hypervolume_normalized"]] == [3]  # not 7
    (band,) = data["by_flops_ratio"]
    assert band["s"] == pytest.approx(statistics.mean([0.955, 0.95, 0.96]))
    assert band["b"] == 0.958 and band["better"] == "b"  # single runs: s's 0.96 would win
    assert data["front_dominance"]["s"] == {"front": 2, "dominated_by_other": 0}
    # without confirmations, nothing changes: single runs, every trial counts
    plain = StudyRecord(name="p", attrs=dict(ATTRS), directions=DIRECTIONS, trials=searched())
    data = compare_studies(plain, b)
    assert data["values"]["p"] == "single runs"
    assert data["by_flops_ratio"][0]["p"] == 0.96
