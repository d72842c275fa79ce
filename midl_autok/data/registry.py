"""The dataset registry by name and :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midl_autok.data import cifar, csv_table, idx, mnist1d, svhn
from midl_autok.data._pipeline import assemble
from midl_autok.data._source import Option, Request, Source, is_int, resolve_options
from midl_autok.data.dataset import Dataset
from midl_autok.data.generated import (
    MAX_CLASSES,
    MAX_DIM,
    MAX_GENERATED,
    load_digits,
    load_synthetic,
    load_synthetic_tokens,
)
from midl_autok.errors import DataError, unknown_name


@dataclass(frozen=True)
class _Entry:
    loader: Callable[[Request], Source]
    location: str  # "bundled" | "generated" | "directory" | "file"
    options: Mapping[str, Option] = field(default_factory=dict)


# --------------------------------------------------------------------------- public entry


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    target: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_samples: int | None = None,
    options: dict[str, Any] | None = None,
) -> Dataset:
    """Load the registered dataset ``name`` and split it into train, val and test tensors.

    Args:
        name: A name from :data:`DATASETS`.
        path: Where on-disk datasets live: a directory (mnist, fashion-mnist, cifar10,
            cifar100, svhn) or a file (csv). Not accepted by bundled or generated datasets.
        target: The label column of a ``csv`` table (required there, refused elsewhere).
        val_fraction: Share of the training samples held out for validation, in (0, 1).
        test_fraction: Share of all samples held out for test when the dataset has no
            official test split, in (0, 1).
        seed: Seeds every split (and subsample); same seed, same tensors.
        max_samples: Cap on training samples before the val split (test capped in proportion).
        options: Dataset-specific options; unknown ones are errors listing the valid ones.

    Raises:
        DataError: on any problem with the name, the arguments or the files.
    """
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise unknown_name("dataset", str(name), DATASETS, error=DataError)
    entry = _REGISTRY[key]
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise DataError(f"{label} must satisfy 0 < {label} < 1, but got {value!r}")
    if not is_int(seed) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, but got {seed!r}")
    if max_samples is not None and (not is_int(max_samples) or max_samples < 2):
        raise DataError(f"max_samples must be an integer >= 2 or None, but got {max_samples!r}")
    seed, max_samples = int(seed), None if max_samples is None else int(max_samples)
    if target is not None and key != "csv":
        raise DataError(f"dataset '{key}' has fixed labels; target= is only for the csv dataset")
    request = Request(key, _check_path(key, entry.location, path), target, {})
    request.options = resolve_options(key, entry.options, options)
    return assemble(key, entry.loader(request), val_fraction, test_fraction, seed, max_samples)


def _check_path(name: str, location: str, path: str | os.PathLike[str] | None) -> Path | None:
    if location in ("bundled", "generated"):
        if path is not None:
            raise DataError(
                f"dataset '{name}' is {location} and reads no files; drop --data-path "
                "(spec: dataset.path; Python: path=)"
            )
        return None
    what = "a directory" if location == "directory" else "a file"
    if path is None:
        raise DataError(
            f"dataset '{name}' is read from disk: give {what} with --data-path PATH "
            "(spec: dataset.path; Python: path=)"
        )
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"dataset '{name}': path {resolved} does not exist; pass {what}")
    if location == "directory" and not resolved.is_dir():
        raise DataError(f"dataset '{name}': path {resolved} is not a directory; pass {what}")
    if location == "file" and not resolved.is_file():
        raise DataError(f"dataset '{name}': path {resolved} is not a file; pass {what}")
    return resolved


def _opt(default: Any, kind: str, minimum: float | None = None, **kw: Any) -> Option:
    return Option(default, kind, minimum, **kw)


# the options both synthetic generators take, with the same defaults and bounds
_N_SAMPLES = _opt(2000, "int", 4, maximum=MAX_GENERATED)
_N_CLASSES = _opt(4, "int", 2, maximum=MAX_CLASSES)
_DATA_SEED = _opt(0, "int", 0)

_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(load_digits, "bundled"),
    "mnist1d": _Entry(
        mnist1d.load,
        "generated",
        {
            "num_samples": _opt(5000, "int", 10, maximum=MAX_GENERATED),
            "data_seed": _opt(42, "int", 0),
        },
    ),
    "synthetic": _Entry(
        load_synthetic,
        "generated",
        {
            "n_samples": _N_SAMPLES,
            "n_features": _opt(32, "int", 2, maximum=MAX_DIM),
            "n_informative": _opt(None, "int?", 1, maximum=MAX_DIM),
            "n_redundant": _opt(None, "int?", 0, maximum=MAX_DIM),
            "n_classes": _N_CLASSES,
            "n_clusters_per_class": _opt(2, "int", 1, maximum=MAX_CLASSES),
            "class_sep": _opt(1.0, "float", 0),
            "flip_y": _opt(0.01, "float", 0, maximum=1),
            "data_seed": _DATA_SEED,
        },
    ),
    "synthetic-tokens": _Entry(
        load_synthetic_tokens,
        "generated",
        {
            "n_samples": _N_SAMPLES,
            "seq_len": _opt(32, "int", 1, maximum=MAX_DIM),
            "vocab_size": _opt(50, "int", 2, maximum=MAX_GENERATED),
            "n_classes": _N_CLASSES,
            "motif_len": _opt(4, "int", 1, maximum=MAX_DIM),
            "data_seed": _DATA_SEED,
        },
    ),
    "mnist": _Entry(idx.load, "directory"),
    "fashion-mnist": _Entry(idx.load, "directory"),
    "cifar10": _Entry(cifar.load, "directory"),
    "cifar100": _Entry(
        cifar.load, "directory", {"label_mode": _opt("fine", "str", choices=("fine", "coarse"))}
    ),
    "svhn": _Entry(svhn.load, "directory", {"extra": _opt(False, "bool")}),
    "csv": _Entry(
        csv_table.load,
        "file",
        {
            "delimiter": _opt(",", "str"),
            "columns": _opt(None, "str-list?"),
            "missing_values": _opt(("", "?", "NA"), "str-list"),
        },
    ),
}

DATASETS: tuple[str, ...] = tuple(sorted(_REGISTRY))
"""Every registered dataset name."""
