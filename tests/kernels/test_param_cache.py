"""The kernels' cache of copies derived from parameters (cache.h: the block kernel's W packed
by group, the neuron kernel's stacked [G1; V] and transposed G2, U) never serves a copy of
parameters that have changed since: in-place updates bump a version counter; fused
optimizers do not, and are covered by the clear on every train/eval switch and by
``clear_cache()``."""

from __future__ import annotations

import pytest
import torch

from midl_autok.kernels import clear_cache
from midl_autok.layers import MIDL

GATINGS = ["neuron", "block:8"]


def _layer(gating: str) -> MIDL:
    torch.manual_seed(0)
    return MIDL(48, 64, 16, gate_rank=8, light_rank=8, gating=gating, sparse_eval="kernel")


def _check(layer: MIDL, x: torch.Tensor) -> None:
    """The kernel's output equals the masked dense path's on the current parameters."""
    with torch.no_grad():
        assert layer.eval_path(x) == "kernel"
        got = layer(x)
        layer.sparse_eval = "never"
        want = layer(x)
        layer.sparse_eval = "kernel"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _fused_step(layer: MIDL, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    with torch.enable_grad():
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("gating", GATINGS)
def test_eval_between_fused_optimizer_steps_sees_the_new_weights(kernels, gating: str) -> None:
    # the trainer's loop: train(), fused Adam steps (no version bump), eval(), validate
    layer = _layer(gating)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05, fused=True)
    x = torch.randn(32, 48)
    for _ in range(3):
        layer.train()
        _fused_step(layer, opt, x)
        layer.eval()
        _check(layer, x)


@pytest.mark.parametrize("gating", GATINGS)
def test_clear_cache_after_fused_steps_in_eval_mode(kernels, gating: str) -> None:
    layer = _layer(gating).eval()
    opt = torch.optim.Adam(layer.parameters(), lr=0.05, fused=True)
    x = torch.randn(32, 48)
    _check(layer, x)  # the copies are cached
    _fused_step(layer, opt, x)  # in eval mode: no train/eval switch, no version bump
    clear_cache()
    _check(layer, x)


@pytest.mark.parametrize("gating", GATINGS)
def test_in_place_updates_invalidate_the_cached_copies(kernels, gating: str) -> None:
    layer = _layer(gating).eval()
    x = torch.randn(32, 48)
    _check(layer, x)
    for name in ("weight", "gate_in", "gate_out", "light_in", "light_out"):
        with torch.no_grad():
            getattr(layer, name).mul_(-1.5)  # bumps the version counter
        _check(layer, x)
