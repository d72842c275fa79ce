"""Baseline agents: ``random`` search and the ``fixed-k`` grid (the paper's setting).

``random`` samples every parameter of the search space uniformly (Optuna's
``RandomSampler``). ``fixed-k`` ignores the space's shape: every trial uses one k fraction
for every layer and every epoch, taken from a grid of ``--trials`` fractions evenly spaced in
``[min_fraction, max_fraction]`` (the space's bounds). The grid is walked coarse to fine (both
ends, the middle, the quarter points, ...) so that a search cut short still spans the range,
and a fraction already evaluated in the study is not evaluated again: resuming continues the
grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from midl_autok.agents.base import SamplerAgent
from midl_autok.agents.seedgrid import coarse_to_fine, fixed_k_grid  # re-exported
from midl_autok.schedule import KSchedule

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from midl_autok.search_spaces import SearchSpace

__all__ = ["FixedKAgent", "RandomAgent", "coarse_to_fine", "fixed_k_grid"]

K_FRACTION = "k_fraction"


class RandomAgent(SamplerAgent):
    name = "random"
    summary = "random search: every space parameter uniform in its bounds"

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


def _make_grid_sampler(grid: Sequence[float], seed: int) -> optuna.samplers.BaseSampler:
    import optuna
    from optuna.trial import TrialState

    class FixedKSampler(optuna.samplers.BaseSampler):
        """Gives ``k_fraction`` the first grid value no other live or finished trial used."""

        def __init__(self) -> None:
            self._fallback = optuna.samplers.RandomSampler(seed=seed)

        def infer_relative_search_space(
            self, study: Study, trial: FrozenTrial
        ) -> dict[str, BaseDistribution]:
            return {}

        def sample_relative(
            self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
        ) -> dict[str, Any]:
            return {}

        def sample_independent(
            self,
            study: Study,
            trial: FrozenTrial,
            param_name: str,
            param_distribution: BaseDistribution,
        ) -> Any:
            if param_name != K_FRACTION:
                return self._fallback.sample_independent(
                    study, trial, param_name, param_distribution
                )
            states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            used = {
                round(float(t.params[K_FRACTION]), 6)
                for t in study.get_trials(deepcopy=False, states=states)
                if t.number != trial.number and K_FRACTION in t.params
            }
            for value in grid:
                if value not in used:
                    return value
            return grid[0]  # the grid is exhausted (more trials than points): re-evaluate

    return FixedKSampler()


class FixedKAgent(SamplerAgent):
    name = "fixed-k"
    summary = "the paper's setting: one k fraction for every layer and epoch, a grid of --trials"
    uses_space = False

    def __init__(self, *, seed: int = 0, **options: Any) -> None:
        super().__init__(seed=seed, **options)
        self.grid: list[float] = []
        self.bounds = (0.05, 1.0)

    def prepare(self, *, target: int, space: SearchSpace) -> None:
        self.bounds = (space.min_fraction, space.max_fraction)
        self.grid = fixed_k_grid(target, *self.bounds)

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if not self.grid:
            raise RuntimeError("FixedKAgent.prepare(target=..., space=...) must run first")
        return _make_grid_sampler(self.grid, seed)

    def propose(self, trial: optuna.Trial, space: SearchSpace) -> KSchedule:
        fraction = trial.suggest_float(K_FRACTION, *self.bounds)
        return KSchedule.constant(space.layers, space.epochs, fraction)
