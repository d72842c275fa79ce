"""Agents: the registry, options, the fixed-k grid, and the AgentContract run over every
registered agent (a real 3-trial search that survives raising, NaN and infinite trials)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from clikit import imported_by
from searchkit import fresh_store, runs, tiny_spec

from midl_autok import metrics as M
from midl_autok.agents import (
    AGENTS,
    ExternalAgent,
    SamplerAgent,
    agent_names,
    derive_seed,
    get_agent,
    make_agent,
)
from midl_autok.agents.baselines import coarse_to_fine, fixed_k_grid
from midl_autok.errors import SpecError
from midl_autok.results.record import load_study_record
from midl_autok.search import run_search
from midl_autok.search.outcome import TrialRequest
from midl_autok.search_spaces import make_space
from midl_autok.trainer import TrainHooks, TrainResult

# Options that make the model-based samplers leave their random start within 3 trials, and
# the RL agents' plan 5 training episodes + 1 rollout: trials 1-3 fail, 3 complete.
_RL_FAST = {"episodes": 5, "lambdas": [0.1]}
FAST: dict[str, dict[str, Any]] = {
    "tpe": {"n_startup_trials": 2},
    "gp": {"n_startup_trials": 2},
    "nsga2": {"population_size": 2},
    "ppo": _RL_FAST,
    "sac": _RL_FAST,
    "a2c": _RL_FAST,
}
RL_AGENTS = ("ppo", "sac", "a2c")


# --------------------------------------------------------------------------- the registry


def test_registry_names_and_did_you_mean() -> None:
    assert agent_names() == [
        "tpe", "nsga2", "gp", "qmc", "random", "fixed-k", "ppo", "sac", "a2c"
    ]  # fmt: skip
    with pytest.raises(SpecError, match=r"unknown agent 'tpx'; did you mean 'tpe'\? Valid:"):
        get_agent("tpx")
    with pytest.raises(SpecError, match=r"unknown agent 'dqn'; Valid: a2c, fixed-k, gp, nsga2"):
        get_agent("dqn")


def test_an_entry_that_is_no_agent_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # (a missing package: tests/search/test_search_rules.py, for both registries)
    monkeypatch.setitem(AGENTS, "seed", "midl_autok.agents.base:derive_seed")
    with pytest.raises(TypeError, match=r"^midl_autok.agents.base:derive_seed is not an Agent"):
        get_agent("seed")


def test_importing_the_registry_imports_no_optuna() -> None:
    assert imported_by("import midl_autok.agents as a; a.agent_names()", ["optuna"]) == []


def test_options_are_checked() -> None:
    assert make_agent("tpe", seed=3, n_startup_trials=4).options == {
        "n_startup_trials": 4,
        "multivariate": True,
    }
    with pytest.raises(
        SpecError, match=r"unknown option for agent 'tpe' 'n_startup'; did you mean"
    ):
        make_agent("tpe", n_startup=4)
    with pytest.raises(SpecError, match=r"must be of type int, but got 2\.5"):
        make_agent("nsga2", population_size=2.5)
    with pytest.raises(SpecError, match="option qmc_type of agent 'qmc' must be sobol or halton"):
        make_agent("qmc", qmc_type="grid").create_sampler(0)


def test_sampler_seeds_are_derived_from_seed_and_trial_number() -> None:
    agent = make_agent("tpe", seed=7)
    assert isinstance(agent, SamplerAgent)
    assert agent.trial_seed(3) == derive_seed(7, 3) == make_agent("tpe", seed=7).trial_seed(3)
    assert agent.trial_seed(3) != agent.trial_seed(4)
    assert make_agent("qmc", seed=7).trial_seed(3) == 7  # one scramble for the whole sequence


# --------------------------------------------------------------------------- fixed-k


def test_coarse_to_fine_order_visits_every_point_once() -> None:
    assert coarse_to_fine(5) == [4, 0, 2, 1, 3]
    assert coarse_to_fine(1) == [0]
    for n in range(1, 40):
        assert sorted(coarse_to_fine(n)) == list(range(n))
    assert fixed_k_grid(3, 0.05, 1.0) == [1.0, 0.05, 0.525]
    assert fixed_k_grid(1, 0.2, 0.4) == [0.3]


def test_fixed_k_walks_the_grid_and_skips_what_the_study_already_has() -> None:
    space = make_space("cosine", [("a", 10), ("b", 20)], epochs=3)
    agent = make_agent("fixed-k", seed=0)
    assert isinstance(agent, SamplerAgent)
    agent.prepare(target=4, space=space)
    study = optuna.create_study(directions=["maximize", "minimize"])
    fractions = []
    for _ in range(4):
        study.sampler = agent.create_sampler(0)
        trial = study.ask()
        schedule = agent.propose(trial, space)
        fractions.append(trial.params["k_fraction"])
        assert schedule.k == ((schedule.k[0][0],) * 3, (schedule.k[1][0],) * 3)  # constant
        if len(fractions) == 2:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # failed: tried again
        else:
            study.tell(trial, [0.5, 1.0])
    assert fractions == [1.0, 0.05, 0.05, 0.366667]


# --------------------------------------------------------------------------- the contract


class _Raise(TrainHooks):
    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise RuntimeError("injected failure")


class _Poison(TrainHooks):
    """Turns one final metric into NaN or infinity (what a broken run can report)."""

    def __init__(self, key: str, value: float) -> None:
        self.key, self.value = key, value

    def on_run_end(self, result: TrainResult) -> None:
        result.metrics[self.key] = self.value


def _injected(request: TrialRequest) -> list[TrainHooks]:
    return {
        1: [_Raise()],
        2: [_Poison(M.VAL_ACCURACY, math.nan)],
        3: [_Poison(M.INFERENCE_FLOPS, math.inf)],
    }.get(request.trial_number, [])


@pytest.mark.parametrize("name", agent_names())
def test_agent_contract(name: str, tmp_path: Path) -> None:
    """A 3-trial search records one Optuna trial and one MLflow child run per evaluation,
    and survives trials that raise, report NaN and report infinity. External agents get the
    same failures injected (trainer hooks per evaluation) and must record them the same way;
    the RL agents' plan (5 training episodes + 1 rollout) gives the same counts."""
    if name in RL_AGENTS:
        pytest.importorskip("stable_baselines3")
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent=name, trials=3, flops_budget=0.9, options=FAST.get(name, {}))
    summary = run_search(spec, store=store, device="cpu", train_hooks=_injected)
    record = load_study_record(store, summary.study)
    assert record.counts() == {"COMPLETE": 3, "FAIL": 3}
    assert summary.completed == 3
    reasons = [t.user_attrs.get("fail_reason") for t in record.trials[1:4]]
    assert reasons[0] == "RuntimeError: injected failure"
    assert reasons[1] == "metric val_accuracy is nan"
    assert reasons[2] == "metric inference_flops is inf"
    parents, children = runs(store, summary.study)
    assert len(parents) == 1
    assert len(children) == len(record.trials)  # one child run per evaluated schedule
    by_id = {c.info.run_id: c for c in children}
    for t in record.trials:
        child = by_id[t.user_attrs["mlflow_run_id"]]
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        if t.state.name == "COMPLETE":
            assert child.info.status == "FINISHED"
            assert t.values == [t.user_attrs[M.VAL_ACCURACY], t.user_attrs[M.INFERENCE_FLOPS]]
            assert "flops_budget" in t.constraints
            assert t.user_attrs["schedule"]["provenance"]["agent"] == name
        else:
            assert child.info.status == "FAILED"
            assert child.data.tags["fail_reason"] == t.user_attrs["fail_reason"]
    assert record.attrs["agent"] == name
    assert all(p[M.INFERENCE_FLOPS_RATIO] <= 0.9 for p in summary.front)


def test_contract_covers_external_agents_too() -> None:
    """Every registered name is a SamplerAgent or an ExternalAgent (what backends handle)."""
    for name in AGENTS:
        cls: Any = get_agent(name)
        assert issubclass(cls, (SamplerAgent, ExternalAgent)), name
        assert cls.name == name
        assert cls.summary
