"""Which trial number a sampler is seeded for: reserved before ``ask``, not counted before it.

A sampler agent's sampler is seeded from ``--seed`` and the number of the trial it proposes
(:meth:`~midl_autok.agents.base.SamplerAgent.trial_seed`), so a resumed search proposes as an
uninterrupted one would. Reading that number as "the study's trial count" before ``ask`` is a
race: two searches started together on one study read the same count, seed their samplers
alike, see the same history, and train the same schedule.

:func:`reserve_number` closes it. Each search first reserves a number it alone owns: it
enqueues an empty WAITING trial tagged with its token (Optuna gives every new trial a unique
number, atomically, in any storage) and seeds from that trial's number. ``ask`` then takes
the oldest WAITING trial, which may be another search's reservation; the numbers the two
searches seeded from still differ, so their proposals do. Nothing is enqueued when the next
WAITING trial is a fixed point: ``ask`` takes it and the seed does not matter. A seed-grid
point carries the token of the search that enqueued it, so a stopped search fails it with its
other reservations (the grid retries a failed point). A search alone on its study reserves
exactly the number its ``ask`` gets, so its seeds are those of the trial count, as before.
An ``ask`` that took an older WAITING trial (another search's, or one a killed search left)
leaves the reservation for the next ``ask``; the session seeds that one from the number and
how often it was used (:meth:`~midl_autok.search.session.SearchSession.ask`), never the same
seed twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["ATTR_RESERVED_BY", "reserve_number"]

#: User attr of a trial a search enqueued to reserve its number (the search's token).
ATTR_RESERVED_BY = "reserved_by"


def reserve_number(study: optuna.Study, token: str) -> int:
    """The trial number to seed the next ``ask`` from (see the module's docstring)."""
    from optuna.trial import TrialState

    def waiting() -> list[optuna.trial.FrozenTrial]:
        trials = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        return sorted(trials, key=lambda t: t.number)

    queue = waiting()
    mine = [t.number for t in queue if t.user_attrs.get(ATTR_RESERVED_BY) == token]
    if mine:
        return mine[0]
    if queue and ATTR_RESERVED_BY not in queue[0].user_attrs:
        return queue[0].number  # a fixed point (seed grid) is next: ask takes it
    study.enqueue_trial({}, user_attrs={ATTR_RESERVED_BY: token}, skip_if_exists=False)
    return next(t.number for t in waiting() if t.user_attrs.get(ATTR_RESERVED_BY) == token)
