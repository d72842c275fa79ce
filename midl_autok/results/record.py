"""The study record: one study of a store as ``midl-autok search`` wrote it (read side).

:func:`load_study_record` reads a study's user attrs and trials once; :class:`StudyRecord`
answers from them: trial counts, completed and feasible trials
(:mod:`~midl_autok.results.feasibility`), the Pareto front, the hypervolume
(:mod:`~midl_autok.results.hypervolume`), a trial as a Pareto point, its metrics and its
schedule with full provenance. Choosing one Pareto trial is :mod:`~midl_autok.results.picks`.

Study user attrs written by a search before its first trial: ``format``
(:data:`STUDY_FORMAT`), ``spec``, ``experiment``, ``agent``, ``space``, ``seed``,
``objectives``, ``reference_point``, ``ideal``, ``dense_inference_flops``, ``flops_budget``,
``layers``, ``epochs`` and versions. Trial user attrs: ``schedule`` (:data:`ATTR_SCHEDULE`),
``mlflow_run_id`` (:data:`ATTR_RUN_ID`), every final metric by name, ``fail_reason``
(:data:`ATTR_FAIL_REASON`), ``host``/``pid`` of the process that ran it.

Confirmation trials (``--confirm N``, :mod:`~midl_autok.results.confirmed`) are in
:attr:`StudyRecord.trials` but not in :meth:`~StudyRecord.completed`,
:meth:`~StudyRecord.feasible`, fronts or the hypervolume; :meth:`~StudyRecord.confirmed` gives
the confirmed trials' means and standard deviations, and points, schedules and picks use them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from midl_autok.results.confirmed import Confirmed, confirmed_values, is_confirmation
from midl_autok.results.feasibility import is_feasible
from midl_autok.results.hypervolume import (
    checked_reference,
    hypervolume,
    normalized_hypervolume,
)
from midl_autok.results.picks import PICKS, metric_of, pick
from midl_autok.store import StoreError

if TYPE_CHECKING:
    from midl_autok.store import Store

__all__ = [
    "ATTR_FAIL_REASON",
    "ATTR_PRUNED_REASON",
    "ATTR_RUN_ID",
    "ATTR_SCHEDULE",
    "CONFIRMED_KEYS",
    "PICKS",
    "POINT_KEYS",
    "STUDY_FORMAT",
    "StudyRecord",
    "list_studies",
    "load_study_record",
    "metric_of",
]

#: Version of the study user attrs a search writes before its first trial.
STUDY_FORMAT = 1
#: Trial user attr keys with a meaning beyond "a metric".
ATTR_SCHEDULE = "schedule"
ATTR_RUN_ID = "mlflow_run_id"
ATTR_FAIL_REASON = "fail_reason"
#: Trial user attr: why a PRUNED trial was stopped early.
ATTR_PRUNED_REASON = "pruned_reason"
_NON_METRIC_ATTRS = {
    ATTR_SCHEDULE,
    ATTR_RUN_ID,
    ATTR_FAIL_REASON,
    "host",
    "pid",
    "origin",
    "confirm_of",
    "confirm_index",
    "confirm_seed",
}

#: Columns of a Pareto point (``midl-autok pareto --json``), in order.
POINT_KEYS = (
    "trial",
    "val_accuracy",
    "test_accuracy",
    "inference_flops",
    "inference_flops_ratio",
    "active_fraction",
    "training_flops",
)
#: Columns a Pareto point adds when its study has confirmations (``--confirm N``): the seeds
#: behind the means (None: not confirmed), mean and sample sd of the accuracies over them.
CONFIRMED_KEYS = (
    "confirm_seeds",
    "val_accuracy_mean",
    "val_accuracy_sd",
    "test_accuracy_mean",
    "test_accuracy_sd",
)


@dataclass
class StudyRecord:
    """One study of a store as written by ``midl-autok search``: its attrs and trials."""

    name: str
    attrs: dict[str, Any]
    directions: list[str]
    trials: list[Any]  # optuna.trial.FrozenTrial, in trial-number order

    # -- what the search recorded ----------------------------------------------------------

    @property
    def objectives(self) -> list[str]:
        return list(self.attrs.get("objectives") or [f"objective_{i}" for i in self.directions])

    @property
    def reference_point(self) -> list[float] | None:
        return checked_reference(
            self.attrs.get("reference_point"), self.objectives, study=self.name
        )

    def get(self, key: str, default: Any = "-") -> Any:
        return self.attrs.get(key, default)

    # -- trials ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Number of trials per state name (``COMPLETE``, ``FAIL``, ``RUNNING``, ...)."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state.name] = out.get(t.state.name, 0) + 1
        return out

    def completed(self) -> list[Any]:
        from optuna.trial import TrialState

        return [
            t
            for t in self.trials
            if t.state == TrialState.COMPLETE and t.values is not None and not is_confirmation(t)
        ]

    def feasible(self) -> list[Any]:
        """Completed search trials that meet every constraint (e.g. the FLOPs budget)."""
        return [t for t in self.trials if is_feasible(t) and not is_confirmation(t)]

    def confirmations(self) -> list[Any]:
        """The confirmation trials (any state), in trial-number order."""
        return [t for t in self.trials if is_confirmation(t)]

    @functools.cached_property
    def _confirmed(self) -> dict[int, Confirmed]:
        return confirmed_values(self.trials, self.objectives, seed=self.attrs.get("seed"))

    def confirmed(self, trial: Any = None) -> Any:
        """Trial number -> :class:`~midl_autok.results.confirmed.Confirmed` of every trial
        with a COMPLETE confirmation; with ``trial``: that trial's, or None."""
        if trial is None:
            return dict(self._confirmed)
        return self._confirmed.get(trial.number)

    def values_of(self, trial: Any) -> list[float]:
        """The trial's objective values: their means over its seeds when it is confirmed."""
        found = self._confirmed.get(trial.number)
        return found.values(self.objectives) if found is not None else list(trial.values)

    def front(self, trials: list[Any] | None = None, *, means: bool = False) -> list[Any]:
        """The non-dominated feasible trials, cheapest (lowest inference FLOPs) first
        (``means``: by :meth:`values_of`, the confirmed means)."""
        import numpy as np

        from midl_autok import pareto

        pool = self.feasible() if trials is None else trials
        if not pool:
            return []
        values = [self.values_of(t) if means else t.values for t in pool]
        mask = pareto.non_dominated(np.array(values), self.directions)
        front = [t for t, keep in zip(pool, mask, strict=True) if keep]
        return sorted(front, key=lambda t: (metric_of(t, "inference_flops"), t.number))

    def hypervolume(self, trials: list[Any] | None = None) -> float | None:
        """Hypervolume of the feasible trials against the study's fixed reference point."""
        ref = self.reference_point
        if ref is None:
            return None
        pool = self.feasible() if trials is None else trials
        return hypervolume([t.values for t in pool], ref, self.directions)

    def normalized_hypervolume(self, trials: list[Any] | None = None) -> float | None:
        """Hypervolume divided by the box between the reference and the ideal point (0..1)."""
        return normalized_hypervolume(
            self.hypervolume(trials), self.reference_point, self.attrs.get("ideal")
        )

    def point(self, trial: Any) -> dict[str, Any]:
        """The trial as a Pareto point (:data:`POINT_KEYS` + the MLflow run id)."""
        out: dict[str, Any] = {"trial": trial.number}
        for key in POINT_KEYS[1:]:
            out[key] = trial.user_attrs.get(key)
        out[ATTR_RUN_ID] = trial.user_attrs.get(ATTR_RUN_ID)
        if self._confirmed:  # a study with confirmations: every point says how it stands
            found = self._confirmed.get(trial.number)
            summary = {} if found is None else found.to_dict()
            out["confirm_seeds"] = None if found is None else found.n
            for key in CONFIRMED_KEYS[1:]:
                out[key] = summary.get(key)
        return out

    def metrics(self, trial: Any) -> dict[str, float]:
        """All final metrics recorded on a trial."""
        return {
            k: v
            for k, v in trial.user_attrs.items()
            if k not in _NON_METRIC_ATTRS
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }

    # -- choosing and exporting --------------------------------------------------------------

    def pick(self, how: str = "knee", *, max_flops_ratio: float | None = None) -> Any:
        """One Pareto trial (:func:`midl_autok.results.picks.pick`)."""
        return pick(self, how, max_flops_ratio=max_flops_ratio)

    def schedule(self, trial: Any, *, pick: str | None = None) -> Any:
        """The trial's KSchedule with its metrics and full provenance (spec included)."""
        from midl_autok.schedule import KSchedule

        raw = trial.user_attrs.get(ATTR_SCHEDULE)
        if raw is None:
            raise StoreError(f"trial {trial.number} of study {self.name!r} has no schedule")
        schedule = KSchedule.from_dict(raw, source=f"study {self.name} trial {trial.number}")
        provenance: dict[str, Any] = {
            "study": self.name,
            "trial": trial.number,
            ATTR_RUN_ID: trial.user_attrs.get(ATTR_RUN_ID),
            "experiment": self.attrs.get("experiment"),
            "agent": self.attrs.get("agent"),
            "space": self.attrs.get("space"),
            "seed": self.attrs.get("seed"),
            "spec": self.attrs.get("spec"),
        }
        if pick is not None:
            provenance["pick"] = pick
        metrics = self.metrics(trial)
        found = self._confirmed.get(trial.number)
        if found is not None:
            summary = found.to_dict()
            provenance["confirmed"] = {k: summary[k] for k in ("n", "seeds", "trials")}
            metrics.update({k: v for k, v in summary.items() if isinstance(v, float)})
            metrics["confirm_seeds"] = found.n
        return schedule.with_info(metrics=metrics, provenance=provenance)


def list_studies(store: Store) -> list[str]:
    """Names of the studies in the store's Optuna storage (sorted)."""
    import optuna

    store.require_studies()
    return sorted(optuna.study.get_all_study_names(store.optuna_storage()))


def load_study_record(store: Store, name: str | None = None) -> StudyRecord:
    """Read one study; ``name=None`` works when the store holds exactly one study.

    An unknown name raises :class:`StoreError` with a "did you mean".
    """
    names = list_studies(store)
    if not names:
        raise StoreError(f"the store {store.root} holds no studies yet; run `midl-autok search`")
    if name is None:
        if len(names) > 1:
            raise StoreError(
                f"the store {store.root} holds {len(names)} studies; choose one with --study "
                f"NAME ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            )
        name = names[0]
    if name not in names:
        from midl_autok.errors import unknown_name

        raise unknown_name(f"study in {store.root}", name, names, error=StoreError)
    storage = store.optuna_storage()
    study_id = storage.get_study_id_from_name(name)
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    trials = storage.get_all_trials(study_id, deepcopy=False)
    attrs = dict(storage.get_study_user_attrs(study_id))
    return StudyRecord(name=name, attrs=attrs, directions=directions, trials=list(trials))
