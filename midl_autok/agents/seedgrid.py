"""The seed grid: the first trials of a sampler search are a coarse constant-k grid.

``--seed-grid N`` (spec ``search.seed_grid``) makes the first ``N`` trials of a sampler search
(every agent that samples a space; not ``fixed-k``, which is the grid already, nor the RL
agents) the fixed-k agent's grid of ``N`` fractions
(:func:`~midl_autok.agents.baselines.fixed_k_grid`: evenly spaced in the space's
``[min_fraction, max_fraction]``, walked coarse to fine), so the search never starts behind
the paper's setting; the sampler then continues from those results.

Each grid point is an ordinary trial: the backend enqueues it before ``ask``
(``Study.enqueue_trial``) with user attrs ``origin = "seed_grid"``, ``seed_grid`` (its index in
the coarse-to-fine order) and ``seed_grid_fraction``. Its parameters are the space's encoding
of the constant schedule when the space can express it (``budget``: equal shares and
``start = 0``; ``cosine``: ``start = end``), so the sampler learns from it like from any other
trial; otherwise the trial has no parameters and the agent proposes the constant schedule as is.

Which points are done is read from the study's trials, never from a counter: a point is done
when a trial with its index is COMPLETE, PRUNED, RUNNING or WAITING, or has FAILed twice (a
point whose training fails is not retried forever). A resumed search thus continues the grid
without repeating it. The grid depends only on ``N`` and the space's bounds (both part of
the study's identity), not on ``--trials``: a search with fewer trials than ``N`` (only a
default ``N`` can be; the CLI refuses ``--seed-grid`` above ``--trials``) runs the grid's
first, coarsest points.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midl_autok.errors import ScheduleError
from midl_autok.schedule import KSchedule

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from midl_autok.agents.base import Agent
    from midl_autok.search_spaces import SearchSpace

__all__ = [
    "ORIGIN",
    "SeedPoint",
    "coarse_to_fine",
    "fixed_k_grid",
    "next_seed_point",
    "seed_grid",
    "seed_schedule",
]


def coarse_to_fine(n: int) -> list[int]:
    """Indices ``0..n-1`` ordered coarse to fine: last, first, then interval midpoints
    breadth first (``n=5`` -> ``[4, 0, 2, 1, 3]``)."""
    if n <= 0:
        return []
    if n == 1:
        return [0]
    order = [n - 1, 0]
    intervals = [(0, n - 1)]
    while intervals:
        nxt = []
        for a, b in intervals:
            mid = (a + b) // 2
            if a < mid < b:
                order.append(mid)
                nxt += [(a, mid), (mid, b)]
        intervals = nxt
    return order


def fixed_k_grid(n: int, low: float, high: float) -> list[float]:
    """``n`` fractions evenly spaced in ``[low, high]`` (rounded to 6 decimals), coarse to
    fine; ``n = 1`` is the middle of the range."""
    if n == 1:
        return [round((low + high) / 2, 6)]
    values = [round(low + (high - low) * i / (n - 1), 6) for i in range(n)]
    return [values[i] for i in coarse_to_fine(n)]


#: Value of the trial user attr ``origin`` of a seed-grid trial.
ORIGIN = "seed_grid"
#: A grid point that failed this many times is not tried again.
MAX_FAILURES = 2


@dataclass(frozen=True)
class SeedPoint:
    """A grid point to enqueue: its index, k fraction, parameters (maybe none) and attrs."""

    index: int
    fraction: float
    params: dict[str, float]

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {"origin": ORIGIN, "seed_grid": self.index, "seed_grid_fraction": self.fraction}


def seeds_agent(agent: Agent) -> bool:
    """Whether a seed grid applies to ``agent`` (a sampler agent that samples its space)."""
    # a sampler agent (it makes Optuna samplers); not isinstance: base.py imports this module
    return callable(getattr(agent, "create_sampler", None)) and agent.uses_space


def seed_grid(size: int, space: SearchSpace) -> list[float]:
    """The grid's k fractions, coarse to fine, in the space's fraction bounds."""
    return fixed_k_grid(size, space.min_fraction, space.max_fraction) if size > 0 else []


def seed_schedule(space: SearchSpace, fraction: float) -> tuple[KSchedule, dict[str, float]]:
    """The constant schedule at ``fraction`` and its parameters in ``space`` (``{}`` when the
    space cannot express it exactly)."""
    schedule = KSchedule.constant(space.layers, space.epochs, fraction)
    try:
        params = space.encode_params(schedule)
    except ScheduleError:
        params = {}
    return schedule, params


def next_seed_point(
    agent: Agent,
    space: SearchSpace,
    trials: Sequence[FrozenTrial],
    *,
    size: int,
) -> SeedPoint | None:
    """The first grid point no trial of the study holds, or None (grid done, no grid, an
    agent it does not apply to, or a WAITING trial that the next ``ask`` takes first)."""
    from optuna.trial import TrialState

    if not seeds_agent(agent) or size <= 0:
        return None
    if any(t.state == TrialState.WAITING for t in trials):
        return None
    taken: set[int] = set()
    failures: Counter[int] = Counter()
    for t in trials:
        index = t.user_attrs.get("seed_grid")
        if t.user_attrs.get("origin") != ORIGIN or not isinstance(index, int):
            continue
        if t.state == TrialState.FAIL:
            failures[index] += 1
        else:
            taken.add(index)
    for index, fraction in enumerate(seed_grid(size, space)):
        if index not in taken and failures[index] < MAX_FAILURES:
            return SeedPoint(index, fraction, seed_schedule(space, fraction)[1])
    return None


def propose_seed(trial: optuna.Trial, space: SearchSpace) -> KSchedule | None:
    """The schedule of a seed-grid trial (None for any other trial): the space's decoding of
    the enqueued parameters when it has them, else the constant schedule itself."""
    fraction = trial.user_attrs.get("seed_grid_fraction")
    if trial.user_attrs.get("origin") != ORIGIN or fraction is None:
        return None
    schedule, params = seed_schedule(space, float(fraction))
    return space.suggest(trial) if params else schedule
