"""Errors that reach the user.

Every problem caused by user input (a malformed schedule, a bad spec, an unknown name, an
unreadable data file) raises a subclass of :class:`UserError`. The CLI prints its message as
one line on stderr and exits with status 2; library callers can catch it like any
``ValueError``.

Failures of the machine rather than the input -- a full disk, a read-only or locked
database, no memory left -- arrive as whatever the library that met them raised (``OSError``,
sqlite's ``OperationalError`` inside SQLAlchemy, Optuna and MLflow wrappers).
:func:`system_error_message` recognizes them anywhere in the exception chain so that the CLI
can print one line (exit status 1) instead of a traceback.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable, Iterator

__all__ = [
    "DataError",
    "ScheduleError",
    "SpecError",
    "UserError",
    "system_error_message",
    "unknown_name",
]


class UserError(ValueError):
    """A problem with user input; the message says what is wrong and how to fix it."""


class ScheduleError(UserError):
    """A KSchedule is malformed or does not fit the model it is used with."""


class SpecError(UserError):
    """An experiment spec (or CLI option) is invalid."""


class DataError(UserError):
    """A dataset cannot be found, read or parsed."""


def unknown_name(
    kind: str, name: str, valid: Iterable[str], *, error: type[UserError] = UserError
) -> UserError:
    """Build the error for an unknown registry name, with a "did you mean" suggestion.

    >>> str(unknown_name("dataset", "digts", ["digits", "mnist1d"]))
    "unknown dataset 'digts'; did you mean 'digits'? Valid: digits, mnist1d"
    >>> str(unknown_name("agent", "PPO", ["ppo", "tpe"]))
    "unknown agent 'PPO'; did you mean 'ppo'? Valid: ppo, tpe"
    """
    options = sorted(valid)
    by_case = {option.casefold(): option for option in options}
    close = [by_case[name.casefold()]] if name.casefold() in by_case else []
    close = close or difflib.get_close_matches(name, options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return error(f"unknown {kind} '{name}'{hint} Valid: {', '.join(options)}")


_RERUN = "nothing completed is lost: {fix} and rerun the same command (a search resumes)"
_NO_SPACE = "no space left on the device"
# Messages of sqlite (through SQLAlchemy, Optuna and MLflow) and of torch's allocators.
_MESSAGES = (
    ("database or disk is full", _NO_SPACE, "free some space"),
    ("attempt to write a readonly database", "the database is read-only", "make it writable"),
    (
        "database is locked",
        "the database stayed locked by another process past the timeout",
        "retry when it is less busy",
    ),
    ("unable to open database file", "cannot open the database file", "check the store path"),
    ("disk i/o error", "a disk I/O error", "check the disk"),
    ("can't allocate memory", "out of memory", "use a smaller model, batch or dataset"),
    ("out of memory", "out of memory", "use a smaller model, batch or dataset"),
)
_ERRNOS = {
    errno.ENOSPC: (_NO_SPACE, "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you can write"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write"),
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def system_error_message(exc: BaseException) -> str | None:
    """One line for a failure of the machine (disk full, read-only or locked database, out
    of memory) found anywhere in ``exc``'s chain; None when it is something else (a bug).

    >>> system_error_message(OSError(28, "No space left on device", "/runs/x.json"))[:45]
    'no space left on the device (/runs/x.json); n'
    """
    for item in _chain(exc):
        if isinstance(item, MemoryError):
            fix = "use a smaller model, batch or dataset"
            return f"out of memory; {_RERUN.format(fix=fix)}"
        if isinstance(item, OSError) and item.errno in _ERRNOS:
            what, fix = _ERRNOS[item.errno]
            where = f" ({item.filename})" if item.filename else ""
            return f"{what}{where}; {_RERUN.format(fix=fix)}"
        text = str(item).lower()
        for needle, what, fix in _MESSAGES:
            if needle in text:
                return f"{what}; {_RERUN.format(fix=fix)}"
    return None
