"""Shared fixtures of the whole suite (pytest loads this file before any test module).

Helper modules for several test folders live beside it (``searchkit``, ``raykit``,
``browser``); ``pyproject.toml`` puts this folder on ``sys.path`` (``pythonpath``)."""

from __future__ import annotations

import pytest
from searchkit import quiet

#: Environment variables that would point a test at the user's own store, MLflow server or
#: Ray cluster instead of the temporary ones the tests make.
USER_ENV = ("MLFLOW_TRACKING_URI", "MIDL_AUTOK_HOME", "RAY_ADDRESS")


@pytest.fixture(autouse=True)
def _isolated_from_the_users_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: no user store, tracking server or cluster from the environment, and the
    libraries' INFO chatter (MLflow, Optuna, alembic) off."""
    for name in USER_ENV:
        monkeypatch.delenv(name, raising=False)
    quiet()
