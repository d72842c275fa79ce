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
   :func:`~midl_autok.rl.load_policy` and rolled out deterministically once per lambda (or
   budget) on one fresh run seed (the same for every value, so the rollouts differ only by
   the policy's choices).

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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from midl_autok.agents.base import ExternalAgent, derive_seed
from midl_autok.errors import SpecError, UserError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.backends.evaluate import TrialRequest
    from midl_autok.backends.session import SearchSession
    from midl_autok.env import TopKScheduleEnv
    from midl_autok.schedule import KSchedule, LayerSpec
    from midl_autok.search_spaces import SearchSpace
    from midl_autok.trainer import TrainHooks

__all__ = ["A2CAgent", "PPOAgent", "RLAgent", "SACAgent", "policy_file"]

#: The lambda sweep when neither ``lambdas`` nor ``budgets`` is given.
DEFAULT_LAMBDAS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Study user attr holding the trained policy: path (relative to the store), sha256, ...
ATTR_POLICY = "rl_policy"
PHASE_TRAINING, PHASE_ROLLOUT = "training", "rollout"
_EPISODE_INFO = "midl_autok_episode"  # info key of a finished episode (our wrapper's)

HooksFactory = Callable[["TrialRequest"], Sequence["TrainHooks"]]


def policy_file(store_root: Path, study: str) -> Path:
    """Where a study's trained policy is kept: ``<store>/policies/<study>.zip``."""
    import re

    name = re.sub(r"[^\w.\-]+", "_", study).strip(".") or "study"
    return store_root / "policies" / f"{name}.zip"


# --------------------------------------------------------------------------- the env side


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class EpisodeRecorder(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Wraps :class:`~midl_autok.env.TopKScheduleEnv` for a search (runs in env workers).

    Per episode it draws lambda (log-uniform over ``lam_range`` when ``log_lam``), runs the
    trainer hooks of ``hooks_factory`` (request numbered ``first_trial + index``: the trial
    the episode becomes when episodes end in order, exact with one worker), turns an
    exception into a failed episode (the env's divergence penalty, ``terminated``), and at
    the end puts everything the recorder needs in ``info["midl_autok_episode"]``: schedule
    (realized, plus the k of a failed epoch), metrics, history, fail reason, lambda, budget,
    run seed, return and training wall time.
    """

    def __init__(
        self,
        env: TopKScheduleEnv,
        *,
        seed: int,
        log_lam: bool = True,
        hooks_factory: HooksFactory | None = None,
        spec_dict: Mapping[str, Any] | None = None,
        first_trial: int = 0,
        index_step: int = 1,
        index_offset: int = 0,
    ) -> None:
        super().__init__(env)
        self.base = env
        self._rng = np.random.default_rng(seed)
        self._log_lam = log_lam
        self._hooks_factory = hooks_factory
        self._spec_dict = dict(spec_dict or {})
        self._first_trial = first_trial
        self._index_step = index_step
        self._next_index = index_offset
        self._hooks: Sequence[TrainHooks] = ()
        self._obs = np.zeros(env.observation_space.shape or (), dtype=np.float32)
        self._start: dict[str, Any] = {}
        self._return = 0.0
        self._k_failed: dict[str, int] | None = None

    def _draw_lam(self) -> float | None:
        lo, hi = self.base.lam_range
        if not self._log_lam or lo <= 0.0 or lo == hi:
            return None  # the env draws it (uniform) or it is fixed
        return float(math.exp(self._rng.uniform(math.log(lo), math.log(hi))))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        opts = dict(options or {})
        if "lam" not in opts:
            lam = self._draw_lam()
            if lam is not None:
                opts["lam"] = lam
        obs, info = self.env.reset(seed=seed, options=opts or None)
        self._obs, self._start, self._return, self._k_failed = obs, dict(info), 0.0, None
        self._hooks = ()
        index, self._next_index = self._next_index, self._next_index + self._index_step
        self._start["index"] = index
        if self._hooks_factory is not None:
            from midl_autok.backends.evaluate import TrialRequest

            request = TrialRequest(
                spec=self._spec_dict,
                schedule={},  # decided epoch by epoch by the policy
                trial_number=self._first_trial + index,
                params={"lam": self.base.lam},
            )
            self._hooks = list(self._hooks_factory(request))
            for hook in self._hooks:
                hook.on_run_start(self.base.session)  # type: ignore[arg-type]
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        from midl_autok.env import decide_k, diverged_penalty

        env, session = self.base, self.base.session
        if session is None:
            raise RuntimeError("call reset() before step() (no episode is running)")
        epoch = session.epoch
        try:
            self._k_failed, _ = decide_k(
                action,
                layers=env.layers,
                costs=env.costs,
                min_fraction=env.min_fraction,
                budget=env.budget,
                hard_budget=env.hard_budget,
                final=epoch == env.epochs - 1,
            )
        except ValueError:
            self._k_failed = None
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
            stop = False
            if not info.get("diverged"):
                row = session.history[-1]
                stop = any([hook.on_epoch_end(epoch, row) is False for hook in self._hooks])
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".strip()
            reward = diverged_penalty(env.lam, env.observer.flops_max)
            obs, terminated, truncated = self._obs, True, False
            info = {"epoch": epoch, "diverged": True, "reason": reason}
            stop = False
        self._obs = obs
        self._return += float(reward)
        if stop and not (terminated or truncated):
            truncated = True  # a hook stopped the run: record it as it stands
            info = {**info, "final_metrics": self._stopped_metrics()}
        if terminated or truncated:
            info = {**info, _EPISODE_INFO: self._episode(info)}
        return obs, float(reward), terminated, truncated, info

    def _stopped_metrics(self) -> dict[str, float]:
        from midl_autok.trainer import TIMING_KEYS

        session = self.base.session
        assert session is not None
        result = session.finish("stopped")
        return {k: v for k, v in result.metrics.items() if k not in TIMING_KEYS}

    def _episode(self, info: Mapping[str, Any]) -> dict[str, Any]:
        from midl_autok.models import MIDLNet
        from midl_autok.trainer import TrainResult

        env, session = self.base, self.base.session
        assert session is not None
        history = [dict(row) for row in session.history]
        reason: str | None = info.get("reason") if info.get("diverged") else None
        metrics: dict[str, float] = {}
        if reason is None:
            metrics = dict(info.get("final_metrics", {}))
            metrics["train_time_s"] = session.train_time_s
            result = TrainResult(
                metrics=metrics,
                history=history,
                schedule=session.realized_schedule(),
                model=session.model,
                status="completed",
                config=session.config,
            )
            try:
                for hook in self._hooks:
                    hook.on_run_end(result)  # may change the metrics (tests poison them)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}".strip()
        used = [dict(k) for k in session.k_used]
        if reason is not None and self._k_failed is not None and len(used) == len(history):
            used.append(self._k_failed)  # the epoch that failed, as a sampler trial has it
        metrics["episode_return"] = self._return
        return {
            "index": self._start["index"],
            "layers": [(s.name, s.width) for s in env.layers],
            "k": [[k[s.name] for k in used] for s in env.layers] if used else None,
            "arch": getattr(session.model, "arch", ""),
            "signature": session.model.signature() if isinstance(session.model, MIDLNet) else "",
            "metrics": metrics,
            "history": history,
            "reason": reason,
            "lam": float(self._start["lam"]),
            "budget": self._start.get("budget"),
            "seed": int(self._start["seed"]),
            "train_s": session.train_time_s,
        }


def make_env(
    spec_dict: Mapping[str, Any],
    env_kwargs: Mapping[str, Any],
    *,
    seed: int,
    threads: int | None = 1,
    log_lam: bool = True,
    hooks_factory: HooksFactory | None = None,
    first_trial: int = 0,
    index_step: int = 1,
    index_offset: int = 0,
) -> EpisodeRecorder:
    """One wrapped environment (module-level and plain-data arguments: picklable for
    ``SubprocVecEnv``); pins torch to ``threads`` threads in the process that builds it."""
    import torch

    from midl_autok.env import TopKScheduleEnv
    from midl_autok.spec import validate_spec

    if threads:
        torch.set_num_threads(threads)
    spec = validate_spec(dict(spec_dict), source="the search's spec")
    env = TopKScheduleEnv(spec, **env_kwargs)
    return EpisodeRecorder(
        env,
        seed=seed,
        log_lam=log_lam,
        hooks_factory=hooks_factory,
        spec_dict=spec_dict,
        first_trial=first_trial,
        index_step=index_step,
        index_offset=index_offset,
    )


def episode_schedule(episode: Mapping[str, Any]) -> KSchedule | None:
    """The KSchedule of a finished episode's record (None when no epoch got a k)."""
    from midl_autok.schedule import KSchedule, LayerSpec

    if not episode["k"]:
        return None
    return KSchedule(
        layers=tuple(LayerSpec(*layer) for layer in episode["layers"]),
        epochs=len(episode["k"][0]),
        k=episode["k"],
        arch=episode["arch"],
        signature=episode["signature"],
    )


class _EpisodeCallback(BaseCallback):
    """Hands every finished episode to ``record`` in order; stops training after ``n``."""

    def __init__(self, record: Callable[[Mapping[str, Any]], None], n: int) -> None:
        super().__init__()
        self.record = record
        self.n = n
        self.done = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and _EPISODE_INFO in info and self.done < self.n:
                self.record(info[_EPISODE_INFO])
                self.done += 1
        return self.done < self.n


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

    def make_space(
        self,
        space: str,
        layers: Sequence[LayerSpec],
        epochs: int,
        options: Mapping[str, Any],
    ) -> SearchSpace:
        """The ``free`` space (it encodes any realized schedule as trial parameters)."""
        from midl_autok.search_spaces import make_space

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
        return make_space("free", layers, epochs, **options)

    def env_kwargs(self, session: SearchSession) -> dict[str, Any]:
        """The environment options of the training envs (and of the rollouts)."""
        lambdas = self.lambdas
        kwargs: dict[str, Any] = {
            "lam": (min(lambdas), max(lambdas)),
            "min_fraction": session.space.min_fraction,
            "device": session.device,
        }
        budgets = self.options["budgets"]
        if budgets:
            kwargs.update(budget=(float(min(budgets)), float(max(budgets))), hard_budget=True)
        elif session.flops_budget is not None:
            kwargs.update(budget=float(session.flops_budget), hard_budget=True)
        return kwargs

    def hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        """SB3 constructor arguments for episodes of ``epochs`` steps on ``workers`` envs."""
        return {"learning_rate": self.options["learning_rate"], "gamma": self.options["gamma"]}

    # -- running -------------------------------------------------------------------------------

    def run(self, session: SearchSession, *, target: int) -> None:
        self.run_with(session, target=target)

    def run_with(
        self,
        session: SearchSession,
        *,
        target: int,
        callbacks: Sequence[Any] = (),
        train_hooks: HooksFactory | None = None,
    ) -> None:
        """Train (unless the study has its policy), then roll out the missing sweep values.
        ``target`` (``budget.trials``) is not used: the plan is episodes + sweep values."""
        from midl_autok.backends.evaluate import TrialOutcome
        from midl_autok.rl import load_policy

        episodes = int(self.options["episodes"])
        sweep = self.sweep
        path = self._trained_policy(session)
        done_values = self._rolled_out(session)
        todo = [v for v in sweep if _key(v) not in done_values]
        plan = episodes + len(sweep)
        for cb in callbacks:
            cb.on_start(session, target=plan, done=plan - len(todo) - (0 if path else episodes))

        def report(frozen: FrozenTrial, episode: Mapping[str, Any]) -> None:
            outcome = TrialOutcome(
                state="complete" if frozen.state.name == "COMPLETE" else "fail",
                metrics=dict(episode["metrics"]),
                fail_reason=frozen.user_attrs.get("fail_reason"),
            )
            for cb in callbacks:
                cb.on_trial_end(session, frozen, outcome)

        env_kwargs = self.env_kwargs(session)
        if path is None:
            path = self._train(session, env_kwargs, episodes, train_hooks, report)
        session.tracker.client.log_artifact(session.parent_run_id, str(path), "policy")
        if todo:
            loaded = load_policy(path)
            policy_fn = loaded.policy_fn(deterministic=True)
            self._rollouts(session, env_kwargs, policy_fn, todo, train_hooks, report)

    def _attempt(self, session: SearchSession) -> int:
        attempts = [
            t.user_attrs.get("rl_attempt", 0)
            for t in session.study.get_trials(deepcopy=False)
            if t.user_attrs.get("phase") == PHASE_TRAINING
        ]
        return max(attempts, default=0) + 1

    def _trained_policy(self, session: SearchSession) -> Path | None:
        """The study's policy file when training finished and the file is intact, else None."""
        record = session.study.user_attrs.get(ATTR_POLICY)
        if not isinstance(record, dict):
            return None
        path = session.store.root / str(record.get("path", ""))
        if not path.is_file():
            raise UserError(
                f"study {session.study_name!r} was trained, but its policy file {path} is "
                "missing; restore it (it is also an artifact of the study's MLflow parent runs, "
                "under policy/) or give a new --study"
            )
        if _sha256(path) != record.get("sha256"):
            raise UserError(
                f"the policy file {path} of study {session.study_name!r} was changed since "
                "training; restore it or give a new --study"
            )
        return path

    def _rolled_out(self, session: SearchSession) -> set[str]:
        key = self.sweep_key
        return {
            _key(float(t.user_attrs[key]))
            for t in session.study.get_trials(deepcopy=False)
            if t.user_attrs.get("phase") == PHASE_ROLLOUT and t.user_attrs.get(key) is not None
        }

    def _record(
        self,
        session: SearchSession,
        episode: Mapping[str, Any],
        attrs: Mapping[str, Any],
        report: Callable[[FrozenTrial, Mapping[str, Any]], None],
    ) -> FrozenTrial:
        from midl_autok.schedule import KSchedule

        schedule = episode_schedule(episode)
        reason = episode["reason"]
        if schedule is None:  # failed before any epoch ran: record k = width
            layers = [tuple(layer) for layer in episode["layers"]]
            schedule = KSchedule(layers=layers, epochs=1, k=[[w] for _, w in layers])  # type: ignore[arg-type]
            reason = reason or "the episode ended before any epoch"
        frozen = session.record(
            schedule,
            metrics=episode["metrics"],
            history=episode["history"],
            fail_reason=reason,
            train_s=float(episode["train_s"]),
            user_attrs={
                **attrs,
                "lam": episode["lam"],
                "budget": episode["budget"],
                "run_seed": episode["seed"],
            },
        )
        report(frozen, episode)
        return frozen

    def _vec_env(
        self,
        session: SearchSession,
        env_kwargs: Mapping[str, Any],
        train_hooks: HooksFactory | None,
    ) -> VecEnv:
        workers = int(self.options["workers"])
        spec_dict = session.attrs["spec"]
        first = session.storage.get_n_trials(session.study_id)
        fns: list[Callable[[], gym.Env[Any, Any]]] = [
            functools.partial(
                make_env,
                spec_dict,
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
        session: SearchSession,
        env_kwargs: Mapping[str, Any],
        episodes: int,
        train_hooks: HooksFactory | None,
        report: Callable[[FrozenTrial, Mapping[str, Any]], None],
    ) -> Path:
        from midl_autok.rl import save_policy

        attempt = self._attempt(session)
        epochs = session.spec.training.epochs
        workers = int(self.options["workers"])

        def record(episode: Mapping[str, Any]) -> None:
            attrs = {"phase": PHASE_TRAINING, "episode": callback.done, "rl_attempt": attempt}
            self._record(session, episode, attrs, report)

        callback = _EpisodeCallback(record, episodes)
        with _torch_threads(session.threads or 1):
            venv = self._vec_env(session, env_kwargs, train_hooks)
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
            template = make_env(session.attrs["spec"], env_kwargs, seed=0, threads=None)
            path = policy_file(session.store.root, session.study_name)
            save_policy(model, path, env=template, spec=session.attrs["spec"])
        session.storage.set_study_user_attr(
            session.study_id,
            ATTR_POLICY,
            {
                "path": os.path.relpath(path, session.store.root),
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
        session: SearchSession,
        env_kwargs: Mapping[str, Any],
        policy_fn: Callable[[np.ndarray], np.ndarray],
        values: Sequence[float],
        train_hooks: HooksFactory | None,
        report: Callable[[FrozenTrial, Mapping[str, Any]], None],
    ) -> None:
        seed = derive_seed(self.seed, 2)  # one fresh run seed for every sweep value
        with _torch_threads(session.threads or 1):
            for value in values:
                env = make_env(
                    session.attrs["spec"],
                    env_kwargs,
                    seed=0,
                    threads=None,
                    log_lam=False,
                    hooks_factory=train_hooks,
                    first_trial=session.storage.get_n_trials(session.study_id),
                )
                options = {"lam": value} if self.sweep_key == "lam" else {"budget": value}
                if self.sweep_key == "budget":
                    options["lam"] = self.lambdas[0]
                try:
                    obs, _ = env.reset(seed=seed, options=options)
                except ValueError as exc:
                    raise SpecError(f"agent '{self.name}': {exc}") from None
                while True:
                    obs, _, terminated, truncated, info = env.step(policy_fn(obs))
                    if terminated or truncated:
                        break
                attrs = {"phase": PHASE_ROLLOUT, "episode": None, "rl_attempt": None}
                self._record(session, info[_EPISODE_INFO], attrs, report)


def _key(value: float) -> str:
    return f"{value:.10g}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PPOAgent(RLAgent):
    name = "ppo"
    summary = "PPO (Stable-Baselines3): a closed-loop k-controller learned over training runs"
    algorithm = PPO

    def hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        n_steps = epochs * max(1, math.ceil(2 / workers))  # >= 2 episodes per update
        return {
            **super().hyperparameters(epochs, workers),
            "n_steps": n_steps,
            "batch_size": epochs if epochs > 1 else n_steps * workers,
            "n_epochs": 10,
            "policy_kwargs": {"log_std_init": -0.5},
        }


class A2CAgent(RLAgent):
    name = "a2c"
    summary = "A2C (Stable-Baselines3): synchronous advantage actor-critic k-controller"
    algorithm = A2C

    def hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        return {
            **super().hyperparameters(epochs, workers),
            "n_steps": epochs,
            "policy_kwargs": {"log_std_init": -0.5},
        }


class SACAgent(RLAgent):
    name = "sac"
    summary = "SAC (Stable-Baselines3): off-policy soft actor-critic k-controller"
    algorithm = SAC

    def hyperparameters(self, epochs: int, workers: int) -> dict[str, Any]:
        return {
            **super().hyperparameters(epochs, workers),
            "learning_starts": 2 * epochs,  # two episodes of uniform actions first
            "batch_size": 64,
            "buffer_size": 100_000,
        }
