"""Optuna agents: multi-objective model-based and evolutionary samplers.

* ``tpe``: ``TPESampler``, multivariate multi-objective TPE (options ``n_startup_trials``,
  ``multivariate``);
* ``nsga2``: ``NSGAIISampler``, NSGA-II (option ``population_size``);
* ``gp``: ``GPSampler``, Gaussian process with log expected hypervolume improvement (option
  ``n_startup_trials``);
* ``qmc``: ``QMCSampler``, a scrambled Sobol or Halton sequence (option ``qmc_type``).

The random sampler is the ``random`` baseline (:mod:`midl_autok.agents.baselines`). A FLOPs
budget is not a sampler argument: the backend sets it on every trial with
``trial.set_constraint`` (Optuna 5 deprecates ``constraints_func``), and all these samplers
read constraints from the trials (c-TPE, constrained NSGA-II, constrained GP).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, ClassVar

from midl_autok.agents.base import SamplerAgent
from midl_autok.errors import SpecError

if TYPE_CHECKING:
    import optuna

__all__ = ["GPAgent", "NSGA2Agent", "QMCAgent", "TPEAgent"]


class TPEAgent(SamplerAgent):
    name = "tpe"
    summary = "multi-objective TPE (Bayesian optimization with tree-structured Parzen estimators)"
    defaults: ClassVar = {"n_startup_trials": 10, "multivariate": True}

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=self.options["n_startup_trials"],
            multivariate=self.options["multivariate"],
        )


class NSGA2Agent(SamplerAgent):
    name = "nsga2"
    summary = "NSGA-II evolutionary search (generations of population_size trials)"
    defaults: ClassVar = {"population_size": 10}

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        size = self.options["population_size"]
        if size < 2:
            raise SpecError(f"option population_size of agent 'nsga2' must be >= 2, but got {size}")
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=size)


class GPAgent(SamplerAgent):
    name = "gp"
    summary = "Gaussian-process Bayesian optimization (log expected hypervolume improvement)"
    defaults: ClassVar = {"n_startup_trials": 10}

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=self.options["n_startup_trials"],
            warn_independent_sampling=False,
        )


class QMCAgent(SamplerAgent):
    name = "qmc"
    summary = "quasi-Monte Carlo: a scrambled low-discrepancy sequence (Sobol or Halton)"
    defaults: ClassVar = {"qmc_type": "sobol"}

    def trial_seed(self, trial_number: int) -> int:
        # The sequence index comes from the trial number; the scramble must stay the same.
        return self.seed

    def create_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        kind = self.options["qmc_type"]
        if kind not in ("sobol", "halton"):
            raise SpecError(f"option qmc_type of agent 'qmc' must be sobol or halton, got {kind!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type=kind,
                scramble=True,
                seed=seed,
                warn_independent_sampling=False,
                warn_asynchronous_seeding=False,
            )
