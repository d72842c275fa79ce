"""Tests for midl_autok.data: every format is read from small files written here in that format."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import random
import socket
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch

from midl_autok.data import DATASETS, Dataset, load_dataset
from midl_autok.data._pipeline import split
from midl_autok.errors import DataError, UserError

# --------------------------------------------------------------------------- helpers


def pattern_images(labels: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 images (N, C, H, W): value (h + 2w + 60c) % 200, with pixel [0, 0, 0] = 200 + label.

    The pattern tells transposed axes apart; the corner pixel ties each image to its label.
    """
    c, h, w = np.meshgrid(np.arange(channels), np.arange(size), np.arange(size), indexing="ij")
    base = ((h + 2 * w + 60 * c) % 200).astype(np.uint8)
    images = np.repeat(base[None], len(labels), axis=0)
    images[:, 0, 0, 0] = 200 + labels
    return images


def recover_uint8(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """Undo the per-channel standardization recorded in ds.info, back to 0..255 integers."""
    stats = ds.info["standardization"]
    mean = torch.tensor(stats["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"]).view(1, -1, 1, 1)
    return torch.round((x * std + mean) * 255).to(torch.int64).numpy()


def assert_images_intact(ds: Dataset, channels: int, size: int) -> None:
    """Every split: right layout (pattern), right label attached, train standardized."""
    assert ds.kind == "image"
    assert ds.input_shape == (channels, size, size)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32
        assert y.dtype == torch.int64
        raw = recover_uint8(ds, x)
        expected = pattern_images(y.numpy(), channels, size)
        np.testing.assert_array_equal(raw, expected)
    per_channel = ds.x_train.transpose(0, 1).reshape(channels, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(channels), atol=1e-2, rtol=0)


def assert_same(a: Dataset, b: Dataset) -> None:
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, part), getattr(b, part)), part


def write_idx(path: Path, array: np.ndarray, *, type_code: int = 0x08) -> None:
    """An IDX file: 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    dtype = {0x08: ">u1", 0x0C: ">i4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(dtype).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist_dir(
    root: Path, *, n_train: int = 60, n_test: int = 20, gz: bool = False
) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    y_train = np.arange(n_train) % 10
    y_test = (np.arange(n_test) * 3) % 10
    write_idx(root / f"train-images-idx3-ubyte{ext}", pattern_images(y_train, 1, 28)[:, 0])
    write_idx(root / f"train-labels-idx1-ubyte{ext}", y_train)
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", pattern_images(y_test, 1, 28)[:, 0])
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", y_test)
    return {"y_train": y_train, "y_test": y_test}


def cifar_batch(labels: np.ndarray, label_key: str, **extra: Any) -> dict[bytes, Any]:
    """A dict shaped like a real CIFAR python batch (keys are bytes, data is uint8 (N, 3072))."""
    data = pattern_images(labels % 56, 3, 32).reshape(len(labels), 3072)
    batch = {
        b"batch_label": b"training batch",
        label_key.encode(): [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    batch.update({k.encode(): v for k, v in extra.items()})
    return batch


def write_cifar10(root: Path, *, protocol: int = 2, per_batch: int = 12) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = (np.arange(per_batch) + i) % 10
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps(cifar_batch(labels, "labels"), protocol=protocol)
        )
    test = cifar_batch(np.arange(20) % 10, "labels")
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
    return folder


def _py2_str(value: bytes) -> bytes:
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<I", len(value)) + value


def _py2_int(value: int) -> bytes:
    return b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)


def _py2_uint8_array(array: np.ndarray) -> bytes:
    """A uint8 ndarray as Python 2's cPickle (protocol 2) with numpy 1.x writes it."""
    dtype = (
        b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
        b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0)
    ) + b"tb"
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"
        + _py2_str(b"b")
        + b"\x87R("
        + _py2_int(1)
        + shape
        + dtype
        + b"\x89"
        + _py2_str(array.tobytes())
        + b"tb"
    )


def py2_cifar_batch(labels: np.ndarray) -> bytes:
    """A CIFAR-10 batch byte for byte in the layout of the original Python 2 files."""
    data = pattern_images(labels, 3, 32).reshape(len(labels), 3072)
    items = (
        _py2_str(b"data")
        + _py2_uint8_array(data)
        + _py2_str(b"labels")
        + b"]("
        + b"".join(_py2_int(int(v)) for v in labels)
        + b"e"
        + _py2_str(b"batch_label")
        + _py2_str(b"training batch 1 of 5")
    )
    return b"\x80\x02}(" + items + b"u."


def write_svhn(root: Path, *, n_train: int = 40, n_test: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        digits = np.arange(n) % 10
        images = pattern_images(digits, 3, 32)  # (N, C, H, W)
        x = np.ascontiguousarray(np.transpose(images, (2, 3, 1, 0)))  # (H, W, C, N) as SVHN
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # SVHN: 0 stored as 10
        scipy.io.savemat(root / name, {"X": x, "y": y})


# --------------------------------------------------------------------------- registry & arguments


def test_registry_lists_every_dataset() -> None:
    assert set(DATASETS) == {
        "digits",
        "mnist1d",
        "synthetic",
        "synthetic-tokens",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "csv",
    }


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'digts'; did you mean 'digits'\?"):
        load_dataset("digts")
    assert issubclass(DataError, UserError)


def test_unknown_option_is_an_error_naming_valid_options() -> None:
    with pytest.raises(DataError, match=r"'n_sample'.*did you mean 'n_samples'.*valid options:"):
        load_dataset("synthetic", options={"n_sample": 100})
    with pytest.raises(DataError, match=r"'color'.*dataset 'digits'.*takes no options"):
        load_dataset("digits", options={"color": True})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_classes": "4"}, r"option 'n_classes' of dataset 'synthetic' must be an integer"),
        ({"n_classes": True}, r"must be an integer, but got True"),
        ({"n_samples": 1}, r"'n_samples' .* must be an integer >= 4, but got 1"),
        ({"flip_y": 2.0}, r"'flip_y' .* <= 1, but got 2.0"),
        (
            {"n_classes": 8, "n_clusters_per_class": 4, "n_informative": 2},
            r"dataset 'synthetic': invalid options",
        ),
    ],
)
def test_bad_option_values(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset("synthetic", options=options)


@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, float("nan"), True, "0.2"])
@pytest.mark.parametrize("argument", ["val_fraction", "test_fraction"])
def test_fractions_must_lie_strictly_between_0_and_1(argument: str, value: Any) -> None:
    pattern = rf"{argument} must satisfy 0 < {argument} < 1, but got"
    with pytest.raises(DataError, match=pattern):
        load_dataset("digits", **{argument: value})


def test_options_must_be_a_mapping_and_numpy_integers_are_accepted() -> None:
    with pytest.raises(DataError, match=r"options for dataset 'synthetic' must be a mapping"):
        load_dataset("synthetic", options=["n_samples", 100])  # type: ignore[arg-type]
    ds = load_dataset("synthetic", seed=np.int64(1), options={"n_samples": np.int64(100)})  # type: ignore[arg-type]
    assert sum(ds.sizes.values()) == 100


def test_seed_and_max_samples_are_checked() -> None:
    with pytest.raises(DataError, match=r"seed must be an integer >= 0, but got -1"):
        load_dataset("digits", seed=-1)
    with pytest.raises(DataError, match=r"max_samples must be an integer >= 2 or None, but got 1"):
        load_dataset("digits", max_samples=1)


def test_path_and_target_rules(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset 'digits' is bundled and reads no files"):
        load_dataset("digits", path=tmp_path)
    with pytest.raises(DataError, match=r"read from disk: give a directory with --data-path PATH"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"path .*nowhere does not exist"):
        load_dataset("mnist", path=tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match=r"file.txt is not a directory"):
        load_dataset("cifar10", path=tmp_path / "file.txt")
    with pytest.raises(DataError, match=r"is not a file"):
        load_dataset("csv", path=tmp_path, target="y")
    with pytest.raises(DataError, match=r"target= is only for the csv dataset"):
        load_dataset("digits", target="label")


# --------------------------------------------------------------------------- splitting


def test_split_is_stratified_exact_and_disjoint() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), [50, 30, 10, 7, 3])
    first, second = split(y, 25, rng)
    assert len(second) == 25
    assert sorted(np.concatenate([first, second]).tolist()) == list(range(len(y)))
    counts = np.bincount(y[second], minlength=5)
    expected = np.bincount(y) * 25 / len(y)
    assert np.all(np.abs(counts - expected) <= 1)
    assert np.all(counts >= 1)
    assert np.all(np.bincount(y[first], minlength=5) >= 1)


def test_split_falls_back_to_random_when_a_class_has_one_sample() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    first, second = split(y, 3, np.random.default_rng(0))
    assert len(first) == 5
    assert len(second) == 3
    assert set(first) | set(second) == set(range(8))


# --------------------------------------------------------------------------- bundled / generated


def test_digits_shapes_standardization_and_splits() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", seed=0)
    assert (ds.name, ds.kind, ds.input_shape, ds.num_classes) == ("digits", "vector", (64,), 10)
    assert ds.vocab_size is None
    assert sum(ds.sizes.values()) == 1797
    assert ds.sizes["test"] == round(1797 * 0.2)
    assert ds.sizes["val"] == round((1797 - ds.sizes["test"]) * 0.2)
    assert ds.info["official_test_split"] is False
    assert ds.x_train.dtype == torch.float32
    assert ds.y_train.dtype == torch.int64

    # Train: mean 0 and std 1 per feature (0 for the always-blank pixels).
    std = ds.x_train.std(0, unbiased=False)
    torch.testing.assert_close(ds.x_train.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    constant = torch.tensor(ds.info["standardization"]["std"]) == 1.0
    assert constant.any()
    torch.testing.assert_close(std[~constant], torch.ones(int((~constant).sum())))
    assert torch.all(ds.x_train[:, constant] == 0)

    # Val and test use the train statistics: undoing them gives back the raw pixel values 0..16,
    # and the splits together are exactly the bundled data set.
    mean = torch.tensor(ds.info["standardization"]["mean"])
    sd = torch.tensor(ds.info["standardization"]["std"])
    raw = [torch.round(x.double() * sd + mean) for x in (ds.x_train, ds.x_val, ds.x_test)]
    for r, x in zip(raw, (ds.x_train, ds.x_val, ds.x_test), strict=True):
        torch.testing.assert_close((r.float() - mean.float()) / sd.float(), x, atol=1e-4, rtol=0)
    assert not torch.allclose(ds.x_val.mean(0), torch.zeros(64), atol=1e-5)
    bunch = load_digits()
    rows = {(tuple(r), int(t)) for r, t in zip(bunch.data.tolist(), bunch.target, strict=True)}
    ours = {
        (tuple(r), int(t))
        for part, y in zip(raw, (ds.y_train, ds.y_val, ds.y_test), strict=True)
        for r, t in zip(part.tolist(), y.tolist(), strict=True)
    }
    assert ours == rows

    # Stratified: each class's share of val and test matches the whole within one sample.
    overall = np.bincount(bunch.target) / len(bunch.target)
    for y in (ds.y_val, ds.y_test):
        counts = np.bincount(y.numpy(), minlength=10)
        assert np.all(np.abs(counts - overall * len(y)) <= 1)


def test_digits_features_stay_aligned_with_labels() -> None:
    from sklearn.linear_model import LogisticRegression

    ds = load_dataset("digits", seed=3)
    model = LogisticRegression(max_iter=2000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    assert model.score(ds.x_val.numpy(), ds.y_val.numpy()) > 0.9
    assert model.score(ds.x_test.numpy(), ds.y_test.numpy()) > 0.9


def test_same_seed_same_tensors_other_seed_other_split() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (7, 7, 8))
    assert_same(a, b)
    assert not torch.equal(a.y_train, c.y_train)
    assert a.sizes == c.sizes


def test_max_samples_caps_train_and_test_in_proportion() -> None:
    ds = load_dataset("digits", max_samples=200, seed=1)
    pool, test = 1797 - round(1797 * 0.2), round(1797 * 0.2)
    assert ds.sizes["train"] + ds.sizes["val"] == 200
    assert ds.sizes["val"] == 40
    assert ds.sizes["test"] == math.ceil(test * 200 / pool)
    assert ds.info["pool_size"] == pool
    assert ds.info["test_size_uncapped"] == test
    assert set(ds.y_train.tolist()) == set(range(10))  # stratified subsample keeps every class


def test_synthetic_defaults_and_options() -> None:
    ds = load_dataset("synthetic")
    assert (ds.kind, ds.input_shape, ds.num_classes) == ("vector", (32,), 4)
    assert sum(ds.sizes.values()) == 2000
    small = load_dataset("synthetic", options={"n_samples": 300, "n_features": 10, "n_classes": 3})
    assert small.input_shape == (10,)
    assert sum(small.sizes.values()) == 300
    assert set(small.y_train.tolist()) == {0, 1, 2}
    # data_seed changes the problem; seed only the split.
    other = load_dataset("synthetic", options={"data_seed": 1})
    assert other.sizes == ds.sizes
    assert not torch.allclose(ds.x_test, other.x_test)
    assert_same(ds, load_dataset("synthetic"))


def test_synthetic_tokens_plant_one_motif_per_class() -> None:
    ds = load_dataset("synthetic-tokens", options={"n_samples": 400, "seq_len": 20})
    assert (ds.kind, ds.input_shape, ds.num_classes, ds.vocab_size) == ("tokens", (20,), 4, 50)
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == torch.int64
        assert int(x.min()) >= 0
        assert int(x.max()) < 50
    motifs = ds.info["motifs"]
    assert len({tuple(m) for m in motifs}) == 4
    for seq, label in zip(ds.x_train.tolist(), ds.y_train.tolist(), strict=True):
        m = motifs[label]
        assert any(seq[i : i + len(m)] == m for i in range(len(seq) - len(m) + 1))
    assert_same(ds, load_dataset("synthetic-tokens", options={"n_samples": 400, "seq_len": 20}))
    with pytest.raises(DataError, match=r"motif_len <= seq_len, but got 8 > 5"):
        load_dataset("synthetic-tokens", options={"seq_len": 5, "motif_len": 8})


def test_synthetic_tokens_are_learnable_by_a_small_lstm() -> None:
    ds = load_dataset("synthetic-tokens", seed=0)
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self, vocab: int, classes: int) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, 16)
            self.lstm = torch.nn.LSTM(16, 32, batch_first=True)
            self.head = torch.nn.Linear(32, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(self.embed(x))  # (B, T, 32)
            return self.head(h[:, -1])

    assert ds.vocab_size is not None
    net = Net(ds.vocab_size, ds.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        for batch in torch.randperm(ds.sizes["train"]).split(64):
            loss = torch.nn.functional.cross_entropy(net(ds.x_train[batch]), ds.y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (net(ds.x_val).argmax(1) == ds.y_val).float().mean().item()
    assert accuracy > 0.9


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_mnist1d_is_generated_offline_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d
    import mnist1d.data

    from midl_autok.data.mnist1d import MNIST1D_ARGS

    defaults = mnist1d.get_dataset_args(as_dict=True)
    defaults.pop("url")
    assert defaults == MNIST1D_ARGS  # we generate with the package's own defaults

    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(tmp_path / "cache"))
    np.random.seed(123)
    random.seed(123)
    expected_next = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d", seed=0)
    assert (np.random.rand(), random.random()) == expected_next  # global seeding was undone
    assert (ds.kind, ds.input_shape, ds.num_classes) == ("vector", (40,), 10)
    assert ds.sizes == {"train": 3200, "val": 800, "test": 1000}
    assert ds.info["official_test_split"] is True
    cache = Path(ds.info["cache"])
    assert cache.parent == tmp_path / "cache"
    assert cache.suffix == ".npz"
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left
    stamp = cache.stat().st_mtime_ns

    def no_regeneration(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mnist1d regenerated although it was cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_regeneration)
    again = load_dataset("mnist1d", seed=0)
    assert_same(ds, again)
    assert cache.stat().st_mtime_ns == stamp
    assert not torch.equal(load_dataset("mnist1d", seed=1).y_train, ds.y_train)


@pytest.mark.usefixtures("offline")
def test_mnist1d_rebuilds_a_corrupt_cache_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(tmp_path))
    first = load_dataset("mnist1d", options={"num_samples": 200})
    assert sum(first.sizes.values()) == 200
    Path(first.info["cache"]).write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        second = load_dataset("mnist1d", options={"num_samples": 200})
    assert_same(first, second)
    assert (
        first.info["cache"] != load_dataset("mnist1d", options={"num_samples": 100}).info["cache"]
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [("digits", {}), ("synthetic", {"n_samples": 300, "n_features": 12, "n_classes": 3})],
)
def test_sklearn_data_sets_are_cached_and_read_back_without_sklearn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, options: dict[str, Any]
) -> None:
    """The first load makes the arrays with scikit-learn and caches them; a fresh process then
    reads the same data set without importing scikit-learn (~1.5 s per trial process)."""
    import subprocess
    import sys

    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(tmp_path))
    first = load_dataset(name, options=options, seed=3)
    (cache,) = tmp_path.iterdir()
    assert cache.name.startswith(f"{name}-") and cache.suffix == ".npz"
    stamp = cache.stat().st_mtime_ns
    assert_same(first, load_dataset(name, options=options, seed=3))
    assert cache.stat().st_mtime_ns == stamp
    probe = (
        "import sys, torch\n"
        "from midl_autok.data import load_dataset\n"
        f"ds = load_dataset({name!r}, options={options!r}, seed=3)\n"
        "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n"
        "torch.save({'x': ds.x_train, 'y': ds.y_train, 't': ds.x_test, 'info': ds.info}, "
        "sys.argv[1])\n"
    )
    out = tmp_path / "probe.pt"
    done = subprocess.run(
        [sys.executable, "-c", probe, str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = torch.load(out, weights_only=True)
    assert torch.equal(seen["x"], first.x_train) and torch.equal(seen["y"], first.y_train)
    assert torch.equal(seen["t"], first.x_test)
    assert seen["info"] == first.info
    # what is cached is what scikit-learn makes
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        assert first.info["feature_names"] == list(bunch.feature_names)
        assert sum(first.sizes.values()) == len(bunch.target)
    # other options, another file; a corrupt file is made again
    load_dataset("synthetic", options={"n_samples": 200}, seed=3)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    cache.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable cache file"):
        assert_same(first, load_dataset(name, options=options, seed=3))


def test_synthetic_is_make_classification_whether_made_or_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import make_classification

    from midl_autok.data._source import Request
    from midl_autok.data.generated import load_synthetic
    from midl_autok.data.registry import _REGISTRY, resolve_options

    monkeypatch.setenv("MIDL_AUTOK_CACHE", str(tmp_path))
    given = {"n_samples": 150, "n_features": 10, "n_classes": 2}
    options = resolve_options("synthetic", _REGISTRY["synthetic"].options, given)
    o = dict(options)
    seed = o.pop("data_seed")
    o["n_informative"] = o["n_informative"] or max(2, o["n_features"] // 2)
    o["n_redundant"] = o["n_redundant"] if o["n_redundant"] is not None else o["n_features"] // 4
    x, y = make_classification(**o, shuffle=True, random_state=seed)
    for _ in range(2):  # made, then read back
        source = load_synthetic(Request("synthetic", None, None, dict(options)))
        np.testing.assert_array_equal(source.x, x)
        np.testing.assert_array_equal(source.y, y)
    assert len(list(tmp_path.glob("synthetic-*.npz"))) == 1


# --------------------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_idx_files_are_read(tmp_path: Path, gz: bool, name: str) -> None:
    made = make_mnist_dir(tmp_path, gz=gz)
    ds = load_dataset(name, path=tmp_path, seed=0)
    assert ds.num_classes == 10
    assert ds.info["official_test_split"] is True
    assert ds.sizes == {"train": 48, "val": 12, "test": 20}
    np.testing.assert_array_equal(ds.y_test.numpy(), made["y_test"])  # official order kept
    assert_images_intact(ds, 1, 28)
    assert ds.info["classes"][0] == ("T-shirt/top" if name == "fashion-mnist" else "0")
    assert_same(ds, load_dataset(name, path=tmp_path, seed=0))
    assert not torch.equal(load_dataset(name, path=tmp_path, seed=1).x_train, ds.x_train)


def test_mnist_in_torchvision_layout_and_max_samples(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path / "MNIST" / "raw", n_train=100, n_test=50)
    ds = load_dataset("mnist", path=tmp_path, max_samples=40)
    assert ds.sizes == {"train": 32, "val": 8, "test": 20}
    assert ds.info["pool_size"] == 100
    assert ds.info["test_size_uncapped"] == 50


def test_mnist_missing_file(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", path=tmp_path)


def test_idx_truncated_file(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated: .*\(60, 28, 28\)"):
        load_dataset("mnist", path=tmp_path)


def test_idx_truncated_header(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0]))
    with pytest.raises(DataError, match=r"truncated inside its IDX header"):
        load_dataset("mnist", path=tmp_path)


def test_idx_wrong_magic_number(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b" + path.read_bytes()[2:])
    with pytest.raises(DataError, match=r"is not an IDX file: magic number 0x1f8b0801"):
        load_dataset("mnist", path=tmp_path)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(
        DataError, match=r"cannot read .*t10k-images-idx3-ubyte.gz: .*fetch it again"
    ):
        load_dataset("mnist", path=tmp_path)


def test_idx_label_count_and_range_are_checked(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(59, dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected 60 labels to match train-images-idx3-ubyte"):
        load_dataset("mnist", path=tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(60, 12, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in 0..9, but range over 12..12"):
        load_dataset("mnist", path=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((60, 28, 28)), type_code=0x0C)
    with pytest.raises(DataError, match=r"expected uint8 images of shape \(N, H, W\), got >i4"):
        load_dataset("mnist", path=tmp_path)


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar10_batches(tmp_path: Path, protocol: int, point_at: str) -> None:
    folder = write_cifar10(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", path=tmp_path if point_at == "parent" else folder)
    assert ds.num_classes == 10
    assert ds.sizes == {"train": 48, "val": 12, "test": 20}
    assert ds.info["classes"][:2] == ["airplane", "automobile"]
    assert_images_intact(ds, 3, 32)


def test_cifar10_original_python2_pickles(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(py2_cifar_batch(np.arange(30) % 10))
    ds = load_dataset("cifar10", path=folder)
    assert ds.sizes["train"] + ds.sizes["val"] == 30 + 4 * 12
    assert_images_intact(ds, 3, 32)


@pytest.mark.parametrize(("mode", "classes"), [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse_labels(tmp_path: Path, mode: str, classes: int) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = np.arange(50) * 7 % 100
    coarse = fine // 5
    train = cifar_batch(fine, "fine_labels", coarse_labels=[int(v) for v in coarse])
    test = cifar_batch(fine[:20], "fine_labels", coarse_labels=[int(v) for v in coarse[:20]])
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    (folder / "test").write_bytes(pickle.dumps(test, protocol=2))
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    ds = load_dataset("cifar100", path=tmp_path, options={"label_mode": mode})
    assert ds.num_classes == classes
    assert ds.info["classes"][1] == f"{mode}1"
    expected = (fine if mode == "fine" else coarse)[:20]
    np.testing.assert_array_equal(ds.y_test.numpy(), expected)
    # Images still line up with their own (fine) labels: the corner pixel holds 200 + fine % 56.
    corner = recover_uint8(ds, ds.x_test)[:, 0, 0, 0]
    np.testing.assert_array_equal(corner, 200 + fine[:20] % 56)
    with pytest.raises(DataError, match=r"option 'label_mode' .* must be one of fine, coarse"):
        load_dataset("cifar100", path=tmp_path, options={"label_mode": "both"})


class _Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, protocol: int) -> None:
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = cifar_batch(np.arange(12) % 10, "labels")
    batch[b"labels"] = _Exploit(f"touch {marker}")
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError, match=r"data_batch_3: refusing to load '(posix|nt|os)\.system'"):
        load_dataset("cifar10", path=folder)
    assert not marker.exists()


def test_pickle_globals_outside_numpy_are_refused(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    payload = pickle.dumps({b"data": eval, b"labels": []}, protocol=2)  # builtins.eval by name
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match=r"refusing to load '__builtin__\.eval'"):
        load_dataset("cifar10", path=folder)


def test_corrupt_and_wrong_cifar_batches(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    batch_file = folder / "data_batch_2"
    batch_file.write_bytes(batch_file.read_bytes()[:200])
    with pytest.raises(DataError, match=r"data_batch_2 is not a readable CIFAR batch"):
        load_dataset("cifar10", path=folder)
    batch_file.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match=r"expected a dict \(a CIFAR batch\), got list"):
        load_dataset("cifar10", path=folder)
    batch_file.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2))
    with pytest.raises(DataError, match=r"missing key 'labels' \(found data\)"):
        load_dataset("cifar10", path=folder)
    wrong = cifar_batch(np.arange(4), "labels")
    wrong[b"data"] = wrong[b"data"][:, :100]
    batch_file.write_bytes(pickle.dumps(wrong, protocol=2))
    with pytest.raises(DataError, match=r"3072 values and N labels, got data \(4, 100\)"):
        load_dataset("cifar10", path=folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"missing test_batch in .*cifar-10-batches-py"):
        load_dataset("cifar10", path=tmp_path)


# --------------------------------------------------------------------------- SVHN


def test_svhn_mat_files(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    ds = load_dataset("svhn", path=tmp_path)
    assert ds.num_classes == 10
    assert ds.sizes == {"train": 32, "val": 8, "test": 20}
    np.testing.assert_array_equal(ds.y_test.numpy(), np.arange(20) % 10)  # label 10 -> digit 0
    assert int(ds.y_train.max()) == 9
    assert_images_intact(ds, 3, 32)


def test_svhn_errors(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    with pytest.raises(DataError, match=r"missing extra_32x32.mat"):
        load_dataset("svhn", path=tmp_path, options={"extra": True})
    with pytest.raises(DataError, match=r"option 'extra' of dataset 'svhn' must be true or false"):
        load_dataset("svhn", path=tmp_path, options={"extra": "yes"})
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB garbage" * 20)
    with pytest.raises(DataError, match=r"test_32x32.mat is not a readable MATLAB v5 file"):
        load_dataset("svhn", path=tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(DataError, match=r"expected variables 'X' and 'y'"):
        load_dataset("svhn", path=tmp_path)
    (tmp_path / "train_32x32.mat").unlink()
    with pytest.raises(DataError, match=r"missing train_32x32.mat"):
        load_dataset("svhn", path=tmp_path)


# --------------------------------------------------------------------------- hostile files


def idx_header(dims: tuple[int, ...], type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_idx_with_more_than_64_dimensions_is_one_line(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_header((1,) * 65) + b"\0")
    with pytest.raises(DataError, match=r"declares 65 dimensions, more than the 64"):
        load_dataset("mnist", path=tmp_path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_announcing_gigabytes_is_refused_from_its_header(tmp_path: Path, gz: bool) -> None:
    """3.3 GB announced by a 16-byte header: refused before anything is allocated or read."""
    make_mnist_dir(tmp_path)
    name = "train-images-idx3-ubyte"
    (tmp_path / name).unlink()
    path = tmp_path / (name + (".gz" if gz else ""))
    header = idx_header((4_200_000, 28, 28))
    path.write_bytes(gzip.compress(header) if gz else header)
    with pytest.raises(DataError, match=r"declares shape \(4200000, 28, 28\) \(3,292,800,000 data"):
        load_dataset("mnist", path=tmp_path)


@pytest.mark.timeout(60)
def test_a_gzip_bomb_is_inflated_no_further_than_its_header_announces(tmp_path: Path) -> None:
    """A 1.5 MB .gz that inflates to 3.3 GB behind a header announcing 60 images: the reader
    stops after the announced 47 kB and one byte more; memory stays small."""
    import time
    import tracemalloc

    make_mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9)  # one member: 1 MiB of zeros, ~1 kB
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with bomb.open("wb") as fh:
        fh.write(gzip.compress(idx_header((60, 28, 28))))
        for _ in range(3150):  # concatenated members, as gzip allows: 3.3 GB inflated
            fh.write(zeros)
    assert bomb.stat().st_size < 4_000_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError, match=r"corrupt \(extra bytes\).*\(60, 28, 28\)"):
            load_dataset("mnist", path=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 20
    assert peak < 64 << 20, f"peak {peak:,} bytes: the bomb was inflated"


def test_idx_train_and_test_images_of_different_sizes(tmp_path: Path) -> None:
    make_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(
        DataError,
        match=r"images of train-images-idx3-ubyte are 28x28 .* t10k-images-idx3-ubyte are 20x20",
    ):
        load_dataset("mnist", path=tmp_path)


def test_svhn_train_and_test_images_of_different_sizes(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    y = np.ones((3, 1), np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((28, 28, 3, 3), np.uint8), "y": y})
    with pytest.raises(DataError, match=r"train_32x32.mat are 32x32 .* test_32x32.mat are 28x28"):
        load_dataset("svhn", path=tmp_path)
    write_svhn(tmp_path)
    scipy.io.savemat(
        tmp_path / "extra_32x32.mat", {"X": np.zeros((28, 28, 3, 3), np.uint8), "y": y}
    )
    with pytest.raises(DataError, match=r"extra_32x32.mat are 28x28"):
        load_dataset("svhn", path=tmp_path, options={"extra": True})


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (None, r"'labels' must be a list of integer labels, but got NoneType"),
        ({b"a": 1}, r"'labels' must be a list of integer labels, but got dict"),
        ([[1, 2], [3]], r"'labels' must be a list of integer labels, but got a list holding list"),
        ([1.5] * 12, r"a list holding float"),
        ([2**70] * 12, r"too large"),
        ("0123456789ab", r"but got str"),
    ],
)
def test_malformed_cifar_labels_are_one_line(tmp_path: Path, labels: Any, match: str) -> None:
    folder = write_cifar10(tmp_path)
    batch = cifar_batch(np.arange(12) % 10, "labels")
    batch[b"labels"] = labels
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: .*" + match):
        load_dataset("cifar10", path=folder)


def test_data_files_must_be_regular_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO or a device where a data file belongs: one line, never a hang or an endless read."""
    table = tmp_path / "table.csv"
    os.mkfifo(table)
    with pytest.raises(DataError, match=r"is not a file"):
        load_dataset("csv", path=table, target="y")
    write_svhn(tmp_path / "svhn")
    from midl_autok.data import svhn

    monkeypatch.setattr(svhn, "MAX_MAT_BYTES", 100)
    with pytest.raises(DataError, match=r"train_32x32.mat: file is larger than 100 bytes"):
        load_dataset("svhn", path=tmp_path / "svhn")


# --------------------------------------------------------------------------- CSV


def write_adult_like(path: Path, n: int = 120) -> list[dict[str, str]]:
    """A small UCI-Adult-like table: spaces after commas, '?' and blanks for missing values."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        income = ">50K" if i % 3 == 0 else "<=50K"
        rows.append(
            {
                "id": str(i),
                "age": "?" if i % 10 == 4 else str(int(rng.integers(18, 80))),
                "workclass": "" if i % 7 == 2 else ["Private", "State-gov", "Self-emp"][i % 3],
                "city": f"town{i}" if i % 12 == 5 else "metro",  # some rare categories
                "income": income,
            }
        )
    lines = ["id, age, workclass, city, income"]
    lines += [", ".join(r.values()) for r in rows]
    path.write_text("\n".join(lines) + "\n\n")
    return rows


def test_csv_table(tmp_path: Path) -> None:
    path = tmp_path / "adult.csv"
    rows = write_adult_like(path)
    ds = load_dataset("csv", path=path, target="income", seed=0)
    assert (ds.kind, ds.num_classes) == ("vector", 2)
    assert ds.info["classes"] == ["<=50K", ">50K"]  # whitespace stripped, sorted
    assert ds.info["numeric_columns"] == ["id", "age"]
    assert sum(ds.sizes.values()) == 120
    assert ds.x_train.dtype == torch.float32

    names = ds.info["feature_names"]
    cats = ds.info["categorical_columns"]
    assert cats["workclass"][0] == "<missing>"  # missing values get their own category
    assert set(cats["workclass"]) == {"<missing>", "Private", "Self-emp", "State-gov"}
    assert ds.input_shape == (len(names),)

    # Recover which source row each sample is, from the standardized 'id' column.
    stats = ds.info["standardization"]
    ids = {
        part: np.round(x[:, 0].double().numpy() * stats["std"]["id"] + stats["mean"]["id"])
        for part, x in (("train", ds.x_train), ("val", ds.x_val), ("test", ds.x_test))
    }
    train_rows = [rows[int(i)] for i in ids["train"]]
    assert sorted(np.concatenate(list(ids.values())).astype(int).tolist()) == list(range(120))
    for part, y in (("train", ds.y_train), ("val", ds.y_val), ("test", ds.y_test)):
        labels = [int(rows[int(i)]["income"] == ">50K") for i in ids[part]]
        assert y.tolist() == labels

    # age: missing -> train mean; standardized with train-only statistics.
    ages = np.array([float(r["age"]) for r in train_rows if r["age"] != "?"])
    mean = ages.mean()
    filled = np.array([mean if r["age"] == "?" else float(r["age"]) for r in train_rows])
    assert stats["mean"]["age"] == pytest.approx(mean)
    assert stats["std"]["age"] == pytest.approx(filled.std())
    col = names.index("age")
    assert float(ds.x_train[:, col].mean()) == pytest.approx(0, abs=1e-5)
    assert float(ds.x_train[:, col].std(unbiased=False)) == pytest.approx(1, abs=1e-4)
    for part, x in (("val", ds.x_val), ("test", ds.x_test)):
        for i, value in zip(ids[part], x[:, col].tolist(), strict=True):
            age = rows[int(i)]["age"]
            expected = (mean if age == "?" else float(age)) - mean
            assert value == pytest.approx(expected / filled.std(), abs=1e-4)

    # city: categories learned on train only; one seen only outside train maps to all zeros.
    train_cities = {r["city"] for r in train_rows}
    assert set(cats["city"]) == train_cities
    city_cols = [names.index(f"city={c}") for c in cats["city"]]
    unseen = 0
    for part, x in (("val", ds.x_val), ("test", ds.x_test)):
        for i, onehot in zip(ids[part], x[:, city_cols].tolist(), strict=True):
            city = rows[int(i)]["city"]
            expected_row = [float(city == c) for c in cats["city"]]
            assert onehot == expected_row
            unseen += city not in train_cities
    assert unseen > 0


def test_csv_without_header_uses_the_columns_option(tmp_path: Path) -> None:
    path = tmp_path / "adult.data"
    path.write_text("".join(f"{i}, {'a' if i % 2 else 'b'}, {i % 2}\n" for i in range(40)))
    ds = load_dataset(
        "csv", path=path, target="label", options={"columns": ["x", "letter", "label"]}
    )
    assert ds.info["classes"] == ["0", "1"]
    assert ds.info["feature_names"] == ["x", "letter=a", "letter=b"]


def test_csv_numeric_labels_sort_by_value(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("f,y\n" + "".join(f"{i},{[2, 10, 1][i % 3]}\n" for i in range(30)))
    ds = load_dataset("csv", path=path, target="y")
    assert ds.info["classes"] == ["1", "2", "10"]


def test_csv_target_problems_list_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "adult.csv"
    write_adult_like(path)
    expected = r"has no column 'incme'; did you mean 'income'\?; columns: id, age, workclass, city"
    with pytest.raises(DataError, match=expected):
        load_dataset("csv", path=path, target="incme")
    with pytest.raises(DataError, match=r"needs target=<column>; columns: id, age, workclass"):
        load_dataset("csv", path=path)


def test_csv_malformed_tables(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b,y\n1,2,x\n3,4\n")
    with pytest.raises(DataError, match=r"line 3 has 2 fields but the header has 3"):
        load_dataset("csv", path=path, target="y")
    path.write_text("a,y\n1,x\n2,x\n3,x\n")
    with pytest.raises(DataError, match=r"target column 'y' has 1 class"):
        load_dataset("csv", path=path, target="y")
    path.write_text("a,a,y\n1,2,x\n")
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        load_dataset("csv", path=path, target="y")
    path.write_bytes(b"a,y\n\xff\xfe,1\n")
    with pytest.raises(DataError, match=r"cannot read CSV file"):
        load_dataset("csv", path=path, target="y")
    path.write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match=r"option 'delimiter' must be one character"):
        load_dataset("csv", path=path, target="y", options={"delimiter": ";;"})


def test_csv_rows_without_target_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,y\n" + "".join(f"{i},{'?' if i == 3 else i % 2}\n" for i in range(30)))
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) without a target"):
        ds = load_dataset("csv", path=path, target="y")
    assert sum(ds.sizes.values()) == 29
    assert ds.info["rows_dropped_missing_target"] == 1


# --------------------------------------------------------------------------- Dataset object


def test_dataset_object() -> None:
    ds = load_dataset("synthetic", options={"n_samples": 100})
    moved = ds.to("cpu")
    assert moved is not ds
    assert moved.sizes == ds.sizes == {"train": 64, "val": 16, "test": 20}
    assert repr(ds).startswith("Dataset(name='synthetic', kind='vector', input_shape=(32,)")
    assert ds.info["sizes"] == ds.sizes
    with pytest.raises(AttributeError):
        ds.num_classes = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"train split has x"):
        Dataset("x", "vector", (3,), 2, *(torch.zeros(4, 3), torch.zeros(5, dtype=torch.int64)) * 3)
