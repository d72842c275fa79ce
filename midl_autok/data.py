"""Datasets: bundled, generated, and read from standard on-disk formats.

Nothing is downloaded at run time. Every dataset is registered by name (:data:`DATASETS`) and
loaded with :func:`load_dataset`, which returns a :class:`Dataset` of ready tensors:

==================  ======  ===========  ==========================================================
name                kind    source       what is read or made
==================  ======  ===========  ==========================================================
digits              vector  bundled      scikit-learn ``load_digits`` (8x8 -> 64 features)
mnist1d             vector  generated    the ``mnist1d`` package's generator (40 features), cached
synthetic           vector  generated    scikit-learn ``make_classification``
synthetic-tokens    tokens  generated    random tokens with one class "motif" planted per sequence
mnist               image   directory    IDX files ``train-images-idx3-ubyte`` ... (optionally .gz)
fashion-mnist       image   directory    the same IDX file names as MNIST
cifar10             image   directory    ``cifar-10-batches-py`` (python pickles, read safely)
cifar100            image   directory    ``cifar-100-python`` (python pickles, read safely)
svhn                image   directory    ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5)
csv                 vector  file         a CSV table with a ``target`` column (e.g. UCI Adult)
==================  ======  ===========  ==========================================================

Splits. Datasets with an official test split (mnist1d, MNIST, Fashion-MNIST, CIFAR, SVHN) keep
it; the others (digits, synthetic, synthetic-tokens, csv) carve a test split of
``test_fraction`` from all samples first. The validation split (``val_fraction``) is then
carved from the training samples. Both carvings are seeded by ``seed`` and stratified whenever
every class has at least 2 samples and each part can hold one sample per class. Generated
datasets are made from their own ``data_seed`` option, so that ``seed`` changes the split and
never the problem.

``max_samples`` caps the training pool (official train split, or what remains after carving
the test split) with a seeded, stratified subsample *before* the validation split; the test
split is capped in the same proportion (rounded up) so that quick runs stay quick.
``info["pool_size"]`` and ``info["test_size_uncapped"]`` record the sizes before capping.

Preprocessing is fitted on the train part only and applied unchanged to val and test:
vector features are standardized per feature, images are scaled to [0, 1] and standardized
per channel (a zero std is replaced by 1), tokens are left as int64 ids. The statistics are
kept in ``info["standardization"]``. CSV tables: whitespace is stripped from every field;
numeric columns are imputed with the train mean and standardized; other columns are one-hot
encoded with the categories seen in train (unseen ones map to all zeros; missing values are
their own ``<missing>`` category); the target's sorted unique values become classes 0..C-1
(``info["classes"]``), and rows without a target are dropped with a warning.

Options (``options=``; anything else is an error): mnist1d ``num_samples``, ``data_seed``;
synthetic ``n_samples``, ``n_features``, ``n_informative``, ``n_redundant``, ``n_classes``,
``n_clusters_per_class``, ``class_sep``, ``flip_y``, ``data_seed``; synthetic-tokens
``n_samples``, ``seq_len``, ``vocab_size``, ``n_classes``, ``motif_len``, ``data_seed``;
cifar100 ``label_mode`` (fine | coarse); svhn ``extra`` (add ``extra_32x32.mat`` to train);
csv ``delimiter``, ``columns`` (names for a file without a header row), ``missing_values``.

Generated mnist1d arrays are cached in ``$MIDL_AUTOK_CACHE`` (default
``$XDG_CACHE_HOME/midl_autok`` or ``~/.cache/midl_autok``). CIFAR pickles are read with an
unpickler that only rebuilds numpy arrays; any other global in the file is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gzip
import hashlib
import importlib
import importlib.metadata
import json
import math
import numbers
import os
import pickle
import random
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from midl_autok.errors import DataError, unknown_name

__all__ = ["DATASETS", "Dataset", "load_dataset"]

_KINDS = ("vector", "image", "tokens")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into train, val and test tensors.

    ``x_*`` are float32 (vector: ``(N, F)``, image: ``(N, C, H, W)``, standardized with the
    train statistics) or int64 token ids (tokens: ``(N, T)``); ``y_*`` are int64 class ids in
    ``0 .. num_classes - 1``. ``info`` holds JSON-friendly facts: the source, split sizes and
    settings, class names, feature names, standardization statistics.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    vocab_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, but got {self.kind!r}")
        for part, x, y in self._parts():
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{part} split has x {tuple(x.shape)} and y {tuple(y.shape)}, "
                    f"expected (N, *{self.input_shape}) and (N,)"
                )

    def _parts(self) -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
        return (
            ("train", self.x_train, self.y_train),
            ("val", self.x_val, self.y_val),
            ("test", self.x_test, self.y_test),
        )

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with every tensor moved to ``device``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split: ``{"train": n, "val": n, "test": n}``."""
        return {part: int(y.shape[0]) for part, _, y in self._parts()}

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, sizes={self.sizes})"
        )


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Option:
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
            ok, expected = _is_int(value), "an integer"
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


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _resolve_options(
    dataset: str, spec: Mapping[str, _Option], given: Mapping[str, Any] | None
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


# --------------------------------------------------------------------------- registry


_Featurize = Callable[
    [np.ndarray, np.ndarray, np.ndarray],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]],
]


@dataclass
class _Request:
    name: str
    path: Path | None
    target: str | None
    options: dict[str, Any]


@dataclass
class _Source:
    """What a loader hands to the split and preprocessing pipeline.

    ``x`` / ``y`` are the training pool, or every sample when ``x_test`` is None (no official
    test split). ``featurize`` is fitted on the train part and applied to all three parts.
    """

    kind: str
    num_classes: int
    x: np.ndarray
    y: np.ndarray
    featurize: _Featurize
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    vocab_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    loader: Callable[[_Request], _Source]
    location: str  # "bundled" | "generated" | "directory" | "file"
    options: Mapping[str, _Option] = field(default_factory=dict)


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
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, but got {seed!r}")
    if max_samples is not None and (not _is_int(max_samples) or max_samples < 2):
        raise DataError(f"max_samples must be an integer >= 2 or None, but got {max_samples!r}")
    seed, max_samples = int(seed), None if max_samples is None else int(max_samples)
    if target is not None and key != "csv":
        raise DataError(f"dataset '{key}' has fixed labels; target= is only for the csv dataset")
    request = _Request(key, _check_path(key, entry.location, path), target, {})
    request.options = _resolve_options(key, entry.options, options)
    return _assemble(key, entry.loader(request), val_fraction, test_fraction, seed, max_samples)


def _check_path(name: str, location: str, path: str | os.PathLike[str] | None) -> Path | None:
    if location in ("bundled", "generated"):
        if path is not None:
            raise DataError(f"dataset '{name}' is {location} and reads no files; drop path=")
        return None
    what = "a directory" if location == "directory" else "a file"
    if path is None:
        raise DataError(
            f"dataset '{name}' is read from disk: pass path= ({what}; CLI: --data-path)"
        )
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"dataset '{name}': path {resolved} does not exist; pass {what}")
    if location == "directory" and not resolved.is_dir():
        raise DataError(f"dataset '{name}': path {resolved} is not a directory; pass {what}")
    if location == "file" and not resolved.is_file():
        raise DataError(f"dataset '{name}': path {resolved} is not a file; pass {what}")
    return resolved


def _assemble(
    name: str,
    src: _Source,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_samples: int | None,
) -> Dataset:
    """Carve test (if needed), cap, carve val, featurize: the same steps for every dataset."""
    rng = np.random.default_rng(seed)
    x, y, x_test, y_test = src.x, src.y, src.x_test, src.y_test
    src.x = src.x_test = np.empty(0)  # hold raw arrays only here, so that `del` frees them
    info = dict(src.info)
    info.update(seed=seed, val_fraction=val_fraction, max_samples=max_samples)
    if x_test is None or y_test is None:
        keep, test = _split(y, _part_size(len(y), test_fraction, name, "test"), rng)
        x_test, y_test, x, y = x[test], y[test], x[keep], y[keep]
        info.update(official_test_split=False, test_fraction=test_fraction)
    else:
        info["official_test_split"] = True
    info.update(pool_size=len(y), test_size_uncapped=len(y_test))
    if max_samples is not None and max_samples < len(y):
        n_test = min(len(y_test), math.ceil(len(y_test) * max_samples / len(y)))
        keep, _ = _split(y, len(y) - max_samples, rng)
        x, y = x[keep], y[keep]
        if n_test < len(y_test):
            keep, _ = _split(y_test, len(y_test) - n_test, rng)
            x_test, y_test = x_test[keep], y_test[keep]
    train, val = _split(y, _part_size(len(y), val_fraction, name, "val"), rng)
    x_train, x_val = x[train], x[val]
    del x
    xt, xv, xs, extra = src.featurize(x_train, x_val, x_test)
    del x_train, x_val, x_test
    info.update(extra)
    ds = Dataset(
        name=name,
        kind=src.kind,
        input_shape=tuple(xt.shape[1:]),
        num_classes=src.num_classes,
        x_train=xt,
        y_train=_labels(y[train]),
        x_val=xv,
        y_val=_labels(y[val]),
        x_test=xs,
        y_test=_labels(y_test),
        vocab_size=src.vocab_size,
        info=info,
    )
    info["sizes"] = ds.sizes
    return ds


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _part_size(n: int, fraction: float, name: str, part: str) -> int:
    if n < 2:
        raise DataError(f"dataset '{name}' has {n} sample(s) left, too few to carve a {part} split")
    return min(n - 1, max(1, round(n * fraction)))


def _split(y: np.ndarray, n_second: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..len(y)-1`` into (first, second) with ``len(second) == n_second``.

    Stratified when every class has >= 2 samples and both parts can hold one sample per class:
    each class gives ``round(count * n_second / n)`` samples (largest remainders first), at least
    one and leaving at least one. Otherwise a plain seeded random split. Indices come sorted.
    """
    n = len(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2 or not len(classes) <= n_second <= n - len(classes):
        perm = rng.permutation(n)
        return np.sort(perm[n_second:]), np.sort(perm[:n_second])
    quota = counts * n_second / n
    take = np.clip(np.floor(quota).astype(np.int64), 1, counts - 1)
    while (diff := n_second - int(take.sum())) != 0:
        if diff > 0:
            room = np.where(take < counts - 1, quota - take, -np.inf)
            take[int(np.argmax(room))] += 1
        else:
            excess = np.where(take > 1, take - quota, -np.inf)
            take[int(np.argmax(excess))] -= 1
    second = np.concatenate(
        [rng.permutation(np.flatnonzero(inverse == c))[: take[c]] for c in range(len(classes))]
    )
    mask = np.zeros(n, dtype=bool)
    mask[second] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# --------------------------------------------------------------------------- featurizers


def _safe_std(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Replace (numerically) zero standard deviations by 1 so constant features map to 0."""
    return np.where(std <= 1e-8 * np.maximum(1.0, np.abs(mean)), 1.0, std)


def _vector_features(
    x_tr: np.ndarray, x_va: np.ndarray, x_te: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Standardize each feature with the train mean and std."""
    train = x_tr.astype(np.float64)
    mean = train.mean(axis=0)
    std = _safe_std(train.std(axis=0), mean)

    def apply(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    stats = {"standardization": {"mean": mean.tolist(), "std": std.tolist()}}
    return apply(x_tr), apply(x_va), apply(x_te), stats


_CHUNK = 2048  # images converted per step, to keep float64 temporaries small


def _image_features(
    x_tr: np.ndarray, x_va: np.ndarray, x_te: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Scale uint8 images (N, C, H, W) to [0, 1], then standardize per channel (train stats)."""
    total = np.zeros(x_tr.shape[1])
    squares = np.zeros(x_tr.shape[1])
    for start in range(0, len(x_tr), _CHUNK):
        chunk = x_tr[start : start + _CHUNK].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += np.square(chunk).sum(axis=(0, 2, 3))
    count = len(x_tr) * x_tr.shape[2] * x_tr.shape[3]
    mean = total / count
    std = _safe_std(np.sqrt(np.maximum(squares / count - mean**2, 0.0)), mean)
    mean32 = mean.astype(np.float32)[None, :, None, None]
    std32 = std.astype(np.float32)[None, :, None, None]

    def apply(a: np.ndarray) -> torch.Tensor:
        out = np.empty(a.shape, dtype=np.float32)
        for start in range(0, len(a), _CHUNK):
            out[start : start + _CHUNK] = (
                a[start : start + _CHUNK].astype(np.float32) / 255.0 - mean32
            ) / std32
        return torch.from_numpy(out)

    stats = {"standardization": {"scale": 1 / 255, "mean": mean.tolist(), "std": std.tolist()}}
    return apply(x_tr), apply(x_va), apply(x_te), stats


def _token_features(
    x_tr: np.ndarray, x_va: np.ndarray, x_te: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Token ids pass through unchanged, as int64."""
    tensors = [
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (x_tr, x_va, x_te)
    ]
    return tensors[0], tensors[1], tensors[2], {}


def _check_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Return labels as int64 after checking they are integers in 0..num_classes-1."""
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{where}: labels must lie in 0..{num_classes - 1}, "
            f"but range over {int(y.min())}..{int(y.max())}"
        )
    return y.astype(np.int64)


# --------------------------------------------------------------------------- bundled / generated


def _load_digits(req: _Request) -> _Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _Source(
        kind="vector",
        num_classes=10,
        x=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.int64),
        featurize=_vector_features,
        info={
            "source": "sklearn.datasets.load_digits",
            "classes": [str(c) for c in range(10)],
            "feature_names": list(bunch.feature_names),
        },
    )


def _load_synthetic(req: _Request) -> _Source:
    from sklearn.datasets import make_classification

    o = dict(req.options)
    _check_generated_size("synthetic", o["n_samples"], o["n_features"], "n_samples x n_features")
    o["n_informative"] = o["n_informative"] or max(2, o["n_features"] // 2)
    o["n_redundant"] = o["n_redundant"] if o["n_redundant"] is not None else o["n_features"] // 4
    seed = o.pop("data_seed")
    try:
        x, y = make_classification(**o, shuffle=True, random_state=seed)
    except ValueError as exc:
        raise DataError(f"dataset 'synthetic': invalid options {o}: {exc}") from exc
    return _Source(
        kind="vector",
        num_classes=o["n_classes"],
        x=x,
        y=y.astype(np.int64),
        featurize=_vector_features,
        info={"source": "sklearn.datasets.make_classification", "generation": {**o, "seed": seed}},
    )


def _load_synthetic_tokens(req: _Request) -> _Source:
    """Random tokens with a class-specific motif planted at a random position.

    Each class ``c`` owns a motif: ``motif_len`` token ids drawn from the vocabulary (motifs
    are distinct; tokens may be shared between motifs, so order matters). A sequence of class
    ``c`` is ``seq_len`` uniform random tokens with motif ``c`` written at a uniform position.
    Classes are balanced. The class is recoverable only by spotting the motif, which a small
    LSTM learns in a few epochs.
    """
    o = req.options
    n, t, v, c, m = o["n_samples"], o["seq_len"], o["vocab_size"], o["n_classes"], o["motif_len"]
    _check_generated_size("synthetic-tokens", n, t, "n_samples x seq_len")
    if m > t:
        raise DataError(f"synthetic-tokens needs motif_len <= seq_len, but got {m} > {t}")
    if v**m < 2 * c:
        raise DataError(
            f"synthetic-tokens needs vocab_size**motif_len >= 2 * n_classes to draw distinct "
            f"motifs, but got {v}**{m} < {2 * c}; raise vocab_size or motif_len"
        )
    rng = np.random.default_rng(o["data_seed"])
    motifs = rng.integers(0, v, size=(c, m))
    while len(np.unique(motifs, axis=0)) < c:
        motifs = rng.integers(0, v, size=(c, m))
    y = rng.permutation(np.arange(n) % c)
    x = rng.integers(0, v, size=(n, t))
    start = rng.integers(0, t - m + 1, size=n)
    x[np.arange(n)[:, None], start[:, None] + np.arange(m)] = motifs[y]
    return _Source(
        kind="tokens",
        num_classes=c,
        x=x.astype(np.int64),
        y=y.astype(np.int64),
        featurize=_token_features,
        vocab_size=v,
        info={
            "source": "midl_autok synthetic-tokens",
            "generation": {**o},
            "motifs": motifs.tolist(),
        },
    )


# mnist1d.get_dataset_args() of mnist1d 0.0.2 without its download url (tests check they agree).
_MNIST1D_ARGS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}
_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def _cache_dir() -> Path:
    """Where generated datasets are cached: ``$MIDL_AUTOK_CACHE``, else the user cache dir."""
    if os.environ.get("MIDL_AUTOK_CACHE"):
        return Path(os.environ["MIDL_AUTOK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midl_autok"


def _load_mnist1d(req: _Request) -> _Source:
    """MNIST-1D made by the package's own generator (``mnist1d.data.make_dataset``).

    The generator is called directly, never ``get_dataset`` (which downloads a pickle by
    default). Arguments are the package defaults with ``num_samples`` and ``seed`` (the
    ``data_seed`` option; 42 reproduces the published dataset) from the options. The arrays are
    cached as ``mnist1d-<hash>.npz`` keyed by the arguments and the package version.
    """
    args = {**_MNIST1D_ARGS, "num_samples": req.options["num_samples"]}
    args["seed"] = req.options["data_seed"]
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    digest = hashlib.sha256(json.dumps([args, version], sort_keys=True).encode()).hexdigest()
    path = _cache_dir() / f"mnist1d-{digest[:16]}.npz"
    arrays = _read_npz_cache(path, _MNIST1D_KEYS)
    if arrays is None:
        arrays = _generate_mnist1d(args)
        _write_npz_cache(path, arrays)
    return _Source(
        kind="vector",
        num_classes=10,
        x=arrays["x"],
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
        featurize=_vector_features,
        info={
            "source": f"mnist1d {version} make_dataset",
            "cache": str(path),
            "generation": args,
            "classes": [str(c) for c in range(10)],
        },
    )


def _generate_mnist1d(args: dict[str, Any]) -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as exc:
        raise DataError(
            f"dataset 'mnist1d' needs the mnist1d package: pip install mnist1d ({exc})"
        ) from exc
    # make_dataset seeds the global `random` and `numpy.random` generators: restore them.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {key: np.asarray(data[key]) for key in _MNIST1D_KEYS}


def _read_npz_cache(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Arrays from a cache file, or None when it is missing or unreadable (then regenerate)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in keys}
    except Exception as exc:  # a bad cache file is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache file {path} ({exc}); regenerating", stacklevel=3)
        return None
    if len(arrays["x"]) != len(arrays["y"]) or len(arrays["x_test"]) != len(arrays["y_test"]):
        warnings.warn(f"ignoring inconsistent cache file {path}; regenerating", stacklevel=3)
        return None
    return arrays


def _write_npz_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays atomically (temp file + os.replace); a read-only cache only warns."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"could not write cache file {path} ({exc}); continuing", stacklevel=3)


# --------------------------------------------------------------------------- IDX (MNIST)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, fetch it again") from exc


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: magic ``00 00 <type> <ndim>``, ndim big-endian uint32 dims, data."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: magic number 0x{raw[:4].hex() or 'empty'} should be "
            f"00 00, a type code (08 09 0b 0c 0d 0e), the number of dimensions"
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected, actual = math.prod(dims) * dtype.itemsize, len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "corrupt (extra bytes)"
        raise DataError(
            f"{path} is {problem}: its header declares shape {dims} ({expected} data bytes) but "
            f"the file holds {actual}; fetch the file again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx_dir(name: str, root: Path) -> Path:
    candidates = [root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"]
    for folder in candidates:
        if any((folder / f"{_IDX_FILES[0]}{ext}").is_file() for ext in ("", ".gz")):
            return folder
    return root


def _idx_file(folder: Path, base: str, name: str) -> Path:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"dataset '{name}': {base} (or {base}.gz) not found in {folder}; the directory must "
        f"hold {', '.join(_IDX_FILES)} (each optionally .gz)"
    )


def _load_idx_dataset(req: _Request) -> _Source:
    assert req.path is not None
    folder = _find_idx_dir(req.name, req.path)
    files = [_idx_file(folder, base, req.name) for base in _IDX_FILES]
    parts: list[np.ndarray] = []
    for images_file, labels_file in ((files[0], files[1]), (files[2], files[3])):
        images, labels = _read_idx(images_file), _read_idx(labels_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{images_file}: expected uint8 images of shape (N, H, W), "
                f"got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{labels_file}: expected {len(images)} labels to match {images_file.name}, "
                f"got shape {labels.shape}"
            )
        if len(images) == 0:
            raise DataError(f"{images_file} holds no images")
        parts += [images[:, None, :, :], _check_labels(labels, 10, str(labels_file))]
    classes = _FASHION_CLASSES if req.name == "fashion-mnist" else [str(c) for c in range(10)]
    return _Source(
        kind="image",
        num_classes=10,
        x=parts[0],
        y=parts[1],
        x_test=parts[2],
        y_test=parts[3],
        featurize=_image_features,
        info={"source": str(folder), "files": [f.name for f in files], "classes": list(classes)},
    )


# --------------------------------------------------------------------------- CIFAR (pickles)


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` in protocol-2 pickles: bytes stored as latin-1 text."""
    if not isinstance(obj, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(obj).__name__}, {encoding!r}) refused")
    return obj.encode("latin-1")


def _empty_bytes() -> bytes:
    """Protocol-2 pickles store ``b""`` as a call to ``bytes()`` with no arguments."""
    return b""


def _pickle_allowlist() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch needs: numpy array / scalar / dtype reconstruction."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
    }
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
        numeric = importlib.import_module("numpy._core.numeric")
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module("numpy.core.multiarray")
        numeric = importlib.import_module("numpy.core.numeric")
    for package in ("numpy.core", "numpy._core"):
        for module, attr in ((multiarray, "_reconstruct"), (multiarray, "scalar")):
            allowed[(f"{package}.multiarray", attr)] = getattr(module, attr)
        allowed[(f"{package}.numeric", "_frombuffer")] = getattr(numeric, "_frombuffer")  # noqa: B009
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, dtypes and scalars (plus plain containers)."""

    def __init__(self, handle: IO[bytes], source: Path) -> None:
        super().__init__(handle, encoding="bytes")
        self._source = source
        self._allowed = _pickle_allowlist()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise DataError(
                f"{self._source}: refusing to load '{module}.{name}' from this pickle; CIFAR "
                f"batches hold only numpy arrays, lists, bytes and numbers, so this file is not "
                f"a CIFAR batch (or it was tampered with)"
            )
        return found


def _read_cifar_pickle(path: Path) -> dict[Any, Any]:
    """Load one CIFAR python batch with :class:`_SafeUnpickler`; it must be a dict."""
    try:
        with path.open("rb") as handle:
            obj = _SafeUnpickler(handle, path).load()
    except DataError:
        raise
    except Exception as exc:  # any unpickling failure means a bad file
        raise DataError(f"{path} is not a readable CIFAR batch ({exc}); fetch it again") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict (a CIFAR batch), got {type(obj).__name__}")
    return obj


def _field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    found = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
    raise DataError(f"{path}: missing key '{key}' (found {found or 'no keys'})")


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
    "cifar100": ("cifar-100-python", ("train",), "test"),
}
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _load_cifar(req: _Request) -> _Source:
    assert req.path is not None
    subdir, train_files, test_file = _CIFAR[req.name]
    folder = req.path if (req.path / train_files[0]).is_file() else req.path / subdir
    missing = [f for f in (*train_files, test_file) if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"dataset '{req.name}': missing {', '.join(missing)} in {folder}; pass the "
            f"'{subdir}' directory of the CIFAR python version (or its parent)"
        )
    coarse = req.options.get("label_mode") == "coarse"
    label_key = (
        "labels" if req.name == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
    )
    num_classes = 10 if req.name == "cifar10" else (20 if coarse else 100)

    def read(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for file in names:
            batch = _read_cifar_pickle(folder / file)
            data = _field(batch, "data", folder / file)
            labels = np.asarray(_field(batch, label_key, folder / file))
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
                raise DataError(f"{folder / file}: 'data' must be a uint8 (N, 3072) array")
            if data.shape[1] != 3072 or len(labels) != len(data) or len(data) == 0:
                raise DataError(
                    f"{folder / file}: expected N > 0 rows of 3072 values and N labels, got "
                    f"data {data.shape} and {len(labels)} labels"
                )
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(_check_labels(labels, num_classes, f"{folder / file} '{label_key}'"))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(train_files)
    x_test, y_test = read((test_file,))
    info: dict[str, Any] = {"source": str(folder), "label_key": label_key}
    if req.name == "cifar10":
        info["classes"] = list(_CIFAR10_CLASSES)
    elif (folder / "meta").is_file():
        names = _field(_read_cifar_pickle(folder / "meta"), label_key[:-1] + "_names", folder)
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if len(classes) != num_classes:
            raise DataError(f"{folder / 'meta'}: expected {num_classes} class names")
        info["classes"] = classes
    return _Source("image", num_classes, x, y, _image_features, x_test, y_test, info=info)


# --------------------------------------------------------------------------- SVHN (.mat)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=["X", "y"])
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise DataError(f"{path} is a MATLAB v7.3 file; re-save it as v5 (savemat)") from exc
    except Exception as exc:  # scipy raises many types for a bad file
        raise DataError(f"{path} is not a readable MATLAB v5 file ({exc}); fetch it again") from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path}: expected variables 'X' and 'y', found {sorted(mat)}")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8 or x.shape[3] == 0:
        raise DataError(f"{path}: 'X' must be uint8 of shape (H, W, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3]:
        raise DataError(f"{path}: 'y' holds {len(y)} labels for {x.shape[3]} images")
    if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)):
        raise DataError(f"{path}: 'y' must hold integer labels 1..10, got {y.dtype}")
    y = y.astype(np.int64)
    y[y == 10] = 0  # SVHN stores digit 0 as label 10
    return np.transpose(x, (3, 2, 0, 1)), _check_labels(y, 10, f"{path} 'y'")


def _load_svhn(req: _Request) -> _Source:
    assert req.path is not None
    names = ["train_32x32.mat", "test_32x32.mat"]
    if req.options["extra"]:
        names.append("extra_32x32.mat")
    missing = [n for n in names if not (req.path / n).is_file()]
    if missing:
        raise DataError(f"dataset 'svhn': missing {', '.join(missing)} in {req.path}")
    x, y = _read_svhn_mat(req.path / names[0])
    x_test, y_test = _read_svhn_mat(req.path / names[1])
    if req.options["extra"]:
        x_extra, y_extra = _read_svhn_mat(req.path / names[2])
        x, y = np.concatenate([x, x_extra]), np.concatenate([y, y_extra])
    info = {"source": str(req.path), "files": names, "classes": [str(c) for c in range(10)]}
    return _Source("image", 10, x, y, _image_features, x_test, y_test, info=info)


# --------------------------------------------------------------------------- CSV tables


_MISSING = "<missing>"


def _read_csv_rows(path: Path, delimiter: str, columns: list[str] | None) -> list[list[str]]:
    """Header plus data rows, every field stripped; blank lines skipped; field counts checked."""
    if len(delimiter) != 1:
        raise DataError(f"option 'delimiter' must be one character, but got {delimiter!r}")
    rows: list[list[str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                fields = [value.strip() for value in row]
                if not any(fields):
                    continue
                width = len(columns) if columns is not None else len(rows[0]) if rows else None
                if width is not None and len(fields) != width:
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(fields)} fields but the header "
                        f"has {width}; check the delimiter (option 'delimiter') and quoting"
                    )
                rows.append(fields)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from exc
    if columns is not None:
        rows.insert(0, [c.strip() for c in columns])
    if len(rows) < 2:
        raise DataError(f"{path}: the CSV table has no data rows")
    duplicates = sorted({c for c in rows[0] if rows[0].count(c) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column names {duplicates}; rename them")
    return rows


def _as_float(values: list[str]) -> np.ndarray | None:
    """The column as float64 (missing -> nan) if every present value is a number, else None."""
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value != _MISSING:
            try:
                out[i] = float(value)
            except ValueError:
                return None
    out[~np.isfinite(out)] = np.nan
    return out


def _load_csv(req: _Request) -> _Source:
    assert req.path is not None
    o = req.options
    rows = _read_csv_rows(req.path, o["delimiter"], o["columns"])
    header, body = rows[0], rows[1:]
    hint = "; if the file has no header row, name the columns with options={'columns': [...]}"
    if req.target is None or req.target not in header:
        problem = "needs target=<column>" if req.target is None else f"has no column {req.target!r}"
        close = difflib.get_close_matches(req.target or "", header, n=1)
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"CSV table {req.path} {problem}{suggestion}; columns: {', '.join(header)}{hint}"
        )
    missing = set(o["missing_values"])
    t = header.index(req.target)
    labeled = [row for row in body if row[t] not in missing]
    dropped = len(body) - len(labeled)
    if dropped:
        warnings.warn(f"{req.path}: dropped {dropped} row(s) without a target", stacklevel=3)
    names = [c for i, c in enumerate(header) if i != t]
    if not names:
        raise DataError(f"{req.path}: the table has only the target column, no features")
    targets = [row[t] for row in labeled]
    numeric_targets = _as_float(targets)
    uniques = sorted(set(targets))
    if numeric_targets is not None:
        uniques.sort(key=float)
    if len(uniques) < 2:
        raise DataError(f"{req.path}: target column {req.target!r} has {len(uniques)} class(es)")
    index = {label: i for i, label in enumerate(uniques)}
    y = np.array([index[label] for label in targets], dtype=np.int64)

    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for name in names:
        col = header.index(name)
        values = [_MISSING if row[col] in missing else row[col] for row in labeled]
        as_float = _as_float(values)
        if as_float is not None:
            numeric[name] = as_float
        else:
            categorical[name] = np.array(values, dtype=object)

    def featurize(
        tr: np.ndarray, va: np.ndarray, te: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        blocks: list[list[np.ndarray]] = [[], [], []]
        feature_names: list[str] = []
        means, stds, categories = {}, {}, {}
        for name, values in numeric.items():
            present = values[tr][~np.isnan(values[tr])]
            mean = float(present.mean()) if present.size else 0.0
            filled = np.where(np.isnan(values), mean, values)
            std = float(_safe_std(np.array([filled[tr].std()]), np.array([mean]))[0])
            means[name], stds[name] = mean, std
            for part, rows_ in zip(blocks, (tr, va, te), strict=True):
                part.append(((filled[rows_] - mean) / std)[:, None])
            feature_names.append(name)
        for name, values in categorical.items():
            cats = sorted(set(values[tr].tolist()))
            lookup = {cat: i for i, cat in enumerate(cats)}
            for part, rows_ in zip(blocks, (tr, va, te), strict=True):
                codes = np.array([lookup.get(v, -1) for v in values[rows_]], dtype=np.int64)
                onehot = np.zeros((len(rows_), len(cats)))
                known = np.flatnonzero(codes >= 0)
                onehot[known, codes[known]] = 1.0
                part.append(onehot)
            categories[name] = cats
            feature_names += [f"{name}={cat}" for cat in cats]
        tensors = [torch.from_numpy(np.hstack(b).astype(np.float32)) for b in blocks]
        extra = {
            "feature_names": feature_names,
            "numeric_columns": list(numeric),
            "categorical_columns": categories,
            "standardization": {"mean": means, "std": stds},
        }
        return tensors[0], tensors[1], tensors[2], extra

    return _Source(
        kind="vector",
        num_classes=len(uniques),
        x=np.arange(len(labeled)),  # row ids; featurize reads the parsed columns
        y=y,
        featurize=featurize,
        info={
            "source": str(req.path),
            "target": req.target,
            "classes": uniques,
            "rows_dropped_missing_target": dropped,
        },
    )


# --------------------------------------------------------------------------- the registry


def _opt(default: Any, kind: str, minimum: float | None = None, **kw: Any) -> _Option:
    return _Option(default, kind, minimum, **kw)


# Bounds of the generated datasets' options: a typo of a few digits is an error, not a
# generator that fills the memory for minutes. ``_MAX_VALUES`` bounds samples x features.
_MAX_GENERATED = 10_000_000
_MAX_DIM = 100_000
_MAX_CLASSES = 10_000
_MAX_VALUES = 200_000_000


def _check_generated_size(dataset: str, rows: int, columns: int, what: str) -> None:
    if rows * columns > _MAX_VALUES:
        raise DataError(
            f"dataset '{dataset}': {what} = {rows:,} x {columns:,} values is more than the "
            f"{_MAX_VALUES:,} a generated dataset may hold; lower one of them"
        )


_REGISTRY: dict[str, _Entry] = {
    "digits": _Entry(_load_digits, "bundled"),
    "mnist1d": _Entry(
        _load_mnist1d,
        "generated",
        {
            "num_samples": _opt(5000, "int", 10, maximum=_MAX_GENERATED),
            "data_seed": _opt(42, "int", 0),
        },
    ),
    "synthetic": _Entry(
        _load_synthetic,
        "generated",
        {
            "n_samples": _opt(2000, "int", 4, maximum=_MAX_GENERATED),
            "n_features": _opt(32, "int", 2, maximum=_MAX_DIM),
            "n_informative": _opt(None, "int?", 1, maximum=_MAX_DIM),
            "n_redundant": _opt(None, "int?", 0, maximum=_MAX_DIM),
            "n_classes": _opt(4, "int", 2, maximum=_MAX_CLASSES),
            "n_clusters_per_class": _opt(2, "int", 1, maximum=_MAX_CLASSES),
            "class_sep": _opt(1.0, "float", 0),
            "flip_y": _opt(0.01, "float", 0, maximum=1),
            "data_seed": _opt(0, "int", 0),
        },
    ),
    "synthetic-tokens": _Entry(
        _load_synthetic_tokens,
        "generated",
        {
            "n_samples": _opt(2000, "int", 4, maximum=_MAX_GENERATED),
            "seq_len": _opt(32, "int", 1, maximum=_MAX_DIM),
            "vocab_size": _opt(50, "int", 2, maximum=_MAX_GENERATED),
            "n_classes": _opt(4, "int", 2, maximum=_MAX_CLASSES),
            "motif_len": _opt(4, "int", 1, maximum=_MAX_DIM),
            "data_seed": _opt(0, "int", 0),
        },
    ),
    "mnist": _Entry(_load_idx_dataset, "directory"),
    "fashion-mnist": _Entry(_load_idx_dataset, "directory"),
    "cifar10": _Entry(_load_cifar, "directory"),
    "cifar100": _Entry(
        _load_cifar, "directory", {"label_mode": _opt("fine", "str", choices=("fine", "coarse"))}
    ),
    "svhn": _Entry(_load_svhn, "directory", {"extra": _opt(False, "bool")}),
    "csv": _Entry(
        _load_csv,
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
