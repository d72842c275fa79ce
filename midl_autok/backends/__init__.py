"""Where trials run: ``local`` (this process) now; ``ray`` (Ray Tune) plugs in the same way.

A backend drives a :class:`~midl_autok.backends.session.SearchSession`: for a sampler agent it
loops ``session.ask()`` -> ``agent.propose(trial, session.space)`` ->
``evaluate_trial(session.request(...))`` -> ``session.tell(trial, outcome)``;
:func:`~midl_autok.backends.evaluate.evaluate_trial` takes and returns plain data, so it runs
as well inside a worker process. Names below load on first use (no Optuna or MLflow import
until then).

A Ray Tune backend reuses the same pieces, with the driver owning the study and the workers
owning only training and their child runs::

    session = open_search(spec, store=store, backend="ray", target=n)   # driver
    # Searcher.suggest(trial_id):  trial = session.ask()
    #                              schedule = session.agent.propose(trial, session.space)
    #                              config = session.request(trial.number, schedule,
    #                                                       trial.params).to_dict()
    # trainable(config) (worker):  outcome = evaluate_trial(TrialRequest.from_dict(config))
    #                              tune.report({..., "outcome": outcome.to_dict()})
    # Searcher.on_trial_complete:  session.tell(trial, TrialOutcome.from_dict(result["outcome"]))
    #                              (no result / error: session.fail(trial, reason))
    summary = session.finish(target=n)

External agents (RL) evaluate schedules themselves and call
:meth:`~midl_autok.backends.session.SearchSession.record`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "BACKENDS",
    "SearchCallback",
    "SearchSession",
    "SearchSummary",
    "TrialOutcome",
    "TrialRequest",
    "default_study_name",
    "evaluate_trial",
    "open_search",
    "run_local",
    "run_search",
]

#: Registered backends: name -> "module:function(session, *, target, ...)".
BACKENDS: dict[str, str] = {
    "local": "midl_autok.backends.local:run_local",
    "ray": "midl_autok.backends.ray:run_ray",
}

_EXPORTS = {
    "SearchCallback": "midl_autok.backends.local",
    "run_local": "midl_autok.backends.local",
    "run_search": "midl_autok.backends.local",
    "SearchSession": "midl_autok.backends.session",
    "SearchSummary": "midl_autok.backends.session",
    "default_study_name": "midl_autok.backends.session",
    "open_search": "midl_autok.backends.session",
    "TrialOutcome": "midl_autok.backends.evaluate",
    "TrialRequest": "midl_autok.backends.evaluate",
    "evaluate_trial": "midl_autok.backends.evaluate",
}

if TYPE_CHECKING:
    from midl_autok.backends.evaluate import TrialOutcome, TrialRequest, evaluate_trial
    from midl_autok.backends.local import SearchCallback, run_local, run_search
    from midl_autok.backends.session import (
        SearchSession,
        SearchSummary,
        default_study_name,
        open_search,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'midl_autok.backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
