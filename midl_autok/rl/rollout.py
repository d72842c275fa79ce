"""The one rollout loop: a policy plays one episode of the env.

:func:`play` is the loop (the SB3 agent's rollouts use it too); :func:`rollout` turns its
episode record into the realized schedule and the final metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from midl_autok.rl.episodes import episode_failure, episode_metrics, episode_record
from midl_autok.rl.policy import PolicyFn
from midl_autok.schedule import KSchedule

if TYPE_CHECKING:
    import gymnasium as gym

__all__ = ["play", "rollout"]


def play(
    policy_fn: PolicyFn,
    env: gym.Env[np.ndarray, np.ndarray],
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reset ``env`` and step it with ``policy_fn`` until the episode ends; return the last
    step's ``info`` (its ``"midl_autok/episode"`` is the episode's record)."""
    obs, _ = env.reset(seed=seed, options=options)
    while True:
        obs, _, terminated, truncated, info = env.step(policy_fn(obs))
        if terminated or truncated:
            return info


def rollout(
    policy_fn: PolicyFn,
    env: gym.Env[np.ndarray, np.ndarray],
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[KSchedule, dict[str, float]]:
    """Run one episode of ``env`` (a :class:`~midl_autok.env.TopKScheduleEnv`, wrapped or not)
    with ``policy_fn``; return the realized schedule and the final metrics.

    The metrics are the trainer's final metrics (``val_accuracy``, ``test_accuracy``,
    ``inference_flops``, ...) plus ``episode_return``, ``lam``, ``seed`` (the run seed) and
    ``budget`` when the episode had one. A diverging run raises
    :class:`~midl_autok.trainer.DivergedError` (a failed trial for a search).
    """
    info = play(policy_fn, env, seed=seed, options=options)
    record = episode_record(info)
    error = episode_failure(record)
    if error is not None:
        raise error
    metrics = episode_metrics(record)
    metrics.update(lam=float(record["lam"]), seed=float(record["seed"]))
    if record["budget"] is not None:
        metrics["budget"] = float(record["budget"])
    schedule = info["schedule"]  # the trainer's result: the schedule with its metrics
    assert isinstance(schedule, KSchedule)
    return schedule, metrics
