"""Shared fixtures of the whole suite (pytest loads this file before any test module).

Helper modules for several test folders live beside it (``searchkit``, ``raykit``,
``browser``); ``pyproject.toml`` puts this folder on ``sys.path`` (``pythonpath``)."""

from __future__ import annotations

import pytest
from clikit import USER_ENV
from searchkit import quiet


@pytest.fixture(autouse=True)
def _isolated_from_the_users_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: no user store, tracking server or cluster from the environment, and the
    libraries' INFO chatter (MLflow, Optuna, alembic) off."""
    for name in USER_ENV:
        monkeypatch.delenv(name, raising=False)
    quiet()
