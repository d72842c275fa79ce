"""SVHN ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from midl_autok.data._pipeline import image_features
from midl_autok.data._source import Request, Source, check_labels, check_same_size
from midl_autok.errors import DataError
from midl_autok.fileio import open_regular

#: Largest .mat file read (SVHN's extra_32x32.mat is 1.3 GB).
MAX_MAT_BYTES = 4 << 30


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    try:
        with open_regular(path, limit=MAX_MAT_BYTES, what="SVHN file", error=DataError) as fh:
            mat = loadmat(fh, variable_names=["X", "y"])
    except DataError:
        raise
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
    return np.transpose(x, (3, 2, 0, 1)), check_labels(y, 10, f"{path} 'y'")


def load(req: Request) -> Source:
    assert req.path is not None
    names = ["train_32x32.mat", "test_32x32.mat"]
    if req.options["extra"]:
        names.append("extra_32x32.mat")
    missing = [n for n in names if not (req.path / n).is_file()]
    if missing:
        raise DataError(f"dataset 'svhn': missing {', '.join(missing)} in {req.path}")
    x, y = _read_svhn_mat(req.path / names[0])
    x_test, y_test = _read_svhn_mat(req.path / names[1])
    check_same_size("svhn", (names[0], x), (names[1], x_test))
    if req.options["extra"]:
        x_extra, y_extra = _read_svhn_mat(req.path / names[2])
        check_same_size("svhn", (names[0], x), (names[2], x_extra))
        x, y = np.concatenate([x, x_extra]), np.concatenate([y, y_extra])
    info = {"source": str(req.path), "files": names, "classes": [str(c) for c in range(10)]}
    return Source("image", 10, x, y, image_features, x_test, y_test, info=info)
