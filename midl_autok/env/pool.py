"""Cheap episodes over a pool of tasks, seen through one task-free observation.

:class:`TaskView` maps an env observation (the layout of :mod:`midl_autok.env`) to a layout
whose shape and scales do not depend on the task, and a fixed-size action back to the task's
layers; :class:`TaskPoolEnv` (``midl_autok/TopKSchedulePool-v0``) draws one task per episode
from several experiments at low fidelity (a seeded subsample of the training data and few
epochs) and shows it through that view. A policy trained on the pool controls a full run of
any experiment with at most ``max_layers`` MID-L layers, pooled or not
(:class:`~midl_autok.rl.PolicyController` applies the same view when the policy file says so).

**The task-free observation** ``Box(float32)`` of ``11 + 5 M`` features (M = ``max_layers``)::

    progress, val_loss, probe_loss, budget, flops_ratio, ...    as in the env (already ratios:
                                                                losses / ln C, FLOPs / dense)
    probe_accuracy, val_accuracy  ->  (acc - 1/C) / (1 - 1/C)   0 = chance, 1 = perfect
    lam                           ->  clip((log10(max(lam, 1e-3)) + 3) / 4, 0, 1)
                                      (1e-3 -> 0, 0.01 -> 0.25, 0.1 -> 0.5, 1 -> 0.75)
    FLOPs features                ->  clipped to [-2, 2] (the same bounds for every task)
    per slot m < M: present (1 if the model has an m-th MID-L layer, else 0), then the
    layer's four features (k / d, gate mean, gate entropy, selection overlap), or zeros

Layers fill the slots in forward order. The action is ``Box(-1, 1, (M,), float32)``; entry m
is layer m's action (the env's decoding), entries past the model's layers are ignored.

**Budget mode** (``TaskPoolEnv(budgets=(lo, hi))``): each episode draws an inference-FLOPs
budget log-uniformly in ``[max(lo, floor), hi]`` (``floor``: the task's ratio with every layer
at ``min_fraction``, gate and light paths included), the task env fits every epoch's k to it
(``spend_budget``: ratio ``<= budget``, the action decides the allocation across layers), lambda
is 0 (the reward is the validation accuracy; the budget is the FLOPs knob), and the ``lam``
feature becomes ``budget_position = clip((budget - floor) / (1 - floor), 0, 1)``: how much of
the reachable range below dense the budget allows (0: no choice left, every layer at its
minimum), the same scale for every task. The ``budget`` feature keeps the ratio itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from midl_autok.env.observer import GLOBAL_FEATURES, LAYER_FEATURES
from midl_autok.env.topk import TopKScheduleEnv
from midl_autok.spec import ExperimentSpec, load_spec

__all__ = [
    "POOL_FLOPS_MAX",
    "SLOT_FEATURES",
    "TaskPoolEnv",
    "TaskView",
    "budget_position",
    "lam_feature",
]

#: Bound of every FLOPs feature of the task-free observation (the same for every task).
POOL_FLOPS_MAX = 2.0
SLOT_FEATURES = ("present", *LAYER_FEATURES)
_G = len(GLOBAL_FEATURES)
_ACC = (GLOBAL_FEATURES.index("probe_accuracy"), GLOBAL_FEATURES.index("val_accuracy"))
_LAM = GLOBAL_FEATURES.index("lam")
_BUDGET = GLOBAL_FEATURES.index("budget")
_FLOPS = tuple(
    GLOBAL_FEATURES.index(n)
    for n in (
        "budget",
        "flops_ratio",
        "flops_headroom",
        "training_flops_spent",
        "training_flops_remaining",
    )
)


def budget_position(budget: float, floor: float) -> float:
    """``clip((budget - floor) / (1 - floor), 0, 1)``: the budget's place between the lowest
    reachable FLOPs ratio and dense."""
    return min(1.0, max(0.0, (float(budget) - floor) / max(1.0 - floor, 1e-9)))


def lam_feature(lam: float) -> float:
    """``clip((log10(max(lam, 1e-3)) + 3) / 4, 0, 1)``: lambda on a log scale."""
    return min(1.0, max(0.0, (math.log10(max(float(lam), 1e-3)) + 3.0) / 4.0))


@dataclass(frozen=True)
class TaskView:
    """The task-free view of one task's env (layout in the module docstring).

    Args:
        num_classes: C of the task (chance accuracy 1 / C).
        n_layers: the task model's MID-L layers, ``1 <= n_layers <= max_layers``.
        max_layers: M, the slots of the view.
        budget_floor: budget mode (the module docstring): the task's lowest reachable FLOPs
            ratio; the ``lam`` feature then holds the budget's position above it.
    """

    num_classes: int
    n_layers: int
    max_layers: int
    budget_floor: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.n_layers <= self.max_layers:
            raise ValueError(
                f"a task view needs 1 <= n_layers <= max_layers = {self.max_layers}, but the "
                f"model has {self.n_layers} MID-L layers"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, but got {self.num_classes}")

    @staticmethod
    def names(max_layers: int, *, budget: bool = False) -> list[str]:
        slots = [f"slot{m}/{f}" for m in range(max_layers) for f in SLOT_FEATURES]
        glob = list(GLOBAL_FEATURES)
        if budget:
            glob[_LAM] = "budget_position"
        return [*glob, *slots]

    @staticmethod
    def space(max_layers: int) -> spaces.Box:
        low = np.zeros(_G + len(SLOT_FEATURES) * max_layers, dtype=np.float32)
        high = np.ones_like(low)
        low[list(_ACC)] = -1.0
        high[GLOBAL_FEATURES.index("probe_loss")] = high[GLOBAL_FEATURES.index("val_loss")] = 4.0
        high[list(_FLOPS)] = POOL_FLOPS_MAX
        low[[GLOBAL_FEATURES.index("flops_headroom")]] = -POOL_FLOPS_MAX
        low[[GLOBAL_FEATURES.index("training_flops_remaining")]] = -POOL_FLOPS_MAX
        return spaces.Box(low, high, dtype=np.float32)

    def observe(self, raw: np.ndarray, *, lam: float) -> np.ndarray:
        """The view of an env observation ``raw`` (``11 + 4 L``,) -> (``11 + 5 M``,)."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1)
        f = len(LAYER_FEATURES)
        if raw.shape[0] != _G + f * self.n_layers:
            raise ValueError(
                f"the observation must have {_G + f * self.n_layers} features "
                f"({self.n_layers} MID-L layers), but got {raw.shape[0]}"
            )
        g = raw[:_G].copy()
        chance = 1.0 / self.num_classes
        g[list(_ACC)] = (g[list(_ACC)] - chance) / (1.0 - chance)
        if self.budget_floor is None:
            g[_LAM] = lam_feature(lam)
        else:
            g[_LAM] = budget_position(g[_BUDGET], self.budget_floor)
        slots = np.zeros((self.max_layers, f + 1))  # (M, 5)
        slots[: self.n_layers, 0] = 1.0
        slots[: self.n_layers, 1:] = raw[_G:].reshape(self.n_layers, f)
        out = np.concatenate([g, slots.reshape(-1)])
        box = self.space(self.max_layers)
        return np.clip(out, box.low, box.high).astype(np.float32)

    def action(self, action: Any) -> np.ndarray:
        """The task's action: the first ``n_layers`` entries of a (M,) action."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)  # (M,)
        if a.shape[0] != self.max_layers:
            raise ValueError(
                f"the action must have {self.max_layers} entries (one per slot), but got "
                f"{a.shape[0]}"
            )
        return a[: self.n_layers]


def low_fidelity(
    spec: ExperimentSpec | str, *, max_samples: int | None, epochs: int | None
) -> ExperimentSpec:
    """``spec`` with at most ``max_samples`` training samples and ``epochs`` epochs."""
    out = load_spec(spec) if isinstance(spec, str) else spec
    changes: dict[str, Any] = {}
    if max_samples is not None:
        current = out.dataset.max_samples
        changes["dataset.max_samples"] = (
            max_samples if current is None else min(current, max_samples)
        )
    if epochs is not None:
        changes["training.epochs"] = epochs
    return out.override(**changes) if changes else out


class TaskPoolEnv(gym.Env[np.ndarray, np.ndarray]):
    """One episode = one low-fidelity training run of a task drawn from ``tasks``, seen
    through :class:`TaskView` (the contract: the module docstring).

    Args:
        tasks: experiment specs (or shipped names / YAML paths); each needs a model with
            1 to ``max_layers`` MID-L layers.
        lam: the FLOPs weight lambda, or a ``(low, high)`` range drawn per episode,
            log-uniformly when ``low > 0`` (else uniformly).
        budgets: budget mode (the module docstring): a ``(low, high)`` range of inference-FLOPs
            budgets (fractions of dense), drawn log-uniformly per episode in
            ``[max(low, floor), high]`` of the episode's task; ``lam`` is then ignored (0).
        max_samples: training samples per task (a seeded subsample; ``None``: all).
        epochs: episode length (``None``: each spec's own).
        max_layers: M (default: the most MID-L layers among the tasks).
        min_fraction, probe_size, device, errors: as for
            :class:`~midl_autok.env.TopKScheduleEnv`.

    ``reset(options={"task": name, "lam": value})`` (``"budget"`` in budget mode) fixes the
    task / lambda / budget for one episode; ``info["task"]`` names the episode's task. The
    reward is the task env's.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        tasks: Sequence[ExperimentSpec | str] = ("digits-mlp", "synthetic-mlp", "tokens-lstm"),
        *,
        lam: float | tuple[float, float] = (0.01, 1.0),
        budgets: tuple[float, float] | None = None,
        max_samples: int | None = 400,
        epochs: int | None = 4,
        max_layers: int | None = None,
        min_fraction: float = 0.05,
        probe_size: int = 128,
        device: str = "cpu",
        errors: str = "raise",
    ) -> None:
        if not tasks:
            raise ValueError("a task pool needs at least one task")
        self.budgets = None if budgets is None else (float(budgets[0]), float(budgets[1]))
        self.envs = [
            TopKScheduleEnv(
                low_fidelity(t, max_samples=max_samples, epochs=epochs),
                lam=lam if budgets is None else 0.0,
                budget=self.budgets,
                spend_budget=budgets is not None,
                min_fraction=min_fraction,
                probe_size=probe_size,
                device=device,
                errors=errors,  # type: ignore[arg-type]
            )
            for t in tasks
        ]
        self.task_names = [e.experiment.name for e in self.envs]
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"the tasks must be distinct, but got {self.task_names}")
        self.lam_range = self.envs[0].lam_range
        self.max_layers = max_layers or max(len(e.layers) for e in self.envs)
        self.views = [
            TaskView(
                e.data.num_classes,
                len(e.layers),
                self.max_layers,
                budget_floor=None if budgets is None else e.budget_floor,
            )
            for e in self.envs
        ]
        self.min_fraction, self.probe_size = float(min_fraction), probe_size
        self.max_samples, self.epochs = max_samples, epochs
        self.observation_space = TaskView.space(self.max_layers)
        self.action_space = spaces.Box(-1.0, 1.0, (self.max_layers,), dtype=np.float32)
        self._i = 0
        self.layers = [_Slot(f"slot{m}") for m in range(self.max_layers)]

    @property
    def observation_names(self) -> list[str]:
        return TaskView.names(self.max_layers, budget=self.budgets is not None)

    @property
    def task(self) -> TopKScheduleEnv:
        """The env of the current (last reset) episode's task."""
        return self.envs[self._i]

    def config(self) -> dict[str, Any]:
        """The options as JSON (saved next to a trained policy); ``pool`` marks the view."""
        return {
            "pool": {"tasks": self.task_names, "max_layers": self.max_layers},
            "lam": list(self.lam_range),
            "budget": None if self.budgets is None else list(self.budgets),
            "hard_budget": False,
            "spend_budget": self.budgets is not None,
            "min_fraction": self.min_fraction,
            "epochs": self.epochs,
            "max_samples": self.max_samples,
            "probe_size": self.probe_size,
            "eval_batch_size": max(e.experiment.training.eval_batch_size for e in self.envs),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        opts = dict(options or {})
        task = opts.pop("task", None)
        if task is None:
            self._i = int(self.np_random.integers(len(self.envs)))
        elif task in self.task_names:
            self._i = self.task_names.index(task)
        else:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(self.task_names)}")
        run_seed = int(self.np_random.integers(2**31 - 1))
        lo, hi = self.lam_range
        if self.budgets is not None:
            lo, hi = self.task.budget_range or (1.0, 1.0)  # the task's reachable range
            if "budget" not in opts:
                opts["budget"] = self._log_uniform(lo, hi)
        elif "lam" not in opts and 0.0 < lo < hi:
            opts["lam"] = self._log_uniform(lo, hi)
        obs, info = self.task.reset(seed=run_seed, options=opts)
        info["task"] = self.task_names[self._i]
        return self.views[self._i].observe(obs, lam=self.task.lam), info

    def _log_uniform(self, lo: float, hi: float) -> float:
        if lo >= hi:
            return lo
        return float(math.exp(self.np_random.uniform(math.log(lo), math.log(hi))))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        view = self.views[self._i]
        obs, reward, terminated, truncated, info = self.task.step(view.action(action))
        info["task"] = self.task_names[self._i]
        return view.observe(obs, lam=self.task.lam), reward, terminated, truncated, info

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclass(frozen=True)
class _Slot:
    """A slot of the view, as a policy file records a layer (``name``, ``width``)."""

    name: str
    width: int = 1
