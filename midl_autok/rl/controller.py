"""The live controller: a trained policy choosing each epoch's k while
:func:`~midl_autok.trainer.train` runs (``midl-autok train --controller``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from midl_autok.data import Dataset
from midl_autok.env import KRule, Observer, TaskView, lowest_k
from midl_autok.errors import UserError
from midl_autok.flops import CostModel, cost_model
from midl_autok.models import MIDLNet
from midl_autok.rl.policy import PolicyFn, load_policy

__all__ = ["PolicyController"]


def _one_value(name: str, value: Any, configured: Any) -> float | None:
    """The single ``lam``/``budget`` a controller runs with: given, or the env's if fixed."""
    if value is not None:
        return float(value)
    if configured is None:
        return None
    lo, hi = (configured, configured) if isinstance(configured, (int, float)) else configured
    if lo != hi:
        example = hi if name == "budget" else lo  # the low end of a budget may be unreachable
        raise UserError(
            f"the policy was trained with {name} in [{lo}, {hi}]; choose one value "
            f"(e.g. {name}={example})"
        )
    return float(lo)


class PolicyController:
    """A trainer :data:`~midl_autok.trainer.Controller` that asks a policy for each epoch's k.

    It observes the run exactly as :class:`~midl_autok.env.TopKScheduleEnv` does (the same
    :class:`~midl_autok.env.Observer` and decision rule), so under the same run seed
    ``train(model, data, controller=...)`` replays the env's episode. Give it the model that
    ``train`` trains and its data::

        controller = PolicyController.from_file("policy.zip", model=model, data=data, epochs=10)
        result = train(model, data, config=config, controller=controller)
    """

    def __init__(
        self,
        policy_fn: PolicyFn,
        *,
        model: MIDLNet,
        data: Dataset,
        epochs: int,
        lam: float = 0.1,
        budget: float | None = None,
        hard_budget: bool = False,
        spend_budget: bool = False,
        min_fraction: float = 0.05,
        probe_size: int = 256,
        eval_batch_size: int = 4096,
        max_budget: float | None = None,
        view: TaskView | None = None,
    ) -> None:
        if (hard_budget or spend_budget) and budget is None:
            mode = "hard_budget" if hard_budget else "spend_budget"
            raise UserError(f"{mode}=True needs a budget (a fraction of dense FLOPs)")
        self.policy_fn = policy_fn
        self.model = model
        self.epochs = epochs
        self.lam = lam
        self.budget = budget
        self.layers = model.layer_specs()
        if not self.layers:
            raise UserError("a policy controller needs a model with MID-L layers")
        self.costs: CostModel = _costs(model, data)
        #: action -> k (also holds ``min_fraction``, ``hard_budget`` and ``spend_budget``)
        self.rule = KRule(
            self.layers, self.costs, min_fraction, budget, hard_budget, epochs, spend_budget
        )
        if (hard_budget or spend_budget) and budget is not None:
            floor = self.costs.ratio(lowest_k(self.layers, min_fraction))
            if budget < floor:
                raise UserError(
                    f"budget {budget:g} is below this model's lowest reachable FLOPs ratio "
                    f"{floor:.4f} (every MID-L layer at min_fraction={min_fraction})"
                )
            if view is not None and view.budget_floor is None and spend_budget:
                view = dataclasses.replace(view, budget_floor=floor)
        self.observer = Observer(
            layers=self.layers,
            costs=self.costs,
            data=data,
            epochs=epochs,
            probe_size=probe_size,
            eval_batch_size=eval_batch_size,
            max_budget=max_budget if max_budget is not None else (budget or 1.0),
        )
        self.view = view  # a pool policy's task-free view (midl_autok.env.pool), or None
        self.trace: list[dict[str, Any]] = []  # per epoch: observation, action, k, clipped

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        model: MIDLNet,
        data: Dataset,
        epochs: int,
        lam: float | None = None,
        budget: float | None = None,
        deterministic: bool = True,
    ) -> PolicyController:
        """A controller from a :func:`save_policy` file; ``lam``/``budget`` default to the
        training env's when it used one value (a range needs an explicit choice). A policy
        trained on a task pool (:class:`~midl_autok.env.TaskPoolEnv`) sees the run through
        the pool's :class:`~midl_autok.env.TaskView`: it controls any model with at most its
        ``max_layers`` MID-L layers. A budget-mode pool policy (``TaskPoolEnv(budgets=...)``)
        needs ``budget``: every epoch's k is fit to it (``lam`` is 0)."""
        loaded = load_policy(path)
        env = loaded.env_config
        names = [layer["name"] for layer in loaded.meta["layers"]]
        ours = [s.name for s in model.layer_specs()]
        view = None
        pool = env.get("pool")
        if isinstance(pool, dict):
            slots = int(pool.get("max_layers", len(names)))
            if not 1 <= len(ours) <= slots:
                raise UserError(
                    f"{path}: the pool policy controls models with 1 to {slots} MID-L layers, "
                    f"but the model has {len(ours)} ({', '.join(ours)})"
                )
            view = TaskView(data.num_classes, len(ours), slots)
        elif len(names) != len(ours):
            raise UserError(
                f"{path}: the policy chooses k for {len(names)} MID-L layers "
                f"({', '.join(names)}), but the model has {len(ours)} ({', '.join(ours)})"
            )
        configured_budget = env.get("budget")
        return cls(
            loaded.policy_fn(deterministic=deterministic),
            model=model,
            data=data,
            epochs=epochs,
            lam=_one_value("lam", lam, env.get("lam")) or 0.0,
            budget=_one_value("budget", budget, configured_budget),
            hard_budget=bool(env.get("hard_budget", False)),
            spend_budget=bool(env.get("spend_budget", False)),
            min_fraction=float(env.get("min_fraction", 0.05)),
            probe_size=int(env.get("probe_size", 256)),
            eval_batch_size=int(env.get("eval_batch_size", 4096)),
            max_budget=None if configured_budget is None else max(_as_pair(configured_budget)),
            view=view,
        )

    def __call__(self, epoch: int, history: Sequence[Mapping[str, float]]) -> dict[str, int]:
        if len(history) != epoch:
            raise RuntimeError(
                f"PolicyController must be called once per epoch, in order; got epoch {epoch} "
                f"after {len(history)} recorded epochs"
            )
        if epoch == 0:
            obs, _ = self.observer.reset(self.model, lam=self.lam, budget=self.budget)
            self.trace = []
        else:
            obs = self.observer.step(self.model, history[-1])
        if self.view is not None:
            obs = self.view.observe(obs, lam=self.lam)
        action = np.asarray(self.policy_fn(obs), dtype=np.float32)
        if self.view is not None:
            action = self.view.action(action)
        k, clipped = self.rule.decide(action, epoch)
        self.trace.append({"observation": obs, "action": action, "k": k, "clipped": clipped})
        return k


def _as_pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    return float(lo), float(hi)


def _costs(model: MIDLNet, data: Dataset) -> CostModel:
    device = next(model.parameters()).device
    return cost_model(model, data.x_train[:1].to(device))
