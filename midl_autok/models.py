"""Models built from MID-L layers, by name: ``mlp``, ``cnn``, ``lstm``, ``transformer``.

Each architecture comes in three variants, so the paper's comparison is one switch away:

- ``midl``: every hidden layer is a :class:`~midl_autok.layers.MIDL` layer (the default);
- ``dense``: the same architecture with ``nn.Linear`` + activation;
- ``dropout``: dense with standard dropout after each hidden activation.

Hidden layers are named ``body.0``, ``body.1``, ... in every variant; these are the names a
:class:`~midl_autok.schedule.KSchedule` uses. The ``transformer`` (:mod:`midl_autok.transformer`,
imported by name when first built) names its gated layers ``body.<block>.ffn`` and, with
``gating: head``, ``body.<block>.heads``.

``gate_rank`` and ``light_rank`` are one integer for every MID-L layer, or per layer: a list
(one per hidden layer) or a mapping by layer name (every layer named). Per-layer values are
kept as a list in the model's config (so they enter its signature and its saved metadata); a
single integer keeps the config, and the signature, of a model built before per-layer ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from midl_autok._hooks import global_hooks, hook_free
from midl_autok.errors import ScheduleError, SpecError, unknown_name
from midl_autok.gating import Gating
from midl_autok.layers import ACTIVATIONS, MIDL, _tracing, make_activation
from midl_autok.schedule import KSchedule, LayerSpec
from midl_autok.spec import VARIANTS

__all__ = ["MODELS", "VARIANTS", "MIDLNet", "build_model", "per_layer_ranks"]


class MIDLNet(nn.Module):
    """Base class: a classifier whose hidden layers (``self.body``) may be MID-L layers."""

    arch: str = ""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)  # everything needed to rebuild the model
        self.body = nn.ModuleList()

    # -- forward pieces ---------------------------------------------------------------------

    def _eval_fast(self) -> bool:
        """Whether this call may take the eval short paths of :meth:`_run_body` and
        :meth:`_run_head`: eval mode, no global module hook, no graph being recorded."""
        return not self.training and not global_hooks() and not _tracing()

    def _run_body(self, h: torch.Tensor, fast: bool) -> torch.Tensor:
        """``for block in self.body: h = block(h)``. With ``fast`` (:meth:`_eval_fast`), a
        hook-free MID-L block whose last call ran the compiled kernel on the same shapes is
        called through its short path (:meth:`MIDL._fast_forward`) without
        ``nn.Module.__call__`` (~2 us a block: at batch 1 a visible share)."""
        body: Any = self._modules["body"]
        for block in body._modules.values():  # (ModuleList's __iter__ is a Python call)
            y = None
            if fast and type(block) is MIDL and hook_free(block):
                key = block.__dict__.get("_fast_key")
                if key is not None and h.dim() == 2:
                    y = block._fast_forward(h, key, False)
            h = block(h) if y is None else y
        return h

    def _run_head(self, h: torch.Tensor, fast: bool) -> torch.Tensor:
        """``self.head(h)``; with ``fast``, a hook-free ``nn.Linear`` head as ``F.linear``."""
        head: Any = self._modules["head"]
        if fast and type(head) is nn.Linear and hook_free(head):
            p: Any = head._parameters  # (not head.weight: Module.__getattr__, ~1.5 us each)
            return nn.functional.linear(h, p["weight"], p["bias"])
        return head(h)

    # -- MID-L views ------------------------------------------------------------------------

    def midl_layers(self) -> list[tuple[str, MIDL]]:
        """``(name, layer)`` of every MID-L layer, in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, MIDL)]

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        return tuple(LayerSpec(n, m.out_features) for n, m in self.midl_layers())

    def layer_ranks(self) -> dict[str, tuple[int, int]]:
        """``{layer: (gate_rank, light_rank)}`` when the model was built with per-layer ranks
        (its schedules then carry them, see :attr:`KSchedule.ranks`), else ``{}``."""
        if not any(isinstance(self.config.get(key), list) for key in ("gate_rank", "light_rank")):
            return {}
        return {n: (m.gate_rank, m.light_rank) for n, m in self.midl_layers()}

    def set_k(self, k: Mapping[str, int]) -> None:
        """Set k of named MID-L layers (``None`` values mean all neurons)."""
        layers = dict(self.midl_layers())
        for name, value in k.items():
            if name not in layers:
                raise SpecError(
                    f"no MID-L layer named {name}; layers: {', '.join(layers) or '(none)'}"
                )
            layers[name].k = value

    def current_k(self) -> dict[str, int]:
        return {n: m.effective_k for n, m in self.midl_layers()}

    def signature(self) -> str:
        """A short hash of the architecture (schedules record it; replay compares it)."""
        blob = json.dumps({"arch": self.arch, **self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_schedule(self, schedule: KSchedule) -> None:
        """Raise a ScheduleError naming the first layer where ``schedule`` does not fit."""
        schedule.check_layers(
            [(s.name, s.width) for s in self.layer_specs()], what=f"the {self.arch} model"
        )
        for name, layer in self.midl_layers():
            gating = layer.gating
            for epoch, k in enumerate(schedule.k[schedule.names.index(name)]):
                if k % gating.size:
                    raise ScheduleError(
                        f"k = {k} for layer {name} at epoch {epoch} is not a multiple of its "
                        f"gating block {gating.size} ({gating}: k counts neurons and keeps "
                        f"whole groups); nearest valid k: {gating.snap(k, layer.out_features)}"
                    )

    def schedule_template(self, epochs: int, fraction: float = 1.0) -> KSchedule:
        """A constant schedule for this model (``fraction`` of every layer's neurons; with
        block gating snapped to whole groups, :meth:`~midl_autok.gating.Gating.snap`)."""
        template = KSchedule.constant(
            self.layer_specs(),
            epochs,
            fraction,
            arch=self.arch,
            signature=self.signature(),
            ranks=self.layer_ranks(),
        )
        gatings = [layer.gating for _, layer in self.midl_layers()]
        if all(g.kind == "neuron" for g in gatings):
            return template
        rows = tuple(
            tuple(g.snap(k, spec.width) for k in row)
            for g, spec, row in zip(gatings, template.layers, template.k, strict=True)
        )
        return dataclasses.replace(template, k=rows)


def _hidden_block(
    d_in: int,
    d: int,
    *,
    variant: str,
    activation: str,
    gate_rank: int,
    light_rank: int,
    dropout: float,
    gating: str = "neuron",
) -> nn.Module:
    if variant == "midl":
        return MIDL(
            d_in,
            d,
            gate_rank=gate_rank,
            light_rank=light_rank,
            activation=activation,
            gating=gating,
        )
    parts: list[nn.Module] = [nn.Linear(d_in, d), make_activation(activation)]
    if variant == "dropout":
        parts.append(nn.Dropout(dropout))
    return nn.Sequential(*parts)


def _body(d_in: int, hidden: Sequence[int], cfg: Mapping[str, Any]) -> nn.ModuleList:
    blocks = nn.ModuleList()
    gating = Gating.parse(cfg.get("gating"))
    for i, d in enumerate(hidden):
        if cfg["variant"] == "midl":
            gating.check_width(d, f"model.gating {gating}: layer body.{i}")
        blocks.append(
            _hidden_block(
                d_in,
                d,
                variant=cfg["variant"],
                activation=cfg["activation"],
                gate_rank=_rank_at(cfg["gate_rank"], i),
                light_rank=_rank_at(cfg["light_rank"], i),
                dropout=cfg["dropout"],
                gating=cfg.get("gating", "neuron"),
            )
        )
        d_in = d
    return blocks


def _rank_at(value: int | Sequence[int], i: int) -> int:
    return value if isinstance(value, int) else int(value[i])


def per_layer_ranks(key: str, value: Any, names: Sequence[str]) -> int | list[int]:
    """``value`` of ``gate_rank``/``light_rank`` for the layers ``names``: an integer as is, a
    list (one per layer) or a mapping (every layer named) as a list in layer order."""
    low = 1 if key == "gate_rank" else 0
    if isinstance(value, Mapping):
        unknown = sorted(str(n) for n in set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            bad = f"has no layer {unknown[0]!r}" if unknown else f"lacks layer {missing[0]}"
            raise SpecError(
                f"model option '{key}' by layer name must name every hidden layer "
                f"({', '.join(names) or 'none'}), but it {bad}"
            )
        value = [value[n] for n in names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise SpecError(
                f"model option '{key}' as a list needs one value per hidden layer "
                f"({len(names)}), but got {len(value)}"
            )
        values = list(value)
    else:
        values = [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise SpecError(
                f"model option '{key}' must be an integer >= {low}"
                + (" (0 = no light path)" if low == 0 else "")
                + f", or one per hidden layer, but got {v!r}"
            )
    return values if isinstance(value, (list, tuple)) else values[0]


class MLP(MIDLNet):
    """Flatten -> hidden layers (``body``) -> linear ``head``."""

    arch = "mlp"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        d_in = 1
        for s in config["input_shape"]:
            d_in *= s
        self.body = _body(d_in, config["hidden"], config)
        self.head = nn.Linear(
            config["hidden"][-1] if config["hidden"] else d_in, config["num_classes"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self._eval_fast()
        h = self._run_body(x if x.dim() == 2 else x.flatten(1), fast)  # (B, d_in) -> (B, d)
        return self._run_head(h, fast)  # (B, classes)


class CNN(MIDLNet):
    """Conv blocks (3x3 conv, ReLU, 2x2 max-pool) -> flatten -> hidden ``body`` -> ``head``."""

    arch = "cnn"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        c, h, w = config["input_shape"]
        convs: list[nn.Module] = []
        for ch in config["channels"]:
            convs += [nn.Conv2d(c, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = ch, h // 2, w // 2
        self.features = nn.Sequential(*convs)
        d_in = c * h * w
        self.body = _body(d_in, config["hidden"], config)
        self.head = nn.Linear(
            config["hidden"][-1] if config["hidden"] else d_in, config["num_classes"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self._eval_fast()
        h = self.features(x).flatten(1)  # (B, C*H*W)
        return self._run_head(self._run_body(h, fast), fast)


class LSTMClassifier(MIDLNet):
    """Embedding -> LSTM -> last hidden state -> hidden ``body`` -> ``head`` (token input)."""

    arch = "lstm"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        if not config.get("vocab_size"):
            raise SpecError("model 'lstm' needs a token dataset (vocab_size is unknown)")
        self.embed = nn.Embedding(config["vocab_size"], config["embed_dim"])
        self.lstm = nn.LSTM(config["embed_dim"], config["hidden_size"], batch_first=True)
        self.body = _body(config["hidden_size"], config["hidden"], config)
        self.head = nn.Linear(
            config["hidden"][-1] if config["hidden"] else config["hidden_size"],
            config["num_classes"],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))  # (B, T, H)
        h = out[:, -1]  # (B, H)
        for block in self.body:
            h = block(h)
        return self.head(h)


_COMMON = {
    "variant": "midl",
    "activation": "relu",
    "gate_rank": 16,
    "light_rank": 16,
    "dropout": 0.5,
    "gating": "neuron",
}
_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [256, 256]},
    "cnn": {"channels": [32, 64], "hidden": [256]},
    "lstm": {"embed_dim": 64, "hidden_size": 128, "hidden": [128]},
    "transformer": {"d_model": 32, "depth": 2, "heads": 4, "ffn": 128, "patch": None},
}


def _by_name(module: str, name: str) -> Callable[[Mapping[str, Any]], MIDLNet]:
    """A model class imported on first use (its module builds on this one's MIDLNet)."""

    def build(config: Mapping[str, Any]) -> MIDLNet:
        model: MIDLNet = getattr(importlib.import_module(module), name)(config)
        return model

    return build


MODELS: dict[str, Callable[[Mapping[str, Any]], MIDLNet]] = {
    "mlp": MLP,
    "cnn": CNN,
    "lstm": LSTMClassifier,
    "transformer": _by_name("midl_autok.transformer", "Transformer"),
}


def build_model(
    arch: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    vocab_size: int | None = None,
    **options: Any,
) -> MIDLNet:
    """Build ``arch`` (``mlp``, ``cnn``, ``lstm``, ``transformer``) for data of ``input_shape``.

    Options: ``variant`` (midl|dense|dropout), ``activation``, ``gate_rank``, ``light_rank``
    (an integer, or per hidden layer a list or a mapping by name ``body.<i>``), ``dropout``,
    ``gating`` (``neuron``, ``block:B`` or, for transformer attention, ``head``;
    :mod:`midl_autok.gating`) and per architecture ``hidden`` (mlp, cnn, lstm), ``channels``
    (cnn), ``embed_dim`` and ``hidden_size`` (lstm), ``d_model``, ``depth``, ``heads``, ``ffn``
    and ``patch`` (transformer). Unknown options are an error.
    """
    if arch not in MODELS:
        raise unknown_name("model", arch, MODELS, error=SpecError)
    defaults = {**_COMMON, **_ARCH_DEFAULTS[arch]}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise SpecError(
            f"unknown option '{unknown[0]}' for model {arch}; valid: {', '.join(sorted(defaults))}"
        )
    cfg: dict[str, Any] = {**defaults, **options}
    if cfg["variant"] not in VARIANTS:
        raise unknown_name("model variant", str(cfg["variant"]), VARIANTS, error=SpecError)
    if not isinstance(cfg["activation"], str) or cfg["activation"] not in ACTIVATIONS:
        raise unknown_name("activation", str(cfg["activation"]), ACTIVATIONS, error=SpecError)
    for key in ("hidden", "channels"):
        if key in cfg:
            if not isinstance(cfg[key], (list, tuple)):
                raise SpecError(
                    f"model option '{key}' must be a list of integers >= 1, got {cfg[key]!r}"
                )
            values = list(cfg[key])
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise SpecError(
                    f"model option '{key}' must be a list of integers >= 1, got {values}"
                )
            cfg[key] = values
    if "hidden" in cfg:  # the transformer has one rank for all its FFN layers
        names = [f"body.{i}" for i in range(len(cfg["hidden"]))]
        for key in ("gate_rank", "light_rank"):
            cfg[key] = per_layer_ranks(key, cfg[key], names)
    else:
        for key in ("gate_rank", "light_rank"):
            if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
                raise SpecError(
                    f"model '{arch}': {key} must be one integer (per-layer ranks are for "
                    f"mlp, cnn and lstm), but got {cfg[key]!r}"
                )
    if arch == "cnn" and len(input_shape) != 3:
        raise SpecError(
            f"model 'cnn' needs image input (C, H, W), but the data has shape {tuple(input_shape)}"
        )
    if arch == "cnn" and min(input_shape[1:]) < 2 ** len(cfg["channels"]):
        raise SpecError(
            f"model 'cnn': input {tuple(input_shape)} is too small for "
            f"{len(cfg['channels'])} pooling blocks"
        )
    gating = Gating.parse(cfg["gating"])
    if gating.kind == "head" and arch != "transformer":
        raise SpecError(
            f"gating 'head' needs attention heads, but model '{arch}' has none; "
            "use arch: transformer, or gating: neuron"
        )
    if gating.kind == "neuron":  # the default stays out of the config (and the signature)
        cfg.pop("gating")
    else:
        cfg["gating"] = str(gating)
    cfg.update(input_shape=list(input_shape), num_classes=num_classes, vocab_size=vocab_size)
    return MODELS[arch](cfg)
