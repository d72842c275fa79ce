"""Shared fixtures of the whole suite (pytest loads this file before any test module).

Helper modules for several test folders live beside it (``clikit``, ``searchkit``,
``raykit``, ``browser``); ``pyproject.toml`` puts this folder on ``sys.path`` (``pythonpath``)."""

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


@pytest.fixture(scope="module")
def kernels():
    """The compiled CPU kernels (``midl_autok.kernels.cpu_kernels()``); the test skipped, with
    the reason, where they cannot be built or loaded here."""
    from midl_autok.kernels import cpu as cpu_mod
    from midl_autok.kernels import cpu_kernels

    module = cpu_kernels()
    if module is None:
        pytest.skip(f"CPU kernels unavailable: {cpu_mod.cpu_kernels_status()}")
    return module
