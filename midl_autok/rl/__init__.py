"""RL helpers that need no search infrastructure: roll a policy out to a schedule, save and load
a trained Stable-Baselines3 policy, and drive training with it as a live k-controller.

One module per concept:

* :mod:`~midl_autok.rl.policy`: policy files (:func:`save_policy`, :func:`load_policy`, which
  never unpickles), :func:`sb3_policy_fn`;
* :mod:`~midl_autok.rl.controller`: :class:`PolicyController`, the policy as the trainer's
  live k-controller;
* :mod:`~midl_autok.rl.episodes`: an episode's record (the env's
  ``info["midl_autok/episode"]``) -> realized schedule, metrics, failure;
* :mod:`~midl_autok.rl.rollout`: the one rollout loop (:func:`play`) and :func:`rollout`;
* :mod:`~midl_autok.rl.pool`: :func:`train_pool_policy`, one policy trained on cheap episodes
  over a pool of tasks (:class:`~midl_autok.env.TaskPoolEnv`), for full runs of any of them.

The search agents built on them (``--agent ppo|sac|a2c``) are in :mod:`midl_autok.agents.sb3`.
Stable-Baselines3 is the optional ``rl`` extra; it is imported inside the functions that need
it, never at module import.
"""

from __future__ import annotations

from midl_autok.rl.controller import PolicyController
from midl_autok.rl.episodes import (
    episode_failure,
    episode_metrics,
    episode_record,
    episode_schedule,
)
from midl_autok.rl.policy import (
    POLICY_FORMAT,
    POLICY_META,
    POLICY_VERSION,
    LoadedPolicy,
    PolicyFn,
    load_policy,
    save_policy,
    sb3_policy_fn,
)
from midl_autok.rl.pool import PoolTraining, train_pool_policy
from midl_autok.rl.rollout import play, rollout

__all__ = [
    "POLICY_FORMAT",
    "POLICY_META",
    "POLICY_VERSION",
    "LoadedPolicy",
    "PolicyController",
    "PolicyFn",
    "PoolTraining",
    "episode_failure",
    "episode_metrics",
    "episode_record",
    "episode_schedule",
    "load_policy",
    "play",
    "rollout",
    "save_policy",
    "sb3_policy_fn",
    "train_pool_policy",
]
