"""IDX files (MNIST, Fashion-MNIST), optionally gzipped."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from midl_autok.data._pipeline import image_features
from midl_autok.data._source import Request, Source, check_labels
from midl_autok.errors import DataError

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


def load(req: Request) -> Source:
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
        parts += [images[:, None, :, :], check_labels(labels, 10, str(labels_file))]
    classes = _FASHION_CLASSES if req.name == "fashion-mnist" else [str(c) for c in range(10)]
    return Source(
        kind="image",
        num_classes=10,
        x=parts[0],
        y=parts[1],
        x_test=parts[2],
        y_test=parts[3],
        featurize=image_features,
        info={"source": str(folder), "files": [f.name for f in files], "classes": list(classes)},
    )
