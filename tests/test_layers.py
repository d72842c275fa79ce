"""Tests for midl_autok.layers: the MID-L layer against a reference written from DESIGN §2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midl_autok.errors import UserError
from midl_autok.layers import MIDL, _TopKStraightThrough, topk_mask

D_IN, D = 12, 32


def make_layer(k: int | None = None, **options) -> MIDL:
    torch.manual_seed(0)
    options.setdefault("gate_rank", 4)
    options.setdefault("light_rank", 4)
    return MIDL(D_IN, D, k, **options)


def inputs(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, D_IN, generator=torch.Generator().manual_seed(seed))


def reference(layer: MIDL, x: torch.Tensor, *, ste: bool = False) -> torch.Tensor:
    """DESIGN §2 written out in float64 from the layer's parameters.

    Selection is an argsort of g itself (not ``topk`` of the logits, as the layer does).
    With ``ste=True`` the mask carries the straight-through gradient (value m, d m / d g = 1).
    """
    x = x.double()
    p = {name: t.double() for name, t in layer.named_parameters()}
    g = torch.sigmoid(x @ p["gate_in"].T @ p["gate_out"].T)  # (B, d)
    k = layer.out_features if layer.k is None else layer.k
    chosen = g.detach().argsort(dim=-1, descending=True)[:, :k]
    m = torch.zeros_like(g).scatter(-1, chosen, 1.0)
    return mix_reference(layer, x, p, g, m, ste=ste)


def mix_reference(
    layer: MIDL,
    x: torch.Tensor,
    p: dict[str, torch.Tensor],
    g: torch.Tensor,
    m: torch.Tensor,
    *,
    ste: bool = False,
) -> torch.Tensor:
    """``act(a ⊙ f + (1 - a) ⊙ l)`` with ``a = m ⊙ g``, from float64 ``x`` and parameters
    ``p``, for a hard mask ``m`` (with ``ste``: value m, d m / d g = 1)."""
    if ste:
        m = m + g - g.detach()
    a = m * g
    f = x @ p["weight"].T + p.get("bias", 0.0)
    if layer.light_rank == 0:
        mixed = a * f
    else:
        light = (x @ p["light_in"].T) @ p["light_out"].T + p.get("light_bias", 0.0)
        mixed = a * f + (1 - a) * light
    return layer.act(mixed)


# --------------------------------------------------------------------------- top-k selection


@pytest.mark.parametrize("k", [1, 2, 7, 31, D, None])
@pytest.mark.parametrize("mode", ["train", "eval", "train_no_grad"])
def test_exactly_k_neurons_active_per_sample(k: int | None, mode: str) -> None:
    layer = make_layer(k)
    layer.train(mode != "eval")
    with torch.set_grad_enabled(mode != "train_no_grad"):
        y = layer(inputs(9))
    assert y.shape == (9, D)
    mask = layer.last_mask
    assert mask is not None
    assert mask.dtype == torch.bool
    assert mask.shape == (9, D)
    expected = D if k is None else k
    assert mask.sum(dim=-1).tolist() == [expected] * 9


@pytest.mark.parametrize("k", [1, 5, 20])
def test_mask_selects_the_largest_gates(k: int) -> None:
    layer = make_layer(k).eval()
    layer(inputs(6))
    assert layer.last_gate is not None
    assert layer.last_mask is not None
    gate, mask = layer.last_gate, layer.last_mask
    chosen_min = torch.where(mask, gate, torch.inf).amin(dim=-1)
    other_max = torch.where(mask, -torch.inf, gate).amax(dim=-1)
    assert (chosen_min > other_max).all()


def test_selection_depends_on_the_input() -> None:
    layer = make_layer(4).eval()
    layer(inputs(16))
    assert layer.last_mask is not None
    assert len({tuple(row.nonzero().flatten().tolist()) for row in layer.last_mask}) > 1


def test_topk_mask_counts_and_dtype() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, -1.0, 2.0, 3.0]])
    torch.testing.assert_close(
        topk_mask(scores, 2), torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    )
    torch.testing.assert_close(topk_mask(scores, 4), torch.ones(2, 4))


# --------------------------------------------------------------------------- gradients


def test_straight_through_gradient_is_identity() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 10, generator=gen, requires_grad=True)
    gate = torch.sigmoid(logits)
    gate.retain_grad()
    mask = _TopKStraightThrough.apply(gate, logits, 3)
    torch.testing.assert_close(mask, topk_mask(logits.detach(), 3))
    upstream = torch.randn(5, 10, generator=gen)
    mask.backward(upstream)
    assert gate.grad is not None
    torch.testing.assert_close(gate.grad, upstream)  # d mask / d gate = identity


@pytest.mark.parametrize("light_rank", [0, 4])
def test_layer_gradients_match_the_straight_through_reference(light_rank: int) -> None:
    layer = make_layer(5, light_rank=light_rank).train()
    x = inputs(8)
    upstream = torch.randn(8, D, generator=torch.Generator().manual_seed(4))
    (layer(x) * upstream).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    layer.zero_grad()
    (reference(layer, x, ste=True) * upstream.double()).sum().backward()
    want = {n: p.grad for n, p in layer.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() == {n for n, _ in layer.named_parameters()}
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_gradients_reach_gate_full_and_light_parameters() -> None:
    layer = make_layer(6, activation="identity").train()
    layer(inputs(8)).pow(2).sum().backward()
    for name in ("gate_in", "gate_out", "weight", "bias", "light_in", "light_out", "light_bias"):
        grad = getattr(layer, name).grad
        assert grad is not None, name
        assert grad.abs().sum() > 0, name
    # The full path is used only where m = 1: rows nobody selected get no gradient.
    assert layer.last_mask is not None
    assert layer.weight.grad is not None
    unused = ~layer.last_mask.any(dim=0)
    assert unused.any()
    assert (layer.weight.grad[unused] == 0).all()
    assert (layer.weight.grad[~unused].abs().sum(dim=-1) > 0).all()


# --------------------------------------------------------------------------- equations


@pytest.mark.parametrize("k", [1, 3, 16, D, None])
@pytest.mark.parametrize("light_rank", [0, 4])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_matches_the_reference(k: int | None, light_rank: int, mode: str) -> None:
    layer = make_layer(k, light_rank=light_rank).train(mode == "train")
    x = inputs(10)
    with torch.no_grad():
        # the layer computes in float32, the reference in float64: float32's tolerances (with
        # float64's, 1e-7, the test passed or failed with the CPU's summation order: it failed
        # by 1.3e-7 on one output of 320 on an AVX-512 Xeon)
        torch.testing.assert_close(layer(x).double(), reference(layer, x), rtol=1.3e-6, atol=1e-5)


def test_light_rank_zero_is_pure_topk_gating() -> None:
    layer = make_layer(4, light_rank=0, activation="identity")
    assert layer.light_in is None
    assert layer.light_out is None
    assert layer.light_bias is None
    assert {n for n, _ in layer.named_parameters()} == {"gate_in", "gate_out", "weight", "bias"}
    x = inputs(7)
    for mode in (True, False):
        layer.train(mode)
        with torch.no_grad():
            y = layer(x)
            g = torch.sigmoid(x @ layer.gate_in.T @ layer.gate_out.T)
            f = x @ layer.weight.T + layer.bias
        assert layer.last_mask is not None
        m = layer.last_mask.float()
        torch.testing.assert_close(y, m * g * f)
        assert (y[~layer.last_mask] == 0).all()  # unselected neurons output act(0)


def test_light_path_feeds_unselected_neurons() -> None:
    layer = make_layer(4, activation="identity").eval()
    x = inputs(5)
    with torch.no_grad():
        y = layer(x)
        light = layer.light(x)
    assert layer.last_mask is not None
    assert light is not None
    torch.testing.assert_close(y[~layer.last_mask], light[~layer.last_mask])


# --------------------------------------------------------------------------- sparse eval path


@pytest.mark.parametrize("k", [1, 2, 9, 31])
@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("light_rank", [0, 4])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_sparse_eval_equals_masked_dense(
    k: int, batch: int, light_rank: int, activation: str
) -> None:
    layer = make_layer(k, light_rank=light_rank, activation=activation).eval()
    x = inputs(batch, seed=k)
    with torch.no_grad():
        layer.sparse_eval = "always"
        assert layer._use_sparse(x, k)
        sparse = layer(x)
        sparse_mask = layer.last_mask
        layer.sparse_eval = "never"
        assert not layer._use_sparse(x, k)
        dense = layer(x)
        layer.sparse_eval = "auto"
        auto = layer(x)
        want = reference(layer, x).float()
    torch.testing.assert_close(sparse, dense)
    torch.testing.assert_close(auto, dense)
    torch.testing.assert_close(sparse, want)
    assert torch.equal(sparse_mask, layer.last_mask)


def test_auto_uses_the_sparse_path_only_when_few_rows_are_needed() -> None:
    layer = make_layer(2).eval()
    assert layer._use_sparse(inputs(1), 2)
    assert not layer._use_sparse(inputs(64), 2)
    assert not layer.train()._use_sparse(inputs(1), 2)  # never while training


def test_leading_dimensions_are_kept() -> None:
    layer = make_layer(3).eval()
    x = torch.randn(2, 5, D_IN, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = layer(x)
        flat = layer(x.reshape(10, D_IN))
    assert y.shape == (2, 5, D)
    torch.testing.assert_close(y.reshape(10, D), flat)


# --------------------------------------------------------------------------- options


def test_k_none_means_all_neurons() -> None:
    layer = make_layer()
    assert layer.k is None
    assert layer.effective_k == D
    layer.k = 5
    assert (layer.k, layer.effective_k) == (5, 5)
    layer.k = None
    assert layer.effective_k == D


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, r"1 <= k <= 32 \(out_features\), but got 0"),
        (-3, ValueError, "but got -3"),
        (D + 1, ValueError, "but got 33"),
        (True, TypeError, "k must be an int or None, but got True"),
        (2.0, TypeError, "but got 2.0"),
        ("4", TypeError, "but got '4'"),
    ],
)
def test_k_setter_rejects_bad_values(value: object, error: type[Exception], match: str) -> None:
    layer = make_layer(3)
    with pytest.raises(error, match=match):
        layer.k = value  # type: ignore[assignment]
    assert layer.k == 3  # unchanged
    with pytest.raises(error, match=match):
        MIDL(D_IN, D, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"gate_rank": 0}, "gate_rank must be >= 1, but got 0"),
        ({"light_rank": -1}, "light_rank must be >= 0"),
        ({"ste": "sigmoid"}, "ste must be 'identity', but got 'sigmoid'"),
        ({"sparse_eval": "sometimes"}, "sparse_eval must be auto|always|never"),
    ],
)
def test_bad_constructor_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MIDL(D_IN, D, **options)  # type: ignore[arg-type]


def test_unknown_activation_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="unknown activation 'rellu'; did you mean 'relu'"):
        MIDL(D_IN, D, activation="rellu")


def test_activation_module_is_used_as_given() -> None:
    act = nn.Sigmoid()
    assert MIDL(D_IN, D, activation=act).act is act


# --------------------------------------------------------------------------- execution paths
# Every eval path (masked dense, pure-PyTorch gather, compiled CPU kernel) gives the masked
# dense result: same outputs, same selection, same gate values.

FORCE = {"dense": "never", "gather": "gather", "kernel": "kernel"}


@pytest.fixture(scope="module")
def kernels_ready() -> bool:
    from midl_autok.kernels import cpu_kernels

    return cpu_kernels() is not None


def check_path(layer: MIDL, x: torch.Tensor, path: str, kernels_ready: bool, **tol) -> None:
    if path == "kernel" and not kernels_ready:
        pytest.skip("the CPU kernels could not be built on this machine")
    with torch.no_grad():
        layer.sparse_eval = "never"
        want = layer(x)
        want_mask, want_gate = layer.last_mask, layer.last_gate
        layer.sparse_eval = FORCE[path]  # type: ignore[assignment]
        assert layer.eval_path(x.reshape(-1, layer.in_features)) == path
        got = layer(x)
    torch.testing.assert_close(got, want, **tol)
    assert layer.last_mask is not None
    assert want_mask is not None
    assert torch.equal(layer.last_mask, want_mask)
    torch.testing.assert_close(layer.last_gate, want_gate, **tol)


@pytest.mark.parametrize("path", ["dense", "gather", "kernel"])
@pytest.mark.parametrize("k", [1, 5, 16, 31])
@pytest.mark.parametrize("batch", [1, 3, 16, 65])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_eval_path_equals_masked_dense(
    path: str, k: int, batch: int, dtype: torch.dtype, kernels_ready: bool
) -> None:
    layer = make_layer(k).to(dtype).eval()
    check_path(layer, inputs(batch, seed=k + batch).to(dtype), path, kernels_ready)


@pytest.mark.parametrize("path", ["gather", "kernel"])
@pytest.mark.parametrize(
    ("d_in", "d", "gate_rank", "light_rank"),
    [(130, 70, 16, 32), (64, 48, 5, 16), (257, 33, 16, 0), (3, 40, 1, 1)],
)
@pytest.mark.parametrize("batch", [1, 2, 7, 40])
def test_sparse_paths_on_wider_layers(
    path: str, d_in: int, d: int, gate_rank: int, light_rank: int, batch: int, kernels_ready: bool
) -> None:
    # widths that exercise the kernel's vector loops and their tails, both ranks' code paths
    torch.manual_seed(d_in)
    layer = MIDL(d_in, d, d // 4, gate_rank=gate_rank, light_rank=light_rank).eval()
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(batch))
    check_path(layer, x, path, kernels_ready, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["gather", "kernel"])
@pytest.mark.parametrize(
    "activation",
    ["relu", "gelu", "silu", "tanh", "identity", nn.Sigmoid(), nn.GELU(approximate="tanh")],
    ids=str,
)
def test_sparse_paths_apply_every_activation(
    path: str, activation: str | nn.Module, kernels_ready: bool
) -> None:
    layer = make_layer(7, activation=activation).eval()
    check_path(layer, inputs(5, seed=2), path, kernels_ready)


def test_kernel_request_falls_back_where_it_cannot_run() -> None:
    layer = make_layer(4, sparse_eval="kernel").eval()
    x = inputs(3)
    assert layer.eval_path(x.bfloat16()) == "gather"  # no bf16 kernel
    assert layer.eval_path(x) == "gather"  # gradients are being recorded: no kernel
    assert layer.eval_path(torch.empty(3, D_IN, device="meta")) == "gather"  # not a CPU tensor
    layer.k = D
    assert layer.eval_path(x) == "dense"  # k = d: nothing to skip


@pytest.mark.parametrize("path", ["dense", "gather"])
def test_bfloat16_paths_match_float32(path: str) -> None:
    layer = make_layer(6).eval()
    x = inputs(4)
    with torch.no_grad():
        layer.sparse_eval = FORCE[path]  # type: ignore[assignment]
        want = layer(x)
        got = layer.bfloat16()(x.bfloat16())
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_gather_path_keeps_input_gradients_in_eval() -> None:
    layer = make_layer(3, sparse_eval="gather").eval()
    x = inputs(2).requires_grad_()
    layer(x).sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [3, D])
@pytest.mark.parametrize("light_rank", [0, 4])
def test_training_gradients_at_every_k_match_the_reference(k: int, light_rank: int) -> None:
    # full k skips the top-k; the straight-through gradient d a / d g = m + g still holds
    layer = make_layer(k, light_rank=light_rank).train()
    x = inputs(8).requires_grad_()
    upstream = torch.randn(8, D, generator=torch.Generator().manual_seed(9))
    (layer(x) * upstream).sum().backward()
    got = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    (reference(layer, x, ste=True) * upstream.double()).sum().backward()
    want = [p.grad for p in layer.parameters()] + [x.grad]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
