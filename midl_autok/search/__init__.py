"""The write side of a search: where trials run and where they are recorded.

* :mod:`~midl_autok.search.identity`: study names, spec identity, options split;
* :mod:`~midl_autok.search.opening`: :func:`open_search` (create or resume the study, start
  the MLflow parent run);
* :mod:`~midl_autok.search.session`: :class:`SearchSession` (ask / tell / record; implements
  :class:`~midl_autok.agents.host.SearchHost`) and :class:`SearchSummary`;
* :mod:`~midl_autok.search.recording`: the only code that creates MLflow runs and sets Optuna
  trial states;
* :mod:`~midl_autok.search.recovery`: every stale / orphan rule;
* :mod:`~midl_autok.search.stopping`: the stop rule both backends follow;
* :mod:`~midl_autok.search.devices`: the device a trial trains on;
* :mod:`~midl_autok.search.outcome` and :mod:`~midl_autok.search.evaluate`: one trial as
  plain data, and its evaluation (here or in a worker);
* :mod:`~midl_autok.search.confirm`: :func:`run_confirm`, the front retrained with more
  seeds after a search (``--confirm N``);
* backends (:data:`BACKENDS`): :mod:`~midl_autok.search.local` (trials one after another in
  this process) and :mod:`~midl_autok.search.ray` (Ray Tune).

A backend drives a session: for a sampler agent it loops ``session.ask()`` ->
``agent.propose(trial, session.space)`` -> ``evaluate_trial(session.request(...))`` ->
``session.tell(trial, outcome)``; an external agent (RL) evaluates schedules itself and calls
``session.record(...)``. Names below load on first use (no Optuna or MLflow import until then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from midl_autok._lazy import lazy_getattr

__all__ = [
    "BACKENDS",
    "SearchCallback",
    "SearchSession",
    "SearchSummary",
    "TrialOutcome",
    "TrialRequest",
    "default_study_name",
    "evaluate_trial",
    "get_backend",
    "open_search",
    "run_confirm",
    "run_local",
    "run_search",
]

#: Registered backends: ``--backend`` name -> ``"module:function"``, a function
#: ``(spec, *, store, study, device, threads, callbacks, **backend_options) -> SearchSummary``
#: that runs the whole search (``--backend ray`` takes ``options=RayOptions(...)``).
BACKENDS: dict[str, str] = {
    "local": "midl_autok.search.local:run_search",
    "ray": "midl_autok.search.ray.run:run_ray_search",
}

_EXPORTS = {
    "SearchCallback": "midl_autok.search.local",
    "run_local": "midl_autok.search.local",
    "run_search": "midl_autok.search.local",
    "SearchSession": "midl_autok.search.session",
    "SearchSummary": "midl_autok.search.session",
    "default_study_name": "midl_autok.search.identity",
    "open_search": "midl_autok.search.opening",
    "TrialOutcome": "midl_autok.search.outcome",
    "TrialRequest": "midl_autok.search.outcome",
    "evaluate_trial": "midl_autok.search.evaluate",
    "run_confirm": "midl_autok.search.confirm",
}

if TYPE_CHECKING:
    from midl_autok.search.confirm import run_confirm
    from midl_autok.search.evaluate import evaluate_trial
    from midl_autok.search.identity import default_study_name
    from midl_autok.search.local import SearchCallback, run_local, run_search
    from midl_autok.search.opening import open_search
    from midl_autok.search.outcome import TrialOutcome, TrialRequest
    from midl_autok.search.session import SearchSession, SearchSummary


def get_backend(name: str) -> Callable[..., SearchSummary]:
    """The search function of the backend registered as ``name`` (a
    :class:`~midl_autok.errors.SpecError` with a "did you mean" for an unknown one)."""
    from midl_autok._import_path import load_registered

    install = f"install it with: pip install 'midl-autok[{name}]'"
    function: Callable[..., SearchSummary] = load_registered(
        BACKENDS, name, kind="backend", install=install
    )
    return function


__getattr__ = lazy_getattr(__name__, _EXPORTS)
