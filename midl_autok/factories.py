"""Your own model and data, by import path: ``model.factory`` and ``dataset.factory``.

A spec (or ``--model-factory`` / ``--data-factory``, or a plain function in Python) names a
function as ``"package.module:function"``. It is imported where the model or data is built
(:func:`~midl_autok.experiment.dataset_for_spec`, :func:`~midl_autok.experiment.build_for_spec`),
so every agent, both backends and every Ray worker use it; the package must be importable
there (``PYTHONPATH``, ``pip install -e .``, or Ray's ``runtime_env``).

The two contracts::

    model_factory(input_shape=(64,), num_classes=10, **model.options) -> nn.Module
    data_factory(**dataset.options) -> Dataset | (X, y) | ((X, y), (X, y), (X, y))

The model factory gets ``vocab_size=`` too when the data set holds tokens. Its module must
hold at least one :class:`~midl_autok.layers.MIDL` layer; it is wrapped in a
:class:`FactoryNet`, so schedules, FLOPs, signatures, export and replay work on it, and its
MID-L layers are named ``net.`` + their name in the user's module (``net.blocks.0.mix``).

A data factory returns a :class:`~midl_autok.data.Dataset` (used as it is), one pair
``(X, y)`` (split into train, val and test with the spec's ``val_fraction``,
``test_fraction``, ``max_samples`` and seed, as the built-in readers split theirs), or three
pairs ``(train, val, test)`` (used as given). Arrays may be NumPy arrays or torch tensors and
are used as they are (no standardization): float features of shape ``(N, F)`` (vector) or
``(N, C, H, W)`` (image), or integer token ids ``(N, T)``; labels are integers ``0 .. C-1``.

Every problem (a path that does not import, no such attribute, a factory that raises or
returns the wrong thing, a model without MID-L layers) is a one-line
:class:`~midl_autok.errors.UserError`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from midl_autok._import_path import check_path, factory_path, first_line, resolve_factory
from midl_autok.data import Dataset
from midl_autok.errors import DataError, SpecError, UserError
from midl_autok.layers import MIDL
from midl_autok.models import MIDLNet
from midl_autok.spec import BUILT_IN_MODEL_FIELDS

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

__all__ = [
    "FACTORY_ARCH",
    "FactoryNet",
    "as_dataset",
    "build_factory_model",
    "check_path",
    "factory_path",
    "load_factory_data",
    "rebuild_factory_model",
    "resolve_factory",
    "with_factories",
]

#: ``MIDLNet.arch`` (and ``arch`` in an exported model's metadata) of a factory-built model.
FACTORY_ARCH = "factory"


def _call(path: str, what: str, error: type[UserError], **kwargs: Any) -> Any:
    fn = resolve_factory(path, what=what)
    try:
        return fn(**kwargs)
    except (Exception, SystemExit) as exc:
        raise error(f"{what} {path} raised {first_line(exc)}") from None


# --------------------------------------------------------------------------- models


class FactoryNet(MIDLNet):
    """A user's module (``self.net``) seen as a :class:`MIDLNet`: its MID-L layers are named
    ``net.`` + their name in the user's module; the signature hashes the factory path, its
    options and the parameter shapes."""

    arch = FACTORY_ARCH

    def __init__(self, config: Mapping[str, Any], net: nn.Module) -> None:
        super().__init__(config)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def signature(self) -> str:
        shapes = {n: list(p.shape) for n, p in self.net.named_parameters()}
        blob = json.dumps(
            {"arch": self.arch, **self.config, "shapes": shapes}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def dense_twin(self) -> nn.Module:
        """A copy whose MID-L layers are ``nn.Linear`` + the same activation (fresh weights):
        the dense baseline that latency is measured against."""
        twin = copy.deepcopy(self.net)
        for name, layer in [(n, m) for n, m in twin.named_modules() if isinstance(m, MIDL)]:
            parent_name, _, leaf = name.rpartition(".")
            parent = twin.get_submodule(parent_name) if parent_name else twin
            dense = nn.Sequential(
                nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None),
                copy.deepcopy(layer.act),
            )
            setattr(parent, leaf, dense)
        return twin


def build_factory_model(
    path: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    vocab_size: int | None = None,
    options: Mapping[str, Any] | None = None,
    probe: torch.Tensor | None = None,
) -> MIDLNet:
    """Call the model factory at ``path`` and check what it returns: an ``nn.Module`` with
    at least one MID-L layer (wrapped in a :class:`FactoryNet` unless it is a
    :class:`MIDLNet` already) that maps ``probe`` (a small input batch) to
    ``(batch, num_classes)`` logits."""
    what = "model factory"
    kwargs: dict[str, Any] = dict(options or {})
    kwargs.update(input_shape=tuple(input_shape), num_classes=num_classes)
    if vocab_size is not None:
        kwargs["vocab_size"] = vocab_size
    net = _call(path, what, SpecError, **kwargs)
    if not isinstance(net, nn.Module):
        raise SpecError(f"{what} {path} returned a {type(net).__name__}, not a torch.nn.Module")
    if isinstance(net, MIDLNet):
        model = net
    else:
        config = {
            "factory": path,
            "options": dict(options or {}),
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "vocab_size": vocab_size,
        }
        model = FactoryNet(config, net)
    if not model.midl_layers():
        raise SpecError(
            f"{what} {path} returned a {type(net).__name__} without any MID-L layer "
            "(midl_autok.MIDL): nothing to schedule; build its hidden layers with MIDL"
        )
    if probe is not None:
        _check_forward(model, probe, num_classes, f"{what} {path}")
    return model


def rebuild_factory_model(config: Mapping[str, Any], *, allowed: bool = False) -> MIDLNet:
    """The model an exported file records as built by a factory (``config`` from its
    metadata): the factory is imported and called only when ``allowed``."""
    path, options = config.get("factory"), config.get("options") or {}
    if not isinstance(path, str) or not isinstance(options, dict):
        raise SpecError("the metadata records a factory model without a path or options")
    if not allowed:
        raise SpecError(
            f"the model was built by the factory {path!r:.80}; rebuilding it imports and "
            "calls that function: load it with load_model(path, allow_factory=True) if you "
            "trust the file"
        )
    try:
        return build_factory_model(
            check_path(path, what="model factory"),
            input_shape=config["input_shape"],
            num_classes=config["num_classes"],
            vocab_size=config.get("vocab_size"),
            options=options,
        )
    except UserError as exc:
        raise SpecError(f"cannot rebuild the recorded model ({exc})") from None


def _check_forward(model: nn.Module, probe: torch.Tensor, num_classes: int, where: str) -> None:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:
        raise SpecError(
            f"{where}: the model fails on an input batch of shape {tuple(probe.shape)} "
            f"({first_line(exc)})"
        ) from None
    finally:
        model.train(was_training)
    expected = (probe.shape[0], num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(
            f"{where}: the model must return logits of shape (batch, num_classes) = "
            f"{expected} for an input batch of shape {tuple(probe.shape)}, but returned {got}"
        )


# --------------------------------------------------------------------------- data


def load_factory_data(
    path: str,
    *,
    options: Mapping[str, Any] | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
) -> Dataset:
    """Call the data factory at ``path`` with ``options`` and make a :class:`Dataset` of
    what it returns (see :func:`as_dataset`)."""
    result = _call(path, "data factory", DataError, **dict(options or {}))
    return as_dataset(
        result,
        name=path,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        max_samples=max_samples,
    )


def as_dataset(
    result: Any,
    *,
    name: str,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
) -> Dataset:
    """A :class:`Dataset` (returned as is), ``(X, y)`` (split with the fractions, cap and
    seed, stratified, as the built-in readers are) or ``((X, y), (X, y), (X, y))`` (train,
    val, test as given). Features are used unchanged."""
    from midl_autok.data._pipeline import assemble
    from midl_autok.data._source import Source

    where = f"data factory {name}"
    if isinstance(result, Dataset):
        return result
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        raise DataError(
            f"{where} returned {_kind(result)}; return a midl_autok.Dataset, (X, y), or "
            "((X_train, y_train), (X_val, y_val), (X_test, y_test))"
        )
    if len(result) == 3:
        parts = [
            _pair(part, f"{where}: the {label} part", pair_only=True)
            for label, part in zip(("train", "val", "test"), result, strict=True)
        ]
    else:
        parts = [_pair(result, where, pair_only=False)]
    xs = [x for x, _ in parts]
    kind = _kind_of(xs[0], where)
    for x in xs[1:]:
        if x.shape[1:] != xs[0].shape[1:] or _kind_of(x, where) != kind:
            raise DataError(
                f"{where}: the parts differ: features {xs[0].dtype} {xs[0].shape[1:]} and "
                f"{x.dtype} {x.shape[1:]}"
            )
    labels = np.concatenate([y for _, y in parts])
    if labels.size == 0 or labels.min() < 0:
        raise DataError(f"{where}: labels must be integers 0 .. C-1 (none negative, not empty)")
    num_classes = int(labels.max()) + 1
    vocab = int(max(int(x.max()) for x in xs if x.size)) + 1 if kind == "tokens" else None
    if len(parts) == 3:
        tensors = [(_features(x, kind), torch.from_numpy(y)) for x, y in parts]
        (xt, yt), (xv, yv), (xs_, ys) = tensors
        try:
            return Dataset(
                name,
                kind,
                tuple(xt.shape[1:]),
                num_classes,
                xt,
                yt,
                xv,
                yv,
                xs_,
                ys,
                vocab_size=vocab,
                info={"source": name, "official_test_split": True},
            )
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None

    def featurize(
        a: np.ndarray, b: np.ndarray, c: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        return _features(a, kind), _features(b, kind), _features(c, kind), {}

    x, y = parts[0]
    source = Source(kind, num_classes, x, y, featurize, vocab_size=vocab, info={"source": name})
    return assemble(name, source, val_fraction, test_fraction, seed, max_samples)


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _array(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise DataError(f"{where}: expected a NumPy array or a torch tensor, got {_kind(value)}")


def _pair(value: Any, where: str, *, pair_only: bool) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise DataError(f"{where} must be a pair (X, y), but is {_kind(value)}")
    x, y = _array(value[0], f"{where}: X"), _array(value[1], f"{where}: y")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{where}: y must be a 1-D array of integer labels, got {y.dtype} {y.shape}"
        )
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"{where}: X must have shape (N, ...) with one row per label; got X {x.shape} "
            f"and y {y.shape}"
        )
    return x, y.astype(np.int64)


def _kind_of(x: np.ndarray, where: str) -> str:
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 2:
        return "tokens"
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{where}: features must be numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        return "vector"
    if x.ndim == 4:
        return "image"
    raise DataError(
        f"{where}: features must be (N, F) vectors, (N, C, H, W) images or (N, T) integer "
        f"tokens, got shape {x.shape}"
    )


def _features(x: np.ndarray, kind: str) -> torch.Tensor:
    dtype = np.int64 if kind == "tokens" else np.float32
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


# --------------------------------------------------------------------------- specs


def with_factories(
    spec: ExperimentSpec,
    *,
    model: str | Callable[..., Any] | None = None,
    data: str | Callable[..., Any] | None = None,
) -> ExperimentSpec:
    """A copy of ``spec`` whose model and/or data come from these factories (paths or
    functions defined at the top level of a module). The built-in architecture's fields
    (``arch``, ``hidden``, ...) go back to their defaults, and so do the built-in data set's
    ``path``, ``target`` and ``options`` (``model.options`` is kept for the factory)."""
    changes: dict[str, Any] = {}
    if model is not None:
        section = spec.model.model_dump()
        fields = type(spec.model).model_fields
        for key in BUILT_IN_MODEL_FIELDS:
            if key in fields:
                section[key] = fields[key].get_default(call_default_factory=True)
        changes["model"] = {**section, "factory": factory_path(model, what="model factory")}
    if data is not None:
        d = spec.dataset.model_dump()
        path = factory_path(data, what="data factory")
        if spec.dataset.factory != path:
            d.update(path=None, target=None, options={})
        changes["dataset"] = {**d, "factory": path}
    return spec.override(**changes) if changes else spec
