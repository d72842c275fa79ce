"""What :func:`midl_autok.midlify` converts, per layer: which ``nn.Linear`` layers its
``select`` names (:func:`matcher`), and the activation that follows each (its ``activation``,
:func:`activations`), which the error gate's calibration needs."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from typing import Literal

from torch import nn

from midl_autok._calibrate import Activation, following_activation
from midl_autok.errors import UserError

__all__ = ["ActivationChoice", "Select", "activations", "matcher"]

#: midlify's ``select``: a glob, a compiled regex, a module type (or tuple), a callable
#: ``(name, module) -> bool``, or ``None`` (every Linear but the last registered).
Select = str | re.Pattern[str] | type | tuple[type, ...] | Callable[[str, nn.Module], bool] | None
#: midlify's ``activation``: what follows each converted layer, for the error gate.
ActivationChoice = Literal["auto"] | Activation | Mapping[str, Activation] | None


def matcher(select: Select, linears: list[str]) -> Callable[[str, nn.Module], bool]:
    if select is None:  # every Linear but the last registered one (the classifier)
        hidden = set(linears[:-1])
        return lambda name, _module: name in hidden
    if isinstance(select, str):
        return lambda name, _module: fnmatch.fnmatchcase(name, select)
    if isinstance(select, re.Pattern):
        return lambda name, _module: select.fullmatch(name) is not None
    if isinstance(select, type) or (
        isinstance(select, tuple) and select and all(isinstance(t, type) for t in select)
    ):
        return lambda _name, module: isinstance(module, select)
    if callable(select):
        return lambda name, module: bool(select(name, module))
    raise UserError(
        "midlify: select must be a glob pattern (str), a compiled regex, a module type or a "
        f"callable (name, module) -> bool, but got {type(select).__name__}"
    )


def activations(
    model: nn.Module, names: list[str], activation: ActivationChoice
) -> dict[str, Activation | None]:
    """midlify's ``activation``, resolved per converted layer (``None`` = identity)."""
    if activation is None:
        return dict.fromkeys(names)
    if isinstance(activation, str):
        if activation != "auto":
            raise UserError(
                f'midlify: activation must be "auto", None, a function or module, or a mapping '
                f"of layer names to them, but got {activation!r}"
            )
        given: Mapping[str, Activation] = {}
    elif isinstance(activation, Mapping):
        unknown = [n for n in activation if n not in names]
        if unknown:
            raise UserError(
                f"midlify: activation names {unknown[0]!r}, which is not a converted layer "
                f"(converted: {', '.join(names)})"
            )
        given = activation
    else:
        given = dict.fromkeys(names, activation)
    bad = [n for n, act in given.items() if not callable(act)]
    if bad:
        raise UserError(
            f"midlify: the activation for {bad[0]} must be a function or module, "
            f"but got {type(given[bad[0]]).__name__}"
        )
    return {n: given[n] if n in given else following_activation(model, n) for n in names}
