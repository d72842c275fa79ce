"""Temporary: today's :class:`~midl_autok.backends.session.SearchSession` seen as a
:class:`~midl_autok.agents.host.SearchHost`, until the session implements the protocol itself
(then this module and its two uses in ``local.py`` go: pass the session and the callbacks as
they are). Each member names the session attribute it reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from midl_autok.agents.host import SearchHost
    from midl_autok.backends.session import SearchSession
    from midl_autok.schedule import KSchedule
    from midl_autok.search_spaces import SearchSpace
    from midl_autok.spec import ExperimentSpec


class _SessionHost:
    def __init__(self, session: SearchSession) -> None:
        self._s = session

    @property
    def study_name(self) -> str:
        return self._s.study_name  # session.study_name

    @property
    def spec(self) -> ExperimentSpec:
        return self._s.spec  # session.spec

    @property
    def spec_dict(self) -> dict[str, Any]:
        return dict(self._s.attrs["spec"])  # session.attrs["spec"]

    @property
    def space(self) -> SearchSpace:
        return self._s.space  # session.space

    @property
    def device(self) -> str:
        return self._s.device  # session.device

    @property
    def threads(self) -> int | None:
        return self._s.threads  # session.threads

    @property
    def flops_budget(self) -> float | None:
        return self._s.flops_budget  # session.flops_budget

    @property
    def files_root(self) -> Path:
        return self._s.store.root  # session.store.root

    def counted_trials(self) -> int:
        return self._s.counted_trials()  # session.counted_trials()

    def next_trial_number(self) -> int:
        return self._s.storage.get_n_trials(self._s.study_id)  # session.storage, .study_id

    def trials(self) -> list[FrozenTrial]:
        return self._s.study.get_trials(deepcopy=False)  # session.study

    def record(self, schedule: KSchedule, **kwargs: Any) -> FrozenTrial:
        return self._s.record(schedule, **kwargs)  # session.record

    def study_attr(self, key: str) -> Any:
        return self._s.study.user_attrs.get(key)  # session.study

    def set_study_attr(self, key: str, value: Any) -> None:
        self._s.storage.set_study_user_attr(self._s.study_id, key, value)  # session.storage

    def log_artifact(self, path: Path, folder: str) -> None:
        self._s.tracker.client.log_artifact(self._s.parent_run_id, str(path), folder)


class _SessionCallback:
    """A search callback that gets the session where an agent passes its host."""

    def __init__(self, callback: Any, session: SearchSession) -> None:
        self._cb, self._s = callback, session

    def on_start(self, host: object, *, target: int, done: int) -> None:
        self._cb.on_start(self._s, target=target, done=done)

    def on_trial_end(self, host: object, trial: FrozenTrial, outcome: Any) -> None:
        self._cb.on_trial_end(self._s, trial, outcome)


def as_host(session: SearchSession) -> SearchHost:
    """The session as the host an external agent runs on."""
    return _SessionHost(session)


def host_callbacks(callbacks: Sequence[Any], session: SearchSession) -> list[Any]:
    """Search callbacks for an external agent: they get the session, not the host."""
    return [_SessionCallback(cb, session) for cb in callbacks]
