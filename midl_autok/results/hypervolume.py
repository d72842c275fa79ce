"""Hypervolume of a study against its fixed reference point, raw and normalized.

The one copy of two rules every reader and the search itself use:

* **raw hypervolume** (:func:`hypervolume`): the volume the feasible objective vectors dominate
  up to the reference point the search fixed before its first trial (two objectives: the exact
  sweep of :func:`midl_autok.pareto.hypervolume_2d`; more: Optuna's WFG);
* **normalized hypervolume** (:func:`normalized_hypervolume`): that volume divided by the box
  between the reference point and the ideal point (:data:`IDEAL`: accuracy 1, FLOPs 0), so
  studies of different models compare on one [0, 1] scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from midl_autok.errors import UserError

__all__ = [
    "IDEAL",
    "StudyAttributeError",
    "checked_reference",
    "hypervolume",
    "ideal_point",
    "normalized_hypervolume",
    "reference_box",
]


class StudyAttributeError(UserError):
    """A study's recorded attribute (e.g. ``reference_point``) is not what the search wrote."""


#: Best possible value of each objective metric (the far corner of the normalizing box).
IDEAL: dict[str, float] = {
    "val_accuracy": 1.0,
    "inference_flops": 0.0,
    "inference_flops_ratio": 0.0,
    "training_flops": 0.0,
    "active_fraction": 0.0,
}


def _finite_numbers(value: Any, n: int) -> list[float] | None:
    """``value`` as ``n`` finite floats, or None when it is not such a list."""
    if not isinstance(value, list | tuple) or len(value) != n:
        return None
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        return None
    out = [float(x) for x in value]
    return out if all(math.isfinite(x) for x in out) else None


def checked_reference(
    reference: Any, objectives: Sequence[str], *, study: str
) -> list[float] | None:
    """The study attribute ``reference_point``: None (no hypervolume, e.g. ``val_loss``) or
    one finite number per objective; anything else is a :class:`StudyAttributeError` naming
    the study (the search fixed it before its first trial, so another value was written by
    hand)."""
    if reference is None:
        return None
    checked = _finite_numbers(reference, len(objectives))
    if checked is None:
        shown = repr(reference)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise StudyAttributeError(
            f"study {study!r}: attribute reference_point must be null or {len(objectives)} "
            f"finite numbers (one per objective: {', '.join(objectives)}), but got {shown}; "
            "it was changed after the search fixed it: restore it or start a new study"
        )
    return checked


def ideal_point(
    objectives: Sequence[str], attrs: Mapping[str, Any] | None = None
) -> list[float] | None:
    """The study's ``ideal`` user attr when it has a valid one, else :data:`IDEAL` for its
    objectives; None when an objective has no ideal value (e.g. ``val_loss``)."""
    ideal = _finite_numbers((attrs or {}).get("ideal"), len(objectives))
    if ideal is not None:
        return ideal
    if all(o in IDEAL for o in objectives):
        return [IDEAL[o] for o in objectives]
    return None


def hypervolume(values: Any, reference: Any, directions: Sequence[str]) -> float:
    """Hypervolume of objective vectors (rows) against a fixed reference point.

    Two objectives use the exact sweep of :func:`midl_autok.pareto.hypervolume_2d`; more use
    Optuna's WFG implementation. Points no better than the reference in every objective add
    nothing.
    """
    import numpy as np

    from midl_autok import pareto

    points = np.asarray(values, dtype=float).reshape(-1, len(directions))
    if points.shape[0] == 0:
        return 0.0
    if len(directions) == 2:
        return pareto.hypervolume_2d(points, reference, list(directions))
    from optuna._hypervolume import compute_hypervolume  # m > 2 only

    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    loss, ref = points * signs, np.asarray(reference, dtype=float) * signs
    inside = loss[np.all(loss < ref, axis=1)]
    return float(compute_hypervolume(inside, ref)) if inside.shape[0] else 0.0


def reference_box(reference: Sequence[float] | None, ideal: Sequence[float] | None) -> float | None:
    """Volume of the box between the reference and the ideal point:
    ``prod_j |ref_j - ideal_j|``; None when either point is missing or the box is empty."""
    if reference is None or not ideal:
        return None
    box = math.prod(abs(float(r) - float(i)) for r, i in zip(reference, ideal, strict=True))
    return box if box > 0 else None


def normalized_hypervolume(
    hv: float | None, reference: Sequence[float] | None, ideal: Sequence[float] | None
) -> float | None:
    """``hv / reference_box(reference, ideal)`` (0..1), or None when it is not defined."""
    box = reference_box(reference, ideal)
    if hv is None or box is None:
        return None
    return hv / box
