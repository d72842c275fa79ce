"""What an agent may call on the search that runs it: the :class:`SearchHost` protocol.

Agents import nothing from :mod:`midl_autok.search` (or the older ``backends``); a search
session implements this protocol and hands itself to the agent. A sampler agent (Optuna) only
creates samplers and proposes schedules on trials the host asks for; an external agent (an RL
agent that trains and evaluates schedules itself) records each evaluation through
:meth:`SearchHost.record`, which turns it into one Optuna trial and one MLflow child run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Required, TypedDict, Unpack, runtime_checkable

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.schedule import KSchedule
    from midl_autok.search_spaces import SearchSpace
    from midl_autok.spec import ExperimentSpec

__all__ = ["RecordFields", "SearchHost"]


class RecordFields(TypedDict, total=False):
    """The keywords of :meth:`SearchHost.record` (only ``metrics`` is required); the search's
    implementation, :func:`midl_autok.search.recording.record_external`, documents them."""

    metrics: Required[Mapping[str, float]]  # final metrics (names from midl_autok.metrics)
    history: Sequence[Mapping[str, float]]  # per-epoch rows; default: none
    params: Mapping[str, float] | None  # the trial's parameters; default: the space's encoding
    fail_reason: str | None  # a failed evaluation's reason; default: none
    train_s: float  # training seconds; default 0
    user_attrs: Mapping[str, str | int | float | bool | None] | None  # on the trial and the run


@runtime_checkable
class SearchHost(Protocol):
    """The narrow face of a running search that external agents see.

    Read-only facts: ``study_name``, ``spec`` (the validated experiment) and ``spec_dict``
    (its JSON form, as recorded on the study), ``space``, ``device``, ``threads`` (torch CPU
    threads per trial, ``None`` = torch's default), ``flops_budget`` (the inference-FLOPs
    ratio limit or ``None``) and ``files_root`` (a folder of the store where an agent may
    keep files, e.g. ``policies/``; paths recorded on the study are relative to it).
    """

    @property
    def study_name(self) -> str: ...

    @property
    def spec(self) -> ExperimentSpec: ...

    @property
    def spec_dict(self) -> dict[str, Any]: ...

    @property
    def space(self) -> SearchSpace: ...

    @property
    def device(self) -> str: ...

    @property
    def threads(self) -> int | None: ...

    @property
    def flops_budget(self) -> float | None: ...

    @property
    def files_root(self) -> Path: ...

    def counted_trials(self) -> int:
        """Trials that count toward the target (COMPLETE and PRUNED)."""
        ...

    def next_trial_number(self) -> int:
        """The number the next trial of the study will get (trials of any state so far)."""
        ...

    def trials(self) -> list[FrozenTrial]:
        """The study's trials, read-only (for an agent that resumes from its own records)."""
        ...

    def record(self, schedule: KSchedule, **fields: Unpack[RecordFields]) -> FrozenTrial:
        """Record one schedule the agent evaluated: one Optuna trial + one MLflow child run."""
        ...

    def study_attr(self, key: str) -> Any:
        """A study user attribute (``None`` when absent)."""
        ...

    def set_study_attr(self, key: str, value: Any) -> None:
        """Set a study user attribute (JSON-serializable value)."""
        ...

    def log_artifact(self, path: Path, folder: str) -> None:
        """Attach a file to the search's MLflow parent run under ``folder``."""
        ...
