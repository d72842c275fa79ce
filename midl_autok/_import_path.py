"""Import paths ``package.module:function``: check, resolve, and find a function's own.

Light on purpose (no torch): :mod:`midl_autok.spec` checks factory paths with it,
:mod:`midl_autok.factories` resolves and calls them, and the registries of agents and
backends load their entries with :func:`load_registered`.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from midl_autok.errors import SpecError, unknown_name

__all__ = ["check_path", "factory_path", "first_line", "load_registered", "resolve_factory"]

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_MAX_SHOWN = 200


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_path(value: str, *, what: str) -> str:
    """``value`` if it reads ``package.module:function``, else a :class:`SpecError`."""
    if not _PATH.match(value):
        raise SpecError(
            f"{what} must be an import path 'package.module:function', but got {value!r:.80}"
        )
    return value


def factory_path(value: str | Callable[..., Any], *, what: str = "factory") -> str:
    """The import path of a factory: ``value`` itself when it is a string, else
    ``module:qualname`` of a function defined at the top level of a module (or of
    ``__main__``, which only this process can import: not Ray workers)."""
    if isinstance(value, str):
        return check_path(value, what=what)
    if not callable(value):
        raise SpecError(f"{what} must be a 'package.module:function' path or a function")
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        shown = qualname or type(value).__name__
        raise SpecError(
            f"{what} {shown} cannot be imported by path (a lambda, a nested function or a "
            "callable object); define it at the top level of a module"
        )
    path = f"{module}:{qualname}"
    if resolve_factory(path, what=what) is not value:
        raise SpecError(f"{what}: {path} does not name the function given; define it once")
    return path


def resolve_factory(path: str, *, what: str = "factory") -> Callable[..., Any]:
    """Import ``package.module`` and return its attribute ``function`` (dotted names
    allowed); each problem is one line naming the module and the error."""
    check_path(path, what=what)
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        hint = (
            "; make its folder importable (PYTHONPATH=/path/to/project, or pip install -e)"
            if isinstance(exc, ModuleNotFoundError)
            else ""
        )
        raise SpecError(
            f"{what} {path}: cannot import module {module_name!r} ({first_line(exc)}){hint}"
        ) from None
    where = module_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{what} {path}: {where!r} has no attribute {part!r}{hint}")
        obj, where = getattr(obj, part), f"{where}.{part}"
    if not callable(obj):
        raise SpecError(f"{what} {path} is a {type(obj).__name__}, not a function")
    return obj


def load_registered(registry: Mapping[str, str], name: str, *, kind: str, install: str) -> Any:
    """The object registered as ``name`` in ``registry`` (name -> ``"package.module:attr"``),
    its module imported now. An unknown name is a :class:`SpecError` with a "did you mean";
    a module that needs a package not installed, a :class:`SpecError` that ends with
    ``install`` (how to get it)."""
    target = registry.get(name) if isinstance(name, str) else None
    if target is None:
        raise unknown_name(kind, str(name), registry, error=SpecError)
    module, _, attr = target.partition(":")
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise SpecError(
            f"{kind} '{name}' needs a package that is not installed ({exc.name or exc}); {install}"
        ) from None
    return getattr(found, attr)
