"""Reinforcement-learning agents: ``--agent ppo|sac|a2c`` (Stable-Baselines3, the ``rl`` extra).

An RL agent does what a sampler cannot: it watches training and picks the next epoch's k per
layer from what it sees (:class:`~midl_autok.env.TopKScheduleEnv`: one episode = one training
run, one step = one epoch). A search with an RL agent has two phases, and every episode of
both becomes one Optuna trial and one MLflow child run (trial user attrs ``phase``,
``episode``, ``lam``, ``budget``, ``rl_attempt``), so its front shows in ``pareto``,
``export``, ``report`` and the dashboards like any other:

1. **training** (``phase=training``): the SB3 algorithm learns for ``episodes`` episodes on
   ``workers`` vectorized environments (``DummyVecEnv`` for one, ``SubprocVecEnv`` for more;
   one torch thread each). Each episode draws its lambda log-uniformly from the range spanned
   by ``lambdas`` (uniformly when that range starts at 0), and the policy observes it, so one
   policy learns the whole trade-off. With ``budgets`` the env clips the final epoch's k to a
   hard inference-FLOPs budget drawn uniformly from their range instead (lambda: the single
   ``lambdas`` value, default 0); with the spec's ``budget.flops_budget`` and no ``budgets``
   every episode uses that hard budget. A diverging or raising episode ends with the env's
   divergence penalty and is recorded FAIL with its reason; training goes on.
2. **rollout** (``phase=rollout``): the trained policy, saved with
   :func:`midl_autok.rl.save_policy` to ``<store>/policies/<study>.zip`` and logged as the
   artifact ``policy/<study>.zip`` of the parent run, is read back with
   :func:`~midl_autok.rl.load_policy` and rolled out deterministically (with
   :func:`midl_autok.rl.play`, the one rollout loop) once per lambda (or budget) on one fresh
   run seed (the same for every value, so the rollouts differ only by the policy's choices).

The agent sees the search only through :class:`~midl_autok.agents.host.SearchHost`; what it
records of an episode is the env's episode record (``info["midl_autok/episode"]``, see
:mod:`midl_autok.env`) plus the wall times its :class:`EpisodeRecorder` reads from the env's
``last_episode_timing`` (``info["midl_autok/timing"]``: times stay out of the env's info).

**Resume.** The plan is ``episodes + len(sweep)`` evaluations (``budget.trials`` is not used).
Rerunning the same search (same study) skips training when the study records a trained
policy whose file is in the store, and rolls out only the sweep values that have no rollout
trial yet; a finished search reruns as a no-op. Training interrupted before the policy was
saved restarts from scratch with the same seeds (so it ends with the policy an uninterrupted
run would have made); the episodes recorded by the interrupted attempt stay in the study with
their ``rl_attempt``.

With ``workers > 1`` the environments run in ``SubprocVecEnv`` processes (``forkserver``),
which import the main module: a script that starts such a search needs the
``if __name__ == "__main__":`` guard (the ``midl-autok`` command and pytest have it). On a
shared 2-core machine two workers were no faster than one (digits, 10 epochs).

Options (``search.options`` or the CLI's ``--episodes``, ``--lambdas``, ``--budgets``,
``--workers``): see :attr:`RLAgent.defaults`. The space option ``min_fraction`` sets the
smallest k fraction an action can ask for; trial parameters are the ``free`` space's (one k
fraction per layer and epoch).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from midl_autok.agents._sb3_episodes import (
    EpisodeOutcome,
    EpisodeRecorder,
    EpisodeRequest,
    HooksFactory,
    _EpisodeCallback,
    _torch_threads,
    make_env,
    record_episode,
)
from midl_autok.agents.base import ExternalAgent, derive_seed
from midl_autok.errors import SpecError, UserError
from midl_autok.rl import load_policy, play, save_policy

if TYPE_CHECKING:
    from midl_autok.agents.host import SearchHost

__all__ = [
    "A2CAgent",
    "EpisodeOutcome",
    "EpisodeRecorder",
    "EpisodeRequest",
    "PPOAgent",
    "RLAgent",
    "SACAgent",
    "make_env",
    "policy_file",
]

#: The lambda sweep when neither ``lambdas`` nor ``budgets`` is given.
DEFAULT_LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Study user attr holding the trained policy: path (relative to the store), sha256, ...
ATTR_POLICY = "rl_policy"
PHASE_TRAINING, PHASE_ROLLOUT = "training", "rollout"


def policy_file(files_root: Path, study: str) -> Path:
    """Where a study's trained policy is kept: ``<store>/policies/<study>.zip``."""
    name = re.sub(r"[^\w.\-]+", "_", study).strip(".") or "study"
    return files_root / "policies" / f"{name}.zip"


# --------------------------------------------------------------------------- the agents


def _numbers(agent: str, key: str, value: Any, *, low: float, high: float, low_open: bool) -> None:
    bad = [
        v
        for v in value
        if isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or not (v > low if low_open else v >= low)
        or v > high
    ]
    if bad:
        rule = f"{low} {'<' if low_open else '<='} x" + (f" <= {high:g}" if high < math.inf else "")
        raise SpecError(
            f"option {key} of agent '{agent}' must be a list of numbers with {rule}, "
            f"but got {bad[0]!r}"
        )


class RLAgent(ExternalAgent):
    """Base of the SB3 agents (module docstring); subclasses set :attr:`algorithm`."""

    uses_space = False
    #: The SB3 algorithm class.
    algorithm: ClassVar[type[BaseAlgorithm]]
    defaults: ClassVar[Mapping[str, Any]] = {
        "episodes": 40,  # training episodes (= training runs)
        "lambdas": [],  # lambda sweep; [] = 0.01, 0.03, 0.1, 0.3, 1 (0 with budgets)
        "budgets": [],  # hard inference-FLOPs budgets (fractions of dense) to sweep instead
        "workers": 1,  # vectorized environments (SubprocVecEnv when > 1)
        "learning_rate": 0.001,
        "gamma": 0.99,
    }

    def __init__(self, *, seed: int = 0, **options: Any) -> None:
        super().__init__(seed=seed, **options)
        o = self.options
        for key in ("episodes", "workers"):
            if o[key] < 1:
                raise SpecError(
                    f"option {key} of agent '{self.name}' must be an integer >= 1, but got {o[key]}"
                )
        _numbers(self.name, "lambdas", o["lambdas"], low=0.0, high=math.inf, low_open=False)
        _numbers(self.name, "budgets", o["budgets"], low=0.0, high=1.0, low_open=True)
        if o["budgets"] and len(o["lambdas"]) > 1:
            raise SpecError(
                f"agent '{self.name}' sweeps either lambdas or budgets: with budgets give at "
                f"most one lambda, but got {len(o['lambdas'])}"
            )
        for key in ("learning_rate", "gamma"):
            if not 0.0 < o[key] <= 1.0:
                raise SpecError(
                    f"option {key} of agent '{self.name}' must satisfy 0 < x <= 1, but got {o[key]}"
                )

    # -- the plan ------------------------------------------------------------------------------

    @property
    def sweep_key(self) -> str:
        """``budget`` when sweeping budgets, else ``lam``."""
        return "budget" if self.options["budgets"] else "lam"

    @property
    def sweep(self) -> list[float]:
        """The values rolled out after training, in the order given (duplicates dropped)."""
        values = self.options["budgets"] or self.options["lambdas"] or list(DEFAULT_LAMBDAS)
        return list(dict.fromkeys(float(v) for v in values))

    @property
    def lambdas(self) -> list[float]:
        given = [float(v) for v in self.options["lambdas"]]
        return given or ([0.0] if self.options["budgets"] else list(DEFAULT_LAMBDAS))

    def space_name(self, space: str, options: Mapping[str, Any]) -> str:
        """The ``free`` space (it encodes any realized schedule as trial parameters)."""
        extra = sorted(set(options) - {"min_fraction", "max_fraction"})
        if extra:
            raise SpecError(
                f"agent '{self.name}' takes only the space option min_fraction, but got {extra[0]}"
            )
        if float(options.get("max_fraction", 1.0)) != 1.0:
            raise SpecError(
                f"agent '{self.name}' lets actions reach k = width; max_fraction must be 1, "
                f"but got {options['max_fraction']}"
            )
        return "free"

    def env_kwargs(self, host: SearchHost) -> dict[str, Any]:
        """The environment options of the training envs (and of the rollouts)."""
        lambdas = self.lambdas
        kwargs: dict[str, Any] = {
            "lam": (min(lambdas), max(lambdas)),
            "min_fraction": host.space.min_fraction,
            "device": host.device,
        }
        budgets = self.options["budgets"]
        if budgets:
            kwargs.update(budget=(float(min(budgets)), float(max(budgets))), hard_budget=True)
        elif host.flops_budget is not None:
            kwargs.update(budget=float(host.flops_budget), hard_budget=True)
        return kwargs

    def hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        """SB3 constructor arguments for episodes of ``epochs`` steps on ``workers`` envs: the
        agent's options, then the algorithm's own (:meth:`algorithm_hyperparameters`)."""
        return {
            "learning_rate": self.options["learning_rate"],
            "gamma": self.options["gamma"],
            **self.algorithm_hyperparameters(epochs, workers),
        }

    def algorithm_hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        """The constructor arguments particular to :attr:`algorithm` (none by default)."""
        return {}

    # -- running -------------------------------------------------------------------------------

    def run(self, host: SearchHost, *, target: int) -> None:
        self.run_with(host, target=target)

    def run_with(
        self,
        host: SearchHost,
        *,
        target: int,
        callbacks: Sequence[Any] = (),
        train_hooks: HooksFactory | None = None,
    ) -> None:
        """Train (unless the study has its policy), then roll out the missing sweep values.
        ``target`` (``budget.trials``) is not used: the plan is episodes + sweep values.
        ``callbacks`` get ``on_start(host, target=, done=)`` once and
        ``on_trial_end(host, trial, EpisodeOutcome)`` after every record."""
        episodes = int(self.options["episodes"])
        sweep = self.sweep
        path = self._trained_policy(host)
        done_values = self._rolled_out(host)
        todo = [v for v in sweep if _key(v) not in done_values]
        plan = episodes + len(sweep)
        for cb in callbacks:
            cb.on_start(host, target=plan, done=plan - len(todo) - (0 if path else episodes))

        env_kwargs = self.env_kwargs(host)
        if path is None:
            path = self._train(host, env_kwargs, episodes, train_hooks, callbacks)
        host.log_artifact(path, "policy")
        if todo:
            policy_fn = load_policy(path).policy_fn(deterministic=True)
            self._rollouts(host, env_kwargs, policy_fn, todo, train_hooks, callbacks)

    def _attempt(self, host: SearchHost) -> int:
        attempts = [
            t.user_attrs.get("rl_attempt", 0)
            for t in host.trials()
            if t.user_attrs.get("phase") == PHASE_TRAINING
        ]
        return max(attempts, default=0) + 1

    def _trained_policy(self, host: SearchHost) -> Path | None:
        """The study's policy file when training finished and the file is intact, else None."""
        record = host.study_attr(ATTR_POLICY)
        if not isinstance(record, dict):
            return None
        path = host.files_root / str(record.get("path", ""))
        if not path.is_file():
            raise UserError(
                f"study {host.study_name!r} was trained, but its policy file {path} is "
                "missing; restore it (it is also an artifact of the study's MLflow parent runs, "
                "under policy/) or give a new --study"
            )
        if _sha256(path) != record.get("sha256"):
            raise UserError(
                f"the policy file {path} of study {host.study_name!r} was changed since "
                "training; restore it or give a new --study"
            )
        return path

    def _rolled_out(self, host: SearchHost) -> set[str]:
        key = self.sweep_key
        return {
            _key(float(t.user_attrs[key]))
            for t in host.trials()
            if t.user_attrs.get("phase") == PHASE_ROLLOUT and t.user_attrs.get(key) is not None
        }

    def _vec_env(
        self,
        host: SearchHost,
        env_kwargs: Mapping[str, Any],
        train_hooks: HooksFactory | None,
    ) -> VecEnv:
        workers = int(self.options["workers"])
        first = host.next_trial_number()
        fns: list[Callable[[], gym.Env[Any, Any]]] = [
            functools.partial(
                make_env,
                host.spec_dict,
                dict(env_kwargs),
                seed=derive_seed(self.seed, 3, rank),
                threads=1,
                hooks_factory=train_hooks,
                first_trial=first,
                index_step=workers,
                index_offset=rank,
            )
            for rank in range(workers)
        ]
        if workers == 1:
            return DummyVecEnv(fns)
        return SubprocVecEnv(fns)

    def _train(
        self,
        host: SearchHost,
        env_kwargs: Mapping[str, Any],
        episodes: int,
        train_hooks: HooksFactory | None,
        callbacks: Sequence[Any],
    ) -> Path:
        attempt = self._attempt(host)
        epochs = host.spec.training.epochs
        workers = int(self.options["workers"])

        def record(info: Mapping[str, Any]) -> None:
            attrs = {"phase": PHASE_TRAINING, "episode": callback.done, "rl_attempt": attempt}
            record_episode(host, info, attrs, callbacks)

        callback = _EpisodeCallback(record, episodes)
        with _torch_threads(host.threads or 1):
            venv = self._vec_env(host, env_kwargs, train_hooks)
            try:
                model = self.algorithm(
                    "MlpPolicy",
                    venv,
                    seed=derive_seed(self.seed, 1),
                    device="cpu",
                    verbose=0,
                    **self.hyperparameters(epochs, workers),
                )
                # an upper bound: the callback stops after `episodes` finished episodes
                steps = (episodes + workers) * epochs + 1
                model.learn(total_timesteps=steps, callback=callback, progress_bar=False)
            finally:
                with contextlib.suppress(Exception):
                    venv.close()
            template = make_env(host.spec_dict, env_kwargs, seed=0, threads=None)
            path = policy_file(host.files_root, host.study_name)
            save_policy(model, path, env=template, spec=host.spec_dict)
        host.set_study_attr(
            ATTR_POLICY,
            {
                "path": os.path.relpath(path, host.files_root),
                "sha256": _sha256(path),
                "algo": self.name,
                "episodes": callback.done,
                "attempt": attempt,
                "env": template.base.config(),
                "sweep": {"key": self.sweep_key, "values": self.sweep},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        return path

    def _rollouts(
        self,
        host: SearchHost,
        env_kwargs: Mapping[str, Any],
        policy_fn: Callable[[np.ndarray], np.ndarray],
        values: Sequence[float],
        train_hooks: HooksFactory | None,
        callbacks: Sequence[Any],
    ) -> None:
        seed = derive_seed(self.seed, 2)  # one fresh run seed for every sweep value
        with _torch_threads(host.threads or 1):
            for value in values:
                env = make_env(
                    host.spec_dict,
                    env_kwargs,
                    seed=0,
                    threads=None,
                    log_lam=False,
                    hooks_factory=train_hooks,
                    first_trial=host.next_trial_number(),
                )
                options: dict[str, Any] = {self.sweep_key: value}
                if self.sweep_key == "budget":
                    options["lam"] = self.lambdas[0]
                try:  # a run's errors end the episode (errors="end"): this is a bad option
                    info = play(policy_fn, env, seed=seed, options=options)
                except ValueError as exc:
                    raise SpecError(f"agent '{self.name}': {exc}") from None
                attrs = {"phase": PHASE_ROLLOUT, "episode": None, "rl_attempt": None}
                record_episode(host, info, attrs, callbacks)


def _key(value: float) -> str:
    return f"{value:.10g}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PPOAgent(RLAgent):
    name = "ppo"
    summary = "PPO (Stable-Baselines3): a closed-loop k-controller learned over training runs"
    algorithm = PPO

    def algorithm_hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        n_steps = epochs * max(1, math.ceil(2 / workers))  # >= 2 episodes per update
        return {
            "n_steps": n_steps,
            "batch_size": epochs if epochs > 1 else n_steps * workers,
            "n_epochs": 10,
            "policy_kwargs": {"log_std_init": -0.5},
        }


class A2CAgent(RLAgent):
    name = "a2c"
    summary = "A2C (Stable-Baselines3): synchronous advantage actor-critic k-controller"
    algorithm = A2C

    def algorithm_hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        return {"n_steps": epochs, "policy_kwargs": {"log_std_init": -0.5}}


class SACAgent(RLAgent):
    name = "sac"
    summary = "SAC (Stable-Baselines3): off-policy soft actor-critic k-controller"
    algorithm = SAC

    def algorithm_hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        return {
            "learning_starts": 2 * epochs,  # two episodes of uniform actions first
            "batch_size": 64,
            "buffer_size": 100_000,
        }
