"""Confirmed trials: a front's schedules retrained with more seeds (``--confirm N``), read side.

A confirmation is an ordinary Optuna trial (and MLflow child run) written by
:mod:`midl_autok.search.confirm`, marked by its user attrs: ``origin = "confirm"``
(:data:`ORIGIN`), ``confirm_of`` (the number of the trial whose schedule it retrains),
``confirm_index`` (1..N), ``confirm_seed`` (the experiment seed it trained with) and
``schedule_hash`` (:func:`schedule_hash` of the schedule it retrains). Confirmations are not
search trials: they stay out of the study's fronts, hypervolume and trial target.

:func:`confirmed_values` gives each confirmed trial the mean and sample standard deviation
of every objective and of ``test_accuracy`` over its own values (the original seed) and its
COMPLETE confirmations; :mod:`~midl_autok.results.picks` picks from the means when a study
has any confirmation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTR_CONFIRM_INDEX",
    "ATTR_CONFIRM_OF",
    "ATTR_CONFIRM_SEED",
    "ATTR_SCHEDULE_HASH",
    "ORIGIN",
    "Confirmed",
    "confirmed_values",
    "is_confirmation",
    "schedule_hash",
]

#: Trial user attr ``origin`` of a confirmation trial.
ORIGIN = "confirm"
ATTR_CONFIRM_OF = "confirm_of"
ATTR_CONFIRM_INDEX = "confirm_index"
ATTR_CONFIRM_SEED = "confirm_seed"
ATTR_SCHEDULE_HASH = "schedule_hash"
#: Metrics summarized besides the objectives.
EXTRA_METRICS = ("val_accuracy", "test_accuracy")


def is_confirmation(trial: Any) -> bool:
    """Whether ``trial`` (a FrozenTrial) retrains another trial's schedule."""
    return trial.user_attrs.get("origin") == ORIGIN


def schedule_hash(schedule: Mapping[str, Any]) -> str:
    """A short hash of a schedule dict's layers, epochs and k matrix (12 hex digits)."""
    core = {k: schedule.get(k) for k in ("layers", "epochs", "k")}
    text = json.dumps(core, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Confirmed:
    """A trial's values over its seeds: the original run and its COMPLETE confirmations."""

    trial: int
    n: int  # seeds: 1 (the original) + the COMPLETE confirmations
    seeds: list[int]
    mean: dict[str, float] = field(default_factory=dict)  # metric -> mean over the seeds
    sd: dict[str, float] = field(default_factory=dict)  # metric -> sample sd (0 for n = 1)
    confirmations: list[int] = field(default_factory=list)  # their trial numbers

    def values(self, objectives: Sequence[str]) -> list[float]:
        """The mean of each objective, in the study's order."""
        return [self.mean[m] for m in objectives]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "seeds": self.seeds, "trials": self.confirmations}
        for key in self.mean:
            out[f"{key}_mean"] = self.mean[key]
            out[f"{key}_sd"] = self.sd[key]
        return out


def _summary(rows: Sequence[Mapping[str, float]], keys: Iterable[str]) -> tuple[dict, dict]:
    mean: dict[str, float] = {}
    sd: dict[str, float] = {}
    for key in keys:
        xs = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if not xs:
            continue
        mu = sum(xs) / len(xs)
        mean[key] = mu
        sd[key] = math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return mean, sd


def confirmed_values(
    trials: Sequence[Any], objectives: Sequence[str], *, seed: int | None = None
) -> dict[int, Confirmed]:
    """Trial number -> :class:`Confirmed`, for every COMPLETE trial with at least one COMPLETE
    confirmation (``seed``: the study's seed, the original run's)."""
    from optuna.trial import TrialState

    by_number = {t.number: t for t in trials}
    extra: dict[int, list[Any]] = {}
    for t in trials:
        of = t.user_attrs.get(ATTR_CONFIRM_OF)
        done = is_confirmation(t) and t.state == TrialState.COMPLETE and t.values is not None
        if done and isinstance(of, int) and of in by_number:
            extra.setdefault(of, []).append(t)
    out: dict[int, Confirmed] = {}
    keys = list(dict.fromkeys([*objectives, *EXTRA_METRICS]))
    for number, confirmations in sorted(extra.items()):
        original = by_number[number]
        if original.state != TrialState.COMPLETE or original.values is None:
            continue
        confirmations.sort(key=lambda t: t.user_attrs.get(ATTR_CONFIRM_INDEX, 0))
        runs = [original, *confirmations]
        rows = [
            {**t.user_attrs, **dict(zip(objectives, t.values, strict=True))}  # values win
            for t in runs
        ]
        mean, sd = _summary(rows, keys)
        out[number] = Confirmed(
            trial=number,
            n=len(runs),
            seeds=[seed if seed is not None else -1]
            + [int(t.user_attrs.get(ATTR_CONFIRM_SEED, -1)) for t in confirmations],
            mean=mean,
            sd=sd,
            confirmations=[t.number for t in confirmations],
        )
    return out
