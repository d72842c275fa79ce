"""The steps after a reader, the same for every dataset: split, cap, featurize."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from midl_autok.data._source import Source, check_same_size
from midl_autok.data.dataset import Dataset
from midl_autok.errors import DataError


def assemble(
    name: str,
    src: Source,
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
        keep, test = split(y, _part_size(len(y), test_fraction, name, "test"), rng)
        x_test, y_test, x, y = x[test], y[test], x[keep], y[keep]
        info.update(official_test_split=False, test_fraction=test_fraction)
    else:
        check_same_size(name, ("the training split", x), ("the test split", x_test))
        info["official_test_split"] = True
    info.update(pool_size=len(y), test_size_uncapped=len(y_test))
    if max_samples is not None and max_samples < len(y):
        n_test = min(len(y_test), math.ceil(len(y_test) * max_samples / len(y)))
        keep, _ = split(y, len(y) - max_samples, rng)
        x, y = x[keep], y[keep]
        if n_test < len(y_test):
            keep, _ = split(y_test, len(y_test) - n_test, rng)
            x_test, y_test = x_test[keep], y_test[keep]
    train, val = split(y, _part_size(len(y), val_fraction, name, "val"), rng)
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


def split(y: np.ndarray, n_second: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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


def safe_std(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Replace (numerically) zero standard deviations by 1 so constant features map to 0."""
    return np.where(std <= 1e-8 * np.maximum(1.0, np.abs(mean)), 1.0, std)


def vector_features(
    x_tr: np.ndarray, x_va: np.ndarray, x_te: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Standardize each feature with the train mean and std."""
    train = x_tr.astype(np.float64)
    mean = train.mean(axis=0)
    std = safe_std(train.std(axis=0), mean)

    def apply(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32))

    stats = {"standardization": {"mean": mean.tolist(), "std": std.tolist()}}
    return apply(x_tr), apply(x_va), apply(x_te), stats


_CHUNK = 2048  # images converted per step, to keep float64 temporaries small


def image_features(
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
    std = safe_std(np.sqrt(np.maximum(squares / count - mean**2, 0.0)), mean)
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


def token_features(
    x_tr: np.ndarray, x_va: np.ndarray, x_te: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Token ids pass through unchanged, as int64."""
    tensors = [
        torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in (x_tr, x_va, x_te)
    ]
    return tensors[0], tensors[1], tensors[2], {}
