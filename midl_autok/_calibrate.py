"""Fitting a converted (midlify) model to data: the calibration of :mod:`midl_autok._midlify`.

The inputs each converted layer sees (:func:`layer_inputs`), the rank-r map closest to a dense
layer on them (:func:`whitened`), the gate's starting factors (:func:`set_gate`) and the choice
between the plain-SVD gate and the one fitted to the inputs (:func:`choose_gate`, ``gate="auto"``):
the one whose converted model is closer to the dense model's outputs on the calibration inputs
with every layer at a given k. The module docstring of :mod:`midl_autok._midlify` has the maths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from midl_autok.errors import UserError
from midl_autok.layers import MIDL

__all__ = [
    "GATE_CHOICE_FRACTION",
    "GATE_INITS",
    "RIDGE",
    "Calibration",
    "GateInit",
    "as_batches",
    "check_gate",
    "choose_gate",
    "layer_inputs",
    "model_outputs",
    "set_gate",
    "whitened",
]

#: How the gate starts: the plain SVD of W, the map fitted to the inputs, or the one of the two
#: with the smaller output error on the calibration inputs (see the module doc).
GateInit = Literal["auto", "svd", "data"]
GATE_INITS: tuple[GateInit, ...] = ("auto", "svd", "data")
#: The k fraction the gate choice is measured at when the template keeps every neuron.
GATE_CHOICE_FRACTION = 0.5
#: Inputs of the model to fit the light paths on: one batch or an iterable of batches.
Calibration = torch.Tensor | Iterable[torch.Tensor]
#: The ridge added to the inputs' covariance, times its mean eigenvalue (see the module doc).
RIDGE = 1e-3
log = logging.getLogger("midl_autok._midlify")


@torch.no_grad()
def set_gate(
    layer: MIDL, svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor], gate_scale: float
) -> None:
    """The gate ``G2 · G1`` = the leading ``r_g`` components of ``svd`` = ``(P, s, Qh)`` (a map
    ``P diag(s) Qh``), split ``sqrt(s)`` evenly and scaled to spectral norm ``gate_scale``."""
    p, s, qh = svd
    d, rg = layer.out_features, min(layer.gate_rank, s.numel())
    g_in = layer.gate_in.detach().to("cpu", torch.float64).clone()  # (r_g, d_in)
    g_out = torch.zeros(d, layer.gate_rank, dtype=torch.float64)  # (d, r_g)
    root = s[:rg].sqrt()
    g_in[:rg] = root[:, None] * qh[:rg]
    g_out[:, :rg] = p[:, :rg] * root
    # ||A B||_2 of the thin factors from their QR (Qh is not orthonormal once whitened)
    norm = 0.0
    if rg:
        r_out = torch.linalg.qr(g_out[:, :rg]).R
        r_in = torch.linalg.qr(g_in[:rg].T).R
        norm = float(torch.linalg.matrix_norm(r_out @ r_in.T, ord=2))
    scale = (gate_scale / norm) ** 0.5 if norm > 0 else 0.0
    g_in[:rg] *= scale
    g_out[:, :rg] *= scale
    layer.gate_in.copy_(g_in.to(layer.gate_in.dtype))
    layer.gate_out.copy_(g_out.to(layer.gate_out.dtype))


def whitened(
    w: torch.Tensor, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P, s, Qh', mean)`` such that ``P[:, :r] diag(s[:r]) Qh'[:r]`` is the rank-r map
    closest to ``w`` on ``inputs`` (``(n, d_in)``; the module docstring's calibration):
    the SVD ``W Σ^{1/2} = P S Q^T`` with ``Qh' = Q^T Σ^{-1/2}``."""
    x = inputs.detach().to("cpu", torch.float64).reshape(-1, w.shape[1])
    if x.shape[0] == 0 or not bool(torch.isfinite(x).all()):
        raise UserError("calibration: a layer's inputs are empty or not finite")
    mean = x.mean(0)
    centered = x - mean
    cov = centered.T @ centered / x.shape[0]
    eig, vec = torch.linalg.eigh(cov)
    eig = eig.clamp_min(0) + RIDGE * max(float(eig.clamp_min(0).mean()), 1e-12)
    half = (vec * eig.sqrt()) @ vec.T
    inv_half = (vec * eig.rsqrt()) @ vec.T
    p, s, qh = torch.linalg.svd(w @ half, full_matrices=False)
    return p, s, qh @ inv_half, mean


def as_batches(calibration: Calibration) -> list[torch.Tensor]:
    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)
    if not batches or not all(isinstance(b, torch.Tensor) for b in batches):
        raise UserError("calibration must be a tensor of model inputs or a list of them")
    return batches


def tensors(out: object) -> list[torch.Tensor]:
    """The tensors in a model's output (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for part in out for t in tensors(part)]
    return []


@torch.no_grad()
def model_outputs(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """The output tensors of ``model`` (eval mode) on each batch, float64 on the CPU."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        return [
            t.detach().to("cpu", torch.float64)
            for batch in batches
            for t in tensors(model(batch.to(device)))
        ]
    finally:
        model.train(was_training)


@torch.no_grad()
def choose_gate(
    model: nn.Module,
    layers: Mapping[str, tuple[MIDL, torch.Tensor, torch.Tensor]],
    batches: list[torch.Tensor],
    reference: list[torch.Tensor],
    fraction: float,
    gate_scale: float,
) -> GateInit:
    """``gate="auto"``: keep the plain-SVD gates (already set) or fit them to the inputs
    (``layers``: name -> (layer, W, inputs)), whichever gives the smaller mean squared
    difference from ``reference`` (the dense outputs on ``batches``) with every layer at
    ``k = fraction * d``. Returns the choice."""
    if not reference:  # no tensor output to compare: keep the plain gate
        return "svd"
    ks = {n: layer.k for n, (layer, _, _) in layers.items()}
    saved = {
        n: (lay.gate_in.detach().clone(), lay.gate_out.detach().clone())
        for n, (lay, _, _) in layers.items()
    }

    def error() -> float:
        out = model_outputs(model, batches)
        return sum(float((o - r).pow(2).sum()) for o, r in zip(out, reference, strict=True))

    try:
        for layer, _, _ in layers.values():
            layer.k = max(1, round(fraction * layer.out_features))
        plain = error()
        for layer, weight, inputs in layers.values():
            w = weight.detach().to("cpu", torch.float64)
            set_gate(layer, whitened(w, inputs)[:3], gate_scale)
        fitted = error()
        choice: GateInit = "data" if fitted < plain else "svd"
        log.info(
            "midlify: gate %s (squared output error on the calibration inputs at k = %.2f d: "
            "plain SVD %.4g, fitted to the inputs %.4g)",
            "fitted to the inputs" if choice == "data" else "plain SVD",
            fraction,
            plain,
            fitted,
        )
        if choice == "svd":
            for n, (layer, _, _) in layers.items():
                layer.gate_in.copy_(saved[n][0])
                layer.gate_out.copy_(saved[n][1])
        return choice
    finally:
        for n, (layer, _, _) in layers.items():
            layer.k = ks[n]


def layer_inputs(
    model: nn.Module, layers: Mapping[str, nn.Module], calibration: Calibration
) -> dict[str, torch.Tensor]:
    """Each of ``layers``' inputs (flattened to ``(n, in_features)``, float64 on the CPU) while
    the calibration batches run through ``model`` (eval mode, no gradients; each batch moved
    to the model's device)."""
    batches = as_batches(calibration)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}

    def keep(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            x = args[0]
            assert isinstance(x, torch.Tensor)
            seen[name].append(x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float64))

        return hook

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch.to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    missing = [n for n, parts in seen.items() if not parts]
    if missing:
        raise UserError(f"calibration: layer {missing[0]} saw no input (is it used in forward?)")
    return {n: torch.cat(parts) for n, parts in seen.items()}


def check_gate(gate: str, calibration: Calibration | None) -> None:
    if gate not in GATE_INITS:
        raise UserError(f"gate must be one of {', '.join(GATE_INITS)}, but got {gate!r}")
    if gate == "data" and calibration is None:
        raise UserError('gate="data" fits the gate to calibration inputs; give calibration=')
