"""Errors that reach the user.

Every problem caused by user input (a malformed schedule, a bad spec, an unknown name, an
unreadable data file) raises a subclass of :class:`UserError`. The CLI prints its message as
one line on stderr and exits with status 2; library callers can catch it like any
``ValueError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "DataError",
    "ScheduleError",
    "SpecError",
    "UserError",
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
    """
    options = sorted(valid)
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return error(f"unknown {kind} '{name}'{hint} Valid: {', '.join(options)}")
