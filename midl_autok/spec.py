"""Experiment specs: what to train and search, as validated YAML.

A spec names a dataset, a model, training settings, the objectives and a budget. Shipped
specs live in ``midl_autok/specs/*.yaml`` and are found by name (``digits-mlp``); any other
YAML file is found by path. Validation errors name the field path::

    training.epochs: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

import itertools
import math
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from midl_autok.errors import SpecError
from midl_autok.fileio import read_text
from midl_autok.gating import Gating

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MAX_DEPTH",
    "MAX_LAYERS",
    "MAX_SIZE",
    "MAX_WEIGHTS",
    "VARIANTS",
    "BudgetSpec",
    "DatasetSpec",
    "ExperimentSpec",
    "ModelSpec",
    "Objective",
    "SearchSpec",
    "TrainingSpec",
    "Variant",
    "list_experiments",
    "load_spec",
    "validate_spec",
]

DEFAULT_EXPERIMENT = "digits-mlp"
#: ``model.variant``: MID-L layers, or the dense and dropout baselines of the same network.
Variant = Literal["midl", "dense", "dropout"]
VARIANTS: tuple[Variant, ...] = get_args(Variant)
_MAX_SPEC_BYTES = 1024 * 1024
#: Upper bound of layer widths, ranks and batch sizes: far above any model this trains, low
#: enough that a typo (``hidden: [10000000000]``) is an error, not an allocation that fails.
MAX_SIZE = 1 << 20
#: Most hidden layers (or conv blocks) a model may have.
MAX_LAYERS = 1024
#: Most weights between the model's hidden layers that validation accepts (hidden-to-hidden
#: matrices, 3x3 convolutions between channels, the LSTM's gates): 1e9 float32 weights are
#: 4 GB, 16 GB with their gradients and Adam's two moments. ``hidden: [1048576, 1048576]``
#: (1.1e12) is a typo, refused here instead of dying in the allocator.
MAX_WEIGHTS = 1_000_000_000
#: Deepest nesting of lists and mappings in a spec document (options included); pydantic's
#: serializer fails at about 255 levels, long after any real spec.
MAX_DEPTH = 32


class _Strict(BaseModel):
    """Unknown fields are errors; integers are strict (``epochs: true`` or ``3.5`` is
    refused, never read as 1 or 3) and a boolean is never read as a number. Infinity and NaN
    are refused everywhere, free-form ``options`` included: a spec's JSON/YAML dump writes
    them as null, so the spec would not read back the same."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name] if info.field_name else None
        if isinstance(value, bool) and field is not None and field.annotation is not bool:
            raise ValueError("a boolean is not accepted here; write the value itself")
        if info.field_name in _FREE_FORM and _has_non_finite(value):
            raise ValueError("infinity and NaN are not accepted in a spec; write a finite number")
        return value


#: Free-form fields (``dict[str, Any]``): their values are checked only for non-finite floats.
_FREE_FORM = frozenset({"options", "factory_options"})


def _has_non_finite(value: Any) -> bool:
    """Whether a float that is infinite or NaN sits anywhere in ``value`` (dicts, lists)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


# a factory field: ``package.module:function``; a function given is turned into its path
_DataFactory = Annotated[str | None, BeforeValidator(lambda v: _factory_path(v, "data factory"))]
_ModelFactory = Annotated[str | None, BeforeValidator(lambda v: _factory_path(v, "model factory"))]


class DatasetSpec(_Strict):
    name: str = "digits"
    path: str | None = None
    target: str | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_samples: StrictInt | None = Field(None, ge=10)
    options: dict[str, Any] = Field(default_factory=dict)
    #: ``package.module:function`` returning the data (:mod:`midl_autok.factories`), called
    #: with ``options``; ``name`` is then only a label. A function is turned into its path.
    factory: _DataFactory = None

    @model_validator(mode="after")
    def _factory_alone(self) -> DatasetSpec:
        if self.factory is not None and (self.path is not None or self.target is not None):
            raise ValueError(
                "dataset.path and dataset.target are for the built-in readers; "
                "dataset.factory loads the data itself: remove them"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset_factory(handler(self))


class ModelSpec(_Strict):
    # ``options`` (the factory's keyword arguments) is read and written under that name; the
    # attribute is ``factory_options``, since ``options()`` gives build_model's options.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    arch: str = "mlp"
    variant: Variant = "midl"
    hidden: list[StrictInt] | None = Field(None, max_length=MAX_LAYERS)
    channels: list[StrictInt] | None = Field(None, max_length=MAX_LAYERS)
    embed_dim: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    hidden_size: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    #: One rank for every MID-L layer, or per layer: a list (one per hidden layer) or a
    #: mapping by layer name (``body.0: 8``); see :func:`midl_autok.models.build_model`.
    gate_rank: int | list[int] | dict[str, int] = 16
    light_rank: int | list[int] | dict[str, int] = 16
    activation: str = "relu"
    dropout: float = Field(0.5, ge=0, lt=1)
    #: What a MID-L gate selects: ``neuron``, ``block:B`` or ``head`` (:mod:`midl_autok.gating`).
    gating: str = "neuron"
    # transformer (midl_autok.transformer): width, blocks, attention heads, FFN hidden width,
    # image patch side (null: automatic, at most 16 patches)
    d_model: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    depth: StrictInt | None = Field(None, ge=1, le=MAX_LAYERS)
    heads: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    ffn: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    patch: StrictInt | None = Field(None, ge=1, le=MAX_SIZE)
    #: A dense model's weights (``torch.save(state_dict)``, read with ``weights_only=True``,
    #: or a ``midl-autok export`` file) that every trial converts with
    #: :func:`midl_autok._midlify.init_from_checkpoint` and fine-tunes.
    init_from: str | None = Field(None, min_length=1)
    #: With ``init_from``: fit each light path to the inputs its layer sees on the first N
    #: training samples and choose the gate on them (midlify's ``calibration`` with
    #: ``gate="auto"``; the README's numbers); unset: plain SVD for both.
    init_calibration: StrictInt | None = Field(None, ge=1, le=10_000_000)

    @field_validator("gating")
    @classmethod
    def _gating(cls, value: str) -> str:
        try:
            return str(Gating.parse(value))
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    #: ``package.module:function`` building the model (:mod:`midl_autok.factories`), called
    #: with the data's input shape, number of classes and ``options``; replaces ``arch``.
    factory: _ModelFactory = None
    factory_options: dict[str, Any] = Field(default_factory=dict, alias="options")

    @model_validator(mode="after")
    def _factory_alone(self) -> ModelSpec:
        if self.init_calibration is not None and self.init_from is None:
            raise ValueError("model.init_calibration fits a dense checkpoint; set model.init_from")
        if self.factory is None:
            if self.factory_options:
                raise ValueError("model.options are the arguments of model.factory; set it")
            return self
        for name, field in type(self).model_fields.items():
            if name in BUILT_IN_MODEL_FIELDS and getattr(self, name) != field.get_default(
                call_default_factory=True
            ):
                raise ValueError(
                    f"model.{name} is for the built-in architectures; model.factory builds "
                    f"the model itself: remove it (or pass it to the factory in model.options)"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_unset_factory(handler(self))

    @field_validator("gate_rank", "light_rank", mode="before")
    @classmethod
    def _ranks(cls, value: Any, info: ValidationInfo) -> Any:
        low = 1 if info.field_name == "gate_rank" else 0
        items = list(value.values()) if isinstance(value, dict) else value
        items = items if isinstance(items, list) else [items]
        names_ok = not isinstance(value, dict) or all(isinstance(k, str) for k in value)
        if (
            not names_ok
            or not items
            or any(
                isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_SIZE
                for v in items
            )
        ):
            zero = " (0: no light path)" if low == 0 else ""
            raise ValueError(
                f"must be an integer in [{low}, {MAX_SIZE}]{zero}, or one per hidden layer: "
                "a list, or a mapping by layer name (body.0: 8)"
            )
        return value

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is not None and (not value or any(not 1 <= v <= MAX_SIZE for v in value)):
            raise ValueError(f"must be a non-empty list of integers in [1, {MAX_SIZE}]")
        if value is not None:
            per_pair = 9 if info.field_name == "channels" else 1  # 3x3 convolutions
            _check_weights(
                sum(a * b * per_pair for a, b in itertools.pairwise(value)),
                f"the layers {_short(value)}",
            )
        return value

    @model_validator(mode="after")
    def _lstm_weights(self) -> ModelSpec:
        if self.hidden_size is not None:
            size, embed = self.hidden_size, self.embed_dim or 0
            _check_weights(
                4 * size * (embed + size),
                f"the LSTM gates of hidden_size {size} (embed_dim {embed})",
            )
        if self.arch == "transformer":
            d, f = self.d_model or 32, self.ffn or 128
            _check_weights(
                (self.depth or 2) * (4 * d * d + 2 * d * f),
                f"the transformer blocks (depth {self.depth}, d_model {d}, ffn {f})",
            )
        return self

    def options(self) -> dict[str, Any]:
        """Keyword options for :func:`midl_autok.models.build_model` (unset ones omitted)."""
        dump = self.model_dump(
            exclude={"arch", "factory", "factory_options", "init_from", "init_calibration"}
        )
        return {k: v for k, v in dump.items() if v is not None}


#: The fields of the built-in architectures, at their defaults when ``model.factory`` is set.
BUILT_IN_MODEL_FIELDS = (
    *("arch", "variant", "hidden", "channels", "embed_dim", "hidden_size"),
    *("gate_rank", "light_rank", "activation", "dropout", "gating"),
    *("d_model", "depth", "heads", "ffn", "patch"),
)


def _without_unset_factory(data: dict[str, Any]) -> dict[str, Any]:
    """A dump without ``factory`` (and the factory's ``options``) when no factory is set, and
    without ``gating`` when it is ``neuron``: specs, study identities and stored specs of
    built-in models read as before."""
    if isinstance(data, dict) and data.get("factory", "") is None:
        data.pop("factory")
        if "arch" in data and data.get("options") == {}:
            data.pop("options")
    newer = ("init_from", "init_calibration", "d_model", "depth", "heads", "ffn", "patch")
    for key in newer:  # fields added later: unset, they are not in the dump
        if isinstance(data, dict) and key in data and data[key] is None:
            data.pop(key)
    if isinstance(data, dict) and data.get("gating") == "neuron":
        data.pop("gating")  # the default: the dumps (and study identities) of before gating
    return data


def _factory_path(value: Any, what: str) -> Any:
    """A function given for a factory becomes its import path (``module:qualname``)."""
    from midl_autok._import_path import factory_path

    return value if value is None else factory_path(value, what=what)


def _short(values: list[int]) -> str:
    return str(values) if len(values) <= 6 else f"[{values[0]}, {values[1]}, ..., {values[-1]}]"


def _check_weights(count: int, what: str) -> None:
    if count > MAX_WEIGHTS:
        raise ValueError(
            f"{what} hold {count:,} weights, more than the limit of {MAX_WEIGHTS:,} "
            "(midl_autok.spec.MAX_WEIGHTS); use narrower layers"
        )


class TrainingSpec(_Strict):
    epochs: StrictInt = Field(10, ge=1, le=10_000)
    batch_size: StrictInt = Field(64, ge=1, le=MAX_SIZE)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: StrictInt = Field(4096, ge=1, le=MAX_SIZE)
    # k fraction for every MID-L layer and epoch when no schedule is given (``train``).
    k_fraction: float = Field(1.0, gt=0, le=1)


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]


class BudgetSpec(_Strict):
    trials: StrictInt = Field(30, ge=1, le=1_000_000)
    flops_budget: float | None = Field(None, gt=0, le=1)
    timeout_s: float | None = Field(None, gt=0)


class SearchSpec(_Strict):
    agent: str = "tpe"
    space: str = "budget"
    options: dict[str, Any] = Field(default_factory=dict)
    #: The first ``seed_grid`` trials of a sampler search: a coarse constant-k grid
    #: (:mod:`midl_autok.agents.seedgrid`). Defaults chosen by ``bench_search.py`` on digits
    #: (README, "The budget space against the fixed-k grid"): TPE, budget space, a grid of 5.
    seed_grid: StrictInt = Field(5, ge=0, le=1_000_000)
    #: After the search, retrain the front's schedules with this many more seeds
    #: (:mod:`midl_autok.search.confirm`; at most ``MAX_CONFIRM`` = 20); 0: no confirmation.
    confirm: StrictInt = Field(0, ge=0, le=20)
    #: Co-search every MID-L layer's ``gate_rank`` and ``light_rank`` with the schedule
    #: (``--search-ranks``; :mod:`midl_autok.search_spaces.ranks`).
    ranks: bool = False


def _default_objectives() -> list[Objective]:
    return [
        Objective(metric="val_accuracy", direction="maximize"),
        Objective(metric="inference_flops", direction="minimize"),
    ]


class ExperimentSpec(_Strict):
    name: str = Field("custom", min_length=1, max_length=100)
    description: str = ""
    seed: StrictInt = Field(0, ge=0, le=2**32 - 1)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    objectives: list[Objective] = Field(default_factory=_default_objectives, min_length=1)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        # the name becomes part of study, MLflow experiment and folder names and of one-line
        # messages: no line breaks or other control characters
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise ValueError("must not contain control characters (line breaks, tabs, ...)")
        return value

    @field_validator("objectives")
    @classmethod
    def _known_metrics(cls, value: list[Objective]) -> list[Objective]:
        from midl_autok.metrics import OBJECTIVE_METRICS

        for obj in value:
            if obj.metric not in OBJECTIVE_METRICS:
                raise ValueError(
                    f"unknown objective metric {obj.metric!r}; "
                    f"valid: {', '.join(OBJECTIVE_METRICS)}"
                )
        return value

    def override(self, **changes: Any) -> ExperimentSpec:
        """A copy with dotted-path overrides, e.g. ``{"training.epochs": 5}``; None = keep."""
        data = self.model_dump()
        for path, value in changes.items():
            if value is None:
                continue
            node = data
            *parents, leaf = path.split(".")
            for depth, part in enumerate(parents):
                child = node.get(part) if isinstance(node, dict) else None
                if not isinstance(child, dict):
                    where = ".".join(parents[: depth + 1])
                    raise SpecError(
                        f"overrides: cannot set {path}: {where} is not a section of the spec"
                    )
                node = child
            node[leaf] = value
        return validate_spec(data, source="overrides")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_validation(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict) else "an object"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {msg} (got {shown}){more}"


def validate_spec(data: Any, *, source: str = "spec") -> ExperimentSpec:
    """Validate a parsed document; errors name the field path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    where = _too_deep(data)
    if where is not None:
        raise SpecError(
            f"{source}: {where} is nested more than {MAX_DEPTH} levels deep; flatten it"
        )
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation(exc, source)) from None
    except RecursionError:
        raise SpecError(f"{source}: the document is nested too deeply") from None


def _too_deep(data: dict[str, Any]) -> str | None:
    """Where (the first two levels of the path) the document nests deeper than
    :data:`MAX_DEPTH`, or None. The walk stops at that depth, so a mapping that contains
    itself ends too; YAML aliases were bounded by the loader."""
    stack: list[tuple[Any, str, int]] = [(data, "(top level)", 0)]
    while stack:
        item, where, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            return where
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, value in pairs:
            child = where if depth >= 2 else str(key) if depth == 0 else f"{where}.{key}"
            stack.append((value, child, depth + 1))
    return None


def list_experiments() -> list[str]:
    """Names of the shipped experiment specs."""
    folder = resources.files("midl_autok") / "specs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | os.PathLike[str] | None = None) -> ExperimentSpec:
    """A shipped spec by name, or a YAML file by path (``None``: the default experiment)."""
    ref = str(name_or_path) if name_or_path is not None else DEFAULT_EXPERIMENT
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        source = ref
    else:
        shipped = list_experiments()
        if ref not in shipped:
            from midl_autok.errors import unknown_name

            err = unknown_name("experiment", ref, shipped, error=SpecError)
            raise SpecError(f"{err} (or give the path of a YAML file)")
        path = Path(str(resources.files("midl_autok") / "specs" / f"{ref}.yaml"))
        source = f"experiment {ref}"
    text = read_text(path, limit=_MAX_SPEC_BYTES, what="experiment file", error=SpecError)
    from midl_autok._yaml import load_yaml

    data = load_yaml(text, source=source, error=SpecError)  # safe loader, bounded
    return validate_spec(data, source=source)
