"""MNIST-1D, made by the mnist1d package's own generator and cached."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from midl_autok.data._cache import cached_arrays, version_of
from midl_autok.data._pipeline import vector_features
from midl_autok.data._source import Request, Source
from midl_autok.errors import DataError

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
    version = version_of("mnist1d")
    arrays, path = cached_arrays(
        "mnist1d",
        [args, version],
        lambda: _generate_mnist1d(args),
        keys=_MNIST1D_KEYS,
        pairs=(("x", "y"), ("x_test", "y_test")),
    )
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
