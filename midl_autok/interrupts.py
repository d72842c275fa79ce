"""Ctrl-C and SIGTERM that never land in the middle of a database write.

A search stops on Ctrl-C (SIGINT) or SIGTERM by raising ``KeyboardInterrupt`` and then fails
its live trials and ends its MLflow runs. Python raises that exception wherever the main
thread happens to be; inside an Optuna or MLflow storage call it can leave a SQLAlchemy
connection in the middle of a transaction that holds the sqlite write lock, and the clean-up
that follows then waits for that lock forever (seen: a Ray search that never exited after
SIGTERM, stuck in ``study.tell``).

:func:`handling_signals` installs a handler for both signals that raises
``KeyboardInterrupt`` at once, except inside :func:`deferred` blocks (every storage and
tracking call of midl-autok runs in one): there it only notes the signal, and the block
raises ``KeyboardInterrupt`` when it ends. A second signal while one is pending raises at
once, so pressing Ctrl-C twice always stops.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["deferred", "deferring", "handling_signals"]

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    depth = 0  # nesting of deferred() blocks in the main thread
    pending = False  # a signal arrived inside one


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a Ctrl-C / SIGTERM that arrives inside this block until it ends (main thread,
    with :func:`handling_signals` active; elsewhere a no-op)."""
    if not _main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    except BaseException as exc:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending and not isinstance(exc, KeyboardInterrupt):
            _State.pending = False
            raise KeyboardInterrupt from exc
        raise
    _State.depth -= 1
    if _State.depth == 0 and _State.pending:
        _State.pending = False
        raise KeyboardInterrupt


def deferring(fn: F) -> F:
    """``fn`` run inside :func:`deferred`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _handler(signum: int, frame: Any) -> None:
    if _State.depth > 0 and not _State.pending:
        _State.pending = True  # raised when the storage call ends
        return
    _State.pending = False
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling_signals() -> Iterator[None]:
    """Within this block SIGINT and SIGTERM raise ``KeyboardInterrupt`` (outside storage
    calls; see the module docstring). Restores the previous handlers; a no-op outside the
    main thread."""
    if not _main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handler)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
