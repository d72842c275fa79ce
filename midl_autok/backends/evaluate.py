"""Former home of trial evaluation: :mod:`midl_autok.search.evaluate` and
:mod:`midl_autok.search.outcome`."""

from midl_autok.search.evaluate import evaluate_trial
from midl_autok.search.outcome import *  # noqa: F403
from midl_autok.search.outcome import __all__ as _outcome_names

__all__ = [*_outcome_names, "evaluate_trial"]
