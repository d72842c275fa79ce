"""What one search invocation did and where its results are: :class:`SearchSummary`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midl_autok.store import Store

__all__ = ["SearchSummary"]


@dataclass
class SearchSummary:
    """What one search invocation did and where its results are."""

    study: str
    store: Store
    target: int
    completed: int  # COMPLETE + PRUNED trials in the study
    new_trials: int  # trials this invocation evaluated (any state)
    failed: int  # of which failed
    hypervolume: float | None
    hypervolume_normalized: float | None
    front: list[dict[str, Any]]
    parent_run_id: str | None
    wall_s: float  # the whole invocation: opening, trials, Pareto files
    train_s: float  # training wall time of this invocation's trials (sum)
    trial_s: float  # wall time of this invocation's trials, ask to tell (sum)
    files: list[Path] = field(default_factory=list)
    stopped: str | None = None  # why the search stopped before the target, if it did
    pruned: int = 0  # of the new trials, stopped early by a scheduler (counted as completed)
    confirmations: int = 0  # of the new trials, retrainings of the front (--confirm N)

    @property
    def overhead_per_trial_s(self) -> float | None:
        """Mean time per new trial not spent training: Optuna ask/tell and user attrs, the
        MLflow child run, the parent's hypervolume (excludes opening and Pareto files)."""
        if not self.new_trials:
            return None
        return (self.trial_s - self.train_s) / self.new_trials
