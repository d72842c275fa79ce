"""Former home of trial evaluation: :mod:`midl_autok.search.evaluate` and
:mod:`midl_autok.search.outcome`."""

from midl_autok.search.evaluate import evaluate_trial
from midl_autok.search.outcome import (
    COMPLETE,
    FAIL,
    PRUNED,
    StopTrial,
    TrialOutcome,
    TrialRequest,
    non_finite,
)

__all__ = [
    "COMPLETE",
    "FAIL",
    "PRUNED",
    "StopTrial",
    "TrialOutcome",
    "TrialRequest",
    "evaluate_trial",
    "non_finite",
]
