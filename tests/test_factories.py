"""midl_autok.factories in Python: paths and functions, the data forms a factory may return,
the wrapper that lets the rest of the system schedule a user's module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from midl_autok import MIDL
from midl_autok.data import Dataset
from midl_autok.errors import DataError, SpecError
from midl_autok.experiment import build_for_spec, dataset_for_spec
from midl_autok.factories import (
    FactoryNet,
    as_dataset,
    build_factory_model,
    factory_path,
    rebuild_factory_model,
    with_factories,
)
from midl_autok.flops import cost_model
from midl_autok.spec import load_spec, validate_spec
from midl_autok.trainer import run_experiment

HERE = f"{__name__}"


class Net(nn.Module):
    def __init__(self, d_in: int, classes: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.mid = MIDL(width, width, gate_rank=4, light_rank=4)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.inp(x)))


def make_net(input_shape: tuple[int, ...], num_classes: int, *, width: int = 12) -> nn.Module:
    return Net(input_shape[0], num_classes, width)


def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = np.arange(150) % 3
    return rng.normal(0, 0.5, (150, 6)).astype(np.float32) + y[:, None], y


def test_a_function_becomes_its_import_path() -> None:
    assert factory_path(make_net) == f"{HERE}:make_net"
    assert factory_path("pkg.mod:Class.build") == "pkg.mod:Class.build"
    with pytest.raises(SpecError, match="a lambda, a nested function"):
        factory_path(lambda shape, classes: None)

    def nested() -> None: ...

    with pytest.raises(SpecError, match="define it at the top level of a module"):
        factory_path(nested)
    with pytest.raises(SpecError, match=r"import path 'package.module:function', but got 'x'"):
        factory_path("x")


def test_spec_fields_accept_functions_and_round_trip() -> None:
    spec = validate_spec(
        {"model": {"factory": make_net, "options": {"width": 8}}, "dataset": {"factory": blobs}}
    )
    assert spec.model.factory == f"{HERE}:make_net"
    assert spec.model.factory_options == {"width": 8}
    dumped = spec.model_dump(mode="json")
    assert dumped["model"]["options"] == {"width": 8}
    assert validate_spec(dumped) == spec
    # a spec without factories dumps as before (study identities of old stores unchanged)
    assert "factory" not in load_spec("digits-mlp").model_dump()["model"]
    assert "options" not in load_spec("digits-mlp").model_dump()["model"]


def test_spec_refuses_built_in_fields_beside_a_factory() -> None:
    with pytest.raises(SpecError, match=r"model\.hidden is for the built-in architectures"):
        validate_spec({"model": {"factory": "a:b", "hidden": [8]}})
    with pytest.raises(SpecError, match=r"dataset\.path and dataset\.target are for the built-in"):
        validate_spec({"dataset": {"factory": "a:b", "path": "/data"}})
    with pytest.raises(SpecError, match=r"model\.options are the arguments of model\.factory"):
        validate_spec({"model": {"options": {"width": 3}}})


def test_with_factories_resets_the_built_in_model() -> None:
    spec = with_factories(load_spec("digits-mlp"), model=make_net, data=f"{HERE}:blobs")
    assert spec.model.factory == f"{HERE}:make_net"
    assert spec.model.hidden is None and spec.model.arch == "mlp"  # defaults, unused
    assert spec.dataset.factory == f"{HERE}:blobs"


def test_a_factory_model_trains_under_a_schedule_and_replays() -> None:
    spec = with_factories(load_spec("digits-mlp"), model=make_net, data=blobs).override(
        **{"training.epochs": 2, "model.options": {"width": 16}}
    )
    data = dataset_for_spec(spec)
    assert data.sizes == {"train": 96, "val": 24, "test": 30}  # test 0.2 of 150, val 0.2 of 120
    model = build_for_spec(spec, data)
    assert isinstance(model, FactoryNet)
    assert [s.name for s in model.layer_specs()] == ["net.mid"]
    assert model.signature() == build_for_spec(spec, data).signature()
    other = spec.override(**{"model.options": {"width": 12}})
    assert build_for_spec(other, data).signature() != model.signature()
    schedule = model.schedule_template(2, 0.5)
    first = run_experiment(spec, schedule=schedule, data=data)
    again = run_experiment(spec, schedule=schedule, data=data)
    assert first.metrics["val_accuracy"] == again.metrics["val_accuracy"]
    assert first.metrics["k/net.mid"] == 8
    # FLOPs: the user's Linear layers count as dense, the MID-L layer at its k
    costs = cost_model(model, data.x_train[:1])
    assert [c.name for c in costs.layers] == ["net.inp", "net.mid", "net.out"]


def test_dense_twin_replaces_midl_layers_with_linear() -> None:
    model = build_factory_model(f"{HERE}:make_net", input_shape=(6,), num_classes=3)
    assert isinstance(model, FactoryNet)
    twin = model.dense_twin()
    assert not any(isinstance(m, MIDL) for m in twin.modules())
    assert isinstance(twin.mid[0], nn.Linear) and twin.mid[0].out_features == 12
    assert twin(torch.zeros(2, 6)).shape == (2, 3)
    assert any(isinstance(m, MIDL) for m in model.modules())  # the model is unchanged


class DenseNet(nn.Module):
    """Net's dense twin as a user writes it: an nn.Linear (then MIDL's ReLU) where MIDL is."""

    def __init__(self, d_in: int, classes: int, width: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.inp, self.mid = nn.Linear(d_in, width), nn.Linear(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(self.inp(x))))


@pytest.mark.parametrize("layout", ["named", "sequential"])
def test_a_factory_model_starts_from_its_dense_twins_checkpoint(tmp_path, layout: str) -> None:
    """model.init_from with a model factory: the checkpoint of the user's dense model (an
    nn.Linear named as the MID-L layer, or FactoryNet.dense_twin()'s Sequential(Linear,
    ReLU)) converts the factory's model, which at k = d computes the dense model (before
    session 10 init_from was ignored for factory models: the outputs were a fresh model's)."""
    dense = DenseNet(6, 3, 12)
    state = dense.state_dict()
    if layout == "sequential":
        state = {k.replace("mid.", "mid.0."): v for k, v in state.items()}
    path = tmp_path / "dense.pt"
    torch.save(state, path)
    spec = with_factories(load_spec("digits-mlp"), model=make_net, data=blobs).override(
        **{"model.init_from": str(path), "model.init_calibration": 64}
    )
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    assert isinstance(model, FactoryNet) and isinstance(model.net, Net)
    torch.testing.assert_close(model.net.inp.weight, dense.inp.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.net.out.bias, dense.out.bias, rtol=0, atol=0)
    model.eval()
    model.net.mid.k = None
    x = data.x_test
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), atol=1e-4, rtol=0)
        model.net.mid.k = 6  # and the light path is the (calibrated) SVD estimate, not noise
        half, scale = (model(x) - dense(x)).abs().max(), dense(x).abs().max()
    assert 0 < float(half) < 0.5 * float(scale)


def test_a_factory_checkpoint_that_does_not_fit_names_the_tensor(tmp_path) -> None:
    from midl_autok._midlify import CheckpointError

    path = tmp_path / "other.pt"
    torch.save(DenseNet(6, 3, 16).state_dict(), path)  # width 16, the model's is 12
    spec = with_factories(load_spec("digits-mlp"), model=make_net, data=blobs).override(
        **{"model.init_from": str(path)}
    )
    with pytest.raises(CheckpointError) as info:
        build_for_spec(spec, dataset_for_spec(spec))
    assert str(info.value) == (
        f"model.init_from: {path} does not fit the model (first difference at inp.weight: the "
        "model has (12, 6), the checkpoint has (16, 6)); give the weights of its dense twin: "
        "an nn.Linear where each MID-L layer is (or nn.Sequential(nn.Linear, activation)), "
        "every other tensor as in the model"
    )


def test_rebuild_needs_permission() -> None:
    config = {"factory": f"{HERE}:make_net", "options": {}, "input_shape": [6], "num_classes": 3}
    with pytest.raises(SpecError, match="allow_factory=True"):
        rebuild_factory_model(config)
    assert rebuild_factory_model(config, allowed=True).layer_specs()[0].width == 12


def test_data_forms() -> None:
    x, y = blobs()
    split = as_dataset((torch.from_numpy(x), torch.from_numpy(y)), name="t", seed=3)
    assert split.kind == "vector" and split.num_classes == 3
    assert sum(split.sizes.values()) == 150
    again = as_dataset((x, y), name="t", seed=3)
    assert torch.equal(split.x_val, again.x_val)  # seeded split, features unchanged
    assert torch.equal(split.x_train[0], torch.from_numpy(x[_row(x, split.x_train[0])]))
    three = as_dataset(((x[:90], y[:90]), (x[90:120], y[90:120]), (x[120:], y[120:])), name="t")
    assert three.sizes == {"train": 90, "val": 30, "test": 30}
    assert as_dataset(three, name="t") is three
    tokens = as_dataset((np.arange(40).reshape(10, 4) % 7, np.arange(10) % 2), name="t")
    assert tokens.kind == "tokens" and tokens.vocab_size == 7
    images = as_dataset((np.zeros((30, 1, 4, 4)), np.arange(30) % 3), name="t")
    assert images.kind == "image" and images.input_shape == (1, 4, 4)


def _row(x: np.ndarray, row: torch.Tensor) -> int:
    return int(np.flatnonzero((x == row.numpy()).all(axis=1))[0])


@pytest.mark.parametrize(
    ("result", "pattern"),
    [
        ("digits", r"returned a str; return a midl_autok\.Dataset"),
        ((1, 2, 3, 4), r"returned a tuple of 4 items"),
        ((np.zeros((5, 2)), np.zeros(4, dtype=int)), r"one row per label; got X \(5, 2\)"),
        ((np.zeros((5, 2)), np.zeros(5)), r"y must be a 1-D array of integer labels"),
        ((np.zeros(5), np.zeros(5, dtype=int)), r"X must have shape \(N, \.\.\.\)"),
        ((np.zeros((5, 2, 2), np.float32), np.zeros(5, dtype=int)), r"got shape \(5, 2, 2\)"),
        ((np.zeros((5, 2)), -np.ones(5, dtype=int)), r"labels must be integers 0 \.\. C-1"),
        (([1, 2], np.zeros(2, dtype=int)), r"expected a NumPy array or a torch tensor"),
        (
            ((np.zeros((4, 2)), np.zeros(4, int)), (np.zeros((4, 3)), np.zeros(4, int)), ()),
            r"the test part must be a pair",
        ),
        (
            ((np.zeros((4, 2)), np.zeros(4, int)),) * 2 + ((np.zeros((4, 3)), np.zeros(4, int)),),
            r"the parts differ",
        ),
    ],
)
def test_bad_data_is_one_line(result: object, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern) as info:
        as_dataset(result, name="u:f")
    assert "\n" not in str(info.value)


def test_a_returned_dataset_is_used_as_is() -> None:
    x = torch.zeros(4, 2)
    y = torch.zeros(4, dtype=torch.int64)
    ds = Dataset("mine", "vector", (2,), 2, x, y, x, y, x, y)
    assert as_dataset(ds, name="u:f") is ds


def test_the_rl_environment_schedules_a_factory_model() -> None:
    """The RL agents' environment builds its models from the same factories."""
    from midl_autok.env import TopKScheduleEnv

    spec = with_factories(load_spec("digits-mlp"), model=make_net, data=blobs).override(
        **{"training.epochs": 2, "training.batch_size": 32}
    )
    env = TopKScheduleEnv(spec, device="cpu")
    assert [s.name for s in env.layers] == ["net.mid"]
    env.reset(seed=0)
    done = False
    while not done:
        _, reward, terminated, truncated, info = env.step(np.zeros(1, dtype=np.float32))
        done = terminated or truncated
    assert np.isfinite(reward)
    assert 0 < info["k"]["net.mid"] <= 12
