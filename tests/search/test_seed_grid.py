"""The seed grid (``search.seed_grid``, ``--seed-grid``): the first trials of a sampler search
are the fixed-k agent's coarse constant-k grid, ordinary trials; resuming does not repeat them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from searchkit import fresh_store, runs, tiny_spec

from midl_autok.agents.baselines import fixed_k_grid
from midl_autok.results.record import load_study_record
from midl_autok.schedule import KSchedule
from midl_autok.search import default_study_name, run_search
from midl_autok.spec import ExperimentSpec
from midl_autok.trainer import TrainHooks

# tiny_spec's model: a 2 x 32 MID-L MLP; the spaces' fractions span [0.05, 1.0]
LAYERS = [("body.0", 32), ("body.1", 32)]


def seeded(n: int, **kwargs: Any) -> ExperimentSpec:
    return tiny_spec(seed_grid=n, **kwargs)


def grid_trials(record: Any) -> list[Any]:
    return [t for t in record.trials if t.user_attrs.get("origin") == "seed_grid"]


def constant_fraction(trial: Any) -> float:
    """The k fraction of a trial's schedule, asserting it is one k for every layer and epoch."""
    schedule = KSchedule.from_dict(trial.user_attrs["schedule"])
    rows = schedule.k
    assert all(len(set(row)) == 1 for row in rows), rows  # constant over epochs
    fraction = float(trial.user_attrs["seed_grid_fraction"])
    expected = KSchedule.constant(schedule.layers, schedule.epochs, fraction)
    assert [list(r) for r in schedule.k] == [list(r) for r in expected.k]
    return fraction


@pytest.mark.parametrize(
    ("agent", "space"), [("tpe", "budget"), ("gp", "cosine"), ("random", "linear")]
)
def test_a_seeded_search_runs_the_grid_first(tmp_path: Path, agent: str, space: str) -> None:
    store = fresh_store(tmp_path / "store")
    summary = run_search(seeded(4, agent=agent, space=space, trials=6), store=store, device="cpu")
    assert summary.completed == 6
    record = load_study_record(store, summary.study)
    trials = record.trials
    assert [t.user_attrs.get("origin") for t in trials] == ["seed_grid"] * 4 + [None, None]
    assert [t.user_attrs["seed_grid"] for t in trials[:4]] == [0, 1, 2, 3]
    # the fixed-k agent's grid of 4 in [0.05, 1.0], coarse to fine
    assert fixed_k_grid(4, 0.05, 1.0) == [1.0, 0.05, 0.366667, 0.683333]
    assert [constant_fraction(t) for t in trials[:4]] == [1.0, 0.05, 0.366667, 0.683333]
    # ordinary trials: parameters in the space (the sampler learns from them), child runs
    space_params = set(trials[-1].params)
    for t in trials[:4]:
        assert set(t.params) == space_params  # these spaces express constant schedules
        assert t.state == TrialState.COMPLETE
    if space == "budget":
        for t in trials[:4]:
            shares = [v for k, v in t.params.items() if k.endswith(".share")]
            assert len(shares) == 2 and len(set(shares)) == 1  # equal shares
            assert t.params["start"] == 0.0  # no ramp
    for t in trials[4:]:  # then the sampler
        assert "seed_grid" not in t.user_attrs
    _, children = runs(store, summary.study)
    assert len(children) == 6


def test_a_space_that_cannot_express_the_grid_gets_the_constant_schedule(
    tmp_path: Path,
) -> None:
    # min_budget above what k = 5% costs: the budget space cannot encode the 0.05 point
    spec = seeded(2, agent="tpe", space="budget", trials=3, options={"min_budget": 0.7})
    store = fresh_store(tmp_path / "store")
    summary = run_search(spec, store=store, device="cpu")
    trials = load_study_record(store, summary.study).trials
    assert [constant_fraction(t) for t in trials[:2]] == [1.0, 0.05]
    assert trials[0].params  # 1.0 is inside the budget range: encoded
    assert trials[1].params == {}  # 0.05 is not: the constant schedule without parameters
    assert trials[2].params and "seed_grid" not in trials[2].user_attrs


def test_fixed_k_and_a_grid_of_zero_are_not_seeded(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    for spec in (seeded(2, agent="fixed-k", trials=2), seeded(0, agent="tpe", trials=2)):
        summary = run_search(spec, store=store, device="cpu")
        trials = load_study_record(store, summary.study).trials
        assert [t.user_attrs.get("origin") for t in trials] == [None, None]


class _InterruptAt(TrainHooks):
    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise KeyboardInterrupt


def test_a_resumed_search_does_not_repeat_grid_points(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = seeded(4, agent="tpe", space="budget", trials=6)
    name = default_study_name(spec)

    def interrupt_third(request: Any) -> list[TrainHooks]:
        return [_InterruptAt()] if request.trial_number == 2 else []

    with pytest.raises(KeyboardInterrupt):  # stopped during the third grid point
        run_search(spec, store=store, device="cpu", train_hooks=interrupt_third)
    record = load_study_record(store, name)
    assert [(t.state.name, t.user_attrs["seed_grid"]) for t in record.trials] == [
        ("COMPLETE", 0),
        ("COMPLETE", 1),
        ("FAIL", 2),
    ]

    summary = run_search(spec, store=store, device="cpu")
    assert (summary.completed, summary.new_trials) == (6, 4)
    record = load_study_record(store, name)
    done = [t.user_attrs.get("seed_grid") for t in record.trials if t.state == TrialState.COMPLETE]
    # every grid point once (the interrupted one redone), then the sampler
    assert done == [0, 1, 2, 3, None, None]
    assert [constant_fraction(t) for t in grid_trials(record) if t.state.name == "COMPLETE"] == [
        1.0,
        0.05,
        0.366667,
        0.683333,
    ]

    # more trials later: the grid is not walked again
    more = run_search(spec.override(**{"budget.trials": 8}), store=store, device="cpu")
    assert (more.completed, more.new_trials) == (8, 2)
    record = load_study_record(store, name)
    assert len(grid_trials(record)) == 5  # the 4 points + the one interrupted
    assert all("seed_grid" not in t.user_attrs for t in record.trials[-2:])


def test_a_search_shorter_than_the_grid_runs_its_coarsest_points(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = seeded(5, agent="tpe", space="budget", trials=2)
    summary = run_search(spec, store=store, device="cpu")
    trials = load_study_record(store, summary.study).trials
    assert [constant_fraction(t) for t in trials] == fixed_k_grid(5, 0.05, 1.0)[:2]
    resumed = run_search(spec.override(**{"budget.trials": 4}), store=store, device="cpu")
    trials = load_study_record(store, resumed.study).trials
    assert [t.user_attrs["seed_grid"] for t in trials] == [0, 1, 2, 3]
    assert [constant_fraction(t) for t in trials] == fixed_k_grid(5, 0.05, 1.0)[:4]
