"""Shared fixtures of the whole suite (pytest loads this file before any test module).

Helper modules for several test folders live beside it (``clikit``, ``searchkit``,
``raykit``, ``browser``); ``pyproject.toml`` puts this folder on ``sys.path`` (``pythonpath``)."""

from __future__ import annotations

import pytest
from clikit import USER_ENV
from searchkit import quiet


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which adds the group suffix
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` every test marked ``xdist_group`` must carry its group in its
    id (that is how xdist keeps a group on one worker). pytest 9.2 with xdist 3.8 silently lost
    the groups (pytest-xdist#1386): the Ray tests then ran on both workers at once, each waiting
    for the other's Ray lock. Refuse the run instead of letting that happen again."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(
            f"--dist loadgroup did not group {len(lost)} test(s) marked xdist_group (first: "
            f"{lost[0]}); this pytest-xdist does not work with this pytest (pyproject pins it)"
        )


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
