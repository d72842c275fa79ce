"""What :func:`midl_autok.midlify` converts, per layer: which ``nn.Linear`` layers its
``select`` names (:func:`matcher`), and the activation that follows each (its ``activation``,
:func:`activations`), which the error gate's calibration needs.

The activation after a layer is read from the model where it can be: the next module of an
``nn.Sequential`` (:func:`following_activation`), or, for a ``forward`` written by hand, the
call that takes the layer's output in the model's ``torch.fx`` trace (:func:`traced_activations`:
``F.relu(self.fc1(x))``, ``self.act(self.fc1(x))``, ``self.fc1(x).tanh()``)."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from midl_autok._calibrate import Activation
from midl_autok.errors import UserError

__all__ = [
    "ELEMENTWISE_ACTIVATIONS",
    "ActivationChoice",
    "Select",
    "activations",
    "following_activation",
    "matcher",
    "traced_activations",
]

log = logging.getLogger("midl_autok._midlify")
#: midlify's ``select``: a glob, a compiled regex, a module type (or tuple), a callable
#: ``(name, module) -> bool``, or ``None`` (every Linear but the last registered).
Select = str | re.Pattern[str] | type | tuple[type, ...] | Callable[[str, nn.Module], bool] | None
#: midlify's ``activation``: what follows each converted layer, for the error gate.
ActivationChoice = Literal["auto"] | Activation | Mapping[str, Activation] | None
#: The module types taken for the activation after a Linear: they act elementwise on its
#: output (PReLU per feature), so the error gate can apply them to it.
ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Hardshrink,
    nn.LogSigmoid,
    nn.Threshold,
)
#: The same as functions (``call_function`` in a trace) and as tensor methods (``call_method``).
_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.relu,
        F.relu,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.selu,
        F.celu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        torch.sigmoid,
        F.sigmoid,
        torch.tanh,
        F.tanh,
        F.softplus,
        F.softsign,
        F.tanhshrink,
        F.softshrink,
        F.hardshrink,
        F.logsigmoid,
    }
)
_METHODS = frozenset({"relu", "sigmoid", "tanh"})
#: Modules that are the identity in eval mode, skipped when looking for the activation.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


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


def following_activation(model: nn.Module, name: str) -> nn.Module | None:
    """The activation module that follows the submodule ``name`` in ``model`` where its parent
    is an ``nn.Sequential``: the next child (after any identity or dropout), if it is one of
    :data:`ELEMENTWISE_ACTIVATIONS`. ``None`` otherwise."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    names = list(parent._modules)
    for after in names[names.index(leaf) + 1 :]:
        module = parent._modules[after]
        if isinstance(module, _PASS_THROUGH):
            continue
        return module if isinstance(module, ELEMENTWISE_ACTIVATIONS) else None
    return None


class _Applied:
    """A traced call ``fn(x, *args, **kwargs)`` as an activation of ``x`` alone (on a copy of
    ``x``: the call may be in place, as ``F.relu(x, inplace=True)``)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x.clone(), *self.args, **self.kwargs)
        assert isinstance(out, torch.Tensor)
        return out

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", repr(self.fn))
        extra = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(['x', *extra])})"


def _constant(value: fx.node.Argument) -> bool:
    """No graph value inside (the call's other arguments must not depend on the input)."""
    found: list[fx.Node] = []

    def keep(node: fx.Node) -> fx.node.Argument:
        found.append(node)
        return node

    fx.node.map_arg(value, keep)
    return not found


def _applied_to(model: nn.Module, node: fx.Node) -> Activation | None:
    """The activation ``node`` applies to its first argument, if it is one."""
    rest, kwargs = node.args[1:], dict(node.kwargs)
    if not (_constant(rest) and _constant(kwargs)):
        return None
    if node.op == "call_module" and not rest and not kwargs:
        module = model.get_submodule(str(node.target))
        return module if isinstance(module, ELEMENTWISE_ACTIVATIONS) else None
    if node.op == "call_function" and node.target in _FUNCTIONS:
        return _Applied(node.target, tuple(rest), kwargs)
    if node.op == "call_method" and node.target in _METHODS and not rest and not kwargs:
        return _Applied(getattr(torch, str(node.target)), (), {})
    return None


def traced_activations(model: nn.Module, names: list[str]) -> dict[str, Activation]:
    """For the layers ``names`` whose output goes to one call only, past identity and dropout
    modules, that call when it is an elementwise activation (a module, a function, a tensor
    method), read from ``torch.fx.symbolic_trace(model)``. A model that cannot be traced
    (control flow on the input's values, ...) gives ``{}``: its layers count as identity."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # any model code can run here: the reason goes to the log
        log.info("midlify: no torch.fx trace of the model (%s: %s)", type(exc).__name__, exc)
        return {}
    wanted, found = set(names), {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        value = node  # the layer's output, then what a pass-through module returns of it
        while len(value.users) == 1:
            (user,) = value.users
            if user.args[:1] != (value,):  # the output is not the call's first argument
                break
            if user.op == "call_module" and isinstance(
                model.get_submodule(str(user.target)), _PASS_THROUGH
            ):
                value = user
                continue
            act = _applied_to(model, user)
            if act is not None:
                found[str(node.target)] = act
            break
    return found


def activations(
    model: nn.Module, names: list[str], activation: ActivationChoice, *, read: bool = True
) -> dict[str, Activation | None]:
    """midlify's ``activation``, resolved per converted layer (``None`` = identity). With
    ``read=False`` (the error gate will not be fitted) the argument is only checked: nothing
    is read from the model (no trace)."""
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
    if not read:
        return {n: given.get(n) for n in names}
    out: dict[str, Activation | None] = {
        n: given[n] if n in given else following_activation(model, n) for n in names
    }
    unread = [n for n in names if out[n] is None and n not in given]
    if unread:
        out.update(traced_activations(model, unread))
    log.info(
        "midlify: the activation after each converted layer: %s",
        ", ".join(f"{n}: {out[n]!r}" for n in names),
    )
    return out
