"""Train one policy over a pool of tasks on cheap episodes (:class:`~midl_autok.env.TaskPoolEnv`,
vectorized), then let it control full runs (:class:`~midl_autok.rl.PolicyController`)::

    path = train_pool_policy(["digits-mlp", "synthetic-mlp", "tokens-lstm"], "pool.zip",
                             episodes=1500)
    controller = PolicyController.from_file(path, model=model, data=data, epochs=30, lam=0.1)

Stable-Baselines3 (the ``rl`` extra) is imported inside :func:`train_pool_policy`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midl_autok.env import TaskPoolEnv
from midl_autok.rl.policy import save_policy
from midl_autok.spec import ExperimentSpec

__all__ = ["PoolTraining", "train_pool_policy"]


@dataclass
class PoolTraining:
    """What :func:`train_pool_policy` did: the policy file and one row per finished episode
    (``task``, ``lam``, ``budget``, ``val_accuracy``, ``flops_ratio``, ``return``)."""

    path: Path
    episodes: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0


def _make(tasks: list[Any], kwargs: dict[str, Any], seed: int) -> TaskPoolEnv:
    import torch

    torch.set_num_threads(1)
    env = TaskPoolEnv(tasks, **kwargs)
    env.reset(seed=seed)  # PPO(seed=...) reseeds it; this seeds a venv used without PPO
    return env


def train_pool_policy(
    tasks: Sequence[ExperimentSpec | str],
    path: str | os.PathLike[str],
    *,
    episodes: int = 1500,
    n_envs: int = 4,
    lam: tuple[float, float] = (0.01, 1.0),
    budgets: tuple[float, float] | None = None,
    max_samples: int | None = 400,
    epochs: int | None = 4,
    seed: int = 0,
    learning_rate: float = 1e-3,
    min_fraction: float = 0.05,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> PoolTraining:
    """Train PPO on ``n_envs`` :class:`~midl_autok.env.TaskPoolEnv` (``DummyVecEnv``: the
    episodes are sub-second, so processes would cost more than they save) for about
    ``episodes`` episodes in all, and save it with :func:`~midl_autok.rl.save_policy`.

    Every episode draws its task and its lambda (log-uniform in ``lam``): one policy for all
    tasks and the whole trade-off, which the observation tells apart only through the
    task-free view (lambda included). With ``budgets=(lo, hi)`` (budget mode) each episode
    draws an inference-FLOPs budget instead (log-uniform in the task's reachable part of the
    range), every epoch's k is fit to it, and the reward is the validation accuracy: the
    policy learns the allocation across layers; run it with
    ``PolicyController.from_file(..., budget=b)``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from midl_autok.env import EPISODE_KEY

    kwargs: dict[str, Any] = {"lam": lam, "max_samples": max_samples, "epochs": epochs}
    kwargs["budgets"] = budgets
    kwargs.update(min_fraction=min_fraction, errors="end", device="cpu")
    specs = list(tasks)
    fns = [functools.partial(_make, specs, kwargs, seed + 7919 * r) for r in range(n_envs)]
    venv = DummyVecEnv(fns)  # type: ignore[arg-type]
    first: TaskPoolEnv = venv.envs[0]  # type: ignore[assignment]
    length = max(e.epochs for e in first.envs)
    result = PoolTraining(Path(path))

    class _Count(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                record = info.get(EPISODE_KEY)
                if record is None:
                    continue
                m = record["metrics"]
                row = {
                    "task": info["task"],
                    "lam": record["lam"],
                    "budget": record["budget"],
                    "status": record["status"],
                    "val_accuracy": m.get("val_accuracy"),
                    "flops_ratio": m.get("inference_flops_ratio"),
                    "return": record["return"],
                }
                result.episodes.append(row)
                if on_episode is not None:
                    on_episode(row)
            return len(result.episodes) < episodes

    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=length * 4,  # 4 episodes per env per update
        batch_size=length * 4,
        n_epochs=10,
        gamma=1.0,  # short, fixed-length episodes: the return is the sum the reward defines
        learning_rate=learning_rate,
        seed=seed,
        device="cpu",
        verbose=0,
        policy_kwargs={"log_std_init": -0.5},
    )
    model.learn(total_timesteps=episodes * length * 2, callback=_Count())
    result.steps = int(model.num_timesteps)
    save_policy(model, result.path, env=first)
    venv.close()
    return result
