"""The Top-k schedule environment: checkers, hard budget, seeding, divergence, and a short PPO
run whose saved policy drives the trainer as a live controller."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import pickle
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from midl_autok.env import (
    EPISODE_KEY,
    TopKScheduleEnv,
    clip_to_budget,
    decide_k,
    decode_action,
    diverged_penalty,
)
from midl_autok.env_registration import TOPK_SCHEDULE_ID, register_envs
from midl_autok.errors import SpecError, UserError
from midl_autok.schedule import KSchedule
from midl_autok.spec import ExperimentSpec, validate_spec
from midl_autok.trainer import (
    DivergedError,
    TrainConfig,
    TrainHooks,
    TrainResult,
    TrainSession,
    build_for_spec,
    train,
)

pytest.importorskip("stable_baselines3")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is as fast, and immune to CPU contention (two threads
    on a busy 2-core machine run these tests 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def spec() -> ExperimentSpec:
    """A model small enough for a ~10 ms epoch; MID-L at k_min costs ~0.34 of dense."""
    return validate_spec(
        {
            "seed": 1,
            "dataset": {"name": "synthetic", "options": {"n_samples": 400, "n_features": 16}},
            "model": {"arch": "mlp", "hidden": [48, 32], "gate_rank": 2, "light_rank": 2},
            "training": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        }
    )


@pytest.fixture(scope="module")
def env(spec: ExperimentSpec) -> TopKScheduleEnv:
    """A default env of the tiny spec (for its layers and cost model)."""
    return TopKScheduleEnv(spec, device="cpu")


def _episode(env: gym.Env, seed: int, actions: list[np.ndarray]) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    steps = [(obs, info)]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return steps


# --------------------------------------------------------------------------- checkers


def test_passes_gymnasium_env_checker(spec: ExperimentSpec) -> None:
    from gymnasium.utils.env_checker import check_env

    register_envs()
    register_envs()  # idempotent
    env = gym.make(
        TOPK_SCHEDULE_ID,
        spec=spec,
        device="cpu",
        lam=(0.0, 1.0),
        budget=(0.5, 0.9),
        hard_budget=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)


def test_passes_sb3_env_checker(spec: ExperimentSpec) -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(TopKScheduleEnv(spec, device="cpu", budget=0.6, hard_budget=True))


def test_spaces_and_observation_names(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(spec, device="cpu")
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    names = env.observation_names
    assert env.observation_space.shape == (len(names),) == (11 + 4 * 2,)
    assert names[:2] == ["progress", "probe_loss"]
    assert names[-4:] == [
        "body.1/k_fraction",
        "body.1/gate_mean",
        "body.1/gate_entropy",
        "body.1/selection_overlap",
    ]
    obs, info = env.reset(seed=0)
    row = dict(zip(names, obs.tolist(), strict=True))
    assert row["progress"] == 0.0
    assert row["body.0/k_fraction"] == 1.0
    assert row["body.0/selection_overlap"] == 1.0
    assert row["lam"] == pytest.approx(0.1 / 1.1)
    assert set(info) == {"seed", "lam", "budget", "val_accuracy"}


# --------------------------------------------------------------------------- actions


def test_action_decodes_to_k_between_min_fraction_and_width(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(spec, device="cpu", min_fraction=0.25)
    layers = env.layers  # body.0: 48, body.1: 32
    assert decode_action([-1, -1], layers, min_fraction=0.25) == {"body.0": 12, "body.1": 8}
    assert decode_action([1, 1], layers, min_fraction=0.25) == {"body.0": 48, "body.1": 32}
    assert decode_action([0, 5.0], layers, min_fraction=0.25) == {"body.0": 30, "body.1": 32}
    with pytest.raises(ValueError, match="one entry per MID-L layer \\(2\\), but got 3"):
        decode_action([0, 0, 0], layers, min_fraction=0.25)
    with pytest.raises(ValueError, match="the action must be finite"):
        decode_action([math.nan, 0], layers, min_fraction=0.25)


@settings(max_examples=300, deadline=None)
@given(
    action=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
    budget=st.floats(0.35, 1.3),
    min_fraction=st.floats(0.01, 0.3),
)
def test_hard_budget_clip_never_exceeds_the_budget(
    env: TopKScheduleEnv, action: list[float], budget: float, min_fraction: float
) -> None:
    k_min = {s.name: max(1, round(min_fraction * s.width)) for s in env.layers}
    budget = max(budget, env.costs.ratio(k_min))  # reachable budgets only
    k, clipped = decide_k(
        action,
        layers=env.layers,
        costs=env.costs,
        min_fraction=min_fraction,
        budget=budget,
        hard_budget=True,
        final=True,
    )
    assert env.costs.ratio(k) <= budget  # the floor itself included (flops_cap)
    assert all(k_min[n] <= k[n] <= s.width for n, s in zip(k, env.layers, strict=True))
    free = decode_action(action, env.layers, min_fraction=min_fraction)
    assert clipped == (k != free)
    assert all(k[n] <= free[n] for n in k)  # clipping only ever lowers k


def test_k_rule_clips_only_the_last_epoch_at_the_episode_budget(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(
        spec, device="cpu", budget=(0.4, 0.8), hard_budget=True, epochs=3, min_fraction=0.1
    )
    env.reset(seed=0, options={"budget": 0.5})
    rule = env.rule
    assert (rule.budget, rule.epochs, rule.min_fraction) == (0.5, 3, 0.1)
    action = np.ones(len(env.layers), dtype=np.float32)  # every layer at k = width
    free = decode_action(action, env.layers, min_fraction=0.1)
    assert rule.decide(action, 0) == (free, False)
    assert rule.decide(action, 1) == (free, False)
    k, clipped = rule.decide(action, 2)  # the final epoch: clipped to the budget
    assert clipped and env.costs.ratio(k) <= 0.5 < env.costs.ratio(free)
    env.reset(seed=0, options={"budget": 0.7})
    assert env.rule.budget == 0.7
    assert env.costs.ratio(env.rule.decide(action, 2)[0]) <= 0.7


def test_clip_to_budget_keeps_k_that_fits_and_rejects_unreachable_budget(
    env: TopKScheduleEnv,
) -> None:
    costs = env.costs
    k_min = {"body.0": 1, "body.1": 1}
    k = {"body.0": 10, "body.1": 10}
    assert clip_to_budget(k, costs, max_flops=costs.inference_flops(k), k_min=k_min) == k
    with pytest.raises(ValueError, match="below the cost with every layer at its minimum k"):
        clip_to_budget(k, costs, max_flops=10.0, k_min=k_min)


def test_hard_budget_holds_over_random_episodes(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(
        spec, device="cpu", budget=(0.4, 0.8), hard_budget=True, epochs=2, min_fraction=0.1
    )
    env.action_space.seed(0)
    clipped_any = False
    for episode in range(12):
        _, start = env.reset(seed=episode)
        terminated = False
        while not terminated:
            _, _, terminated, _, info = env.step(env.action_space.sample())
            clipped_any |= info["clipped"]
        final = info["final_metrics"]
        assert final["inference_flops"] <= start["budget"] * final["dense_inference_flops"]
        assert final["inference_flops_ratio"] <= start["budget"]
    assert clipped_any  # the test exercised the clip


def test_invalid_options_are_rejected_with_the_rule(spec: ExperimentSpec) -> None:
    with pytest.raises(ValueError, match="hard_budget=True needs a budget"):
        TopKScheduleEnv(spec, device="cpu", hard_budget=True)
    with pytest.raises(ValueError, match=r"budget must be >= 0\.3421 with hard_budget"):
        TopKScheduleEnv(spec, device="cpu", budget=0.2, hard_budget=True)
    with pytest.raises(ValueError, match="lam must be a finite number or a \\(low, high\\) range"):
        TopKScheduleEnv(spec, device="cpu", lam=(1.0, 0.5))
    with pytest.raises(ValueError, match="min_fraction must satisfy 0 < min_fraction <= 1"):
        TopKScheduleEnv(spec, device="cpu", min_fraction=0.0)
    dense = spec.override(**{"model.variant": "dense"})
    with pytest.raises(SpecError, match="needs a model with MID-L layers"):
        TopKScheduleEnv(dense, device="cpu")
    env = TopKScheduleEnv(spec, device="cpu", budget=(0.5, 0.9))
    with pytest.raises(
        ValueError, match="unknown reset option 'lambda'; valid: budget, hooks, lam"
    ):
        env.reset(seed=0, options={"lambda": 1.0})
    with pytest.raises(ValueError, match=r"reset option budget must be a number in \(0, 0\.9\]"):
        env.reset(seed=0, options={"budget": 0.95})
    with pytest.raises(RuntimeError, match="call reset\\(\\) before step\\(\\)"):
        TopKScheduleEnv(spec, device="cpu").step(np.zeros(2, np.float32))


# --------------------------------------------------------------------------- episodes


def test_seeded_reset_replays_the_same_trajectory(spec: ExperimentSpec) -> None:
    from gymnasium.utils.env_checker import data_equivalence

    env = TopKScheduleEnv(spec, device="cpu", lam=(0.0, 0.5))
    actions = [np.array([a, -a], np.float32) for a in (0.9, -0.3, 0.1)]
    first = _episode(env, 7, actions)
    again = _episode(env, 7, actions)
    assert data_equivalence(first, again, exact=True)
    other = _episode(env, 8, actions)
    assert not np.array_equal(first[-1][0], other[-1][0])
    # per-step reward is the documented formula; the last step adds the deployed model's term
    lam, acc0 = first[0][1]["lam"], first[0][1]["val_accuracy"]
    accs = [acc0] + [step[4]["val_accuracy"] for step in first[1:]]
    for t, step in enumerate(first[1:]):
        rho = step[4]["inference_flops_ratio"]
        expected = accs[t + 1] - accs[t] - lam * rho / 3
        if t == 2:
            expected += accs[t + 1] - lam * rho
        assert step[1] == pytest.approx(expected)
    assert [step[2] for step in first[1:]] == [False, False, True]
    decoded = [decode_action(a, env.layers, min_fraction=0.05) for a in actions]
    assert [step[4]["k"] for step in first[1:]] == decoded
    assert first[-1][4]["schedule"].k == tuple(
        tuple(k[s.name] for k in decoded) for s in env.layers
    )


def test_reset_options_fix_lam_and_budget_for_one_episode(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(spec, device="cpu", lam=(0.0, 1.0), budget=(0.5, 0.9))
    obs, info = env.reset(seed=0, options={"lam": 3.0, "budget": 0.6})
    assert (info["lam"], info["budget"]) == (3.0, 0.6)
    names = env.observation_names
    assert obs[names.index("lam")] == pytest.approx(0.75)
    assert obs[names.index("budget")] == pytest.approx(0.6)
    _, drawn = env.reset(seed=0)
    assert drawn["seed"] == info["seed"]  # the same run, whatever lam and budget
    assert 0.0 <= drawn["lam"] <= 1.0
    assert 0.5 <= drawn["budget"] <= 0.9


def test_diverging_run_ends_the_episode_with_a_flag_and_the_penalty(
    spec: ExperimentSpec,
) -> None:
    env0 = TopKScheduleEnv(spec, device="cpu")
    x = env0.data.x_train.clone()
    x[5, 0] = math.nan  # sample 5 is also in the probe batch: observations must stay finite
    bad = dataclasses.replace(env0.data, x_train=x)
    env = TopKScheduleEnv(spec, device="cpu", data=bad, lam=0.5)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert terminated
    assert not truncated
    assert info["diverged"] is True
    assert "loss became nan in epoch 0" in info["reason"]
    assert reward == diverged_penalty(0.5, env.observer.flops_max)
    assert obs in env.observation_space
    assert np.all(np.isfinite(obs))
    assert env.last_episode_timing["epochs"] == 0.0  # wall times stay out of info
    record = info[EPISODE_KEY]
    assert (record["status"], record["diverged"], record["reason"]) == (
        "failed",
        True,
        info["reason"],
    )
    assert record["metrics"] == {}
    assert record["history"] == []
    assert record["return"] == reward
    # the epoch that diverged keeps its k, as a sampler trial has it
    assert KSchedule.from_dict(record["schedule"]).k == tuple((k,) for k in info["k"].values())

    from midl_autok.rl import rollout

    with pytest.raises(DivergedError, match="loss became nan"):
        rollout(lambda o: np.zeros(2, np.float32), env, seed=0)


def test_the_last_step_publishes_the_episode_record(spec: ExperimentSpec) -> None:
    """Like SB3's Monitor: the step that ends an episode carries the whole episode, as plain
    deterministic data (no wall time)."""
    env = TopKScheduleEnv(spec, device="cpu", lam=(0.0, 0.5), budget=(0.5, 0.9))
    steps = _episode(env, 5, [np.array([a, -a], np.float32) for a in (0.5, -0.2, 0.9)])
    start, infos = steps[0][1], [step[4] for step in steps[1:]]
    assert [EPISODE_KEY in info for info in infos] == [False, False, True]
    record = infos[-1][EPISODE_KEY]
    assert json.loads(json.dumps(record, allow_nan=False)) == record  # plain data
    assert (record["status"], record["reason"], record["diverged"]) == ("completed", None, False)
    assert (record["lam"], record["budget"], record["seed"]) == (
        start["lam"],
        start["budget"],
        start["seed"],
    )
    assert record["return"] == pytest.approx(sum(step[1] for step in steps[1:]))
    assert record["length"] == 3
    assert record["metrics"] == infos[-1]["final_metrics"]
    assert KSchedule.from_dict(record["schedule"]).k == infos[-1]["schedule"].k
    assert env.session is not None
    timed = ("epoch_time_s", "train_time_s")
    assert record["history"] == [
        {k: v for k, v in row.items() if k not in timed} for row in env.session.history
    ]
    assert not any(key in timed for row in record["history"] for key in row)
    assert "train_time_s" not in record["metrics"]
    assert len(env.last_episode_timing["epoch_time_s"]) == 3  # the wall times: on the env
    again = _episode(env, 5, [np.array([a, -a], np.float32) for a in (0.5, -0.2, 0.9)])
    assert again[-1][4][EPISODE_KEY] == record  # deterministic


class _StopAfterFirst(TrainHooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_run_start(self, session: TrainSession) -> None:
        self.calls.append("start")

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.calls.append(f"epoch {epoch}")
        return False

    def on_run_end(self, result: TrainResult) -> None:
        self.calls.append(f"end {result.status}")
        result.metrics["val_accuracy"] = 0.5  # a hook may change the metrics


class _RaiseAtEnd(TrainHooks):
    def on_run_end(self, result: TrainResult) -> None:
        raise RuntimeError("injected failure")


def test_trainer_hooks_run_at_the_trainers_three_points(spec: ExperimentSpec) -> None:
    env = TopKScheduleEnv(spec, device="cpu")
    hook = _StopAfterFirst()
    env.reset(seed=0, options={"hooks": [hook]})
    _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert (terminated, truncated) == (False, True)  # the hook stopped the run
    assert hook.calls == ["start", "epoch 0", "end stopped"]
    record = info[EPISODE_KEY]
    assert (record["status"], record["length"], record["metrics"]["val_accuracy"]) == (
        "stopped",
        1,
        0.5,
    )

    env.reset(seed=0, options={"hooks": [_RaiseAtEnd()]})
    env.step(np.zeros(2, np.float32))
    env.step(np.zeros(2, np.float32))
    with pytest.raises(RuntimeError, match="injected failure"):  # errors="raise" (default)
        env.step(np.zeros(2, np.float32))
    ending = TopKScheduleEnv(spec, device="cpu", errors="end")
    ending.reset(seed=0, options={"hooks": [_RaiseAtEnd()]})
    for _ in range(3):
        _, reward, terminated, _, info = ending.step(np.zeros(2, np.float32))
    assert terminated
    record = info[EPISODE_KEY]
    assert (record["status"], record["reason"]) == ("failed", "RuntimeError: injected failure")
    assert record["metrics"] == info["final_metrics"]  # it trained to the end
    nan_action = np.full(2, np.nan, np.float32)
    ending.reset(seed=0)
    _, reward, terminated, _, info = ending.step(nan_action)
    assert terminated and info["failed"] and not info["diverged"]
    assert reward == diverged_penalty(ending.lam, ending.observer.flops_max)
    assert info[EPISODE_KEY]["schedule"] is None  # no epoch got a k
    assert info[EPISODE_KEY]["reason"].startswith("ValueError: the action must be finite")


# --------------------------------------------------------------------------- SB3 + controller


def test_ppo_policy_drives_training_as_a_controller(spec: ExperimentSpec, tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    from midl_autok.rl import PolicyController, load_policy, rollout, save_policy

    env = TopKScheduleEnv(spec, device="cpu", lam=(0.0, 1.0), budget=0.7, hard_budget=True)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32, 32]},
    )
    model.learn(total_timesteps=192)
    path = save_policy(model, tmp_path / "policy.zip", env=env)
    loaded = load_policy(path)
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(
        loaded.policy.predict(obs, deterministic=True)[0],
        model.predict(obs, deterministic=True)[0],
    )

    schedule, metrics = rollout(loaded.policy_fn(), env, seed=3, options={"lam": 0.4})
    assert schedule.epochs == 3
    assert metrics["lam"] == 0.4
    assert metrics["inference_flops_ratio"] <= 0.7

    # the same run seed: training under the controller replays the rolled-out episode
    seed = int(metrics["seed"])
    net = build_for_spec(spec, env.data, seed=seed)
    controller = PolicyController.from_file(path, model=net, data=env.data, epochs=3, lam=0.4)
    config = TrainConfig.from_spec(spec, device="cpu", seed=seed)
    result = train(net, env.data, config=config, controller=controller)
    assert result.schedule is not None
    assert result.schedule.k == schedule.k
    assert result.metrics["val_accuracy"] == metrics["val_accuracy"]
    assert len(controller.trace) == 3

    with pytest.raises(UserError, match=r"trained with lam in \[0\.0, 1\.0\]; choose one value"):
        PolicyController.from_file(path, model=net, data=env.data, epochs=3)


def test_load_policy_never_unpickles_the_file(spec: ExperimentSpec, tmp_path: Path) -> None:
    from stable_baselines3 import A2C

    from midl_autok.rl import POLICY_META, load_policy, save_policy

    env = TopKScheduleEnv(spec, device="cpu")
    path = save_policy(A2C("MlpPolicy", env, device="cpu", seed=0), tmp_path / "a2c.zip", env=env)
    marker = tmp_path / "payload-ran"

    # replace SB3's cloudpickled "data" entries by a payload that creates a folder when unpickled
    class Payload:
        def __reduce__(self) -> tuple:
            import os

            return (os.mkdir, (str(marker),))

    blob = base64.b64encode(pickle.dumps(Payload())).decode()
    with zipfile.ZipFile(path) as src:
        members = {name: src.read(name) for name in src.namelist()}
    data = json.loads(members["data"])
    data["policy_class"] = {":type:": "x", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as dst:
        for name, raw in members.items():
            dst.writestr(name, raw)

    loaded = load_policy(evil)
    assert not marker.exists()
    assert loaded.meta["algo"] == "a2c"

    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as dst:
        for name, raw in members.items():
            if name != POLICY_META:
                dst.writestr(name, raw)
    (tmp_path / "plain.zip").write_bytes(plain.getvalue())
    with pytest.raises(UserError, match="not a midl-autok policy file: no member"):
        load_policy(tmp_path / "plain.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable policy zip"):
        load_policy(tmp_path / "junk.zip")
    with pytest.raises(UserError, match="policy file not found"):
        load_policy(tmp_path / "missing.zip")
