"""The one list of metric names used by the trainer, Optuna, Ray, MLflow and reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ACTIVE_FRACTION",
    "EPOCH_TIME_S",
    "INFERENCE_FLOPS",
    "INFERENCE_FLOPS_RATIO",
    "METRICS",
    "OBJECTIVE_METRICS",
    "TEST_ACCURACY",
    "TRAINING_FLOPS",
    "TRAIN_LOSS",
    "VAL_ACCURACY",
    "VAL_LOSS",
    "active_fraction_key",
    "k_key",
    "public_metrics",
]

VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
INFERENCE_FLOPS = "inference_flops"
INFERENCE_FLOPS_RATIO = "inference_flops_ratio"
TRAINING_FLOPS = "training_flops"
ACTIVE_FRACTION = "active_fraction"
EPOCH_TIME_S = "epoch_time_s"

METRICS = (
    VAL_ACCURACY,
    TEST_ACCURACY,
    VAL_LOSS,
    TRAIN_LOSS,
    INFERENCE_FLOPS,
    INFERENCE_FLOPS_RATIO,
    TRAINING_FLOPS,
    ACTIVE_FRACTION,
    EPOCH_TIME_S,
)

# Metrics a search may optimize. test_accuracy is reported, never optimized.
OBJECTIVE_METRICS = (
    VAL_ACCURACY,
    VAL_LOSS,
    INFERENCE_FLOPS,
    INFERENCE_FLOPS_RATIO,
    TRAINING_FLOPS,
    ACTIVE_FRACTION,
)


#: Final metrics a schedule file carries (``KSchedule.metrics``): the named metrics except the
#: wall-clock epoch time, plus the dense model's FLOPs.
PUBLIC_METRICS = (*(m for m in METRICS if m != EPOCH_TIME_S), "dense_inference_flops")


def public_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite :data:`PUBLIC_METRICS` of ``metrics``, in their order: what a schedule's
    ``metrics`` block holds (trainer results, trial records, exports)."""
    out: dict[str, float] = {}
    for key in PUBLIC_METRICS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = value
    return out


def active_fraction_key(layer: str) -> str:
    """``active_fraction/<layer>``: k / d of one MID-L layer."""
    return f"{ACTIVE_FRACTION}/{layer}"


def k_key(layer: str) -> str:
    """``k/<layer>``: the realized integer k of one MID-L layer in an epoch."""
    return f"k/{layer}"
