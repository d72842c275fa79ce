"""Block gating (``gating="block:B"``): the layer against masked dense written out in float64,
its paths against each other, the FLOPs model, the spec field, the models and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_layers import mix_reference  # tests/ is on sys.path (as searchkit)
from torch.utils.flop_counter import FlopCounterMode

from midl_autok.errors import ScheduleError, SpecError
from midl_autok.flops import cost_model, midl_flops
from midl_autok.layers import MIDL
from midl_autok.models import build_model
from midl_autok.schedule import KSchedule
from midl_autok.spec import validate_spec


def make_layer(d_in: int, d: int, k: int, size: int, **options) -> MIDL:
    torch.manual_seed(0)
    options.setdefault("gate_rank", 4)
    options.setdefault("light_rank", 4)
    return MIDL(d_in, d, k, gating=f"block:{size}", **options)


def inputs(batch: int, d_in: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, d_in, generator=torch.Generator().manual_seed(seed))


def reference(layer: MIDL, x: torch.Tensor, *, ste: bool = False) -> torch.Tensor:
    """Masked dense in float64: the k / B groups with the largest sums of gate logits take
    the full path (argsort of the group sums, not the layer's topk)."""
    x = x.double()
    p = {name: t.double() for name, t in layer.named_parameters()}
    logits = x @ p["gate_in"].T @ p["gate_out"].T  # (B, d)
    g = torch.sigmoid(logits)
    size = layer.gating.size
    k = layer.out_features if layer.k is None else layer.k
    sums = logits.detach().reshape(x.shape[0], -1, size).sum(-1)  # (B, G)
    chosen = sums.argsort(dim=-1, descending=True)[:, : k // size]
    m = torch.zeros_like(sums).scatter(-1, chosen, 1.0).repeat_interleave(size, dim=1)
    return mix_reference(layer, x, p, g, m, ste=ste)


CASES = [  # (d_in, d, k, B)
    (12, 32, 8, 4),
    (12, 32, 16, 8),
    (20, 48, 8, 8),
    (9, 64, 32, 32),
    (16, 24, 24, 8),  # k = d: every group
]


@pytest.mark.parametrize(("d_in", "d", "k", "size"), CASES)
@pytest.mark.parametrize("batch", [1, 5, 33])
@pytest.mark.parametrize("path", ["dense", "gather", "kernel"])
def test_eval_paths_equal_masked_dense(
    d_in: int, d: int, k: int, size: int, batch: int, path: str
) -> None:
    layer = make_layer(d_in, d, k, size).eval()
    x = inputs(batch, d_in)
    with torch.no_grad():
        y = {"dense": layer._dense_forward, "gather": layer._gather_forward}.get(
            path, layer._kernel_forward
        )(x, k)
    torch.testing.assert_close(y.double(), reference(layer, x), atol=1e-5, rtol=1e-4)
    mask = layer.last_mask
    assert mask is not None and mask.shape == (batch, d)
    assert (mask.sum(1) == k).all()
    groups = mask.reshape(batch, d // size, size)
    assert (groups.all(-1) | ~groups.any(-1)).all()  # whole groups only


@pytest.mark.parametrize("light_rank", [0, 4])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_the_kernel_folds_the_light_bias_and_relu_as_the_dense_path(
    light_rank: int, activation: str | None, bias: bool
) -> None:
    """The block kernel adds the light path's bias in its mix and last pass, and fuses ReLU
    there: the same output as the masked dense path."""
    layer = make_layer(24, 64, 16, 8, light_rank=light_rank, activation=activation, bias=bias)
    layer.eval()
    x = inputs(21, 24)
    with torch.no_grad():
        got, want = layer._kernel_forward(x, 16), layer._dense_forward(x, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_the_kernel_sees_every_change_of_the_weight() -> None:
    """The kernel caches W packed by group per weight (key: data pointer, shape, version): an
    in-place update, a new tensor and inference mode must each give the new weight's output."""
    layer = make_layer(40, 64, 16, 8).eval()
    x = inputs(33, 40)
    run = layer._kernel_forward
    with torch.no_grad():
        first = run(x, 16)
        assert torch.equal(run(x, 16), first)  # the cached packing: the same output
        layer.weight.mul_(2.0)  # in place: the version counter moves
        doubled = run(x, 16)
        torch.testing.assert_close(doubled.double(), reference(layer, x), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(doubled, first)
        layer.weight.data = torch.randn_like(layer.weight)  # another tensor, another pointer
        torch.testing.assert_close(run(x, 16).double(), reference(layer, x), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        fresh = make_layer(40, 64, 16, 8).eval()  # inference tensors: packed per call
        torch.testing.assert_close(
            fresh._kernel_forward(x, 16).double(), reference(fresh, x), atol=1e-5, rtol=1e-4
        )


def _kernel_kept_factors() -> tuple[MIDL, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A block layer after an eager kernel forward that kept the gate's factors, its input,
    and the gate values and mask the dense path computes on it."""
    from midl_autok.kernels import cpu_kernels

    if cpu_kernels() is None:
        pytest.skip("the CPU kernels could not be built on this machine")
    layer = make_layer(24, 64, 16, 8).eval()
    x = inputs(33, 24)
    with torch.no_grad():
        layer._dense_forward(x, 16)
        want_gate, want_mask = layer.last_gate, layer.last_mask
        assert want_gate is not None and want_mask is not None
        layer._kernel_forward(x, 16)
    assert isinstance(layer._last[0], tuple)  # the factors, not the logits
    return layer, x, want_gate, want_mask


def test_the_kernels_gate_values_are_computed_when_asked_for() -> None:
    """The eager block kernel returns ``h = G1 x`` instead of the (B, d) logits; ``last_gate``
    computes ``sigmoid(G2 h)`` on first access: the dense path's gate values and mask. Once
    G2 changes in place they cannot be recovered: None, never the new weight's values."""
    layer, x, want_gate, want_mask = _kernel_kept_factors()
    with torch.no_grad():
        torch.testing.assert_close(layer.last_gate, want_gate)
        assert torch.equal(layer.last_mask, want_mask)
        layer._kernel_forward(x, 16)
        layer.gate_out.mul_(2.0)
        assert layer.last_gate is None
        assert layer.last_mask is None
        layer._kernel_forward(x, 16)  # the next forward records the new gate
        torch.testing.assert_close(
            layer.last_gate, torch.sigmoid(layer.gate_logits(x)), atol=1e-6, rtol=1e-5
        )


def test_kept_gate_factors_survive_a_fused_step_after_a_mode_switch() -> None:
    # the train/validate loop: eval forward (the block kernel keeps h and G2), train(), a
    # fused optimizer step (G2 changes without a version bump); last_gate still reports the
    # gate of that eval forward, not one recomputed with the new G2
    layer, _, want_gate, want_mask = _kernel_kept_factors()
    opt = torch.optim.Adam(layer.parameters(), lr=0.5, fused=True)
    layer.train()
    before = layer.gate_out._version
    with torch.no_grad():
        layer.gate_out.grad = torch.ones_like(layer.gate_out)
    opt.step()
    assert layer.gate_out._version == before  # the premise: no version bump
    torch.testing.assert_close(layer.last_gate, want_gate)
    assert torch.equal(layer.last_mask, want_mask)


@pytest.mark.parametrize(("d_in", "d", "k", "size"), CASES)
@pytest.mark.parametrize("light_rank", [0, 4])
def test_training_forward_and_straight_through_gradients(
    d_in: int, d: int, k: int, size: int, light_rank: int
) -> None:
    layer = make_layer(d_in, d, k, size, light_rank=light_rank).train()
    x = inputs(7, d_in).requires_grad_(True)
    upstream = inputs(7, d, seed=3)
    (layer(x) * upstream).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    got["x"] = x.grad.clone()

    x64 = x.detach().double().requires_grad_(True)
    params = dict(layer.named_parameters())
    for p in params.values():
        p.grad = None
    want_y = reference(layer, x64, ste=True)
    torch.testing.assert_close(layer(x.detach()).double(), want_y.detach(), atol=1e-5, rtol=1e-4)
    # float64 gradients of the reference, through copies of the parameters
    doubles = {n: p.detach().double().requires_grad_(True) for n, p in params.items()}
    ref_layer = make_layer(d_in, d, k, size, light_rank=light_rank).double()
    ref_layer.load_state_dict({n: t.detach() for n, t in doubles.items()})
    ref_params = dict(ref_layer.named_parameters())
    (reference(ref_layer, x64, ste=True) * upstream.double()).sum().backward()
    for name, grad in got.items():
        want = x64.grad if name == "x" else ref_params[name].grad
        torch.testing.assert_close(grad.double(), want, atol=1e-4, rtol=1e-3, msg=name)


def test_auto_path_equals_forced_paths_at_larger_sizes() -> None:
    layer = make_layer(64, 256, 64, 32).eval()
    x = inputs(70, 64)
    with torch.no_grad():
        want = layer._dense_forward(x, 64)
        for mode in ("auto", "gather", "kernel", "never"):
            layer.sparse_eval = mode  # type: ignore[assignment]
            torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-4, msg=mode)


@pytest.mark.parametrize("gating", ["block:0", "block:-3", "block:x", "blocks:8", "head"])
def test_bad_gating_is_one_line(gating: str) -> None:
    with pytest.raises(SpecError, match="gating") as info:
        MIDL(16, 32, gating=gating)
    assert "\n" not in str(info.value)


def test_k_and_width_must_be_multiples_of_the_block() -> None:
    with pytest.raises(SpecError, match=r"width 30 is not a multiple of the gating block 8"):
        MIDL(16, 30, gating="block:8")
    with pytest.raises(SpecError, match=r"k = 12 is not a multiple of the gating block 8"):
        MIDL(16, 32, 12, gating="block:8")
    layer = MIDL(16, 32, 8, gating="block:8")
    with pytest.raises(SpecError, match=r"k = 7 is not"):
        layer.k = 7
    assert layer.k == 8


# ------------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize(("k", "size"), [(16, 8), (64, 32), (32, 4)])
def test_flops_model_counts_the_block_path(k: int, size: int) -> None:
    layer = MIDL(48, 64, k, gate_rank=4, light_rank=6, gating=f"block:{size}").eval()
    layer.sparse_eval = "gather"
    x = inputs(1, 48)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer(x)
    want = midl_flops(48, 64, k, gate_rank=4, light_rank=6, gating=f"block:{size}")
    assert counter.get_total_flops() == want
    assert want == midl_flops(48, 64, k, gate_rank=4, light_rank=6)  # same as neuron gating
    costs = cost_model(torch.nn.Sequential(layer), x)
    assert costs.layers[0].gating == f"block:{size}"
    assert costs.inference_flops({"0": k}) == want
    with pytest.raises(SpecError, match="k = 10 is not a multiple"):
        midl_flops(48, 64, 10, gate_rank=4, light_rank=6, gating="block:8")


# ------------------------------------------------------------------------- spec and models


def test_spec_gating_field() -> None:
    assert validate_spec({}).model.gating == "neuron"
    assert validate_spec({"model": {"gating": "Block:32"}}).model.gating == "block:32"
    for bad in ("block:0", "channel", "block:"):
        with pytest.raises(SpecError, match=r"model\.gating") as info:
            validate_spec({"model": {"gating": bad}})
        assert "\n" not in str(info.value)


def test_models_pass_gating_to_their_midl_layers() -> None:
    neuron = build_model("mlp", input_shape=(10,), num_classes=3, hidden=[32, 16])
    assert "gating" not in neuron.config  # neuron models keep their config and signature
    assert (
        neuron.signature()
        == build_model(
            "mlp", input_shape=(10,), num_classes=3, hidden=[32, 16], gating="neuron"
        ).signature()
    )
    model = build_model("mlp", input_shape=(10,), num_classes=3, hidden=[32, 16], gating="block:8")
    assert [str(m.gating) for _, m in model.midl_layers()] == ["block:8", "block:8"]
    assert model.signature() != neuron.signature()
    cnn = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, hidden=[32], gating="block:4")
    assert str(cnn.midl_layers()[0][1].gating) == "block:4"
    template = model.schedule_template(3, 0.3)  # 0.3 * 32 = 9.6 -> 8; 0.3 * 16 = 4.8 -> 8
    assert template.k == ((8, 8, 8), (8, 8, 8))
    model.check_schedule(template)
    bad = KSchedule(template.layers, 2, [[8, 12], [8, 8]], arch="mlp")
    with pytest.raises(ScheduleError, match=r"k = 12 for layer body.0 at epoch 1 .* block 8"):
        model.check_schedule(bad)


def test_models_refuse_head_and_unsplittable_widths() -> None:
    with pytest.raises(
        SpecError, match=r"gating 'head' needs attention heads, but model 'mlp' has none"
    ):
        build_model("mlp", input_shape=(10,), num_classes=3, hidden=[32], gating="head")
    with pytest.raises(SpecError, match=r"layer body.1: width 20 is not a multiple .* 8"):
        build_model("mlp", input_shape=(10,), num_classes=3, hidden=[32, 20], gating="block:8")


# ------------------------------------------------------------------------------------ CLI


def _spec(tmp_path: Path, gating: str, k_fraction: float = 0.5) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "dataset: {name: synthetic, max_samples: 200}\n"
        f"model: {{arch: mlp, hidden: [32, 16], gating: '{gating}'}}\n"
        f"training: {{epochs: 1, k_fraction: {k_fraction}}}\n"
    )
    return path


@pytest.mark.parametrize(
    ("gating", "pattern"),
    [
        ("block:0", r"model\.gating.*block size must be a positive integer"),
        ("block:7", r"width 32 is not a multiple of the gating block 7"),
        ("head", r"gating 'head' needs attention heads"),
    ],
)
def test_cli_bad_gating_is_one_line_exit_2(tmp_path: Path, gating: str, pattern: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", "train", str(_spec(tmp_path, gating))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_cli_trains_a_block_gated_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", "train", str(_spec(tmp_path, "block:8", 0.3))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
