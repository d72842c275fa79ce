"""The observation: what the env and the live controller see of a training run.

:class:`Observer` builds the vector whose layout the docstring of :mod:`midl_autok.env`
documents (global features, then four per MID-L layer), all deterministic (no wall time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from midl_autok import metrics as M
from midl_autok.data import Dataset
from midl_autok.flops import CostModel, training_flops
from midl_autok.models import MIDLNet
from midl_autok.schedule import LayerSpec

__all__ = ["GLOBAL_FEATURES", "LAYER_FEATURES", "LOSS_CLIP", "Observer"]

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


def _binary_entropy_bits(g: torch.Tensor) -> torch.Tensor:
    g = g.float().clamp(1e-7, 1.0 - 1e-7)
    return -(g * torch.log2(g) + (1.0 - g) * torch.log2(1.0 - g))


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``|a & b| / |a | b|`` for boolean (B, d) masks."""
    inter = (a & b).sum(dim=1).float()  # (B,)
    union = (a | b).sum(dim=1).clamp(min=1).float()  # (B,)
    return float((inter / union).mean())


class Observer:
    """Builds the observation vector (layout in the docstring of :mod:`midl_autok.env`).

    Shared by :class:`~midl_autok.env.TopKScheduleEnv` and
    :class:`~midl_autok.rl.PolicyController`, so a policy sees the same numbers in both. Call
    :meth:`reset` on a fresh model, then :meth:`step` after every epoch with the trainer's
    metrics row of that epoch.
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
        self._dense_run = training_flops(costs.dense_flops(), data.x_train.shape[0] * epochs)
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
