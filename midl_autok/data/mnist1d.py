"""MNIST-1D, made by the mnist1d package's own generator and cached."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from midl_autok.data._pipeline import vector_features
from midl_autok.data._source import Request, Source
from midl_autok.errors import DataError
from midl_autok.fileio import cache_dir

# mnist1d.get_dataset_args() of mnist1d 0.0.2 without its download url (tests check they agree).
MNIST1D_ARGS: dict[str, Any] = {
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


def load(req: Request) -> Source:
    """MNIST-1D made by the package's own generator (``mnist1d.data.make_dataset``).

    The generator is called directly, never ``get_dataset`` (which downloads a pickle by
    default). Arguments are the package defaults with ``num_samples`` and ``seed`` (the
    ``data_seed`` option; 42 reproduces the published dataset) from the options. The arrays are
    cached as ``mnist1d-<hash>.npz`` keyed by the arguments and the package version.
    """
    args = {**MNIST1D_ARGS, "num_samples": req.options["num_samples"]}
    args["seed"] = req.options["data_seed"]
    try:
        version = importlib.metadata.version("mnist1d")
    except importlib.metadata.PackageNotFoundError:
        version = "missing"
    digest = hashlib.sha256(json.dumps([args, version], sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"mnist1d-{digest[:16]}.npz"
    arrays = _read_npz_cache(path, _MNIST1D_KEYS)
    if arrays is None:
        arrays = _generate_mnist1d(args)
        _write_npz_cache(path, arrays)
    return Source(
        kind="vector",
        num_classes=10,
        x=arrays["x"],
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"],
        y_test=arrays["y_test"].astype(np.int64),
        featurize=vector_features,
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
