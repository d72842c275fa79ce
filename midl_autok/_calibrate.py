"""Fitting a converted (midlify) model to data: the calibration of :mod:`midl_autok._midlify`.

The inputs each converted layer sees (:func:`layer_inputs`), the rank-r map closest to a dense
layer on them (:func:`whitened`), the gate fitted to the light path's error on them
(:func:`error_map`), the gate's starting factors (:func:`set_gate`) and the choice among the
plain-SVD gate, the one fitted to the inputs and the error one (:func:`choose_gate`,
``gate="auto"``): the kind whose converted model is closest to the dense model's outputs on the
calibration inputs with every layer at a given k. The module docstring of
:mod:`midl_autok._midlify` has the maths.
"""

from __future__ import annotations

import copy
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
    "Activation",
    "Calibration",
    "GateInit",
    "GateKind",
    "as_batches",
    "check_gate",
    "choose_gate",
    "error_map",
    "for_calibration",
    "layer_inputs",
    "model_outputs",
    "set_gate",
    "whitened",
]

#: How the gate starts: the plain SVD of W, the map fitted to the inputs, the map fitted to the
#: light path's error, or (``auto``) the kind with the smallest output error on the calibration
#: inputs (see the module doc).
GateInit = Literal["auto", "svd", "data", "error"]
GATE_INITS: tuple[GateInit, ...] = ("auto", "svd", "data", "error")
#: What a gate can be set to (``auto`` chooses among these, in this order on ties).
GateKind = Literal["svd", "data", "error"]
#: The k fraction the gate choice is measured at when the template keeps every neuron.
GATE_CHOICE_FRACTION = 0.5
#: Inputs of the model to fit the light paths on: one batch or an iterable of batches.
Calibration = torch.Tensor | Iterable[torch.Tensor]
#: The ridge added to the inputs' covariance, times its mean eigenvalue (see the module doc).
RIDGE = 1e-3
log = logging.getLogger("midl_autok._midlify")
#: An elementwise function applied after a layer (``nn.ReLU()``, ``torch.tanh``, ...).
Activation = Callable[[torch.Tensor], torch.Tensor]
#: A converted layer for :func:`choose_gate`: (layer, dense W, dense b, its inputs, the
#: activation after it for the error gate: ``None`` = the layer's own).
GateEntry = tuple[MIDL, torch.Tensor, torch.Tensor | None, torch.Tensor, Activation | None]


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


def _matrix(inputs: torch.Tensor, d_in: int) -> torch.Tensor:
    """A layer's calibration inputs as an (n, d_in) float64 CPU matrix, checked."""
    x = inputs.detach().to("cpu", torch.float64).reshape(-1, d_in)
    if x.shape[0] == 0 or not bool(torch.isfinite(x).all()):
        raise UserError("calibration: a layer's inputs are empty or not finite")
    return x


def whitened(
    w: torch.Tensor, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P, s, Qh', mean)`` such that ``P[:, :r] diag(s[:r]) Qh'[:r]`` is the rank-r map
    closest to ``w`` on ``inputs`` (``(n, d_in)``; the module docstring's calibration):
    the SVD ``W Σ^{1/2} = P S Q^T`` with ``Qh' = Q^T Σ^{-1/2}``."""
    x = _matrix(inputs, w.shape[1])
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


def for_calibration(act: Activation) -> Activation:
    """``act`` usable on the float64 CPU tensors of the calibration: a module is copied there
    in eval mode (its parameters, as PReLU's, in float64; RReLU deterministic), so the
    model's own is not touched."""
    if isinstance(act, nn.Module):
        return copy.deepcopy(act).to("cpu", torch.float64).eval()
    return act


@torch.no_grad()
def error_map(
    layer: MIDL,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    inputs: torch.Tensor,
    act: Activation | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``gate="error"``: the rank-``r_g`` map of x (no bias: the gate has none) closest in
    least squares to the light path's error ``|act(W x + b) - act(l(x))|`` on ``inputs``
    (``act``: the activation after the layer; ``None`` = the layer's own, which in midlify
    is identity while the model's own follows: midlify's ``activation`` gives that one),
    i.e. reduced-rank regression with a ridge of ``RIDGE`` x the inputs' mean second moment.
    Set after the light path. Returns ``(P, s, Qh)`` for :func:`set_gate`."""
    x = _matrix(inputs, layer.in_features)
    w = weight.detach().to("cpu", torch.float64)
    z = x @ w.T + (0.0 if bias is None else bias.detach().to("cpu", torch.float64))
    light = torch.zeros_like(z)
    if layer.light_in is not None and layer.light_out is not None:
        v, u = layer.light_in.detach().double().cpu(), layer.light_out.detach().double().cpu()
        light = x @ v.T @ u.T
        if layer.light_bias is not None:
            light = light + layer.light_bias.detach().double().cpu()
    if act is None:
        act = layer._modules["act"]
        assert act is not None
    else:
        act = for_calibration(act)
    try:
        target = (act(z) - act(light)).abs()  # (n, d)
    except Exception as exc:  # a user's function: say which, and what it raised
        raise UserError(
            f"calibration: the activation after a layer, {act!r}, failed on its float64 "
            f"outputs of shape {tuple(z.shape)}: {type(exc).__name__}: {exc}"
        ) from exc
    if target.shape != z.shape or not bool(torch.isfinite(target).all()):
        raise UserError(
            f"calibration: the activation after a layer must be elementwise and finite on its "
            f"outputs, but {act!r} gave {tuple(target.shape)} from {tuple(z.shape)}"
        )
    gram = x.T @ x  # (d_in, d_in)
    ridge = RIDGE * max(float(gram.diagonal().mean()), 1e-12)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    full = torch.linalg.solve(gram + ridge * eye, x.T @ target).T  # (d, d_in): least squares
    # the fit x full^T has second moment full gram full^T: its leading output directions
    _, vec = torch.linalg.eigh(full @ gram @ full.T)  # ascending
    rg = min(layer.gate_rank, layer.out_features, layer.in_features)
    if rg == 0:
        zero = full.new_zeros
        return zero(layer.out_features, 0), zero(0), zero(0, layer.in_features)
    keep = vec[:, vec.shape[1] - rg :].flip(1)  # (d, r_g)
    p, s, qh = torch.linalg.svd(keep.T @ full, full_matrices=False)  # (r_g, d_in) = p s qh
    return keep @ p, s, qh


@torch.no_grad()
def choose_gate(
    model: nn.Module,
    layers: Mapping[str, GateEntry],
    batches: list[torch.Tensor],
    reference: list[torch.Tensor],
    fraction: float,
    gate_scale: float,
) -> GateKind:
    """``gate="auto"``: of the plain-SVD gates (already set), the gates fitted to the inputs
    and the error gates (``layers``: name -> (layer, W, b, inputs, activation after it)), keep
    the kind that gives the smallest squared difference from ``reference`` (the dense outputs
    on ``batches``) with every layer at ``k = fraction * d`` (ties: the earlier kind).
    Returns the choice."""
    if not reference:  # no tensor output to compare: keep the plain gate
        return "svd"
    ks = {n: entry[0].k for n, entry in layers.items()}

    def error() -> float:
        out = model_outputs(model, batches)
        return sum(float((o - r).pow(2).sum()) for o, r in zip(out, reference, strict=True))

    def factors(
        kind: GateKind, entry: GateEntry
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layer, weight, bias, inputs, act = entry
        if kind == "error":
            return error_map(layer, weight, bias, inputs, act)
        p, s, qh, _ = whitened(weight.detach().to("cpu", torch.float64), inputs)  # "data"
        return p, s, qh

    kinds: tuple[GateKind, ...] = ("svd", "data", "error")
    errors: dict[GateKind, float] = {}
    best: GateKind = "svd"
    saved: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        for entry in layers.values():
            entry[0].k = max(1, round(fraction * entry[0].out_features))
        for kind in kinds:
            if kind != "svd":  # the plain gates are set already
                for entry in layers.values():
                    set_gate(entry[0], factors(kind, entry), gate_scale)
            errors[kind] = error()
            if kind == "svd" or errors[kind] < errors[best]:
                best = kind
                saved = {
                    n: (e[0].gate_in.detach().clone(), e[0].gate_out.detach().clone())
                    for n, e in layers.items()
                }
        log.info(
            "midlify: gate %s (squared output error on the calibration inputs at k = %.2f d: "
            "plain SVD %.4g, fitted to the inputs %.4g, fitted to the light path's error %.4g)",
            best,
            fraction,
            *(errors[k] for k in kinds),
        )
        for n, entry in layers.items():
            entry[0].gate_in.copy_(saved[n][0])
            entry[0].gate_out.copy_(saved[n][1])
        return best
    finally:
        for n, entry in layers.items():
            entry[0].k = ks[n]


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
    if gate in ("data", "error") and calibration is None:
        raise UserError(f'gate="{gate}" fits the gate to calibration inputs; give calibration=')
