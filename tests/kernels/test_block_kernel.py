"""The compiled block-gating kernel (``midl_block_eval``) against the PyTorch block path, and
block-gated models through export and load (the op ``midl_autok::midl_block_eval``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midl_autok import ops
from midl_autok.block import block_eval
from midl_autok.deploy import export_model, load_model, load_program, read_metadata
from midl_autok.layers import MIDL
from midl_autok.models import build_model


def params(d_in: int, d: int, *, bias: bool, light: bool, seed: int = 0) -> list:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) / shape[-1] ** 0.5

    return [
        rand(5, d_in),
        rand(d, 5),
        rand(d, d_in),
        rand(d) if bias else None,
        rand(3, d_in) if light else None,
        rand(d, 3) if light else None,
        rand(d) if light and bias else None,
    ]


@pytest.mark.parametrize(
    ("d_in", "d", "k", "size"),
    [(64, 256, 64, 32), (37, 48, 16, 8), (8, 18, 6, 6), (100, 40, 40, 5), (3, 8, 1, 1)],
)
@pytest.mark.parametrize("batch", [1, 2, 4, 65])
@pytest.mark.parametrize(("bias", "light"), [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("act", [0, 1, 2, 3, 4])
def test_kernel_equals_the_pytorch_block_path(
    kernels, d_in: int, d: int, k: int, size: int, batch: int, bias: bool, light: bool, act: int
) -> None:
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(batch))
    p = params(d_in, d, bias=bias, light=light)
    y, logits, idx = kernels.midl_block_eval(x, *p, k, size, act, False)
    want_y, want_logits, want_idx = ops.midl_block_eval_reference(x, *p, k, size, act)
    torch.testing.assert_close(logits, want_logits)
    assert torch.equal(idx.sort(-1).values, want_idx.sort(-1).values)
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-4)
    # the op dispatches to the same kernel for float32 CPU input
    op_y, _, _ = ops.midl_block_eval(x, *p, k, size, act)
    torch.testing.assert_close(op_y, y)
    # the layer's eager call: the same output and groups, with h = G1 x for the logits
    # (its group scores come from G2 summed per group: the same up to rounding, so a choice
    # may differ only between groups whose scores tie within it)
    thin_y, h, thin_idx = kernels.midl_block_eval(x, *p, k, size, act, True)
    torch.testing.assert_close(h @ p[1].T, logits, atol=1e-5, rtol=1e-4)
    if torch.equal(thin_idx, idx):
        torch.testing.assert_close(thin_y, y, atol=1e-5, rtol=1e-4)
    else:
        exact = (x.double() @ p[0].double().T @ p[1].double().T).view(batch, -1, size).sum(-1)
        chosen = [exact.gather(1, i).sort(1).values for i in (thin_idx, idx)]
        torch.testing.assert_close(*chosen, atol=1e-5, rtol=0)


@pytest.mark.parametrize("groups", [8, 80])  # ranked by counting (<= 64 groups), or sorted
@pytest.mark.parametrize("thin", [False, True])
def test_ties_go_to_the_lowest_group_and_nan_scores_first(kernels, groups: int, thin: bool) -> None:
    size, per, batch = 4, 3, 20
    d = groups * size
    p = params(16, d, bias=True, light=True)
    p[1] = torch.zeros(d, 5)  # G2 = 0: every group's score is 0, a tie
    x = torch.randn(batch, 16, generator=torch.Generator().manual_seed(0))
    _, _, idx = kernels.midl_block_eval(x, *p, per * size, size, 0, thin)
    assert idx.tolist() == [[0, 1, 2]] * batch
    p[1][5 * size] = float("nan")  # group 5's score is NaN: chosen first, then the ties
    _, _, idx = kernels.midl_block_eval(x, *p, per * size, size, 0, thin)
    assert idx.tolist() == [[0, 1, 5]] * batch


def test_the_op_runs_float64_in_pytorch() -> None:
    x = torch.randn(6, 16, dtype=torch.float64)
    p = [t if t is None else t.double() for t in params(16, 32, bias=True, light=True)]
    y, _, idx = ops.midl_block_eval(x, *p, 8, 4, 1)
    want, _, _ = ops.midl_block_eval_reference(x, *p, 8, 4, 1)
    assert y.dtype == torch.float64 and idx.shape == (6, 2)
    torch.testing.assert_close(y, want)


def test_layer_takes_the_kernel_where_it_pays(kernels) -> None:
    layer = MIDL(64, 256, 64, gating="block:32").eval()
    x = torch.randn(128, 64)
    with torch.no_grad():
        assert layer.eval_path(x) == "kernel"
        y = layer(x)
        y_torch, _, _ = block_eval(x, layer._kernel_params(), 64, 32)
    torch.testing.assert_close(y, torch.relu(y_torch), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("portable", [False, True])
def test_block_gated_model_export_round_trip(tmp_path: Path, portable: bool) -> None:
    torch.manual_seed(0)
    model = build_model(
        "mlp", input_shape=(20,), num_classes=4, hidden=[64, 32], gating="block:8"
    ).eval()
    model.set_k({"body.0": 16, "body.1": 8})
    x = torch.randn(9, 20)
    path = export_model(model, tmp_path / "m.pt2", example=x, portable=portable)
    meta = read_metadata(path)
    assert meta["config"]["gating"] == "block:8"
    rebuilt = load_model(path)
    assert [str(m.gating) for _, m in rebuilt.midl_layers()] == ["block:8", "block:8"]
    program = load_program(path, trusted=True)
    graph = str(program.graph)
    sparse = meta["program"] == "sparse"
    assert ("midl_block_eval" in graph) == sparse
    with torch.no_grad():
        for batch in (1, 3, 9, 40):
            xb = torch.randn(batch, 20, generator=torch.Generator().manual_seed(batch))
            want = model(xb)
            torch.testing.assert_close(rebuilt(xb), want, msg=f"rebuilt, batch {batch}")
            torch.testing.assert_close(program(xb), want, msg=f"program, batch {batch}")
