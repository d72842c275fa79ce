"""What a reader hands over (Source), what it is asked (Request), its options and labels."""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midl_autok.errors import DataError

# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One dataset option: its default, its type and the values it accepts."""

    default: Any
    kind: str  # "int" | "int?" | "float" | "bool" | "str" | "str-list" | "str-list?"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, dataset: str, name: str, value: Any) -> Any:
        """Return ``value`` if it is valid for this option, else raise :class:`DataError`."""
        kind = self.kind.rstrip("?")
        if value is None and self.kind.endswith("?"):
            return None
        if kind == "int":
            ok, expected = is_int(value), "an integer"
            value = int(value) if ok else value
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            expected, value = "a number", float(value) if ok else value
        elif kind == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif kind == "str":
            ok, expected = isinstance(value, str), "a string"
        else:
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            expected, value = "a list of strings", list(value) if ok else value
        if self.choices is not None:
            ok, expected = ok and value in self.choices, f"one of {', '.join(self.choices)}"
        if ok and self.minimum is not None and value < self.minimum:
            ok, expected = False, f"{expected} >= {self.minimum:g}"
        if ok and self.maximum is not None and value > self.maximum:
            ok, expected = False, f"{expected} <= {self.maximum:g}"
        if not ok:
            raise DataError(
                f"option '{name}' of dataset '{dataset}' must be {expected}, but got {value!r}"
            )
        return value


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def resolve_options(
    dataset: str, spec: Mapping[str, Option], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Merge user options over the defaults; unknown names are errors listing the valid ones."""
    if given is not None and not isinstance(given, Mapping):
        raise DataError(f"options for dataset '{dataset}' must be a mapping, but got {given!r}")
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        valid = ", ".join(sorted(spec)) if spec else "none (this dataset takes no options)"
        close = difflib.get_close_matches(str(unknown[0]), list(spec), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        raise DataError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for dataset '{dataset}'{hint} "
            f"valid options: {valid}"
        )
    return {
        name: opt.check(dataset, name, given[name]) if name in given else opt.default
        for name, opt in spec.items()
    }


Featurize = Callable[
    [np.ndarray, np.ndarray, np.ndarray],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]],
]


@dataclass
class Request:
    name: str
    path: Path | None
    target: str | None
    options: dict[str, Any]


@dataclass
class Source:
    """What a loader hands to the split and preprocessing pipeline.

    ``x`` / ``y`` are the training pool, or every sample when ``x_test`` is None (no official
    test split). ``featurize`` is fitted on the train part and applied to all three parts.
    """

    kind: str
    num_classes: int
    x: np.ndarray
    y: np.ndarray
    featurize: Featurize
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    vocab_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def check_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Return labels as int64 after checking they are integers in 0..num_classes-1."""
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{where}: labels must lie in 0..{num_classes - 1}, "
            f"but range over {int(y.min())}..{int(y.max())}"
        )
    return y.astype(np.int64)


def check_same_size(dataset: str, *parts: tuple[str, np.ndarray]) -> None:
    """Refuse image arrays ``(N, C, H, W)`` of different sizes (train, test, extra files)."""
    (first, x0), *rest = parts
    for label, x in rest:
        if x.shape[1:] != x0.shape[1:]:
            raise DataError(
                f"dataset '{dataset}': the images of {first} are {_size(x0)} but those of "
                f"{label} are {_size(x)}; all files must come from the same dataset"
            )


def _size(x: np.ndarray) -> str:
    if x.ndim != 4:
        return f"of shape {tuple(x.shape[1:])}"
    return "x".join(str(n) for n in x.shape[2:]) + f" with {x.shape[1]} channel(s)"
