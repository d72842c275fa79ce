"""Helpers for the Ray tests: one Ray at a time, the tiny experiment on Ray, clean-up.

Only one test process runs Ray at a time (a file lock, on top of the ``xdist_group("ray")``
mark that ``--dist loadgroup`` honours): two Ray instances on a 2-core machine would starve
each other's trials. A driver killed with SIGKILL leaves its Ray session's agent processes
behind; :func:`kill_session_of` ends exactly those (their command lines name the session,
whose name ends with the driver's pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from searchkit import tiny_spec

from midl_autok.spec import ExperimentSpec

LOCK = Path(tempfile.gettempdir()) / "midl-autok-ray-tests.lock"


@contextlib.contextmanager
def ray_lock() -> Iterator[None]:
    """Hold the machine-wide lock of the Ray tests (waits for another test process)."""
    LOCK.touch(exist_ok=True)
    with LOCK.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def local_ray(*, num_cpus: int = 2, num_gpus: int = 0) -> Iterator[Any]:
    """A local Ray in this process (``num_gpus`` may be logical: no GPU is needed)."""
    import ray

    with ray_lock():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
        )
        try:
            yield ray
        finally:
            ray.shutdown()


def ray_spec(
    *, trials: int = 4, epochs: int = 4, samples: int = 600, **options: Any
) -> ExperimentSpec:
    """:func:`searchkit.tiny_spec` with ``samples`` synthetic samples (longer trials)."""
    spec = tiny_spec(trials=trials, epochs=epochs, **options)
    return spec.override(**{"dataset.options.n_samples": samples})


def kill_session_of(driver_pid: int) -> list[int]:
    """SIGKILL the processes of the Ray session a (killed) driver started; return their pids."""
    pattern = re.compile(rf"session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{driver_pid}\b")
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pattern.search(cmdline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
