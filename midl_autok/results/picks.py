"""Picks: choosing one trial of a study's Pareto front (``--pick``).

``knee`` (the best trade-off, :func:`midl_autok.pareto.knee_point`), ``max-accuracy`` (the most
accurate front trial, cheapest on ties) or ``min-flops`` (the cheapest, most accurate on ties).
Only feasible trials are candidates; ``max_flops_ratio`` narrows them to
``inference_flops_ratio <= R`` first.

**Confirmed means first.** When the study has confirmed trials (``--confirm N``,
:mod:`~midl_autok.results.confirmed`), the candidates are the confirmed feasible trials and
they are compared by their means over the seeds (the front, the knee, the most accurate):
a pick never rests on one lucky seed when the search measured more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midl_autok.store import StoreError

if TYPE_CHECKING:
    from midl_autok.results.record import StudyRecord

__all__ = ["PICKS", "metric_of", "pick"]

PICKS = ("knee", "max-accuracy", "min-flops")


def pick(record: StudyRecord, how: str = "knee", *, max_flops_ratio: float | None = None) -> Any:
    """One Pareto trial: the ``knee``, the ``max-accuracy`` one or the ``min-flops`` one.

    ``max_flops_ratio`` keeps only trials with ``inference_flops_ratio <= R`` first.
    """
    import numpy as np

    from midl_autok import pareto

    if how not in PICKS:
        from midl_autok.errors import unknown_name

        raise unknown_name("pick", how, PICKS, error=StoreError)
    completed = record.completed()
    if not completed:
        raise StoreError(f"study {record.name!r} has no completed trials yet")
    pool = record.feasible()
    if not pool:
        lowest = min(metric_of(t, "inference_flops_ratio") for t in completed)
        raise StoreError(
            f"no trial of study {record.name!r} meets its FLOPs budget "
            f"{record.attrs.get('flops_budget')} (lowest inference_flops_ratio found: "
            f"{lowest:.4g})"
        )
    if max_flops_ratio is not None:
        eligible = [t for t in pool if metric_of(t, "inference_flops_ratio") <= max_flops_ratio]
        if not eligible:
            lowest = min(metric_of(t, "inference_flops_ratio") for t in pool)
            raise StoreError(
                f"no trial of study {record.name!r} has inference_flops_ratio <= "
                f"{max_flops_ratio}; the lowest is {lowest:.4g}"
            )
        pool = eligible
    confirmed = record.confirmed()
    means = bool(confirmed) and any(t.number in confirmed for t in pool)
    if means:
        pool = [t for t in pool if t.number in confirmed]
    front = record.front(pool, means=means)
    if how == "knee":
        values = np.array([record.values_of(t) if means else t.values for t in front])
        return front[pareto.knee_point(values, record.directions)]

    def acc(t: Any) -> float:
        c = confirmed.get(t.number) if means else None
        return (
            c.mean["val_accuracy"]
            if c is not None and "val_accuracy" in c.mean
            else (metric_of(t, "val_accuracy"))
        )

    if how == "max-accuracy":
        return min(front, key=lambda t: (-acc(t), metric_of(t, "inference_flops"), t.number))
    return min(front, key=lambda t: (metric_of(t, "inference_flops"), -acc(t), t.number))


def metric_of(trial: Any, key: str) -> float:
    """A metric recorded on the trial (NaN when missing)."""
    value = trial.user_attrs.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")
