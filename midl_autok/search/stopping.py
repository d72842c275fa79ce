"""When a search stops: the one stop rule both backends follow.

A search runs until the study counts ``target`` COMPLETE + PRUNED trials (failed ones do not
count and are replaced). It stops earlier, with a reason the summary reports, when

* the time budget ``timeout_s`` has run out (no new trial starts after it), or
* ``max_consecutive_failures`` trials in a row failed (a spec that can only fail).

The local loop asks :meth:`StopRule.check` before each trial and feeds every recorded trial to
:meth:`StopRule.after`; the Ray searcher does the same in ``suggest`` and on each result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["StopRule"]


@dataclass
class StopRule:
    """The stop rule of one search invocation; :attr:`stopped` says why it stopped early."""

    target: int
    timeout_s: float | None = None
    max_consecutive_failures: int = 5
    stopped: str | None = None
    in_a_row: int = 0
    started: float = field(default_factory=time.perf_counter)

    def check(self) -> str | None:
        """Before a new trial: the reason not to start one (time up, earlier stop), or None."""
        elapsed = time.perf_counter() - self.started
        if self.stopped is None and self.timeout_s is not None and elapsed >= self.timeout_s:
            self.stopped = f"the time budget of {self.timeout_s:g} s ran out"
        return self.stopped

    def after(self, frozen: FrozenTrial) -> str | None:
        """After a trial was recorded: count a failure in a row (COMPLETE and PRUNED reset
        the count); return the reason to stop, or None."""
        from optuna.trial import TrialState

        if frozen.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.in_a_row = 0
            return self.stopped
        self.in_a_row += 1
        if self.in_a_row >= self.max_consecutive_failures and self.stopped is None:
            reason = frozen.user_attrs.get("fail_reason", "unknown")
            self.stopped = f"{self.in_a_row} trials in a row failed (last: {reason})"
        return self.stopped

    def done(self, counted: int) -> bool:
        """Whether the study has reached the target."""
        return counted >= self.target
