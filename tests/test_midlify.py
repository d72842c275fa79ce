"""`midlify` (convert nn.Linear layers to MID-L) and `model.init_from` (fine-tune from a dense
checkpoint): the converted model starts where the dense one was."""

from __future__ import annotations

import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch
from clikit import cli_env, run_cli
from torch import nn

import midl_autok
from midl_autok._midlify import CheckpointError, init_from_checkpoint, init_midl_from_linear
from midl_autok.errors import UserError
from midl_autok.experiment import build_for_spec, dataset_for_spec
from midl_autok.layers import MIDL
from midl_autok.spec import load_spec

#: At k = d, before any fine-tuning, a converted model's outputs differ from the dense
#: model's by at most this (absolute; outputs here are O(1)). The analytic bound is
#: ``gate_scale * ||x|| * |W x + b - l| / 2`` per layer (see midl_autok/_midlify.py).
K_EQUALS_D_ATOL = 1e-4


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5)
    )


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))  # residual


class Nested(nn.Module):
    """Linear layers at several depths: a ModuleList of blocks, a ModuleDict, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = nn.Linear(16, 24)
        self.blocks = nn.ModuleList([Block(24), Block(24)])
        self.heads = nn.ModuleDict({"aux": nn.Sequential(nn.Linear(24, 24), nn.GELU())})
        self.classifier = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.heads["aux"](h))


#: ``Nested``'s hidden linear layers, in module order (all of its linears but the classifier).
HIDDEN = ["stem", "blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2", "heads.aux.0"]


def outputs(model: nn.Module, x: torch.Tensor, *, train: bool) -> torch.Tensor:
    model.train(train)
    with torch.set_grad_enabled(train):
        return model(x).detach()


@pytest.mark.parametrize("make", [mlp, Nested], ids=["mlp", "nested"])
def test_at_k_equal_d_the_converted_model_reproduces_the_dense_one(make) -> None:
    dense = make()
    x = torch.randn(300, 32 if make is mlp else 16, generator=torch.Generator().manual_seed(2))
    ref = outputs(dense, x, train=False)
    model, schedule = midl_autok.midlify(make(), k_fraction=1.0)
    assert all(k == (layer.width,) for layer, k in zip(schedule.layers, schedule.k, strict=True))
    for train in (False, True):  # the eval paths and the training path
        torch.testing.assert_close(
            outputs(model, x, train=train), ref, atol=K_EQUALS_D_ATOL, rtol=0
        )
    # at k < d it is a different function: the test above can fail
    for layer in (m for m in model.modules() if isinstance(m, MIDL)):
        layer.k = layer.out_features // 4
    assert (outputs(model, x, train=False) - ref).abs().max() > 10 * K_EQUALS_D_ATOL


def test_default_select_converts_hidden_layers_not_the_classifier() -> None:
    model, schedule = midl_autok.midlify(Nested(), k_fraction=0.5)
    names = [s.name for s in schedule.layers]
    assert names == HIDDEN
    assert type(model.classifier) is nn.Linear
    assert [model.get_submodule(n).k for n in names] == [12, 24, 12, 24, 12, 12]
    assert schedule.k[0] == (12,) and schedule.epochs == 1

    m, s = midl_autok.midlify(mlp())
    assert [x.name for x in s.layers] == ["0", "2"] and type(m[4]) is nn.Linear


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("blocks.*.fc1", ["blocks.0.fc1", "blocks.1.fc1"]),
        (re.compile(r"blocks\.1\..*|stem"), ["stem", "blocks.1.fc1", "blocks.1.fc2"]),
        (nn.Linear, [*HIDDEN, "classifier"]),
        (lambda name, m: m.out_features == 48, ["blocks.0.fc1", "blocks.1.fc1"]),
    ],
    ids=["glob", "regex", "type", "callable"],
)
def test_select_by_pattern_type_or_callable(select, expected) -> None:
    model, schedule = midl_autok.midlify(Nested(), select=select)
    assert [s.name for s in schedule.layers] == expected
    converted = [n for n, m in model.named_modules() if isinstance(m, MIDL)]
    assert converted == expected


def test_a_select_that_matches_nothing_is_one_user_error_line() -> None:
    with pytest.raises(UserError, match=r"select='decoder\.\*' matches no nn.Linear layer") as err:
        midl_autok.midlify(Nested(), select="decoder.*")
    assert "\n" not in str(err.value) and "stem, blocks.0.fc1" in str(err.value)
    with pytest.raises(UserError, match="select must be a glob pattern"):
        midl_autok.midlify(Nested(), select=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("rank", [1, 4, 12])
def test_the_light_path_is_the_truncated_svd(rank: int) -> None:
    torch.manual_seed(3)
    linear = nn.Linear(20, 30).double()
    layer = MIDL(20, 30, gate_rank=4, light_rank=rank, activation="identity").double()
    init_midl_from_linear(layer, linear.weight, linear.bias)
    assert layer.light_in is not None and layer.light_out is not None
    w = linear.weight.detach()
    s = torch.linalg.svdvals(w)
    error = w - layer.light_out.detach() @ layer.light_in.detach()
    # Eckart-Young: the best rank-r error is the tail of the singular values
    torch.testing.assert_close(torch.linalg.matrix_norm(error, ord=2), s[rank])
    torch.testing.assert_close(torch.linalg.matrix_norm(error), s[rank:].square().sum().sqrt())
    torch.testing.assert_close(layer.light_bias, linear.bias)
    # a random light path is much worse
    rand = MIDL(20, 30, gate_rank=4, light_rank=rank, activation="identity").double()
    init_midl_from_linear(rand, linear.weight, linear.bias, init="random")
    assert rand.light_in is not None and rand.light_out is not None
    worse = w - rand.light_out.detach() @ rand.light_in.detach()
    assert torch.linalg.matrix_norm(worse) > 1.2 * torch.linalg.matrix_norm(error)


def test_a_light_rank_above_the_rank_of_w_is_exact() -> None:
    linear = nn.Linear(6, 40)
    layer = MIDL(6, 40, gate_rank=8, light_rank=10, activation="identity")
    init_midl_from_linear(layer, linear.weight, linear.bias)
    assert layer.light_in is not None and layer.light_out is not None
    product = layer.light_out.detach() @ layer.light_in.detach()
    torch.testing.assert_close(product, linear.weight.detach(), atol=1e-5, rtol=0)
    assert layer.light_out.detach()[:, 6:].abs().max() == 0  # unused columns: zero, still learn


def correlated_inputs(n: int, d_in: int, seed: int) -> torch.Tensor:
    """Inputs that vary along a few directions only, around a mean far from 0."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, d_in, generator=g, dtype=torch.float64)
    return 3.0 + torch.randn(n, 4, generator=g, dtype=torch.float64) @ basis


def test_calibration_fits_the_light_path_to_the_inputs_it_sees() -> None:
    torch.manual_seed(4)
    linear = nn.Linear(20, 30).double()
    x = correlated_inputs(500, 20, seed=0)
    held_out = correlated_inputs(500, 20, seed=0)[250:]  # the same distribution
    dense = linear(held_out).detach()

    def light_error(inputs: torch.Tensor | None) -> float:
        layer = MIDL(20, 30, gate_rank=4, light_rank=4, activation="identity").double()
        init_midl_from_linear(layer, linear.weight, linear.bias, inputs=inputs)
        assert layer.light_in is not None and layer.light_out is not None
        light = held_out @ (layer.light_out @ layer.light_in).T + layer.light_bias
        return float((light.detach() - dense).square().mean())

    plain, fitted = light_error(None), light_error(x)
    # rank 4 = the inputs' 4 directions (+ the mean, which the bias absorbs): near exact
    assert fitted < 1e-3 * plain
    # and k = d still reproduces the dense layer whatever the light path
    layer = MIDL(20, 30, gate_rank=4, light_rank=4, activation="identity").double()
    init_midl_from_linear(layer, linear.weight, linear.bias, inputs=x)
    layer.eval()
    torch.testing.assert_close(layer(held_out), dense, atol=1e-3, rtol=0)


@pytest.mark.parametrize("form", ["tensor", "list"])
def test_midlify_with_calibration_keeps_k_equal_d_and_helps_at_small_k(form: str) -> None:
    x = 0.25 * correlated_inputs(256, 32, seed=1).float()  # outputs O(1), as the tolerance
    dense = mlp()
    ref = outputs(dense, x, train=False)
    batches = x if form == "tensor" else list(x.split(100))
    plain, _ = midl_autok.midlify(mlp(), light_rank=8)
    fitted, _ = midl_autok.midlify(mlp(), light_rank=8, calibration=batches)
    assert fitted.training  # the calibration pass left the mode as it was
    for model in (plain, fitted):
        model.eval()
        for layer in model.modules():
            if isinstance(layer, MIDL):
                layer.k = None
        torch.testing.assert_close(
            outputs(model, x, train=False), ref, atol=K_EQUALS_D_ATOL, rtol=0
        )

    def error_at_small_k(model: nn.Module) -> float:
        for layer in model.modules():
            if isinstance(layer, MIDL):
                layer.k = layer.out_features // 4
        return float((outputs(model, x, train=False) - ref).square().mean())

    assert error_at_small_k(fitted) < error_at_small_k(plain)


def test_bad_calibration_is_one_user_error() -> None:
    with pytest.raises(UserError, match="calibration must be a tensor"):
        midl_autok.midlify(mlp(), calibration=[1, 2])  # type: ignore[list-item]
    with pytest.raises(UserError, match="not finite"):
        midl_autok.midlify(mlp(), calibration=torch.full((4, 32), float("nan")))
    with pytest.raises(UserError, match="not finite"):  # no fitted light path: the error gate
        midl_autok.midlify(
            mlp(), init="random", gate="error", calibration=torch.full((4, 32), float("nan"))
        )


# the winners here: error, data (at k = d/2), error: auto is not one kind every time
@pytest.mark.parametrize(
    ("make", "k_fraction"),
    [(mlp, 0.25), (mlp, 0.5), (Nested, 0.25)],
    ids=["mlp", "mlp-d/2", "nested"],
)
def test_gate_auto_keeps_the_gate_closer_to_the_dense_outputs(make, k_fraction: float) -> None:
    d_in = 32 if make is mlp else 16
    x = 0.25 * correlated_inputs(256, d_in, seed=2).float()
    x = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    ref = outputs(make(), x, train=False)

    def converted(gate: str) -> nn.Module:
        model, _ = midl_autok.midlify(
            make(), k_fraction=k_fraction, light_rank=4, gate_rank=4, calibration=x, gate=gate
        )
        return model.eval()

    def error(model: nn.Module) -> float:
        return float((outputs(model, x, train=False) - ref).square().sum())

    kinds = ("svd", "data", "error")
    models = {gate: converted(gate) for gate in (*kinds, "auto")}
    errors = {gate: error(model) for gate, model in models.items()}
    assert len({errors[kind] for kind in kinds}) == 3  # the gates rank differently here
    best = min(kinds, key=errors.__getitem__)
    # auto = the best of the three, gate for gate, and its k is the template's again
    assert errors["auto"] == pytest.approx(errors[best], rel=1e-6)
    for (name, layer), (_, other) in zip(
        models["auto"].named_modules(), models[best].named_modules(), strict=True
    ):
        if isinstance(layer, MIDL):
            torch.testing.assert_close(layer.gate_in, other.gate_in, msg=name)
            assert layer.k == other.k == max(1, round(layer.out_features * k_fraction))
    for model in models.values():  # every gate keeps k = d at the dense outputs
        for layer in model.modules():
            if isinstance(layer, MIDL):
                layer.k = None
        torch.testing.assert_close(
            outputs(model, x, train=False), ref, atol=K_EQUALS_D_ATOL, rtol=0
        )


def test_a_bad_gate_choice_is_one_user_error() -> None:
    with pytest.raises(UserError, match="gate must be one of auto, svd, data, error"):
        midl_autok.midlify(mlp(), gate="best")  # type: ignore[arg-type]
    for gate in ("data", "error"):
        with pytest.raises(UserError, match="calibration"):
            midl_autok.midlify(mlp(), gate=gate)  # type: ignore[arg-type]


def test_the_error_gate_ranks_by_the_light_paths_error_after_the_activation() -> None:
    """gate="error": the rank-r gate regressed on |relu(W x + b) - relu(l(x))| (the layer's
    own activation) predicts that error better than the plain-SVD gate, which predicts W x.
    The regression has no intercept (the gate has no bias): the inputs' mean stands in."""
    torch.manual_seed(6)
    linear = nn.Linear(20, 40).double()
    x = correlated_inputs(600, 20, seed=4) + 0.3 * torch.randn(600, 20, dtype=torch.float64)

    def layer_with(gate: str) -> MIDL:
        layer = MIDL(20, 40, gate_rank=4, light_rank=2, activation="relu").double()
        init_midl_from_linear(layer, linear.weight, linear.bias, inputs=x, gate=gate)  # type: ignore[arg-type]
        return layer

    plain, fitted = layer_with("svd"), layer_with("error")
    with torch.no_grad():
        light = plain.light(x)
        assert light is not None
        target = (torch.relu(linear(x)) - torch.relu(light)).abs()

        def residual(layer: MIDL) -> float:  # of the logits scaled at best (the gate is tiny)
            z = layer.gate_logits(x)
            scale = (z * target).sum() / z.square().sum()
            return float((target - scale * z).square().sum() / target.square().sum())

        # what the regression minimizes (no bias, rank 4): far below the plain gate's
        assert residual(fitted) < 0.75 * residual(plain)


def test_midlify_reads_the_activation_that_follows_a_layer_in_a_sequential() -> None:
    from midl_autok._layer_choice import following_activation

    model = mlp()
    assert isinstance(following_activation(model, "0"), nn.ReLU)
    assert isinstance(following_activation(model, "2"), nn.ReLU)
    assert following_activation(model, "4") is None  # the last module: nothing follows
    nested = Nested()
    assert isinstance(following_activation(nested, "heads.aux.0"), nn.GELU)
    assert following_activation(nested, "stem") is None  # torch.relu in forward: not visible
    assert following_activation(nested, "blocks.0.fc1") is None
    skips = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Identity(), nn.Tanh())
    assert isinstance(following_activation(skips, "0"), nn.Tanh)  # past dropout and identity
    norm = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU())
    assert following_activation(norm, "0") is None  # not elementwise: the ReLU sees its output


class Handwritten(nn.Module):
    """Activations called in forward: a function with an argument, a module attribute, a
    tensor method, one past a dropout, and layers whose output goes elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 40), nn.Linear(40, 40), nn.Linear(40, 40)
        self.fc4, self.fc5, self.head = nn.Linear(40, 40), nn.Linear(40, 40), nn.Linear(40, 5)
        self.act, self.drop = nn.GELU(), nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.leaky_relu(self.fc1(x), 0.2)
        h = self.act(self.fc2(h))
        h = self.fc3(h).tanh()
        h = torch.relu(self.drop(self.fc4(h)))
        h = h + self.fc5(h)  # residual: the sum, not fc5's output, goes on
        return self.head(2 * h)


def test_midlify_reads_activations_called_in_forward_from_a_trace() -> None:
    from midl_autok._layer_choice import activations

    model = Handwritten()
    names = ["fc1", "fc2", "fc3", "fc4", "fc5", "head"]
    found = activations(model, names, "auto")
    x = torch.randn(6, 40, dtype=torch.float64)
    expected = {
        "fc1": torch.nn.functional.leaky_relu(x, 0.2),
        "fc2": torch.nn.functional.gelu(x),
        "fc3": torch.tanh(x),
        "fc4": torch.relu(x),
    }
    for name in names:
        act = found[name]
        if name in expected:
            assert act is not None, name
            torch.testing.assert_close(act(x), expected[name], msg=name)
        else:
            assert act is None, name
    assert found["fc2"] is model.act  # the module itself (used on a copy in calibration)
    before = x.clone()
    found["fc4"](x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)  # a traced call runs on a copy
    nested = activations(Nested(), HIDDEN, "auto")  # torch.relu in forward, tanh in blocks
    assert [type(nested[n]).__name__ for n in HIDDEN] == [
        "_Applied",
        "_Applied",
        "NoneType",
        "_Applied",
        "NoneType",
        "GELU",
    ]


class HandMLP(nn.Module):
    """mlp()'s layers and weights, with the ReLUs called in forward."""

    def __init__(self) -> None:
        super().__init__()
        seq = mlp()
        self.a, self.b, self.c = seq[0], seq[2], seq[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.nn.functional.relu(self.b(torch.nn.functional.relu(self.a(x)))))


def test_a_handwritten_mlp_converts_as_its_sequential_twin() -> None:
    """The same weights written as nn.Sequential (ReLU modules) and by hand (F.relu in
    forward): midlify reads the ReLUs from both, so the error gates are the same; with
    activation=None they differ (the gate taken before the ReLU)."""
    auto = error_gate_of(HandMLP, "auto")
    for a, b in zip(auto, error_gate_of(mlp, "auto"), strict=True):
        torch.testing.assert_close(a, b)
    before = error_gate_of(HandMLP, None)
    assert all(
        (a - b).abs().max() > 1e-3 * a.abs().max() for a, b in zip(auto, before, strict=True)
    )


def test_the_activation_is_read_only_where_the_error_gate_is_fitted(monkeypatch) -> None:
    """No calibration, or gate "svd"/"data": the activation is checked but not read (no
    trace of the model's forward); with gate "error" it is."""
    import midl_autok._layer_choice as choice

    def no_trace(model: nn.Module, names: list[str]) -> dict[str, object]:
        raise AssertionError("traced")

    monkeypatch.setattr(choice, "traced_activations", no_trace)
    x = correlated_inputs(100, 32, seed=1).float()
    midl_autok.midlify(HandMLP())
    midl_autok.midlify(HandMLP(), calibration=x, gate="data")
    with pytest.raises(UserError, match="not a converted layer"):
        midl_autok.midlify(HandMLP(), activation={"z": torch.relu})  # still checked
    with pytest.raises(AssertionError, match="traced"):
        midl_autok.midlify(HandMLP(), calibration=x, gate="error")


def test_a_model_that_cannot_be_traced_gets_identity_and_says_why(caplog) -> None:
    from midl_autok._layer_choice import activations

    class Branching(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # control flow on the input's values: no fx trace
                return torch.relu(self.fc(x))
            return self.fc(x)

    with caplog.at_level("INFO", logger="midl_autok._midlify"):
        assert activations(Branching(), ["fc"], "auto") == {"fc": None}
    assert "no torch.fx trace of the model (TraceError" in caplog.text
    assert "fc: None" in caplog.text


def error_gate_of(make, activation) -> list[torch.Tensor]:
    x = correlated_inputs(300, 32, seed=5).float()
    model, _ = midl_autok.midlify(
        make(), light_rank=2, gate_rank=4, calibration=x, gate="error", activation=activation
    )
    return [m.gate_in.detach().clone() for m in model.modules() if isinstance(m, MIDL)]


def test_the_error_gate_of_midlify_is_taken_after_the_activation_it_reads() -> None:
    """mlp() is Linear, ReLU, Linear, ReLU, Linear: "auto" finds both ReLUs, which gives the
    gates that an explicit ReLU gives, and not those of identity (before the ReLU)."""
    auto = error_gate_of(mlp, "auto")
    for explicit in (nn.ReLU(), torch.relu, {"0": nn.ReLU()}, {"0": torch.relu, "2": nn.ReLU()}):
        for a, b in zip(auto, error_gate_of(mlp, explicit), strict=True):
            torch.testing.assert_close(a, b)
    before = error_gate_of(mlp, None)
    assert all(
        (a - b).abs().max() > 1e-3 * a.abs().max() for a, b in zip(auto, before, strict=True)
    )


def test_an_identity_layer_with_the_activation_given_gets_the_gate_of_a_layer_that_has_it() -> None:
    """The error gate of a MID-L layer with activation identity, told the ReLU that follows it,
    is the error gate of the same layer built with activation="relu"."""
    torch.manual_seed(6)
    linear = nn.Linear(20, 40).double()
    x = correlated_inputs(600, 20, seed=4) + 0.3 * torch.randn(600, 20, dtype=torch.float64)
    gates = []
    for act, given in (("relu", None), ("identity", nn.ReLU())):
        torch.manual_seed(7)
        layer = MIDL(20, 40, gate_rank=4, light_rank=2, activation=act).double()
        init_midl_from_linear(
            layer, linear.weight, linear.bias, inputs=x, gate="error", activation=given
        )
        gates.append((layer.gate_in.detach(), layer.gate_out.detach()))
    torch.testing.assert_close(gates[0], gates[1])


def test_an_activation_with_parameters_is_used_on_a_copy() -> None:
    """A PReLU (per-feature slopes, float32) after a layer: the calibration uses a float64 copy
    in eval mode; the model's own keeps its values, dtype and training mode."""
    torch.manual_seed(0)
    prelu = nn.PReLU(64, init=0.2)
    model = nn.Sequential(nn.Linear(32, 64), prelu, nn.Linear(64, 5)).train()
    before = prelu.weight.detach().clone()
    x = correlated_inputs(200, 32, seed=1).float()
    converted, _ = midl_autok.midlify(model, calibration=x, gate="error", light_rank=2)
    assert converted[1] is prelu and prelu.training and prelu.weight.dtype == torch.float32
    torch.testing.assert_close(prelu.weight.detach(), before, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("activation", "message"),
    [
        ("relu", 'activation must be "auto", None, a function or module'),
        ({"1": nn.ReLU()}, "activation names '1', which is not a converted layer"),
        ({"0": "relu"}, "the activation for 0 must be a function or module, but got str"),
        (lambda t: t.sum(1), "must be elementwise and finite"),
        (lambda t: t / 0, "must be elementwise and finite"),
        (lambda t: t.float() @ t, "failed on its float64 outputs of shape (100, 64): Runtime"),
    ],
    ids=["text", "unknown-layer", "not-callable", "not-elementwise", "not-finite", "raises"],
)
def test_a_bad_activation_is_one_user_error(activation, message: str) -> None:
    x = correlated_inputs(100, 32, seed=1).float()
    with pytest.raises(UserError, match=re.escape(message)):
        midl_autok.midlify(mlp(), calibration=x, gate="error", activation=activation)


# ---------------------------------------------------------------------- model.init_from


def small_spec(variant: str = "midl", init_from: str | None = None):
    return load_spec("synthetic-mlp").override(
        **{"model.hidden": [40, 24], "model.variant": variant, "model.init_from": init_from}
    )


@pytest.fixture
def dense_checkpoint(tmp_path: Path) -> tuple[Path, nn.Module]:
    spec = small_spec("dense")
    dense = build_for_spec(spec, dataset_for_spec(spec), seed=5)
    path = tmp_path / "dense.pt"
    torch.save(dense.state_dict(), path)
    return path, dense


def test_init_from_a_dense_state_dict(dense_checkpoint: tuple[Path, nn.Module]) -> None:
    path, dense = dense_checkpoint
    spec = small_spec(init_from=str(path))
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    assert [n for n, _ in model.midl_layers()] == ["body.0", "body.1"]
    ref = outputs(dense, data.x_test, train=False)
    torch.testing.assert_close(outputs(model, data.x_test, train=False), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.head.weight, dense.head.weight)
    # the FLOPs ratio keeps its meaning: same architecture, same cost model as from scratch
    scratch = build_for_spec(small_spec(), data)
    assert model.signature() == scratch.signature()


def test_init_from_a_dense_state_with_calibration(dense_checkpoint) -> None:
    from midl_autok._midlify import init_from_dense_state

    _, dense = dense_checkpoint
    spec = small_spec()
    data = dataset_for_spec(spec)
    ref = outputs(dense, data.x_test, train=False)
    errors = []
    for calibration in (None, data.x_train):
        model = build_for_spec(spec, data)
        ks = [layer.k for _, layer in model.midl_layers()]
        init_from_dense_state(model, dense.state_dict(), calibration=calibration)
        assert [layer.k for _, layer in model.midl_layers()] == ks  # k restored after the pass
        for _, layer in model.midl_layers():
            layer.k = None
        torch.testing.assert_close(outputs(model, data.x_test, train=False), ref, atol=1e-4, rtol=0)
        for _, layer in model.midl_layers():
            layer.k = layer.out_features // 4
        errors.append(float((outputs(model, data.x_test, train=False) - ref).square().mean()))
    assert errors[1] < errors[0]


def test_init_calibration_in_the_spec(dense_checkpoint) -> None:
    path, dense = dense_checkpoint
    spec = small_spec(init_from=str(path))
    data = dataset_for_spec(spec)
    plain = build_for_spec(spec, data)
    fitted = build_for_spec(spec.override(**{"model.init_calibration": 200}), data)
    ref = outputs(dense, data.x_test, train=False)
    errors = []
    for model in (plain, fitted):
        for _, layer in model.midl_layers():
            layer.k = layer.out_features // 4
        errors.append(float((outputs(model, data.x_test, train=False) - ref).square().mean()))
    assert errors[1] < errors[0]
    with pytest.raises(ValueError, match="init_calibration fits a dense checkpoint"):
        small_spec().override(**{"model.init_calibration": 200})


def test_init_from_a_dense_export(tmp_path: Path, dense_checkpoint) -> None:
    from midl_autok.deploy import export_model

    _, dense = dense_checkpoint
    path = export_model(dense, tmp_path / "dense.pt2", example=torch.zeros(2, 32), portable=True)
    spec = small_spec(init_from=str(path))
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    ref = outputs(dense, data.x_test, train=False)
    torch.testing.assert_close(outputs(model, data.x_test, train=False), ref, atol=1e-4, rtol=0)


def test_a_checkpoint_of_other_shapes_names_the_first_differing_tensor(tmp_path: Path) -> None:
    spec = small_spec("dense").override(**{"model.hidden": [40, 16]})
    other = build_for_spec(spec, dataset_for_spec(spec))
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    model = build_for_spec(small_spec(), dataset_for_spec(spec))
    with pytest.raises(
        CheckpointError,
        match=r"first difference at body\.1\.0\.weight: the model "
        r"has \(24, 40\), the checkpoint has \(16, 40\)",
    ) as err:
        init_from_checkpoint(model, path)
    assert "\n" not in str(err.value)


class _Marker:
    """Unpickling this writes a marker file (what an attacker's pickle would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


def test_a_pickle_that_is_not_weights_only_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"body.0.0.weight": _Marker(str(marker))}, evil)  # torch.save pickles it
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Marker(str(marker))))
    model = build_for_spec(small_spec(), dataset_for_spec(small_spec()))
    for path in (evil, plain):
        with pytest.raises(CheckpointError, match="is not a weights_only state dict") as err:
            init_from_checkpoint(model, path)
        assert "\n" not in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        init_from_checkpoint(model, tmp_path / "missing.pt")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        init_from_checkpoint(model, listed)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the compiled kernels are not what this checks: a cold build takes minutes on a busy CPU
    return run_cli(*args, cwd=cwd, env=cli_env(MIDL_AUTOK_NO_EXTENSIONS="1"), timeout=300)


@pytest.mark.slow
def test_init_from_on_the_command_line(tmp_path: Path) -> None:
    spec = load_spec("synthetic-mlp").override(**{"model.variant": "dense"})
    dense = build_for_spec(spec, dataset_for_spec(spec))
    good = tmp_path / "dense.pt"
    torch.save(dense.state_dict(), good)
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "marker"
    torch.save({"x": _Marker(str(marker))}, evil)

    bad = run("train", "synthetic-mlp", "--init-from", str(evil), "--epochs", "1", cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert "is not a weights_only state dict" in lines[0] and not marker.exists()

    trained = run(
        "train",
        "synthetic-mlp",
        "--init-from",
        "dense.pt",
        "--epochs",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    searched = run(
        "search",
        "synthetic-mlp",
        "--init-from",
        "dense.pt",
        "--epochs",
        "1",
        "--trials",
        "2",
        "--agent",
        "random",
        "--store",
        str(tmp_path / "store"),
        cwd=tmp_path,
    )
    assert searched.returncode == 0, searched.stderr
