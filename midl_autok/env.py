"""The MID-L trainer as a Gymnasium environment: one episode = one training run, one step = one
epoch (registered as ``midl_autok/TopKSchedule-v0``, see :mod:`midl_autok.env_registration`).

**Action** ``Box(-1, 1, (L,), float32)``, one entry per MID-L layer (forward order): the k of
that layer for the epoch about to run::

    f_l = min_fraction + (1 - min_fraction) * (clip(a_l, -1, 1) + 1) / 2      in [min_fraction, 1]
    k_l = clip(round(f_l * d_l), 1, d_l)                                       (k_from_fraction)

The symmetric range (not [0, 1]) is what SB3 works best with: PPO/A2C sample a Gaussian around
the policy mean, which starts at 0 = the middle of the range, and SAC squashes with tanh into
[-1, 1]; SB3's env checker warns about any other range.

**Hard budget** (``hard_budget=True``): the deployed model is the final epoch's, so the action
of the **last** epoch is clipped so that its inference FLOPs <= ``budget * dense FLOPs``: if it
is over, every layer's k above its minimum ``k_min`` (``min_fraction`` of its width) shrinks by
one common factor, rounded down (:func:`clip_to_budget`). Earlier epochs are free (train wide,
then prune); the observation shows how far the current k is over the budget.

**Observation** ``Box(float32)`` of ``11 + 4 L`` features, in this order (names in
:attr:`Observer.names`), all deterministic (no wall time):

=================================  ===========================================================
``progress``                       completed epochs / T                                [0, 1]
``probe_loss``                     cross-entropy on the probe batch / ln C, clipped     [0, 4]
``probe_accuracy``                 accuracy on the probe batch                         [0, 1]
``val_loss``                       validation cross-entropy / ln C, clipped             [0, 4]
``val_accuracy``                   validation accuracy                                 [0, 1]
``lam``                            lam / (1 + lam), the episode's FLOPs weight          [0, 1]
``budget``                         b, the episode's budget (1 = dense when none)        [0, R]
``flops_ratio``                    rho = inference FLOPs at the current k / dense       [0, R]
``flops_headroom``                 b - rho (negative: over the budget)                 [-R, R]
``training_flops_spent``           training FLOPs so far / those of T dense epochs      [0, R]
``training_flops_remaining``       b - training_flops_spent                            [-R, R]
per layer ``<name>/k_fraction``    k / d of the last epoch (1 before the first)         [0, 1]
``<name>/gate_mean``               mean gate value g on the probe batch                 [0, 1]
``<name>/gate_entropy``            mean binary entropy of g, in bits                    [0, 1]
``<name>/selection_overlap``       mean per-sample Jaccard index of the selected set with the
                                   previous observation's, on the probe batch (1 at reset)
=================================  ===========================================================

C = number of classes; R = max(1, rho at full k, highest budget) (MID-L at full k costs more
than dense: gate and light paths come on top). The **probe batch** is the first ``probe_size``
training samples, evaluated in eval mode after each epoch (the epoch's running train loss mixes
the weights of a whole epoch and has no accuracy counterpart). A non-finite value (a diverging
model) becomes 0 or the bound it exceeds.

**Reward**, with ``acc_t`` the validation accuracy after epoch t (``acc_-1``: before training),
``rho_t`` the inference FLOPs ratio at epoch t's k, T epochs and the weight ``lam``::

    r_t      = (acc_t - acc_{t-1}) - lam * rho_t / T          every epoch (shaped progress)
    r_{T-1} += acc_{T-1} - lam * rho_{T-1}                   the deployed model

so the undiscounted return is ``2 acc_final - acc_-1 - lam * (mean_t rho_t + rho_final)``.
A diverging run (NaN/inf loss, :class:`~midl_autok.trainer.DivergedError`) ends the episode
(``terminated``) with ``info["diverged"] = True`` and reward ``-2 - 2 lam R``
(:func:`diverged_penalty`), below any other step's reward (>= ``-1 - lam R (1 + 1/T)``).

**Seeding**: ``reset(seed=s)`` seeds ``self.np_random``; each episode draws its run seed (model
init, shuffling; ``info["seed"]``) from it first, so a seeded reset replays the same trajectory
for the same actions, at any ``lam``/``budget``. The data split is the spec's. ``lam`` and
``budget`` may be ranges ``(low, high)``, drawn uniformly per episode from ``self.np_random``,
or fixed for one episode with ``reset(options={"lam": ..., "budget": ...})``: a policy that
sees them can be rolled out at several values (a Pareto sweep).

``info`` holds only deterministic values; wall times are in :attr:`TopKScheduleEnv.timing`
(this episode so far) and :attr:`TopKScheduleEnv.last_episode_timing`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from midl_autok import metrics as M
from midl_autok.data import Dataset
from midl_autok.errors import SpecError
from midl_autok.flops import CostModel, cost_model
from midl_autok.models import MIDLNet, build_model
from midl_autok.schedule import LayerSpec, k_from_fraction
from midl_autok.spec import ExperimentSpec, load_spec
from midl_autok.trainer import (
    TIMING_KEYS,
    DivergedError,
    TrainConfig,
    TrainSession,
    build_for_spec,
    dataset_for_spec,
)

__all__ = [
    "GLOBAL_FEATURES",
    "LAYER_FEATURES",
    "Observer",
    "TopKScheduleEnv",
    "clip_to_budget",
    "decide_k",
    "decode_action",
    "diverged_penalty",
]

GLOBAL_FEATURES = (
    "progress",
    "probe_loss",
    "probe_accuracy",
    "val_loss",
    "val_accuracy",
    "lam",
    "budget",
    "flops_ratio",
    "flops_headroom",
    "training_flops_spent",
    "training_flops_remaining",
)
LAYER_FEATURES = ("k_fraction", "gate_mean", "gate_entropy", "selection_overlap")
LOSS_CLIP = 4.0  # normalized losses (loss / ln C) are clipped to [0, LOSS_CLIP]

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


# --------------------------------------------------------------------------- actions


def decode_action(
    action: Any, layers: Sequence[LayerSpec], *, min_fraction: float
) -> dict[str, int]:
    """``k_l = k_from_fraction(min_f + (1 - min_f) * (clip(a_l, -1, 1) + 1) / 2, d_l)``."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)  # (L,)
    if a.shape[0] != len(layers):
        raise ValueError(
            f"the action must have one entry per MID-L layer ({len(layers)}), but got {a.shape[0]}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"the action must be finite, but got {a.tolist()}")
    frac = min_fraction + (1.0 - min_fraction) * (np.clip(a, -1.0, 1.0) + 1.0) / 2.0  # (L,)
    return {s.name: k_from_fraction(float(f), s.width) for s, f in zip(layers, frac, strict=True)}


def clip_to_budget(
    k: Mapping[str, int], costs: CostModel, *, max_flops: float, k_min: Mapping[str, int]
) -> dict[str, int]:
    """The largest uniform shrink of ``k`` toward ``k_min`` with ``inference_flops <= max_flops``.

    ``k'_l = k_min_l + floor(s * (k_l - k_min_l))`` with
    ``s = (max_flops - flops(k_min)) / sum_l 2 d_in_l (k_l - k_min_l)``; ``k`` is returned
    unchanged when it already fits. Needs ``flops(k_min) <= max_flops``.
    """
    out = dict(k)
    if costs.inference_flops(out) <= max_flops:
        return out
    base = costs.inference_flops(k_min)
    if base > max_flops:
        raise ValueError(
            f"the FLOPs budget ({max_flops:.0f}) is below the cost with every layer at its "
            f"minimum k ({base})"
        )
    slope = {c.name: 2 * c.d_in for c in costs.midl_layers}  # FLOPs per unit of k
    excess = sum(slope[n] * (out[n] - k_min[n]) for n in out)
    scale = (max_flops - base) / excess
    out = {n: k_min[n] + math.floor(scale * (out[n] - k_min[n])) for n in out}
    while costs.inference_flops(out) > max_flops:  # float rounding: a step at most
        name = max((n for n in out if out[n] > k_min[n]), key=lambda n: slope[n] * out[n])
        out[name] -= 1
    return out


def decide_k(
    action: Any,
    *,
    layers: Sequence[LayerSpec],
    costs: CostModel,
    min_fraction: float,
    budget: float | None,
    hard_budget: bool,
    final: bool,
) -> tuple[dict[str, int], bool]:
    """Decode ``action`` to k and, in hard-budget mode on the ``final`` epoch, clip it to the
    budget; returns ``(k, clipped)``. The one decision rule of the env and the controller."""
    k = decode_action(action, layers, min_fraction=min_fraction)
    if not (hard_budget and final and budget is not None):
        return k, False
    k_min = {s.name: k_from_fraction(min_fraction, s.width) for s in layers}
    clipped = clip_to_budget(k, costs, max_flops=budget * costs.dense_flops(), k_min=k_min)
    return clipped, clipped != k


def diverged_penalty(lam: float, flops_max: float) -> float:
    """Reward of the step whose training diverged: ``-2 - 2 * lam * R``."""
    return -2.0 - 2.0 * lam * flops_max


# --------------------------------------------------------------------------- observation


def _binary_entropy_bits(g: torch.Tensor) -> torch.Tensor:
    g = g.float().clamp(1e-7, 1.0 - 1e-7)
    return -(g * torch.log2(g) + (1.0 - g) * torch.log2(1.0 - g))


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``|a & b| / |a | b|`` for boolean (B, d) masks."""
    inter = (a & b).sum(dim=1).float()  # (B,)
    union = (a | b).sum(dim=1).clamp(min=1).float()  # (B,)
    return float((inter / union).mean())


class Observer:
    """Builds the observation vector (layout in the module docstring).

    Shared by :class:`TopKScheduleEnv` and :class:`midl_autok.rl.PolicyController`, so a policy
    sees the same numbers in both. Call :meth:`reset` on a fresh model, then :meth:`step` after
    every epoch with the trainer's metrics row of that epoch.
    """

    def __init__(
        self,
        *,
        layers: Sequence[LayerSpec],
        costs: CostModel,
        data: Dataset,
        epochs: int,
        probe_size: int = 256,
        eval_batch_size: int = 4096,
        max_budget: float = 1.0,
    ) -> None:
        if probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, but got {probe_size}")
        self.layers = tuple(layers)
        self.costs = costs
        self.epochs = epochs
        self.eval_batch_size = eval_batch_size
        self._log_classes = math.log(max(2, data.num_classes))
        self._data = data
        self._probe = (data.x_train[:probe_size], data.y_train[:probe_size])  # (P, ...), (P,)
        self._val = (data.x_val, data.y_val)
        self._device: torch.device | None = None
        self._dense_run = 3 * data.x_train.shape[0] * costs.dense_flops() * epochs
        full = {s.name: s.width for s in self.layers}
        self.flops_max = max(1.0, costs.ratio(full), max_budget)  # R
        self.low, self.high = self._bounds()
        self._prev_masks: dict[str, torch.Tensor] = {}
        self._lam = 0.0
        self._budget = 1.0

    @property
    def names(self) -> list[str]:
        per_layer = [f"{s.name}/{f}" for s in self.layers for f in LAYER_FEATURES]
        return [*GLOBAL_FEATURES, *per_layer]

    def _bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.flops_max
        g_low = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -r, 0.0, -r]
        g_high = [1.0, LOSS_CLIP, 1.0, LOSS_CLIP, 1.0, 1.0, r, r, r, r, r]
        n = len(self.layers) * len(LAYER_FEATURES)
        low = np.array(g_low + [0.0] * n, dtype=np.float32)
        high = np.array(g_high + [1.0] * n, dtype=np.float32)
        return low, high

    def _to_model_device(self, model: torch.nn.Module) -> None:
        device = next(model.parameters()).device
        if device != self._device:
            self._probe = (self._probe[0].to(device), self._probe[1].to(device))
            self._val = (self._val[0].to(device), self._val[1].to(device))
            self._device = device

    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``model`` (eval mode) on ``x``, ``y``."""
        was_training = model.training
        model.eval()
        loss = 0.0
        correct = 0
        for i in range(0, x.shape[0], self.eval_batch_size):
            logits = model(x[i : i + self.eval_batch_size]).float()  # (B, C)
            yb = y[i : i + self.eval_batch_size]
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=-1) == yb).sum())
        model.train(was_training)
        n = max(1, x.shape[0])
        return loss / n, correct / n

    def _probe_features(self, model: MIDLNet, *, first: bool) -> tuple[float, float, list[float]]:
        loss, acc = self.evaluate(model, *self._probe)  # one pass: fresh gates and masks
        per_layer: list[float] = []
        for spec, (name, layer) in zip(self.layers, model.midl_layers(), strict=True):
            gate, mask = layer.last_gate, layer.last_mask  # (P, d), (P, d) bool
            if gate is None or mask is None:  # pragma: no cover - every forward sets them
                raise RuntimeError(f"MID-L layer {name} recorded no gate in the probe pass")
            prev = self._prev_masks.get(name)
            overlap = 1.0 if first or prev is None else _jaccard(mask, prev)
            self._prev_masks[name] = mask
            per_layer += [
                layer.effective_k / spec.width,
                float(gate.float().mean()),
                float(_binary_entropy_bits(gate).mean()),
                overlap,
            ]
        return loss, acc, per_layer

    def _vector(self, values: list[float]) -> np.ndarray:
        obs = np.nan_to_num(np.array(values, dtype=np.float64), nan=0.0)
        return np.clip(obs, self.low, self.high).astype(np.float32)

    def reset(
        self, model: MIDLNet, *, lam: float, budget: float | None
    ) -> tuple[np.ndarray, float]:
        """Observation of a fresh model (before epoch 0) and its validation accuracy."""
        self._prev_masks = {}
        self._lam = lam
        self._budget = 1.0 if budget is None else budget
        self._to_model_device(model)
        val_loss, val_acc = self.evaluate(model, *self._val)
        probe_loss, probe_acc, per_layer = self._probe_features(model, first=True)
        rho = self.costs.ratio(model.current_k())
        values = self._global(0.0, probe_loss, probe_acc, val_loss, val_acc, rho, 0.0)
        return self._vector(values + per_layer), val_acc

    def step(self, model: MIDLNet, row: Mapping[str, float]) -> np.ndarray:
        """Observation after an epoch, from the model and the trainer's metrics ``row``."""
        self._to_model_device(model)
        probe_loss, probe_acc, per_layer = self._probe_features(model, first=False)
        values = self._global(
            (int(row["epoch"]) + 1) / self.epochs,
            probe_loss,
            probe_acc,
            row[M.VAL_LOSS],
            row[M.VAL_ACCURACY],
            row[M.INFERENCE_FLOPS_RATIO],
            row[M.TRAINING_FLOPS] / self._dense_run,
        )
        return self._vector(values + per_layer)

    def _global(
        self,
        progress: float,
        probe_loss: float,
        probe_acc: float,
        val_loss: float,
        val_acc: float,
        rho: float,
        spent: float,
    ) -> list[float]:
        b = self._budget
        return [
            progress,
            probe_loss / self._log_classes,
            probe_acc,
            val_loss / self._log_classes,
            val_acc,
            self._lam / (1.0 + self._lam),
            b,
            rho,
            b - rho,
            spent,
            b - spent,
        ]


# --------------------------------------------------------------------------- environment


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
    """Choose each MID-L layer's k for the next epoch of a training run (module docstring).

    Args:
        spec: an :class:`~midl_autok.spec.ExperimentSpec`, or a shipped spec name / YAML path.
        lam: FLOPs weight lambda >= 0, or a ``(low, high)`` range drawn per episode.
        budget: inference FLOPs budget as a fraction of dense (``None``: none), or a range.
        hard_budget: clip the final epoch's action to the budget (needs ``budget``).
        min_fraction: the smallest k fraction an action can ask for, in (0, 1].
        epochs: overrides the spec's ``training.epochs`` (the episode length).
        device: ``auto`` | ``cpu`` | ``cuda[:N]``.
        data: the dataset (default: the spec's, shared through the trainer's in-process cache).
        probe_size: training samples in the fixed probe batch of the gate statistics.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        spec: ExperimentSpec | str = "digits-mlp",
        *,
        lam: float | tuple[float, float] = 0.1,
        budget: float | tuple[float, float] | None = None,
        hard_budget: bool = False,
        min_fraction: float = 0.05,
        epochs: int | None = None,
        device: str = "auto",
        data: Dataset | None = None,
        probe_size: int = 256,
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
            None if budget is None else _check_range("budget", budget, positive=True)
        )
        if hard_budget and budget is None:
            raise ValueError("hard_budget=True needs a budget (a fraction of dense FLOPs)")
        self.hard_budget = bool(hard_budget)
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
        self.k_min = {s.name: k_from_fraction(self.min_fraction, s.width) for s in self.layers}
        self.budget_floor = self.costs.ratio(self.k_min)  # lowest reachable FLOPs ratio
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
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._acc = 0.0  # validation accuracy after the last epoch (acc_{t-1})
        self._done = True
        self._t0 = 0.0
        self.timing: dict[str, float] = {}
        self.last_episode_timing: dict[str, float] = {}

    def _template_model(self) -> MIDLNet:
        """The spec's model, built without touching the global RNGs (for shapes and costs)."""
        with torch.random.fork_rng(devices=[]):
            return build_model(
                self.experiment.model.arch,
                input_shape=self.data.input_shape,
                num_classes=self.data.num_classes,
                vocab_size=self.data.vocab_size,
                **self.experiment.model.options(),
            )

    def config(self) -> dict[str, Any]:
        """The constructor options as JSON (saved next to a trained policy)."""
        return {
            "spec": self.experiment.name,
            "lam": list(self.lam_range),
            "budget": None if self.budget_range is None else list(self.budget_range),
            "hard_budget": self.hard_budget,
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
        unknown = sorted(set(opts) - {"lam", "budget"})
        if unknown:
            raise ValueError(f"unknown reset option {unknown[0]!r}; valid: budget, lam")
        # the run seed comes first, so one reset seed gives the same run at every lam/budget
        run_seed = int(self.np_random.integers(2**31 - 1))
        self.lam = self._draw("lam", opts.get("lam"), self.lam_range)
        if self.budget_range is None:
            if opts.get("budget") is not None:
                raise ValueError("reset(options={'budget': ...}) needs an env built with a budget")
            self.budget = None
        else:
            self.budget = self._draw("budget", opts.get("budget"), self.budget_range)
        model = build_for_spec(self.experiment, self.data, seed=run_seed)
        config = TrainConfig.from_spec(self.experiment, device=self.device, seed=run_seed)
        self.session = TrainSession(model, self.data, config)
        obs, self._acc = self.observer.reset(model, lam=self.lam, budget=self.budget)
        self._obs = obs
        self._done = False
        self._t0 = t0
        self._update_timing()
        info = {"seed": run_seed, "lam": self.lam, "budget": self.budget, "val_accuracy": self._acc}
        return obs.copy(), info

    def _draw(self, name: str, value: Any, rng: tuple[float, float]) -> float:
        """The episode's ``lam`` / ``budget``: ``value`` if given, else drawn from ``rng``.

        A given ``lam`` may be any number >= 0; a given ``budget`` must not exceed the env's
        highest budget (the observation bounds are built for it) and, in hard-budget mode,
        must be reachable at ``min_fraction``."""
        lo, hi = rng
        if value is None:
            return lo if lo == hi else float(self.np_random.uniform(lo, hi))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "lam":
            ok, rule = number and 0.0 <= value < math.inf, "a finite number >= 0"
        elif self.hard_budget:
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
        k, clipped = decide_k(
            action,
            layers=self.layers,
            costs=self.costs,
            min_fraction=self.min_fraction,
            budget=self.budget,
            hard_budget=self.hard_budget,
            final=final,
        )
        info: dict[str, Any] = {"epoch": epoch, "k": k, "clipped": clipped, "diverged": False}
        try:
            row = session.run_epoch(k)  # set k, train one epoch, evaluate, record
        except DivergedError as exc:
            self._done = True
            self._end_timing()
            info.update(diverged=True, reason=str(exc), schedule=session.realized_schedule())
            penalty = diverged_penalty(self.lam, self.observer.flops_max)
            return self._obs.copy(), penalty, True, False, info

        acc, rho = row[M.VAL_ACCURACY], row[M.INFERENCE_FLOPS_RATIO]
        reward = (acc - self._acc) - self.lam * rho / self.epochs
        if final:
            reward += acc - self.lam * rho
        self._acc = acc
        self._obs = self.observer.step(session.model, row)  # type: ignore[arg-type]
        info.update({key: row[key] for key in _STEP_METRICS})
        if final:
            result = session.finish()
            info["final_metrics"] = {
                key: value for key, value in result.metrics.items() if key not in TIMING_KEYS
            }
            info["schedule"] = result.schedule
            self._done = True
            self._end_timing()
        else:
            self._update_timing()
        return self._obs.copy(), float(reward), final, False, info

    def _update_timing(self) -> None:
        session = self.session
        self.timing = {
            "episode_time_s": time.perf_counter() - self._t0,
            "train_time_s": 0.0 if session is None else session.train_time_s,
            "epochs": 0.0 if session is None else float(session.epoch),
        }

    def _end_timing(self) -> None:
        self._update_timing()
        self.last_episode_timing = dict(self.timing)

    def close(self) -> None:
        self.session = None
        self._done = True
