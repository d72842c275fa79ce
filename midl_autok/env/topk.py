"""The environment class, :class:`TopKScheduleEnv`; its contract is documented in the docstring
of :mod:`midl_autok.env` (actions, observation, reward, seeding, the episode record)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from midl_autok import metrics as M
from midl_autok.data import Dataset
from midl_autok.env.actions import KRule, diverged_penalty, lowest_k
from midl_autok.env.observer import Observer
from midl_autok.errors import SpecError
from midl_autok.experiment import build_for_spec, dataset_for_spec, model_for_spec
from midl_autok.flops import cost_model
from midl_autok.models import MIDLNet
from midl_autok.schedule import KSchedule
from midl_autok.spec import ExperimentSpec, load_spec
from midl_autok.trainer import TIMING_KEYS, DivergedError, TrainConfig, TrainHooks, TrainSession

__all__ = ["EPISODE_KEY", "TopKScheduleEnv"]

#: The ``info`` key of the step that ends an episode: the episode's record (plain data).
EPISODE_KEY = "midl_autok/episode"

# info keys copied from the trainer's metrics row of the epoch
_STEP_METRICS = (
    M.TRAIN_LOSS,
    M.VAL_LOSS,
    M.VAL_ACCURACY,
    M.INFERENCE_FLOPS,
    M.INFERENCE_FLOPS_RATIO,
    M.TRAINING_FLOPS,
    M.ACTIVE_FRACTION,
)
_RESET_OPTIONS = ("budget", "hooks", "lam")


def _deterministic(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if key not in TIMING_KEYS}


def _check_range(name: str, value: Any, *, positive: bool) -> tuple[float, float]:
    """A number or a ``(low, high)`` pair as ``(low, high)``; ``0 <= low`` (``0 < low``)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair
    )
    if ok:
        lo, hi = float(pair[0]), float(pair[1])
        ok = (lo > 0 if positive else lo >= 0) and lo <= hi
    if not ok:
        rule = "0 < low <= high" if positive else "0 <= low <= high"
        raise ValueError(
            f"{name} must be a finite number or a (low, high) range with {rule}, but got {value!r}"
        )
    return lo, hi


class TopKScheduleEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose each MID-L layer's k for the next epoch of a training run (the contract: the
    docstring of :mod:`midl_autok.env`).

    Args:
        spec: an :class:`~midl_autok.spec.ExperimentSpec`, or a shipped spec name / YAML path.
        lam: FLOPs weight lambda >= 0, or a ``(low, high)`` range drawn per episode.
        budget: inference FLOPs budget as a fraction of dense (``None``: none), or a range.
        hard_budget: clip the final epoch's action to the budget (needs ``budget``).
        spend_budget: fit every epoch's k to the budget (needs ``budget``): inference FLOPs
            ``<= budget`` and within rounding of it, the action deciding the allocation
            across layers (:func:`~midl_autok.env.fit_to_budget`). A budget range's low end
            is raised to the lowest reachable ratio (every layer at ``min_fraction``).
        min_fraction: the smallest k fraction an action can ask for, in (0, 1].
        epochs: overrides the spec's ``training.epochs`` (the episode length).
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
        data: the dataset (default: the spec's, from the in-process cache of
            :func:`~midl_autok.experiment.dataset_for_spec`).
        probe_size: training samples in the fixed probe batch of the gate statistics.
        errors: ``end`` turns an exception in an epoch's training or a hook into a failed
            episode (the record has the reason); ``raise`` (default) lets it propagate.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        spec: ExperimentSpec | str = "digits-mlp",
        *,
        lam: float | tuple[float, float] = 0.1,
        budget: float | tuple[float, float] | None = None,
        hard_budget: bool = False,
        spend_budget: bool = False,
        min_fraction: float = 0.05,
        epochs: int | None = None,
        device: str = "auto",
        data: Dataset | None = None,
        probe_size: int = 256,
        errors: Literal["raise", "end"] = "raise",
    ) -> None:
        self.experiment = load_spec(spec) if isinstance(spec, str) else spec
        if epochs is not None:
            self.experiment = self.experiment.override(**{"training.epochs": epochs})
        if not (isinstance(min_fraction, (int, float)) and 0.0 < min_fraction <= 1.0):
            raise ValueError(
                f"min_fraction must satisfy 0 < min_fraction <= 1, but got {min_fraction!r}"
            )
        self.lam_range = _check_range("lam", lam, positive=False)
        self.budget_range = (
            None if budget is None else _check_range("budget", budget, positive=not spend_budget)
        )
        if (hard_budget or spend_budget) and budget is None:
            mode = "hard_budget" if hard_budget else "spend_budget"
            raise ValueError(f"{mode}=True needs a budget (a fraction of dense FLOPs)")
        if hard_budget and spend_budget:
            raise ValueError("choose one of hard_budget and spend_budget")
        if errors not in ("raise", "end"):
            raise ValueError(f"errors must be 'raise' or 'end', but got {errors!r}")
        self.errors = errors
        self.hard_budget = bool(hard_budget)
        self.spend_budget = bool(spend_budget)
        self.min_fraction = float(min_fraction)
        self.device = device
        self.epochs = self.experiment.training.epochs
        self.probe_size = probe_size
        self.data = data if data is not None else dataset_for_spec(self.experiment)

        template = self._template_model()
        self.layers = template.layer_specs()
        if not self.layers:
            raise SpecError(
                f"the environment needs a model with MID-L layers, but model "
                f"{self.experiment.model.arch} (variant {self.experiment.model.variant}) has none"
            )
        self.costs = cost_model(template, self.data.x_train[:1])
        self.k_min = lowest_k(self.layers, self.min_fraction)
        self.budget_floor = self.costs.ratio(self.k_min)  # lowest reachable FLOPs ratio
        if self.spend_budget and self.budget_range:
            lo, hi = self.budget_range
            if hi < self.budget_floor:
                raise ValueError(
                    f"budget must reach {self.budget_floor:.4f} with spend_budget (the FLOPs "
                    f"ratio with every layer at min_fraction={self.min_fraction}), but got "
                    f"{budget!r}"
                )
            self.budget_range = (max(lo, self.budget_floor), hi)
        if self.hard_budget and self.budget_range and self.budget_range[0] < self.budget_floor:
            raise ValueError(
                f"budget must be >= {self.budget_floor:.4f} with hard_budget (the FLOPs ratio "
                f"with every layer at min_fraction={self.min_fraction}), but got {budget!r}"
            )
        self.observer = Observer(
            layers=self.layers,
            costs=self.costs,
            data=self.data,
            epochs=self.epochs,
            probe_size=probe_size,
            eval_batch_size=self.experiment.training.eval_batch_size,
            max_budget=1.0 if self.budget_range is None else self.budget_range[1],
        )
        low, high = self.observer.low, self.observer.high
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.layers),), dtype=np.float32)

        self.session: TrainSession | None = None
        self.lam = self.lam_range[0]
        self.budget: float | None = None if self.budget_range is None else self.budget_range[0]
        self.rule = KRule(  # action -> k; rebuilt each episode with the episode's budget
            self.layers,
            self.costs,
            min_fraction=self.min_fraction,
            budget=self.budget,
            hard_budget=self.hard_budget,
            epochs=self.epochs,
            spend_budget=self.spend_budget,
        )
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._acc = 0.0  # validation accuracy after the last epoch (acc_{t-1})
        self._done = True
        self._t0 = 0.0
        self._hooks: list[TrainHooks] = []
        self._seed, self._return = 0, 0.0
        self._k: list[dict[str, int]] = []  # k applied each step of the episode
        self.timing: dict[str, Any] = {}
        self.last_episode_timing: dict[str, Any] = {}

    def _template_model(self) -> MIDLNet:
        """The spec's model, built without touching the global RNGs (for shapes and costs)."""
        with torch.random.fork_rng(devices=[]):
            return model_for_spec(self.experiment, self.data)

    def config(self) -> dict[str, Any]:
        """The constructor options as JSON (saved next to a trained policy)."""
        return {
            "spec": self.experiment.name,
            "lam": list(self.lam_range),
            "budget": None if self.budget_range is None else list(self.budget_range),
            "hard_budget": self.hard_budget,
            "spend_budget": self.spend_budget,
            "min_fraction": self.min_fraction,
            "epochs": self.epochs,
            "probe_size": self.probe_size,
            "eval_batch_size": self.experiment.training.eval_batch_size,
        }

    @property
    def observation_names(self) -> list[str]:
        return self.observer.names

    # -- gymnasium API ----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        t0 = time.perf_counter()
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown reset option {unknown[0]!r}; valid: {', '.join(_RESET_OPTIONS)}"
            )
        # the run seed comes first, so one reset seed gives the same run at every lam/budget
        run_seed = int(self.np_random.integers(2**31 - 1))
        self.lam = self._draw("lam", opts.get("lam"), self.lam_range)
        if self.budget_range is None:
            if opts.get("budget") is not None:
                raise ValueError("reset(options={'budget': ...}) needs an env built with a budget")
            self.budget = None
        else:
            self.budget = self._draw("budget", opts.get("budget"), self.budget_range)
        self.rule = dataclasses.replace(self.rule, budget=self.budget)
        self._hooks = list(opts.get("hooks") or ())
        model = build_for_spec(self.experiment, self.data, seed=run_seed)
        config = TrainConfig.from_spec(self.experiment, device=self.device, seed=run_seed)
        self.session = TrainSession(model, self.data, config)
        for hook in self._hooks:
            hook.on_run_start(self.session)
        obs, self._acc = self.observer.reset(model, lam=self.lam, budget=self.budget)
        self._obs = obs
        self._done = False
        self._t0 = t0
        self._seed, self._return, self._k = run_seed, 0.0, []
        self._update_timing()
        info = {"seed": run_seed, "lam": self.lam, "budget": self.budget, "val_accuracy": self._acc}
        return obs.copy(), info

    def _draw(self, name: str, value: Any, rng: tuple[float, float]) -> float:
        """The episode's ``lam`` / ``budget``: ``value`` if given, else drawn from ``rng``.

        A given ``lam`` may be any number >= 0; a given ``budget`` must not exceed the env's
        highest budget (the observation bounds are built for it) and, in hard-budget mode,
        must be reachable at ``min_fraction`` (hard- and spend-budget modes)."""
        lo, hi = rng
        if value is None:
            return lo if lo == hi else float(self.np_random.uniform(lo, hi))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "lam":
            ok, rule = number and 0.0 <= value < math.inf, "a finite number >= 0"
        elif self.hard_budget or self.spend_budget:
            floor = self.budget_floor
            ok, rule = number and floor <= value <= hi, f"a number in [{floor:.4f}, {hi}]"
        else:
            ok, rule = number and 0.0 < value <= hi, f"a number in (0, {hi}]"
        if not ok:
            raise ValueError(f"reset option {name} must be {rule}, but got {value!r}")
        return float(value)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        session = self.session
        if session is None or self._done:
            raise RuntimeError("call reset() before step() (no episode is running)")
        epoch = session.epoch
        final = epoch == self.epochs - 1
        info: dict[str, Any] = {"epoch": epoch, "diverged": False, "failed": False}
        try:
            k, clipped = self.rule.decide(action, epoch)
            info.update(k=k, clipped=clipped)
            self._k.append(k)
            row = session.run_epoch(k)  # set k, train one epoch, evaluate, record
            stop = any([hook.on_epoch_end(epoch, row) is False for hook in self._hooks])
        except Exception as exc:
            if not isinstance(exc, DivergedError) and self.errors == "raise":
                raise
            why = str(exc) if isinstance(exc, DivergedError) else _reason(exc)
            info.update(diverged=isinstance(exc, DivergedError), failed=True, reason=why)
            info["schedule"] = session.realized_schedule()
            penalty = diverged_penalty(self.lam, self.observer.flops_max)
            return self._obs.copy(), self._end(penalty, info, "failed", why), True, False, info

        acc, rho = row[M.VAL_ACCURACY], row[M.INFERENCE_FLOPS_RATIO]
        reward = (acc - self._acc) - self.lam * rho / self.epochs
        if final:
            reward += acc - self.lam * rho
        self._acc = acc
        self._obs = self.observer.step(session.model, row)  # type: ignore[arg-type]
        info.update({key: row[key] for key in _STEP_METRICS})
        if not (final or stop):
            self._return += float(reward)
            self._update_timing()
            return self._obs.copy(), float(reward), False, False, info
        # the run ends: final epoch (terminated) or a hook stopped it (truncated)
        result = session.finish("completed" if final else "stopped")
        status: str = result.status
        reason: str | None = None
        try:
            for hook in self._hooks:
                hook.on_run_end(result)  # may change the metrics (tests poison them)
        except Exception as exc:
            if self.errors == "raise":
                raise
            status, reason = "failed", _reason(exc)
        info["final_metrics"] = _deterministic(result.metrics)
        info["schedule"] = result.schedule
        self._end(float(reward), info, status, reason)
        return self._obs.copy(), float(reward), final, not final, info

    def _end(self, reward: float, info: dict[str, Any], status: str, reason: str | None) -> float:
        """Finish the episode: add the last reward, put the record in ``info``."""
        self._done = True
        self._return += reward
        session = self.session
        assert session is not None
        model = session.model
        schedule = None
        if self._k:
            schedule = KSchedule(
                layers=self.layers,
                epochs=len(self._k),
                k=tuple(tuple(k[s.name] for k in self._k) for s in self.layers),
                arch=getattr(model, "arch", ""),
                signature=model.signature() if isinstance(model, MIDLNet) else "",
            ).to_dict()
        info[EPISODE_KEY] = {
            "status": status,
            "reason": reason,
            "diverged": bool(info["diverged"]),
            "schedule": schedule,
            "metrics": dict(info.get("final_metrics", {})),
            "history": [_deterministic(row) for row in session.history],
            "return": self._return,
            "length": len(self._k),
            "lam": self.lam,
            "budget": self.budget,
            "seed": self._seed,
        }
        self._update_timing()
        self.last_episode_timing = dict(self.timing)
        return reward

    def _update_timing(self) -> None:
        session = self.session
        history = [] if session is None else session.history
        self.timing = {
            "episode_time_s": time.perf_counter() - self._t0,
            "train_time_s": 0.0 if session is None else session.train_time_s,
            "epochs": float(len(history)),
            M.EPOCH_TIME_S: [row[M.EPOCH_TIME_S] for row in history],
        }

    def close(self) -> None:
        self.session = None
        self._done = True


def _reason(exc: BaseException) -> str:
    """A failed run's reason: the exception's type and message."""
    return f"{type(exc).__name__}: {exc}".strip()
