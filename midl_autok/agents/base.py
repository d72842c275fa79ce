"""The agent contract: what proposes schedules for a search.

Two kinds of agents exist; a search driver (a backend) handles both:

* :class:`SamplerAgent`: an Optuna sampler plus a define-by-run proposal. The backend owns
  the loop (``ask`` -> :meth:`SamplerAgent.propose` -> train -> ``tell``), so the same agent
  runs in-process (``search.local``) or with trials spread over Ray workers.
* :class:`ExternalAgent`: an agent that evaluates schedules itself (e.g. an RL policy that
  drives training epoch by epoch). It sees the search only through the
  :class:`~midl_autok.agents.host.SearchHost` protocol: its :meth:`ExternalAgent.run` records
  every evaluated schedule with :meth:`SearchHost.record`, which makes it one Optuna trial and
  one MLflow child run like any other.

Agents import nothing from :mod:`midl_autok.search`: a search hands itself to the agent.

Options come from the experiment spec's ``search.options`` (the keys a search space does not
take); each agent lists the ones it accepts with their defaults in :attr:`Agent.defaults`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from midl_autok.errors import SpecError, unknown_name

if TYPE_CHECKING:
    import optuna

    from midl_autok.agents.host import SearchHost
    from midl_autok.schedule import KSchedule, LayerSpec
    from midl_autok.search_spaces import SearchSpace

__all__ = ["Agent", "ExternalAgent", "SamplerAgent", "derive_seed"]


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from ``seed`` and ``keys`` (e.g. the trial number), stable
    across processes and platforms (NumPy ``SeedSequence``)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class Agent:
    """Base of all agents. Subclass :class:`SamplerAgent` or :class:`ExternalAgent`.

    Args:
        seed: Seeds everything random in the agent (``--seed``).
        **options: Agent options; unknown names and wrongly typed values are errors.
    """

    #: Registry name (``--agent``).
    name: ClassVar[str] = ""
    #: One line for ``--help`` and docs.
    summary: ClassVar[str] = ""
    #: Accepted options with their defaults (the type of the default is the option's type).
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: False when the agent ignores the search space's shape (it is then recorded as "-").
    uses_space: ClassVar[bool] = True

    def __init__(self, *, seed: int = 0, **options: Any) -> None:
        self.seed = int(seed)
        self.options: dict[str, Any] = dict(self.defaults)
        for key, value in options.items():
            if key not in self.defaults:
                raise unknown_name(
                    f"option for agent '{self.name}'",
                    key,
                    self.defaults or ["(none)"],
                    error=SpecError,
                )
            self.options[key] = _coerce(self.name, key, value, self.defaults[key])

    @classmethod
    def option_names(cls) -> list[str]:
        return sorted(cls.defaults)

    def space_label(self, space: str) -> str:
        """What the study records as its search space."""
        return space if self.uses_space else "-"

    def make_space(
        self,
        space: str,
        layers: Sequence[LayerSpec],
        epochs: int,
        options: Mapping[str, Any],
    ) -> SearchSpace:
        """The search space the agent samples in: the registry's space :meth:`space_name`
        picks, built with ``options``."""
        from midl_autok.search_spaces import make_space

        return make_space(self.space_name(space, options), layers, epochs, **options)

    def space_name(self, space: str, options: Mapping[str, Any]) -> str:
        """Which registered space :meth:`make_space` builds for the spec's ``space`` and its
        ``options`` (the spec's by default); an agent that needs another, or refuses some
        options, overrides this (raise :class:`~midl_autok.errors.SpecError`)."""
        return space

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(seed={self.seed}{', ' if opts else ''}{opts})"


class SamplerAgent(Agent):
    """An agent made of an Optuna sampler and a define-by-run proposal.

    The backend calls :meth:`create_sampler` before every ``ask`` with a seed derived from
    ``--seed`` and the trial number, so a resumed study proposes the same way an
    uninterrupted one would from the same history.
    """

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def prepare(self, *, target: int, space: SearchSpace) -> None:
        """Called once by the backend before the first ``ask`` (e.g. to lay out a grid)."""

    def trial_seed(self, trial_number: int) -> int:
        """The sampler seed for the trial with this number."""
        return derive_seed(self.seed, trial_number)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> KSchedule:
        """Suggest parameters on ``trial`` and return the schedule they decode to (a
        seed-grid trial: its constant schedule, see :mod:`midl_autok.agents.seedgrid`)."""
        from midl_autok.agents.seedgrid import propose_seed

        seeded = propose_seed(trial, space)
        return seeded if seeded is not None else space.suggest(trial)


class ExternalAgent(Agent):
    """An agent that trains and evaluates schedules itself.

    :meth:`run` must call ``host.record(schedule, metrics=..., history=...)`` (with
    ``fail_reason=`` for a failed evaluation) once per evaluated schedule, and stop when
    ``host.counted_trials() >= target`` (or earlier when it has nothing more to try).
    """

    def run(self, host: SearchHost, *, target: int) -> None:
        raise NotImplementedError

    def run_with(
        self,
        host: SearchHost,
        *,
        target: int,
        callbacks: Sequence[Any] = (),
        train_hooks: Callable[[Any], Sequence[Any]] | None = None,
    ) -> None:
        """What a backend calls: :meth:`run`, after the callbacks' ``on_start``.

        An agent that reports progress per trial and applies ``train_hooks`` (a factory of
        trainer hooks per trial request; tests inject failures that way) overrides this
        instead: it calls each callback's ``on_start`` once with the size of its plan and
        ``on_trial_end`` after every record.
        """
        for cb in callbacks:
            cb.on_start(host, target=target, done=host.counted_trials())
        self.run(host, target=target)


def _coerce(agent: str, key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    ok = (
        isinstance(value, bool)
        if kind is bool
        else isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        if kind is float
        else isinstance(value, kind)
    )
    if not ok:
        raise SpecError(
            f"option {key} of agent '{agent}' must be of type {kind.__name__}, but got {value!r}"
        )
    return float(value) if kind is float else value
