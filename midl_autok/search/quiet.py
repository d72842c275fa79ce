"""Quiet libraries: no per-trial INFO lines from Optuna, no database chatter from MLflow.

The one copy of this setting, used by ``midl-autok search`` (its progress bar would break),
the tests' search kit and the experiment scripts.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["quiet"]


def quiet() -> None:
    """Optuna at WARNING (and no notice that the optional greenlet is missing), MLflow and
    Alembic at WARNING, Optuna's experimental and future warnings off."""
    import optuna

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # records of child loggers, too
        if _drop_greenlet_notice not in handler.filters:
            handler.addFilter(_drop_greenlet_notice)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def _drop_greenlet_notice(record: logging.LogRecord) -> bool:
    """GPSampler's "'greenlet' is unavailable" notice: an optional speed-up, not a problem."""
    return "greenlet" not in record.getMessage()
