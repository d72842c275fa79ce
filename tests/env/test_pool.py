"""The task pool: its checkers, the task-free view, and a pool policy controlling a full run of
a task it never saw, with a different number of layers and classes."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midl_autok.data import Dataset
from midl_autok.env import (
    GLOBAL_FEATURES,
    KRule,
    TaskPoolEnv,
    TaskView,
    TopKScheduleEnv,
    decode_action,
    fit_to_budget,
    lam_feature,
    low_fidelity,
)
from midl_autok.env_registration import TOPK_POOL_ID, register_envs
from midl_autok.errors import UserError
from midl_autok.schedule import k_from_fraction
from midl_autok.spec import ExperimentSpec, validate_spec
from midl_autok.trainer import TrainConfig, build_for_spec, train

pytest.importorskip("stable_baselines3")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(hidden: list[int], classes: int, name: str) -> ExperimentSpec:
    return validate_spec(
        {
            "name": name,
            "seed": 1,
            "dataset": {
                "name": "synthetic",
                "options": {"n_samples": 300, "n_features": 16, "n_classes": classes},
            },
            "model": {"arch": "mlp", "hidden": hidden, "gate_rank": 2, "light_rank": 2},
            "training": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        }
    )


@pytest.fixture(scope="module")
def two() -> ExperimentSpec:
    return _spec([48, 32], 4, "two-layers")


@pytest.fixture(scope="module")
def one() -> ExperimentSpec:
    return _spec([24], 3, "one-layer")


@pytest.fixture(scope="module")
def two_env(two: ExperimentSpec) -> TopKScheduleEnv:
    """The two-layer task's env (for its layers and cost model)."""
    return TopKScheduleEnv(two, device="cpu")


@pytest.fixture(scope="module")
def pool(two: ExperimentSpec, one: ExperimentSpec) -> TaskPoolEnv:
    return TaskPoolEnv([two, one], max_samples=120, epochs=2)


def test_pool_passes_gymnasium_and_sb3_checkers(two: ExperimentSpec, one: ExperimentSpec) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    register_envs()
    env = gym.make(TOPK_POOL_ID, tasks=[two, one], max_samples=120, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure
        check_env(env.unwrapped)
        sb3_check_env(TaskPoolEnv([two, one], max_samples=120, epochs=2))


def test_pool_is_low_fidelity_and_one_shape_for_every_task(pool: TaskPoolEnv) -> None:
    # a seeded subsample of 120, before the 20% validation split
    assert [len(e.data.x_train) for e in pool.envs] == [96, 96]
    assert [e.epochs for e in pool.envs] == [2, 2]
    assert pool.observation_space.shape == (len(GLOBAL_FEATURES) + 5 * 2,)
    assert pool.action_space.shape == (2,)
    seen = set()
    for seed in range(8):
        obs, info = pool.reset(seed=seed)
        seen.add(info["task"])
        assert pool.observation_space.contains(obs)
        done = False
        while not done:
            obs, _, terminated, truncated, info = pool.step(pool.action_space.sample())
            assert pool.observation_space.contains(obs)
            done = terminated or truncated
        assert len(info["k"]) == len(pool.task.layers)  # slots past the layers are ignored
    assert seen == {"two-layers", "one-layer"}


def test_reset_options_fix_task_and_lam(pool: TaskPoolEnv) -> None:
    obs, info = pool.reset(seed=0, options={"task": "one-layer", "lam": 0.1})
    assert info["task"] == "one-layer" and info["lam"] == 0.1
    names = pool.observation_names
    assert obs[names.index("lam")] == pytest.approx(0.5)
    assert obs[names.index("slot0/present")] == 1.0 and obs[names.index("slot1/present")] == 0.0
    assert np.all(obs[names.index("slot1/present") :] == 0.0)  # the padded slot
    with pytest.raises(ValueError, match="unknown task 'nope'; valid: two-layers, one-layer"):
        pool.reset(options={"task": "nope"})
    # lambda drawn log-uniformly in [0.01, 1] when not given
    lams = [pool.reset(seed=s)[1]["lam"] for s in range(40)]
    assert min(lams) >= 0.01 and max(lams) <= 1.0
    assert np.mean(np.array(lams) < 0.1) > 0.3  # uniform would put ~9% below 0.1


def test_task_view_normalizes_accuracy_to_chance_and_lam_to_a_log_scale() -> None:
    view = TaskView(num_classes=10, n_layers=1, max_layers=2)
    raw = np.zeros(len(GLOBAL_FEATURES) + 4, dtype=np.float32)
    raw[GLOBAL_FEATURES.index("val_accuracy")] = 0.1  # chance for 10 classes
    raw[GLOBAL_FEATURES.index("probe_accuracy")] = 1.0
    raw[GLOBAL_FEATURES.index("flops_ratio")] = 5.0  # clipped to the pool's bound
    raw[len(GLOBAL_FEATURES) :] = [0.5, 0.4, 0.3, 0.2]
    obs = view.observe(raw, lam=1.0)
    names = TaskView.names(2)
    assert obs[names.index("val_accuracy")] == pytest.approx(0.0, abs=1e-6)
    assert obs[names.index("probe_accuracy")] == pytest.approx(1.0)
    assert obs[names.index("flops_ratio")] == pytest.approx(2.0)
    assert obs[names.index("lam")] == pytest.approx(0.75)
    assert obs[names.index("slot0/k_fraction")] == pytest.approx(0.5)
    assert [lam_feature(v) for v in (0.0, 1e-3, 0.01, 10.0, 1e6)] == [0.0, 0.0, 0.25, 1.0, 1.0]
    np.testing.assert_array_equal(view.action([0.3, -0.7]), np.array([0.3], dtype=np.float32))
    with pytest.raises(ValueError, match=r"must have 2 entries \(one per slot\), but got 1"):
        view.action([0.3])
    with pytest.raises(ValueError, match="1 <= n_layers <= max_layers = 2, but the model has 3"):
        TaskView(num_classes=10, n_layers=3, max_layers=2)


def test_low_fidelity_keeps_a_smaller_cap() -> None:
    spec = _spec([8], 2, "x").override(**{"dataset.max_samples": 50})
    assert low_fidelity(spec, max_samples=100, epochs=None).dataset.max_samples == 50
    assert low_fidelity(spec, max_samples=20, epochs=5).training.epochs == 5


def test_pool_policy_controls_a_full_run_of_an_unseen_task(
    two: ExperimentSpec, one: ExperimentSpec, tmp_path: Path
) -> None:
    from midl_autok.rl import PolicyController, load_policy, train_pool_policy

    rows: list[dict] = []
    trained = train_pool_policy(
        [two, one],
        tmp_path / "pool.zip",
        episodes=6,
        n_envs=2,
        max_samples=120,
        epochs=2,
        on_episode=rows.append,
    )
    assert len(trained.episodes) >= 6 and rows == trained.episodes
    assert {r["task"] for r in rows} <= {"two-layers", "one-layer"}
    loaded = load_policy(trained.path)  # JSON + weights only, never unpickled
    assert loaded.env_config["pool"] == {"tasks": ["two-layers", "one-layer"], "max_layers": 2}

    unseen = _spec([40, 20], 5, "unseen").override(**{"training.epochs": 4})
    data = build_data(unseen)
    net = build_for_spec(unseen, data, seed=3)
    controller = PolicyController.from_file(trained.path, model=net, data=data, epochs=4, lam=0.3)
    result = train(
        net, data, config=TrainConfig.from_spec(unseen, device="cpu", seed=3), controller=controller
    )
    assert result.schedule is not None and result.schedule.epochs == 4
    assert len(controller.trace) == 4
    assert controller.trace[0]["observation"].shape == loaded.policy.observation_space.shape

    three = _spec([16, 16, 16], 3, "three")
    data3 = build_data(three)
    with pytest.raises(
        UserError,
        match=r"controls models with 1 to 2 MID-L layers, but the "
        r"model has 3",
    ):
        PolicyController.from_file(
            trained.path, model=build_for_spec(three, data3), data=data3, epochs=3, lam=0.1
        )


def build_data(spec: ExperimentSpec) -> Dataset:
    from midl_autok.experiment import dataset_for_spec

    return dataset_for_spec(spec)


# --------------------------------------------------------------------------- budget mode


@settings(max_examples=300, deadline=None)
@given(
    action=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
    budgets=st.lists(st.floats(0.0, 1.4), min_size=2, max_size=2),
    min_fraction=st.floats(0.01, 0.5),
)
def test_fit_to_budget_spends_the_budget_never_exceeds_it_and_is_monotone(
    two_env: TopKScheduleEnv, action: list[float], budgets: list[float], min_fraction: float
) -> None:
    layers, costs = two_env.layers, two_env.costs
    k_min = {s.name: k_from_fraction(min_fraction, s.width) for s in layers}
    k_max = {s.name: s.width for s in layers}
    floor = costs.ratio(k_min)
    low, high = sorted(max(b, floor) for b in budgets)  # reachable budgets only
    rule = KRule(layers, costs, min_fraction, low, False, 3, spend_budget=True)
    fitted = []
    for budget in (low, high):
        rule = dataclasses.replace(rule, budget=budget)
        k, _ = rule.decide(action, 0)  # every epoch, not only the last
        assert rule.decide(action, 2)[0] == k
        flops = costs.inference_flops(k)
        assert costs.ratio(k) <= budget  # never over (the floor itself included)
        assert all(k_min[n] <= k[n] <= k_max[n] for n in k)
        if k != k_max:  # spent: short of the budget by less than one unit of k per layer
            unit = sum(2 * c.d_in for c in costs.midl_layers)
            assert flops > budget * costs.dense_flops() - unit
        fitted.append(k)
    assert all(fitted[0][n] <= fitted[1][n] for n in fitted[0])  # monotone in the budget


def test_fit_to_budget_lets_the_action_choose_the_allocation(two_env: TopKScheduleEnv) -> None:
    layers, costs = two_env.layers, two_env.costs
    k_min = {s.name: k_from_fraction(0.05, s.width) for s in layers}
    k_max = {s.name: s.width for s in layers}
    budget = (costs.ratio(k_min) + 1.0) / 2 * costs.dense_flops()
    first = decode_action([1.0, -1.0], layers, min_fraction=0.05)
    second = decode_action([-1.0, 1.0], layers, min_fraction=0.05)
    a = fit_to_budget(first, costs, max_flops=budget, k_min=k_min, k_max=k_max)
    b = fit_to_budget(second, costs, max_flops=budget, k_min=k_min, k_max=k_max)
    assert a["body.0"] > b["body.0"] and a["body.1"] < b["body.1"]
    # a k under the budget grows, one over it shrinks; one that fits exactly stays
    assert costs.inference_flops(a) <= budget and costs.inference_flops(b) <= budget
    assert (
        fit_to_budget(a, costs, max_flops=costs.inference_flops(a), k_min=k_min, k_max=k_max) == a
    )


def test_budget_pool_passes_the_checkers_and_keeps_every_epoch_within_budget(
    two: ExperimentSpec, one: ExperimentSpec
) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    register_envs()
    env = gym.make(TOPK_POOL_ID, tasks=[two, one], budgets=(0.0, 1.0), max_samples=120, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
        sb3_check_env(TaskPoolEnv([two, one], budgets=(0.0, 1.0), max_samples=120, epochs=2))

    pool = TaskPoolEnv([two, one], budgets=(0.0, 1.0), max_samples=120, epochs=2)
    names = pool.observation_names
    assert names[GLOBAL_FEATURES.index("lam")] == "budget_position"
    assert pool.config()["spend_budget"] and pool.config()["lam"] == [0.0, 0.0]
    pool.action_space.seed(0)
    for seed in range(8):
        obs, info = pool.reset(seed=seed)
        task = pool.task
        assert task.budget_floor <= info["budget"] <= 1.0 and info["lam"] == 0.0
        position = (info["budget"] - task.budget_floor) / (1 - task.budget_floor)
        assert obs[names.index("budget_position")] == pytest.approx(position, abs=1e-6)
        done = False
        while not done:
            obs, _, terminated, truncated, info = pool.step(pool.action_space.sample())
            assert info["inference_flops_ratio"] <= pool.task.budget  # every epoch
            done = terminated or truncated
    with pytest.raises(ValueError, match="budget must reach"):
        TaskPoolEnv([two], budgets=(0.0, 0.1), max_samples=120, epochs=2)


def test_budget_pool_policy_round_trips_without_unpickling_and_runs_at_a_budget(
    two: ExperimentSpec, one: ExperimentSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    from midl_autok.rl import PolicyController, load_policy, train_pool_policy

    trained = train_pool_policy(
        [two, one],
        tmp_path / "b.zip",
        budgets=(0.0, 1.0),
        episodes=4,
        n_envs=2,
        max_samples=120,
        epochs=2,
    )
    assert all(r["budget"] is not None for r in trained.episodes)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the policy file was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    loaded = load_policy(trained.path)
    assert loaded.env_config["spend_budget"] and loaded.env_config["budget"] == [0.0, 1.0]
    assert loaded.meta["observation_names"][GLOBAL_FEATURES.index("lam")] == "budget_position"

    unseen = _spec([40, 20], 5, "unseen").override(**{"training.epochs": 3})
    data = build_data(unseen)
    ratios = []
    for budget in (0.6, 0.9):
        net = build_for_spec(unseen, data, seed=3)
        controller = PolicyController.from_file(
            trained.path, model=net, data=data, epochs=3, budget=budget
        )
        assert controller.lam == 0.0 and controller.view is not None
        assert controller.view.budget_floor == pytest.approx(
            controller.costs.ratio(
                {s.name: k_from_fraction(0.05, s.width) for s in net.layer_specs()}
            )
        )
        config = TrainConfig.from_spec(unseen, device="cpu", seed=3)
        result = train(net, data, config=config, controller=controller)
        per_epoch = [row["inference_flops_ratio"] for row in result.history]
        assert len(per_epoch) == 3 and max(per_epoch) <= budget
        ratios.append(result.metrics["inference_flops_ratio"])
    assert ratios[0] < ratios[1]
    net = build_for_spec(unseen, data, seed=3)
    with pytest.raises(
        UserError,
        match=r"trained with budget in \[0\.0, 1\.0\]; choose one value \(e\.g\. budget=1\.0\)",
    ):
        PolicyController.from_file(trained.path, model=net, data=data, epochs=3)
    with pytest.raises(UserError, match="below this model's lowest reachable FLOPs ratio"):
        PolicyController.from_file(trained.path, model=net, data=data, epochs=3, budget=0.05)


def test_train_runs_a_budget_pool_policy_from_the_command_line(
    two: ExperimentSpec, one: ExperimentSpec, tmp_path: Path
) -> None:
    """``midl-autok train EXPERIMENT --controller pool.zip --budget B``: the pool policy runs
    an experiment it was not trained on, within the budget; without EXPERIMENT or --budget it
    is one line, exit status 2."""
    import json

    import yaml
    from clikit import in_process

    from midl_autok.rl import train_pool_policy

    trained = train_pool_policy(
        [two, one], tmp_path / "pool.zip", budgets=(0.0, 1.0), episodes=4, n_envs=2,
        max_samples=120, epochs=2,
    )  # fmt: skip
    unseen = _spec([40, 20], 5, "unseen")
    spec_file = tmp_path / "unseen.yaml"
    spec_file.write_text(yaml.safe_dump(unseen.model_dump(mode="json")))
    policy = str(trained.path)
    ratios = []
    for budget in ("0.6", "0.9"):
        code, out, err = in_process(
            "train", str(spec_file), "--controller", policy, "--budget", budget,
            "--epochs", "2", "--json",
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert result["inference_flops_ratio"] <= float(budget)
        ratios.append(result["inference_flops_ratio"])
    assert ratios[0] < ratios[1]
    code, _, err = in_process("train", "--controller", policy, "--budget", "0.6")
    assert code == 2 and "a pool policy (trained on two-layers, one-layer)" in err
    assert "give EXPERIMENT" in err and len(err.strip().splitlines()) == 1
    code, _, err = in_process("train", str(spec_file), "--controller", policy)
    assert code == 2 and "choose one with --budget" in err, err
