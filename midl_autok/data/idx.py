"""IDX files (MNIST, Fashion-MNIST), optionally gzipped."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from midl_autok.data._pipeline import image_features
from midl_autok.data._source import Request, Source, check_labels, check_same_size
from midl_autok.errors import DataError
from midl_autok.fileio import open_regular

#: Most data bytes an IDX file may announce (MNIST's training images are 47 MB, EMNIST's
#: largest split 550 MB); checked before anything is allocated or decompressed.
MAX_IDX_BYTES = 1 << 30
#: Most dimensions an IDX header may declare (numpy's limit).
MAX_DIMS = 64
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


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: magic ``00 00 <type> <ndim>``, ndim big-endian uint32 dims, data.

    The header is checked before the body is read: at most :data:`MAX_DIMS` dimensions, at
    most :data:`MAX_IDX_BYTES` data bytes, and (uncompressed) exactly that many bytes in the
    file. A ``.gz`` file is decompressed into the announced size and no further, so a small
    file that would inflate to gigabytes fails after reading at most the announced size.
    """
    limit = MAX_IDX_BYTES + 4 + 4 * 255  # the largest header
    try:
        with open_regular(path, limit=limit, what="IDX file", error=DataError) as raw:
            stream: Any = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            return _parse(path, stream, None if path.suffix == ".gz" else os.fstat(raw.fileno()))
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, fetch it again") from exc


def _parse(path: Path, stream: Any, st: os.stat_result | None) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: magic number 0x{magic.hex() or 'empty'} should be "
            f"00 00, a type code (08 09 0b 0c 0d 0e), the number of dimensions"
        )
    ndim = magic[3]
    if ndim > MAX_DIMS:
        raise DataError(
            f"{path}: its IDX header declares {ndim} dimensions, more than the {MAX_DIMS} an "
            "array may have; the file is damaged or not an IDX file, fetch it again"
        )
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its IDX header ({4 + len(raw_dims)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    expected = math.prod(dims) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(
            f"{path}: its IDX header declares shape {dims} ({expected:,} data bytes), more than "
            f"the limit of {MAX_IDX_BYTES:,} (midl_autok.data.idx.MAX_IDX_BYTES); the file is "
            "damaged or not MNIST-sized"
        )
    if st is not None and st.st_size - 4 - 4 * ndim != expected:
        _size_mismatch(path, dims, expected, st.st_size - 4 - 4 * ndim)
    body = np.empty(expected, dtype=np.uint8)
    view, filled = body.data, 0
    while filled < expected and (n := stream.readinto(view[filled:])):
        filled += n
    if filled < expected:
        _size_mismatch(path, dims, expected, filled)
    if stream.read(1):
        _size_mismatch(path, dims, expected, None)
    return body.view(dtype).reshape(dims)


def _size_mismatch(path: Path, dims: tuple[int, ...], expected: int, actual: int | None) -> None:
    problem = "truncated" if actual is not None and actual < expected else "corrupt (extra bytes)"
    holds = "more" if actual is None else str(actual)
    raise DataError(
        f"{path} is {problem}: its header declares shape {dims} ({expected} data bytes) but "
        f"the file holds {holds}; fetch the file again"
    )


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
        images, labels = read_idx(images_file), read_idx(labels_file)
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
    check_same_size(req.name, (files[0].name, parts[0]), (files[2].name, parts[2]))
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
