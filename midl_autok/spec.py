"""Experiment specs: what to train and search, as validated YAML.

A spec names a dataset, a model, training settings, the objectives and a budget. Shipped
specs live in ``midl_autok/specs/*.yaml`` and are found by name (``digits-mlp``); any other
YAML file is found by path. Validation errors name the field path::

    training.epochs: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from midl_autok.errors import SpecError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "BudgetSpec",
    "DatasetSpec",
    "ExperimentSpec",
    "ModelSpec",
    "Objective",
    "SearchSpec",
    "TrainingSpec",
    "list_experiments",
    "load_spec",
    "validate_spec",
]

DEFAULT_EXPERIMENT = "digits-mlp"
_MAX_SPEC_BYTES = 1024 * 1024
#: Upper bound of layer widths, ranks and batch sizes: far above any model this trains, low
#: enough that a typo (``hidden: [10000000000]``) is an error, not an allocation that fails.
MAX_SIZE = 1 << 20
#: Most hidden layers (or conv blocks) a model may have.
MAX_LAYERS = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    name: str = "digits"
    path: str | None = None
    target: str | None = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_samples: int | None = Field(None, ge=10)
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    arch: str = "mlp"
    variant: Literal["midl", "dense", "dropout"] = "midl"
    hidden: list[int] | None = Field(None, max_length=MAX_LAYERS)
    channels: list[int] | None = Field(None, max_length=MAX_LAYERS)
    embed_dim: int | None = Field(None, ge=1, le=MAX_SIZE)
    hidden_size: int | None = Field(None, ge=1, le=MAX_SIZE)
    gate_rank: int = Field(16, ge=1, le=MAX_SIZE)
    light_rank: int = Field(16, ge=0, le=MAX_SIZE)
    activation: str = "relu"
    dropout: float = Field(0.5, ge=0, lt=1)

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(not 1 <= v <= MAX_SIZE for v in value)):
            raise ValueError(f"must be a non-empty list of integers in [1, {MAX_SIZE}]")
        return value

    def options(self) -> dict[str, Any]:
        """Keyword options for :func:`midl_autok.models.build_model` (unset ones omitted)."""
        return {k: v for k, v in self.model_dump(exclude={"arch"}).items() if v is not None}


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=MAX_SIZE)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(4096, ge=1, le=MAX_SIZE)
    # k fraction for every MID-L layer and epoch when no schedule is given (``train``).
    k_fraction: float = Field(1.0, gt=0, le=1)


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]


class BudgetSpec(_Strict):
    trials: int = Field(30, ge=1, le=1_000_000)
    flops_budget: float | None = Field(None, gt=0, le=1)
    timeout_s: float | None = Field(None, gt=0)


class SearchSpec(_Strict):
    agent: str = "tpe"
    space: str = "cosine"
    options: dict[str, Any] = Field(default_factory=dict)


def _default_objectives() -> list[Objective]:
    return [
        Objective(metric="val_accuracy", direction="maximize"),
        Objective(metric="inference_flops", direction="minimize"),
    ]


class ExperimentSpec(_Strict):
    name: str = Field("custom", min_length=1, max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, le=2**32 - 1)
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
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation(exc, source)) from None
    except RecursionError:
        raise SpecError(f"{source}: the document is nested too deeply") from None


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
    try:
        if path.stat().st_size > _MAX_SPEC_BYTES:
            raise SpecError(f"{source}: the file is larger than {_MAX_SPEC_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"experiment file not found: {ref}") from None
    except IsADirectoryError:
        raise SpecError(f"experiment path is a directory, not a YAML file: {ref}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{source}: not a UTF-8 text file") from None
    except OSError as exc:
        raise SpecError(f"cannot read experiment file {ref}: {exc.strerror}") from None
    from midl_autok._yaml import load_yaml

    data = load_yaml(text, source=source, error=SpecError)  # safe loader, bounded
    spec = validate_spec(data, source=source)
    return spec
