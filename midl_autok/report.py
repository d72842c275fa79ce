"""The HTML report, now :mod:`midl_autok.results.report` (this name stays importable)."""

from midl_autok.results.report import *  # noqa: F403
from midl_autok.results.report import __all__  # noqa: F401
