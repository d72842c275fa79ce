"""Generated data sets cached as ``.npz`` files under :func:`midl_autok.fileio.cache_dir`.

A generated data set is a pure function of its arguments and of the generator's version, so
it is made once per machine and read back (milliseconds, no pickle) by every later process:
a search's trial processes and Ray workers no longer import the generator (scikit-learn's
import alone is ~1.5 s). A missing, unreadable or inconsistent file is made again; a cache
folder that cannot be written only warns.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from midl_autok.fileio import cache_dir

#: Larger data sets are made each time instead (a cache file of gigabytes costs more disk than
#: the generator costs time).
MAX_CACHED_BYTES = 256 << 20


def version_of(distribution: str) -> str:
    """The installed version of ``distribution`` (without importing it), or ``"missing"``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cached_arrays(
    name: str,
    key: Any,
    make: Callable[[], Mapping[str, np.ndarray]],
    *,
    keys: tuple[str, ...],
    pairs: tuple[tuple[str, str], ...] = (("x", "y"),),
) -> tuple[dict[str, np.ndarray], Path]:
    """The arrays ``make()`` returns, from ``<cache>/<name>-<hash of key>.npz`` when it holds
    them (``keys``, each pair of equal length), else made and written there atomically.
    ``key`` (JSON) must name everything the arrays depend on, the generator's version too."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"{name}-{digest[:16]}.npz"
    arrays = _read(path, keys, pairs)
    if arrays is None:
        arrays = {k: np.asarray(v) for k, v in make().items()}
        if sum(a.nbytes for a in arrays.values()) <= MAX_CACHED_BYTES:
            _write(path, arrays)
    return arrays, path


def _read(
    path: Path, keys: tuple[str, ...], pairs: tuple[tuple[str, str], ...]
) -> dict[str, np.ndarray] | None:
    """Arrays from a cache file, or None when it is missing or unreadable (then regenerate)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in keys}
    except Exception as exc:  # a bad cache file is rebuilt, never fatal
        warnings.warn(f"ignoring unreadable cache file {path} ({exc}); regenerating", stacklevel=4)
        return None
    if any(len(arrays[a]) != len(arrays[b]) for a, b in pairs):
        warnings.warn(f"ignoring inconsistent cache file {path}; regenerating", stacklevel=4)
        return None
    return arrays


def _write(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
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
        warnings.warn(f"could not write cache file {path} ({exc}); continuing", stacklevel=4)
