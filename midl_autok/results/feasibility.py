"""Feasibility: the one rule that says whether a completed trial meets its constraints.

A search with a FLOPs budget records the constraint ``inference_flops_ratio - budget`` on each
trial (Optuna's convention: ``<= 0`` is satisfied). A feasible trial is COMPLETE, has values and
satisfies every constraint it carries; only feasible trials enter fronts, picks and the
hypervolume.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FLOPS_CONSTRAINT", "is_feasible", "meets_constraints"]

#: Name of the FLOPs-budget constraint a search records on its trials.
FLOPS_CONSTRAINT = "flops_budget"


def meets_constraints(trial: Any) -> bool:
    """Every constraint of the trial (a FrozenTrial) is ``<= 0``."""
    return all(v <= 0 for v in trial.constraints.values())


def is_feasible(trial: Any) -> bool:
    """COMPLETE, with values, and every constraint met."""
    from optuna.trial import TrialState

    complete = trial.state == TrialState.COMPLETE and trial.values is not None
    return complete and meets_constraints(trial)
