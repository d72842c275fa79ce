"""The SB3 agents' episodes: the wrapper that records a search's episodes
(:class:`EpisodeRecorder`), the picklable env factory of the vectorized envs, the SB3 callback
that hands finished episodes to the agent in order, and :func:`record_episode`, which turns a
finished episode into a trial of the search (through the host)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from optuna.trial import TrialState
from stable_baselines3.common.callbacks import BaseCallback

from midl_autok.env import EPISODE_KEY, TopKScheduleEnv
from midl_autok.rl import episode_metrics, episode_schedule
from midl_autok.schedule import KSchedule

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.agents.host import SearchHost
    from midl_autok.trainer import TrainHooks

__all__ = [
    "TIMING_KEY",
    "EpisodeOutcome",
    "EpisodeRecorder",
    "EpisodeRequest",
    "HooksFactory",
    "make_env",
    "record_episode",
]

#: The info key our recorder adds to an episode's last step: its wall times (for tracking).
TIMING_KEY = "midl_autok/timing"


@dataclass(frozen=True)
class EpisodeRequest:
    """What a ``train_hooks`` factory gets for an episode: the fields of a search's trial
    request that an episode has (``schedule`` is empty: the policy decides it epoch by epoch;
    ``params`` holds the episode's ``lam`` when it is known before the run)."""

    spec: dict[str, Any]
    trial_number: int
    schedule: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EpisodeOutcome:
    """What a search callback's ``on_trial_end`` gets with an episode's trial."""

    state: str  # complete | fail
    metrics: dict[str, float]
    fail_reason: str | None = None


HooksFactory = Callable[[EpisodeRequest], Sequence["TrainHooks"]]


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

    Per episode it draws lambda (log-uniform over ``lam_range`` when ``log_lam``), passes the
    trainer hooks of ``hooks_factory`` to the env (request numbered ``first_trial + index``: the
    trial the episode becomes when episodes end in order, exact with one worker), and adds the
    episode's wall times (``train_time_s``, per-epoch ``epoch_time_s``, from the env's
    ``last_episode_timing``) to the last step's info under ``"midl_autok/timing"``, next to the
    env's own episode record.
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
        index, self._next_index = self._next_index, self._next_index + self._index_step
        if self._hooks_factory is not None:
            request = EpisodeRequest(
                spec=self._spec_dict,
                trial_number=self._first_trial + index,
                params={"lam": opts["lam"]} if "lam" in opts else {},
            )
            opts["hooks"] = list(self._hooks_factory(request))
        return self.env.reset(seed=seed, options=opts or None)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if EPISODE_KEY in info:
            timing = self.base.last_episode_timing
            times = {"train_time_s": timing["train_time_s"], "epoch_time_s": timing["epoch_time_s"]}
            info = {**info, TIMING_KEY: times}
        return obs, float(reward), terminated, truncated, info


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
    """One wrapped environment whose failed runs are records (``errors="end"``); module-level
    and plain-data arguments: picklable for ``SubprocVecEnv``. Pins torch to ``threads``
    threads in the process that builds it."""
    import torch

    from midl_autok.spec import validate_spec

    if threads:
        torch.set_num_threads(threads)
    spec = validate_spec(dict(spec_dict), source="the search's spec")
    env = TopKScheduleEnv(spec, **env_kwargs, errors="end")
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


class _EpisodeCallback(BaseCallback):
    """Hands every finished episode's last info to ``record`` in order; stops after ``n``."""

    def __init__(self, record: Callable[[Mapping[str, Any]], None], n: int) -> None:
        super().__init__()
        self.record = record
        self.n = n
        self.done = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and EPISODE_KEY in info and self.done < self.n:
                self.record(info)
                self.done += 1
        return self.done < self.n


def record_episode(
    host: SearchHost,
    info: Mapping[str, Any],
    attrs: Mapping[str, Any],
    callbacks: Sequence[Any] = (),
) -> FrozenTrial:
    """One trial + one MLflow child run (``host.record``) for the episode that ended with
    ``info``: the env's record (schedule, metrics, history, reason) plus the recorder's wall
    times; then each callback's ``on_trial_end(host, trial, EpisodeOutcome)``."""
    episode, timing = info[EPISODE_KEY], info[TIMING_KEY]
    schedule = episode_schedule(episode)
    reason = episode["reason"]
    if schedule is None:  # failed before any epoch ran: record k = width
        layers = host.space.layers
        schedule = KSchedule(layers=layers, epochs=1, k=tuple((s.width,) for s in layers))
        reason = reason or "the episode ended before any epoch"
    metrics = episode_metrics(episode)
    if episode["metrics"]:  # the run trained to its end (or a hook stopped it)
        metrics["train_time_s"] = float(timing["train_time_s"])
    history = [
        {**row, "epoch_time_s": t}
        for row, t in zip(episode["history"], timing["epoch_time_s"], strict=True)
    ]
    seed, lam, budget = episode["seed"], episode["lam"], episode["budget"]
    frozen = host.record(
        schedule,
        metrics=metrics,
        history=history,
        fail_reason=reason,
        train_s=float(timing["train_time_s"]),
        user_attrs={**attrs, "lam": lam, "budget": budget, "run_seed": seed},
    )
    outcome = EpisodeOutcome(
        state="complete" if frozen.state == TrialState.COMPLETE else "fail",
        metrics=metrics,
        fail_reason=frozen.user_attrs.get("fail_reason"),
    )
    for cb in callbacks:
        cb.on_trial_end(host, frozen, outcome)
    return frozen
