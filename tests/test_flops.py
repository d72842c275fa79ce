"""Tests for midl_autok.flops: the analytic cost model against FlopCounterMode.

Convention (as in FlopCounterMode): FLOPs = 2 x multiply-adds of matrix products and
convolutions, per sample, forward; elementwise work is not counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from midl_autok.flops import (
    CostModel,
    LayerCost,
    conv2d_flops,
    cost_model,
    dense_flops,
    lstm_flops,
    midl_flops,
)
from midl_autok.layers import MIDL
from midl_autok.models import MIDLNet, build_model
from midl_autok.schedule import KSchedule


def counted(fn: Callable[[], object]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def set_all_k(model: MIDLNet, k: int) -> dict[str, int]:
    model.set_k({name: min(k, layer.out_features) for name, layer in model.midl_layers()})
    return model.current_k()


def set_sparse_eval(model: nn.Module, mode: str) -> None:
    for module in model.modules():
        if isinstance(module, MIDL):
            module.sparse_eval = mode  # type: ignore[assignment]


# --------------------------------------------------------------------------- formulas


def test_formulas() -> None:
    assert dense_flops(3, 5) == 30
    # 2 * (r_g (d_in + d) + k d_in + r (d_in + d)) = 2 * (2*8 + 4*3 + 1*8)
    assert midl_flops(3, 5, 4, gate_rank=2, light_rank=1) == 72
    assert midl_flops(3, 5, 4, gate_rank=2, light_rank=0) == 56
    # 2 * (C_in / groups) kh kw C_out H_out W_out
    assert conv2d_flops(4, 6, (3, 2), (5, 7)) == 2 * 4 * 3 * 2 * 6 * 5 * 7
    assert conv2d_flops(4, 6, (3, 3), (5, 5), groups=2) == 2 * 2 * 9 * 6 * 25
    # 2 * 4 h (d_in + h) T; the second layer reads h
    assert lstm_flops(3, 5, 7) == 2 * 4 * 5 * 8 * 7
    assert lstm_flops(3, 5, 7, num_layers=2) == 2 * 4 * 5 * 8 * 7 + 2 * 4 * 5 * 10 * 7


def test_midl_layer_counts_match_flop_counter() -> None:
    layer = MIDL(20, 30, gate_rank=3, light_rank=5).eval()
    x = torch.randn(1, 20)
    for k in (1, 7, 29):
        layer.k = k
        layer.sparse_eval = "always"
        assert counted(lambda: layer(x)) == midl_flops(20, 30, k, gate_rank=3, light_rank=5)
        layer.sparse_eval = "never"  # masked dense: every row of W is computed
        assert counted(lambda: layer(x)) == midl_flops(20, 30, 30, gate_rank=3, light_rank=5)


# --------------------------------------------------------------------------- whole models

MODEL_CASES = [
    pytest.param("mlp", (64,), {}, id="mlp-digits"),
    pytest.param("mlp", (1, 10, 10), {"hidden": [40, 24, 12], "light_rank": 0}, id="mlp-3"),
    pytest.param("cnn", (1, 28, 28), {}, id="cnn-28x28x1"),
    pytest.param("cnn", (3, 32, 32), {"channels": [4, 8], "hidden": [24]}, id="cnn-32x32x3"),
]


@pytest.mark.parametrize(("arch", "shape", "options"), MODEL_CASES)
def test_model_flops_match_flop_counter(arch: str, shape: tuple[int, ...], options) -> None:
    torch.manual_seed(0)
    model = build_model(arch, input_shape=shape, num_classes=10, **options).eval()
    costs = cost_model(model, torch.randn(1, *shape))
    x = torch.randn(1, *shape)
    widths = [layer.out_features for _, layer in model.midl_layers()]
    for k in (1, 5, 64, max(widths)):
        used = set_all_k(model, k)
        set_sparse_eval(model, "always")  # the sparse inference path computes k rows of W
        assert counted(lambda: model(x)) == costs.inference_flops(used), k
    # masked dense computes all rows of W: the analytic number at k = d
    set_all_k(model, 1)
    set_sparse_eval(model, "never")
    assert counted(lambda: model(x)) == costs.inference_flops()


@pytest.mark.parametrize(
    ("arch", "shape", "expected"),
    [("mlp", (64,), 99_328), ("cnn", (1, 28, 28), 8_300_544)],
)
def test_default_models_at_k64(arch: str, shape: tuple[int, ...], expected: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, input_shape=shape, num_classes=10).eval()
    costs = cost_model(model, torch.randn(1, *shape))
    used = set_all_k(model, 64)
    set_sparse_eval(model, "always")
    assert costs.inference_flops(used) == expected
    assert counted(lambda: model(torch.randn(1, *shape))) == expected


@pytest.mark.parametrize(("arch", "shape", "options"), MODEL_CASES)
def test_dense_variant_costs_the_same_as_dense_flops(arch: str, shape, options) -> None:
    dense = build_model(arch, input_shape=shape, num_classes=10, variant="dense", **options)
    midl = build_model(arch, input_shape=shape, num_classes=10, **options)
    dense_costs = cost_model(dense, torch.randn(1, *shape))
    midl_costs = cost_model(midl, torch.randn(1, *shape))
    assert dense_costs.midl_layers == ()
    assert dense_costs.ratio() == 1.0
    assert dense_costs.inference_flops() == dense_costs.dense_flops()
    assert midl_costs.dense_flops() == dense_costs.dense_flops()
    assert counted(lambda: dense.eval()(torch.randn(1, *shape))) == dense_costs.dense_flops()


def test_ratio_grows_with_k() -> None:
    model = build_model("mlp", input_shape=(64,), num_classes=10)
    costs = cost_model(model, torch.randn(1, 64))
    ratios = [costs.ratio({"body.0": k, "body.1": k}) for k in (1, 16, 64, 128, 256)]
    assert all(a < b for a, b in itertools.pairwise(ratios))
    dense = 2 * 64 * 256 + 2 * 256 * 256 + 2 * 256 * 10
    assert ratios[0] == (2 * (32 * 320 + 64) + 2 * (32 * 512 + 256) + 5120) / dense
    assert ratios[-1] > 1.0  # all neurons + gate + light path cost more than dense


def test_cost_model_does_not_depend_on_example_batch() -> None:
    model = build_model("mlp", input_shape=(64,), num_classes=10, hidden=[32])
    one = cost_model(model, torch.randn(1, 64))
    many = cost_model(model, torch.randn(16, 64))
    assert one == many
    assert many.per_layer()["head"] == dense_flops(32, 10)


def test_cost_model_restores_training_mode() -> None:
    model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=[4]).train()
    cost_model(model, torch.randn(1, 8))
    assert model.training
    cost_model(model.eval(), torch.randn(1, 8))
    assert not model.training


def test_inference_flops_defaults_missing_layers_to_all_neurons() -> None:
    costs = CostModel(
        (
            LayerCost("a", "midl", dense_flops(4, 6), d_in=4, d=6, gate_rank=1, light_rank=1),
            LayerCost("b", "midl", dense_flops(6, 3), d_in=6, d=3, gate_rank=1, light_rank=0),
            LayerCost("head", "linear", dense_flops(3, 2)),
        )
    )
    full_a = midl_flops(4, 6, 6, gate_rank=1, light_rank=1)
    assert (
        costs.inference_flops({"b": 1})
        == full_a + midl_flops(6, 3, 1, gate_rank=1, light_rank=0) + 12
    )
    assert costs.per_layer({"a": 2})["a"] == midl_flops(4, 6, 2, gate_rank=1, light_rank=1)
    assert costs.dense_flops() == 48 + 36 + 12
    assert [c.name for c in costs.midl_layers] == ["a", "b"]


# --------------------------------------------------------------------------- training FLOPs


def test_training_flops_sums_epochs() -> None:
    model = build_model("mlp", input_shape=(10,), num_classes=3, hidden=[8, 4], gate_rank=2)
    costs = cost_model(model, torch.randn(1, 10))
    schedule = KSchedule(layers=model.layer_specs(), epochs=3, k=((8, 4, 2), (4, 2, 1)), arch="mlp")
    per_epoch = [costs.inference_flops(schedule.at(e)) for e in range(3)]
    assert per_epoch[0] > per_epoch[1] > per_epoch[2]
    assert costs.training_flops(schedule, 100) == 3 * 100 * sum(per_epoch)
    assert costs.training_flops(schedule, [10, 20, 30]) == 3 * (
        10 * per_epoch[0] + 20 * per_epoch[1] + 30 * per_epoch[2]
    )
    with pytest.raises(ValueError, match=r"one entry per epoch \(3\), but got 2"):
        costs.training_flops(schedule, [10, 20])


# --------------------------------------------------------------------------- LSTM
#
# FlopCounterMode does not see inside nn.LSTM on CPU (the fused aten op has no formula), so the
# reference is the same LSTM unrolled with nn.LSTMCell, whose two matrix products per step
# (x W_ih^T, h W_hh^T: 2 * 4h * (d_in + h)) are counted; the gate nonlinearities and the cell
# update are elementwise and count 0, as in the analytic formula.


def unrolled_lstm_flops(input_size: int, hidden: int, seq_len: int, num_layers: int) -> int:
    cells = [nn.LSTMCell(input_size if i == 0 else hidden, hidden) for i in range(num_layers)]
    x = torch.randn(seq_len, 1, input_size)

    def run() -> None:
        seq = list(x)
        for cell in cells:
            h = c = torch.zeros(1, hidden)
            out = []
            for step in seq:
                h, c = cell(step, (h, c))
                out.append(h)
            seq = out

    return counted(run)


@pytest.mark.parametrize(
    ("input_size", "hidden", "seq_len", "num_layers"), [(8, 16, 5, 1), (3, 7, 11, 2)]
)
def test_lstm_flops_match_unrolled_cells(input_size, hidden, seq_len, num_layers) -> None:
    expected = unrolled_lstm_flops(input_size, hidden, seq_len, num_layers)
    assert lstm_flops(input_size, hidden, seq_len, num_layers=num_layers) == expected
    lstm = nn.LSTM(input_size, hidden, num_layers=num_layers)
    fused = counted(lambda: lstm(torch.randn(seq_len, 1, input_size)))
    assert fused in (0, expected)  # 0 today on CPU: the reason for the unrolled reference


def test_lstm_model_flops() -> None:
    model = build_model(
        "lstm",
        input_shape=(9,),
        num_classes=4,
        vocab_size=20,
        embed_dim=6,
        hidden_size=10,
        hidden=[12],
    ).eval()
    tokens = torch.randint(0, 20, (1, 9))
    costs = cost_model(model, tokens)
    assert [(c.name, c.kind) for c in costs.layers] == [
        ("lstm", "lstm"),
        ("body.0", "midl"),
        ("head", "linear"),
    ]
    assert costs.per_layer()["lstm"] == lstm_flops(6, 10, 9)
    set_sparse_eval(model, "always")
    for k in (1, 5, 12):
        used = set_all_k(model, k)
        lstm_part = unrolled_lstm_flops(6, 10, 9, 1)
        without_lstm = costs.inference_flops(used) - costs.per_layer(used)["lstm"]
        assert counted(lambda: model(tokens)) in (without_lstm, without_lstm + lstm_part)
        assert costs.inference_flops(used) == without_lstm + lstm_part
