"""An episode's record (``info["midl_autok/episode"]`` of the step that ends it, documented in
:mod:`midl_autok.env`) as what a caller keeps: the realized schedule and the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from midl_autok.env import EPISODE_KEY
from midl_autok.schedule import KSchedule
from midl_autok.trainer import DivergedError

__all__ = ["episode_failure", "episode_metrics", "episode_record", "episode_schedule"]

Record = Mapping[str, Any]


def episode_record(info: Mapping[str, Any]) -> Record:
    """The record in the ``info`` of an episode's last step; a ``RuntimeError`` when the env
    did not end the episode itself (e.g. a time limit truncated it before training finished)."""
    record = info.get(EPISODE_KEY)
    if record is None:
        raise RuntimeError(
            f"the episode was truncated after epoch {info.get('epoch')} before training finished; "
            "roll out without a time limit shorter than the run"
        )
    return record


def episode_schedule(record: Record) -> KSchedule | None:
    """The k applied each epoch (the epoch that failed included); ``None`` when no epoch got one."""
    schedule = record["schedule"]
    return None if schedule is None else KSchedule.from_dict(schedule, source="the episode")


def episode_metrics(record: Record) -> dict[str, float]:
    """The final metrics (``{}`` when the run failed before the end) plus ``episode_return``."""
    return {**record["metrics"], "episode_return": float(record["return"])}


def episode_failure(record: Record) -> Exception | None:
    """The error a failed episode stands for (:class:`~midl_autok.trainer.DivergedError` for a
    diverging run), else ``None``."""
    if record["status"] != "failed":
        return None
    reason = str(record["reason"])
    history = [dict(row) for row in record["history"]]
    if record["diverged"]:
        return DivergedError(reason, epoch=len(history), history=history)
    return RuntimeError(f"the episode's run failed: {reason}")
