"""`import midl_autok` stays light, and the public names resolve."""

from __future__ import annotations

import subprocess
import sys

from clikit import imported_by

# torch too: `import midl_autok` (the CLI's --help, the env registration) needs none of them;
# public names that need torch load it on first use.
HEAVY = ("torch", "ray", "stable_baselines3", "mlflow", "optuna_dashboard", "optuna", "plotly")


def test_import_is_light() -> None:
    assert imported_by("import midl_autok", HEAVY) == []


def test_public_names_resolve() -> None:
    import midl_autok

    for name in midl_autok.__all__:
        assert getattr(midl_autok, name) is not None, name
    assert midl_autok.MIDL.__module__ == "midl_autok.layers"


def test_import_registers_the_gymnasium_env() -> None:
    code = (
        "import midl_autok, gymnasium; "
        "print(gymnasium.spec('midl_autok/TopKSchedule-v0').entry_point)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "midl_autok.env:TopKScheduleEnv"
