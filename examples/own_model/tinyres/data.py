"""The data loader: reads the bundled ``spirals.csv`` (nothing is downloaded).

midl-autok calls :func:`load` with the spec's ``dataset.options`` and splits the ``(X, y)``
it returns into train, val and test with the spec's fractions and seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def load(*, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(HERE / "spirals.csv", delimiter=",", skiprows=1)
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    if noise:
        x = x + np.random.default_rng(0).normal(0, noise, x.shape).astype(np.float32)
    return x, y


def make_file(path: Path = HERE / "spirals.csv", n_per_class: int = 200) -> None:
    """How spirals.csv was made: three interleaved spirals, lifted to 8 features."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(3):
        t = np.linspace(0.2, 1.0, n_per_class)
        angle = 4.0 * t + label * 2 * np.pi / 3 + rng.normal(0, 0.15, n_per_class)
        xy = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        lifted = np.concatenate([xy, np.sin(3 * xy), np.cos(3 * xy), xy**2], axis=1)
        rows.append(np.concatenate([lifted, np.full((n_per_class, 1), label)], axis=1))
    table = np.concatenate(rows)
    header = ",".join([f"f{i}" for i in range(table.shape[1] - 1)] + ["label"])
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt="%.5f")


if __name__ == "__main__":
    make_file()
