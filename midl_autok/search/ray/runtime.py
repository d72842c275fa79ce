"""Ray itself: starting or joining Ray, checking that a trial fits, Tune's driver settings."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import ray

from midl_autok.errors import SpecError, UserError
from midl_autok.search.ray.options import RayOptions

__all__ = ["check_reachable", "check_resources", "ray_connection", "tune_settings"]

_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def ray_connection(options: RayOptions) -> Iterator[bool]:
    """Use the caller's Ray, join ``options.address``, or start a local Ray (shut down after).

    Yields True when Ray was started or joined here. Trials keep the driver's working folder
    (``RAY_CHDIR_TO_TRIAL_DIR=0``); Ray's usage statistics stay off unless the user turned
    them on.
    """
    if ray.is_initialized():
        yield False
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "runtime_env": {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}},
    }
    if options.address:
        check_reachable(options.address)
    handlers = _signal_handlers()
    try:
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:  # no notice that Ray made the token of this short-lived cluster
            logging.getLogger(_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
            # "local": a new Ray even when `ray start` left a cluster address on this machine
            ray.init(
                address="local", num_cpus=options.num_cpus, num_gpus=options.num_gpus, **kwargs
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        hint = "; start one with `ray start --head`" if options.address else ""
        raise UserError(f"cannot start or join {where}: {lines[0]}{hint}") from None
    finally:  # ray.init replaces the SIGTERM handler (the CLI's ends the search cleanly)
        _restore_signal_handlers(handlers)
    try:
        yield True
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a cluster address nothing answers at (``ray.init`` retries for
    minutes). ``auto`` is looked up as Ray does (the address ``ray start`` recorded)."""
    from ray._private import services

    try:
        resolved = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise UserError(f"cannot find the Ray cluster {address!r}: {lines[0]}") from None
    except Exception:  # Ray's lookup changed: let ray.init decide
        return
    if not resolved:
        return
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot reach the Ray cluster at {address} ({resolved}: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}); start its head with "
            "`ray start --head` "
            "or check the address"
        ) from None


def _signal_handlers() -> dict[signal.Signals, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(handlers: Mapping[signal.Signals, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _nodes() -> list[dict[str, float]]:
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def check_resources(options: RayOptions, *, local: bool) -> int:
    """Check that a trial fits on some node; return the number of trials to run at once.

    When the trial fits nowhere: an error for a local Ray, a warning for a cluster (an
    autoscaler may add nodes).
    """
    cpus, gpus = options.cpus_per_trial, options.gpus_per_trial
    nodes = _nodes()
    if not any(n.get("CPU", 0.0) >= cpus and n.get("GPU", 0.0) >= gpus for n in nodes):
        best_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        best_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
        message = (
            f"no Ray node has {cpus:g} CPU(s) and {gpus:g} GPU(s) for one trial (the largest "
            f"has {best_cpu:g} CPU(s), {best_gpu:g} GPU(s)); lower --cpus-per-trial / "
            "--gpus-per-trial"
        )
        if local:
            raise SpecError(message)
        logging.getLogger(__name__).warning("%s, or add nodes", message)
    if options.workers is not None:
        return options.workers
    fits = sum(math.floor(n.get("CPU", 0.0) / cpus + 1e-9) for n in nodes)
    if gpus > 0:
        fits = min(fits, sum(math.floor(n.get("GPU", 0.0) / gpus + 1e-9) for n in nodes))
    return max(1, int(fits))


@contextlib.contextmanager
def tune_settings() -> Iterator[None]:
    """Tune settings for the driver, restored afterwards: Ctrl-C raises KeyboardInterrupt
    inside ``Tuner.fit`` (Tune's own handler would end the run quietly and return), so the
    search fails the live trials and ends their runs; Tune's console output (an experiment
    table, result paths) stays off: the search has its own progress bar; and a result
    without the scheduler's metric is no error (the last report carries the outcome, and a
    trial can fail before its first epoch ends)."""
    settings = {
        "TUNE_DISABLE_SIGINT_HANDLER": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    }
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
