"""midl-autok: search per-layer, per-epoch Top-k schedules for MID-L networks.

The public names below are loaded on first use, so ``import midl_autok`` stays light (it
imports neither torch nor Optuna, MLflow, Ray or Stable-Baselines3 until you touch them)::

    from midl_autok import MIDL, KSchedule, build_model, load_dataset, train
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "MIDL": "midl_autok.layers",
    "KSchedule": "midl_autok.schedule",
    "LayerSpec": "midl_autok.schedule",
    "k_from_fraction": "midl_autok.schedule",
    "CostModel": "midl_autok.flops",
    "cost_model": "midl_autok.flops",
    "build_model": "midl_autok.models",
    "MIDLNet": "midl_autok.models",
    "midlify": "midl_autok._midlify",
    "Dataset": "midl_autok.data",
    "load_dataset": "midl_autok.data",
    "ExperimentSpec": "midl_autok.spec",
    "load_spec": "midl_autok.spec",
    "with_factories": "midl_autok.factories",
    "TrainConfig": "midl_autok.trainer",
    "TrainHooks": "midl_autok.trainer",
    "TrainResult": "midl_autok.trainer",
    "TrainSession": "midl_autok.trainer",
    "DivergedError": "midl_autok.trainer",
    "train": "midl_autok.trainer",
    "run_experiment": "midl_autok.trainer",
    "UserError": "midl_autok.errors",
    "ScheduleError": "midl_autok.errors",
    "SpecError": "midl_autok.errors",
    "DataError": "midl_autok.errors",
}

__all__ = [
    "MIDL",
    "CostModel",
    "DataError",
    "Dataset",
    "DivergedError",
    "ExperimentSpec",
    "KSchedule",
    "LayerSpec",
    "MIDLNet",
    "ScheduleError",
    "SpecError",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "TrainSession",
    "UserError",
    "__version__",
    "build_model",
    "cost_model",
    "k_from_fraction",
    "load_dataset",
    "load_spec",
    "midlify",
    "run_experiment",
    "train",
    "with_factories",
]

if TYPE_CHECKING:
    from midl_autok._midlify import midlify
    from midl_autok.data import Dataset, load_dataset
    from midl_autok.errors import DataError, ScheduleError, SpecError, UserError
    from midl_autok.factories import with_factories
    from midl_autok.flops import CostModel, cost_model
    from midl_autok.layers import MIDL
    from midl_autok.models import MIDLNet, build_model
    from midl_autok.schedule import KSchedule, LayerSpec, k_from_fraction
    from midl_autok.spec import ExperimentSpec, load_spec
    from midl_autok.trainer import (
        DivergedError,
        TrainConfig,
        TrainHooks,
        TrainResult,
        TrainSession,
        run_experiment,
        train,
    )


def _register_envs() -> None:
    """Register ``midl_autok/TopKSchedule-v0`` with Gymnasium (by entry point: no torch)."""
    try:
        from midl_autok.env_registration import register_envs
    except ImportError:  # gymnasium missing: the RL parts are unavailable, the rest works
        return
    register_envs()


_register_envs()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'midl_autok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
