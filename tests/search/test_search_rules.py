"""The search layer's single rules, each in one place: the stop rule, the trial's device, the
backend registry, the public-metrics filter, training FLOPs, and the old import paths."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from midl_autok import metrics as M
from midl_autok.agents import AGENTS, get_agent
from midl_autok.errors import SpecError, UserError
from midl_autok.flops import training_flops
from midl_autok.search import BACKENDS, get_backend
from midl_autok.search.devices import trial_device
from midl_autok.search.stopping import StopRule


def _trial(state: TrialState, reason: str | None = None) -> optuna.trial.FrozenTrial:
    attrs = {"fail_reason": reason} if reason else {}
    values = [0.5] if state == TrialState.COMPLETE else None
    return create_trial(state=state, values=values, user_attrs=attrs)


def test_the_stop_rule_counts_failures_in_a_row_and_resets_on_success() -> None:
    rule = StopRule(target=10, max_consecutive_failures=3)
    assert rule.check() is None
    assert rule.after(_trial(TrialState.FAIL, "a")) is None
    assert rule.after(_trial(TrialState.FAIL, "b")) is None
    assert rule.after(_trial(TrialState.PRUNED)) is None  # pruned counts as done: reset
    assert rule.after(_trial(TrialState.FAIL, "c")) is None
    assert rule.after(_trial(TrialState.FAIL, "d")) is None
    assert rule.after(_trial(TrialState.FAIL, "e")) == "3 trials in a row failed (last: e)"
    assert rule.check() == rule.stopped  # no new trial after a stop
    assert rule.after(_trial(TrialState.COMPLETE)) == rule.stopped  # the first reason stays


def test_the_stop_rule_stops_on_time_and_at_the_target() -> None:
    rule = StopRule(target=2, timeout_s=0.05)
    assert rule.check() is None
    assert not rule.done(1) and rule.done(2)
    time.sleep(0.06)
    assert rule.check() == "the time budget of 0.05 s ran out"


def test_one_function_decides_the_trial_device() -> None:
    assert trial_device("cpu") == "cpu"
    assert trial_device("auto") == "auto"  # local: the trainer resolves it per run
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            trial_device("cuda")
    assert trial_device("auto", gpus_per_trial=0.0) == "cpu"
    assert trial_device("auto", gpus_per_trial=0.5) == "cuda"
    assert trial_device("CUDA", gpus_per_trial=1.0) == "cuda"
    with pytest.raises(SpecError, match="needs --gpus-per-trial G > 0"):
        trial_device("cuda", gpus_per_trial=0.0)
    with pytest.raises(SpecError, match="valid: auto, cpu, cuda"):
        trial_device("cuda:1", gpus_per_trial=1.0)


def test_backends_dispatch_through_the_registry() -> None:
    from midl_autok.search.local import run_search

    assert get_backend("local") is run_search
    assert set(BACKENDS) == {"local", "ray"}
    with pytest.raises(SpecError, match="did you mean 'local'"):
        get_backend("locall")


@pytest.mark.parametrize(
    ("kind", "registry", "get", "install"),
    [
        (
            "agent",
            AGENTS,
            get_agent,
            r"install the matching extra, e\.g\. pip install 'midl-autok\[rl\]'",
        ),
        ("backend", BACKENDS, get_backend, r"install it with: pip install 'midl-autok\[slurm\]'"),
    ],
)
def test_a_registered_entry_whose_package_is_missing_names_the_extra(
    kind: str,
    registry: dict[str, str],
    get: Callable[[str], object],
    install: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Agents and backends load their entries through one helper, with one message."""
    monkeypatch.setitem(registry, "slurm", "no_such_package_for_midl.run:Thing")
    with pytest.raises(
        SpecError,
        match=rf"^{kind} 'slurm' needs a package that is not installed "
        rf"\(no_such_package_for_midl\); {install}$",
    ):
        get("slurm")


def test_one_public_metrics_filter_for_trainer_and_search() -> None:
    from midl_autok.trainer import _public_metrics

    raw = {
        M.VAL_ACCURACY: 0.9,
        M.TRAIN_LOSS: 0.2,
        M.EPOCH_TIME_S: 1.5,  # wall clock: never in a schedule file
        M.VAL_LOSS: math.nan,  # not finite: left out
        M.INFERENCE_FLOPS: 1234,
        "dense_inference_flops": 4000,
        "epochs": 3.0,  # not a named metric
    }
    public = M.public_metrics(raw)
    assert public == {
        M.VAL_ACCURACY: 0.9,
        M.TRAIN_LOSS: 0.2,
        M.INFERENCE_FLOPS: 1234,
        "dense_inference_flops": 4000,
    }
    assert _public_metrics(raw) == public


def test_training_flops_is_three_forward_passes_per_sample() -> None:
    assert training_flops(100, 7) == 2100
    from midl_autok.flops import CostModel, LayerCost
    from midl_autok.schedule import KSchedule, LayerSpec

    costs = CostModel((LayerCost("fc", "linear", flops=10),))
    schedule = KSchedule.constant((LayerSpec("x", 4),), epochs=2, fraction=0.5)
    assert costs.training_flops(schedule, [5, 6]) == training_flops(10, 5) + training_flops(10, 6)


def test_the_old_import_paths_still_work() -> None:
    import midl_autok.backends as backends
    import midl_autok.report as report
    import midl_autok.store as store
    import midl_autok.tracking as tracking
    from midl_autok.backends.evaluate import TrialOutcome, TrialRequest, evaluate_trial
    from midl_autok.backends.session import SearchSession, open_search
    from midl_autok.results import files, record
    from midl_autok.results.report import build_report
    from midl_autok.search import evaluate, opening, session

    assert backends.run_search is get_backend("local")
    assert backends.open_search is open_search is opening.open_search
    assert SearchSession is session.SearchSession
    assert evaluate_trial is evaluate.evaluate_trial
    assert TrialOutcome.__module__ == TrialRequest.__module__ == "midl_autok.search.outcome"
    assert store.load_study_record is record.load_study_record
    assert store.StudyRecord is record.StudyRecord
    assert tracking.pareto_summary is files.pareto_summary
    assert report.build_report is build_report
    with pytest.raises(AttributeError):
        store.no_such_name  # noqa: B018
