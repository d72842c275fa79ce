"""The bundled and generated datasets: digits, synthetic, synthetic-tokens."""

from __future__ import annotations

import numpy as np

from midl_autok.data._cache import cached_arrays, version_of
from midl_autok.data._pipeline import token_features, vector_features
from midl_autok.data._source import Request, Source
from midl_autok.errors import DataError

# Bounds of the generated datasets' options: a typo of a few digits is an error, not a
# generator that fills the memory for minutes. ``_MAX_VALUES`` bounds samples x features.
MAX_GENERATED = 10_000_000
MAX_DIM = 100_000
MAX_CLASSES = 10_000
_MAX_VALUES = 200_000_000


def _check_generated_size(dataset: str, rows: int, columns: int, what: str) -> None:
    if rows * columns > _MAX_VALUES:
        raise DataError(
            f"dataset '{dataset}': {what} = {rows:,} x {columns:,} values is more than the "
            f"{_MAX_VALUES:,} a generated dataset may hold; lower one of them"
        )


def _sklearn_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return {"x": bunch.data, "y": bunch.target, "names": np.asarray(bunch.feature_names)}


def load_digits(req: Request) -> Source:
    """scikit-learn's 8x8 digits (bundled with it), cached (``data/_cache.py``)."""
    key = ["digits", version_of("scikit-learn")]
    arrays, _ = cached_arrays("digits", key, _sklearn_digits, keys=("x", "y", "names"))
    return Source(
        kind="vector",
        num_classes=10,
        x=np.asarray(arrays["x"], dtype=np.float64),
        y=np.asarray(arrays["y"], dtype=np.int64),
        featurize=vector_features,
        info={
            "source": "sklearn.datasets.load_digits",
            "classes": [str(c) for c in range(10)],
            "feature_names": [str(n) for n in arrays["names"]],
        },
    )


def load_synthetic(req: Request) -> Source:
    """scikit-learn's ``make_classification`` with the options, cached (``data/_cache.py``)."""
    o = dict(req.options)
    _check_generated_size("synthetic", o["n_samples"], o["n_features"], "n_samples x n_features")
    o["n_informative"] = o["n_informative"] or max(2, o["n_features"] // 2)
    o["n_redundant"] = o["n_redundant"] if o["n_redundant"] is not None else o["n_features"] // 4
    seed = o.pop("data_seed")

    def make() -> dict[str, np.ndarray]:
        from sklearn.datasets import make_classification

        try:
            x, y = make_classification(**o, shuffle=True, random_state=seed)
        except ValueError as exc:
            raise DataError(f"dataset 'synthetic': invalid options {o}: {exc}") from exc
        return {"x": x, "y": y}

    key = ["synthetic", o, seed, version_of("scikit-learn"), version_of("numpy")]
    arrays, _ = cached_arrays("synthetic", key, make, keys=("x", "y"))
    return Source(
        kind="vector",
        num_classes=o["n_classes"],
        x=arrays["x"],
        y=arrays["y"].astype(np.int64),
        featurize=vector_features,
        info={"source": "sklearn.datasets.make_classification", "generation": {**o, "seed": seed}},
    )


def load_synthetic_tokens(req: Request) -> Source:
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
    return Source(
        kind="tokens",
        num_classes=c,
        x=x.astype(np.int64),
        y=y.astype(np.int64),
        featurize=token_features,
        vocab_size=v,
        info={
            "source": "midl_autok synthetic-tokens",
            "generation": {**o},
            "motifs": motifs.tolist(),
        },
    )
