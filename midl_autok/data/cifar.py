"""CIFAR-10 and CIFAR-100 python batches, read with an allow-list unpickler."""

from __future__ import annotations

import importlib
import importlib.metadata
import io
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from midl_autok.data._pipeline import image_features
from midl_autok.data._source import Request, Source, check_labels, is_int
from midl_autok.errors import DataError
from midl_autok.fileio import open_regular

#: Largest CIFAR batch file read (CIFAR-100's ``train`` is 155 MB).
MAX_PICKLE_BYTES = 1 << 30


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
        with open_regular(path, limit=MAX_PICKLE_BYTES, what="CIFAR batch", error=DataError) as fh:
            obj = _SafeUnpickler(io.BufferedReader(fh), path).load()
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


def _labels(raw: Any, where: str, key: str) -> np.ndarray:
    """A batch's labels: a list of integers or a 1-D integer array (checked further by
    ``check_labels``); anything else (None, a dict, nested lists) is one line."""
    if isinstance(raw, np.ndarray):
        return raw
    bad = next((v for v in raw if not is_int(v)), None) if isinstance(raw, list) else raw
    if not isinstance(raw, list) or bad is not None:
        what = f"a list holding {type(bad).__name__}" if isinstance(raw, list) else None
        raise DataError(
            f"{where}: '{key}' must be a list of integer labels, but got "
            f"{what or type(raw).__name__}; the file is damaged, fetch it again"
        )
    try:
        return np.asarray(raw, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{where}: '{key}' holds a label too large for an integer") from None


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"),
    "cifar100": ("cifar-100-python", ("train",), "test"),
}
_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def load(req: Request) -> Source:
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
            labels = _labels(_field(batch, label_key, folder / file), f"{folder / file}", label_key)
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
                raise DataError(f"{folder / file}: 'data' must be a uint8 (N, 3072) array")
            if data.shape[1] != 3072 or len(labels) != len(data) or len(data) == 0:
                raise DataError(
                    f"{folder / file}: expected N > 0 rows of 3072 values and N labels, got "
                    f"data {data.shape} and {len(labels)} labels"
                )
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(check_labels(labels, num_classes, f"{folder / file} '{label_key}'"))
        return np.concatenate(xs), np.concatenate(ys)

    x, y = read(train_files)
    x_test, y_test = read((test_file,))
    info: dict[str, Any] = {"source": str(folder), "label_key": label_key}
    if req.name == "cifar10":
        info["classes"] = list(_CIFAR10_CLASSES)
    elif (folder / "meta").is_file():
        names = _field(_read_cifar_pickle(folder / "meta"), label_key[:-1] + "_names", folder)
        if not isinstance(names, (list, tuple)):
            raise DataError(f"{folder / 'meta'}: expected a list of {num_classes} class names")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if len(classes) != num_classes:
            raise DataError(f"{folder / 'meta'}: expected {num_classes} class names")
        info["classes"] = classes
    return Source("image", num_classes, x, y, image_features, x_test, y_test, info=info)
