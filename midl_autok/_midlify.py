"""Convert the ``nn.Linear`` layers of a (trained) model into MID-L layers, and start a search
from a dense checkpoint.

:func:`midlify` replaces the chosen Linear layers of any module by :class:`~midl_autok.layers.MIDL`
layers initialized so that the converted model starts where the dense one was.
:func:`init_from_checkpoint` does the same for a built-in model from a dense model's weights
(the spec's ``model.init_from``).

**Initialization** (``init="svd"``) of a MID-L layer from a dense layer ``y = W x + b``
(``W = P S Q^T``, singular values ``s_1 >= s_2 >= ...``). MIDL mixes
``y = a ⊙ f + (1 - a) ⊙ l`` with ``a = m ⊙ g`` and a gate ``g = sigmoid(G2 · G1 · x)`` that
has no bias, so ``g`` cannot start near 1 for every input; it starts at ``g0 = 1/2``:

- **light path** ``l = U · V · x + c``: the best rank-r approximation of W (Eckart-Young,
  truncated SVD), ``U = P_r S_r^{1/2}``, ``V = S_r^{1/2} Q_r^T``, ``c = b``; its error
  ``||W - U V||_2 = s_{r+1}``. Components beyond the rank of W: ``V`` rows keep their random
  init, ``U`` columns are zero (the product stays exact, both factors still learn).
- **gate** ``G2 · G1 = (τ / s_1) · W_{r_g}`` (the leading ``r_g`` SVD components of W, split
  ``sqrt`` evenly): its spectral norm is ``τ`` = ``gate_scale`` (default 1e-4), so
  ``|g - 1/2| <= τ ||x|| / 4``. Top-k runs on the logits, which do not depend on ``τ``: the
  k neurons whose pre-activation ``W x`` is predicted largest take the full path.
- **full path** ``f``: ``W' = (W - (1 - g0) U V) / g0 = 2 W - U V``, ``b' = 2 b - c``, so a
  selected neuron outputs ``g0 f + (1 - g0) l = W x + b`` exactly and one off the top-k
  outputs the SVD estimate ``l``. At ``k = d`` the layer computes
  ``y = W x + b + (2 g - 1)(f - l)``, within ``τ ||x|| · |W x + b - l| / 2`` of the dense
  output (the tests hold a converted model to that before any fine-tuning).

**Calibration** (``calibration=`` inputs, ``init="svd"``): the light path becomes the best
rank-r approximation of the layer **on its inputs**: ``U V`` minimizes the mean of
``||(W x + b) - (U V x + c)||^2`` over the layer's inputs ``x`` seen when the calibration
batches run through the model, i.e. the truncated SVD of ``W Σ^{1/2}`` mapped back by
``Σ^{-1/2}`` (``Σ``: the inputs' covariance plus a ridge of ``1e-3`` times its mean
eigenvalue, so directions the data never visits keep a finite map), and
``c = b + (W - U V) μ`` (``μ``: the inputs' mean). Without data, every direction of ``x`` counts
the same (plain SVD); with it, the rank goes where the inputs vary. The full path
compensates as above, so k = d still reproduces the dense output.

**The gate with calibration** (``gate="auto"``, the default) is one of three kinds, the same
for every layer, whichever converted model is closest to the dense model (squared difference
of the outputs on the calibration inputs) with every layer at ``k = k_fraction · d`` (``d/2``
when that is ``d``); ties keep the earlier kind:

- ``"svd"``: the plain SVD of W, as without calibration;
- ``"data"``: the same map fitted to the inputs (the leading ``r_g`` components of the
  whitened SVD above);
- ``"error"``: the rank-``r_g`` map of x closest in least squares to the light path's error
  ``|act(W x + b) - act(l(x))|`` on the inputs (reduced-rank regression, no intercept: the
  gate has no bias), ``act`` the activation after the layer (the built-in models' MID-L layers
  carry theirs; midlify's layers are identity and the model's own follows them: midlify's
  ``activation`` reads it from the model, an ``nn.Sequential`` or its ``torch.fx`` trace, or
  is told it): it puts on the full path the neurons whose light estimate is predicted worst.

Each is scaled to spectral norm ``τ``. No kind ranks best everywhere
(``experiments/probe_midlify_gate.py``, docs/own-model.md): the fitted one lost fewer points on
8x8 digits, the plain one on MNIST-1D, where the fitted one lost 7.7 points at k = d/4 and the
error one (after the ReLU) beat both at every k. ``gate="svd"`` / ``"data"`` / ``"error"``
force one. (The choice costs three passes over the calibration inputs, a second whitening and
one regression per layer.)

``init="random"`` keeps MIDL's random light path (``U``, ``V``, ``c``) and sets the gate and
the full path as above (``W' = 2 W - U V``), so k = d still reproduces the dense output and
only the estimate of the neurons off the top-k differs: the comparison of
``experiments/bench_midlify.py``.

(A private module: a public ``midl_autok.midlify`` module would shadow the function
``midl_autok.midlify`` once imported.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from midl_autok._calibrate import (
    GATE_CHOICE_FRACTION,
    Activation,
    Calibration,
    GateInit,
    GateKind,
    as_batches,
    check_gate,
    choose_gate,
    error_map,
    layer_inputs,
    model_outputs,
    set_gate,
    whitened,
)
from midl_autok._checkpoint import CheckpointError, load_dense_state
from midl_autok._layer_choice import ActivationChoice, Select, activations, matcher
from midl_autok.errors import UserError
from midl_autok.layers import MIDL
from midl_autok.schedule import KSchedule, LayerSpec

__all__ = [
    "GATE_START",
    "Calibration",
    "CheckpointError",
    "GateInit",
    "init_from_checkpoint",
    "init_from_dense_state",
    "init_midl_from_linear",
    "load_dense_state",
    "midlify",
]

#: The gate value every neuron starts with (no gate bias: sigmoid(0)); see the module doc.
GATE_START = 0.5
Init = Literal["svd", "random"]
INITS: tuple[Init, ...] = ("svd", "random")


# -- one layer --------------------------------------------------------------------------------


@torch.no_grad()
def init_midl_from_linear(
    layer: MIDL,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    init: Init = "svd",
    gate_scale: float = 1e-4,
    inputs: torch.Tensor | None = None,
    gate: GateKind = "svd",
    activation: Activation | None = None,
) -> MIDL:
    """Set ``layer`` from a dense layer ``y = weight · x + bias`` (see the module docstring).

    ``weight``: ``(d, d_in)`` = ``(layer.out_features, layer.in_features)``. ``inputs``:
    ``(n, d_in)`` inputs of the layer to fit the light path on (``init="svd"`` only; the
    module docstring's calibration) and, with ``gate="data"`` / ``"error"``, the gate.
    ``activation``: the one applied after the layer, for ``gate="error"`` (``None`` = the
    layer's own). Computed in float64, stored in the layer's dtype."""
    if init not in INITS:
        raise UserError(f"init must be one of {', '.join(INITS)}, but got {init!r}")
    if gate != "svd" and inputs is None:
        raise UserError(f'gate="{gate}" fits the gate to calibration inputs; give some')
    if not gate_scale >= 0:
        raise UserError(f"gate_scale must be >= 0, but got {gate_scale}")
    d, d_in = layer.out_features, layer.in_features
    if tuple(weight.shape) != (d, d_in):
        raise UserError(f"weight of shape {tuple(weight.shape)} does not fit a {d} x {d_in} layer")
    if (bias is None) != (layer.bias is None):
        raise UserError("the dense layer and the MID-L layer must both have a bias or neither")
    w = weight.detach().to("cpu", torch.float64)  # (d, d_in)
    b = None if bias is None else bias.detach().to("cpu", torch.float64)  # (d,)
    p, s, qh = torch.linalg.svd(w, full_matrices=False)  # (d, n), (n,), (n, d_in)
    fitted_light = init == "svd" and layer.light_in is not None
    fit = whitened(w, inputs) if inputs is not None and (fitted_light or gate == "data") else None

    def put(param: torch.Tensor | None, value: torch.Tensor) -> None:
        if param is not None:
            param.copy_(value.to(param.dtype))

    light = torch.zeros_like(w)  # U V, (d, d_in)
    light_bias = torch.zeros(d, dtype=torch.float64)
    if layer.light_in is not None and layer.light_out is not None:
        if init == "svd":
            # x -> the SVD's coordinates: plain, or whitened by the inputs (calibration)
            lp, ls, lqh, mean = (p, s, qh, None) if fit is None else fit
            r = min(layer.light_rank, ls.numel())
            lroot = ls.sqrt()
            u = torch.zeros(d, layer.light_rank, dtype=torch.float64)  # (d, r)
            u[:, :r] = lp[:, :r] * lroot[:r]
            v = layer.light_in.detach().to("cpu", torch.float64).clone()  # (r, d_in)
            v[:r] = lroot[:r, None] * lqh[:r]
            c = b.clone() if b is not None else light_bias.clone()
            if mean is not None:  # the best constant for the inputs' mean
                c += (w - u @ v) @ mean
            put(layer.light_out, u)
            put(layer.light_in, v)
            put(layer.light_bias, c)
        light = layer.light_out.detach().double().cpu() @ layer.light_in.detach().double().cpu()
        if layer.light_bias is not None:
            light_bias = layer.light_bias.detach().to("cpu", torch.float64)

    if gate == "error" and inputs is not None:  # after the light path: its error
        set_gate(layer, error_map(layer, w, b, inputs, activation), gate_scale)
    else:
        set_gate(layer, (p, s, qh) if gate == "svd" or fit is None else fit[:3], gate_scale)

    put(layer.weight, (w - (1 - GATE_START) * light) / GATE_START)
    if b is not None:
        put(layer.bias, (b - (1 - GATE_START) * light_bias) / GATE_START)
    return layer


# -- any module -------------------------------------------------------------------------------


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, new)


def midlify(
    model: nn.Module,
    select: Select = None,
    *,
    k_fraction: float = 1.0,
    gate_rank: int = 16,
    light_rank: int = 16,
    init: Init = "svd",
    gate_scale: float = 1e-4,
    epochs: int = 1,
    calibration: Calibration | None = None,
    gate: GateInit = "auto",
    activation: ActivationChoice = "auto",
) -> tuple[nn.Module, KSchedule]:
    """Replace the chosen ``nn.Linear`` layers of ``model`` (in place) by MID-L layers.

    Args:
        model: any module; its Linear layers are found with ``named_modules()``.
        select: which Linear layers: ``None`` = every Linear except the **last one registered**
            (``named_modules()`` order, the classifier of a usual model); a glob on the
            qualified name (``"encoder.*.fc1"``); a compiled regex (``re.compile(...)``,
            full match); a module type or tuple of types (``isinstance``); or a callable
            ``(name, module) -> bool``. Only ``nn.Linear`` modules are candidates.
        k_fraction: the template's k fraction for every converted layer.
        gate_rank, light_rank: ranks of the gate and of the light path (0 = none).
        init: ``"svd"`` (light path = truncated SVD of W) or ``"random"``; see the module
            docstring for the gate and full path, which both use.
        gate_scale: spectral norm ``τ`` of the starting gate (the k = d deviation bound).
        epochs: epochs of the returned template.
        calibration: a batch (or a list of batches) of the model's inputs: each light path is
            then fitted to the inputs its layer sees (``init="svd"``; the module docstring's
            calibration). A few thousand samples are plenty.
        gate: how the gate starts (it decides which neurons take the full path before any
            fine-tuning): ``"svd"`` = the plain SVD of W, ``"data"`` = the map fitted to the
            calibration inputs, ``"error"`` = the map fitted to the light path's error on
            them, ``"auto"`` = with calibration, the kind whose converted model is closest
            to the dense model's output on the calibration inputs at ``k = k_fraction d``
            (``d/2`` when ``k_fraction`` is 1), else ``"svd"``. See the module docstring.
        activation: the activation the model applies after each converted layer, which the
            error gate needs (its target is the light path's error after it; the converted
            layer itself stays ``identity`` and the model's activation still runs):
            ``"auto"`` = read from the model: the next module of an ``nn.Sequential`` (past
            dropout or identity) if it is an elementwise activation (``nn.ReLU``,
            ``nn.GELU``, ...: :data:`~midl_autok._layer_choice.ELEMENTWISE_ACTIVATIONS`),
            else the call that takes the layer's output in the model's ``torch.fx`` trace
            (``F.relu(self.fc1(x))``, ``self.act(...)``, ``.tanh()``), else identity (a
            model that cannot be traced: identity, logged); a function or module for every
            layer (``nn.ReLU()``, ``torch.tanh``); a mapping of layer names to them (other
            layers: as ``"auto"``); ``None`` = identity for all. The choices are logged
            (``midl_autok._midlify``, INFO).

    Returns:
        ``(model, schedule)``: the same module object, and a constant
        :class:`~midl_autok.schedule.KSchedule` over the converted layers (named by their
        qualified names, in registration order). The MID-L layers use
        ``activation="identity"`` (the model's own activations follow them), sit on the
        Linear's device and dtype, and have ``k`` set from ``k_fraction``.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    match = matcher(select, linears)
    chosen = [(n, model.get_submodule(n)) for n in linears]
    chosen = [(n, m) for n, m in chosen if match(n, m)]
    if not chosen:
        listed = ", ".join(linears[:12]) + (", ..." if len(linears) > 12 else "")
        raise UserError(
            f"midlify: select={select!r} matches no nn.Linear layer of the model "
            f"(its Linear layers: {listed or 'none'})"
        )
    check_gate(gate, calibration)
    fits_error = calibration is not None and gate in ("auto", "error")  # what reads acts
    acts = activations(model, [n for n, _ in chosen], activation, read=fits_error)
    batches = None if calibration is None else as_batches(calibration)
    seen = None if batches is None else layer_inputs(model, dict(chosen), batches)
    reference = model_outputs(model, batches) if batches is not None and gate == "auto" else None
    specs: list[LayerSpec] = []
    for name, linear in chosen:
        assert isinstance(linear, nn.Linear)
        layer = MIDL(
            linear.in_features,
            linear.out_features,
            gate_rank=gate_rank,
            light_rank=light_rank,
            activation="identity",
            bias=linear.bias is not None,
        ).to(device=linear.weight.device, dtype=linear.weight.dtype)
        init_midl_from_linear(
            layer,
            linear.weight,
            linear.bias,
            init=init,
            gate_scale=gate_scale,
            inputs=None if seen is None else seen[name],
            gate="svd" if gate == "auto" else gate,
            activation=acts[name],
        )
        _replace(model, name, layer)
        specs.append(LayerSpec(name, linear.out_features))
    template = KSchedule.constant(specs, epochs, k_fraction, arch=type(model).__name__)
    for spec, row in zip(template.layers, template.k, strict=True):
        converted = model.get_submodule(spec.name)
        assert isinstance(converted, MIDL)
        converted.k = row[0]
    if seen is not None and batches is not None and reference is not None:
        layers = {}
        for name, linear in chosen:
            converted = model.get_submodule(name)
            assert isinstance(converted, MIDL)
            assert isinstance(linear, nn.Linear)
            layers[name] = (converted, linear.weight, linear.bias, seen[name], acts[name])
        fraction = k_fraction if k_fraction < 1 else GATE_CHOICE_FRACTION
        choose_gate(model, layers, batches, reference, fraction, gate_scale)
    return model, template


# -- a model from a dense checkpoint -----------------------------------------------------------

#: Where a dense checkpoint keeps the Linear layer of MID-L layer ``N``: ``N.0`` (the built-in
#: dense variant's ``Sequential(Linear, activation)``, as :meth:`FactoryNet.dense_twin`), ``N``
#: itself (a user's model with an ``nn.Linear`` there), or ``either`` (the first when the
#: checkpoint has ``N.0.weight`` for any ``N``, else the second: factory models).
Layout = Literal["sequential", "named", "either"]


def _expected(
    model: nn.Module, midl: Mapping[str, MIDL], prefix: str
) -> dict[str, tuple[int, ...]]:
    """Shapes a dense checkpoint of ``model``'s architecture holds (``midl``: its MID-L
    layers by name). A MID-L layer ``N`` is ``N`` + ``prefix`` (``".0"`` or ``""``:
    :data:`Layout`), an ``nn.Linear``; every other tensor keeps its name."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, tensor in model.state_dict().items():  # in the model's order
        owner = next((n for n in midl if name.startswith(f"{n}.")), None)
        if owner is None:
            shapes[name] = tuple(tensor.shape)
        elif f"{owner}{prefix}.weight" not in shapes:
            layer = midl[owner]
            shapes[f"{owner}{prefix}.weight"] = (layer.out_features, layer.in_features)
            if layer.bias is not None:
                shapes[f"{owner}{prefix}.bias"] = (layer.out_features,)
    return shapes


def _first_difference(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]
) -> str | None:
    for name, shape in expected.items():
        if name not in state:
            return f"{name}: the model has {shape}, the checkpoint has nothing"
        if tuple(state[name].shape) != shape:
            return f"{name}: the model has {shape}, the checkpoint has {tuple(state[name].shape)}"
    for name in state:
        if name not in expected:
            return f"{name}: the checkpoint has {tuple(state[name].shape)}, the model has nothing"
    return None


def init_from_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    init: Init = "svd",
    gate_scale: float = 1e-4,
    calibration: Calibration | None = None,
    gate: GateInit = "auto",
    layout: Layout = "sequential",
) -> nn.Module:
    """Initialize a model with MID-L layers (a built-in one, any variant, or a factory's) from
    the dense model's weights in ``path`` (read by :func:`load_dense_state`; see
    :func:`init_from_dense_state`)."""
    state = load_dense_state(path)
    return init_from_dense_state(
        model,
        state,
        init=init,
        gate_scale=gate_scale,
        source=f"model.init_from: {path}",
        calibration=calibration,
        gate=gate,
        layout=layout,
    )


@torch.no_grad()
def init_from_dense_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    init: Init = "svd",
    gate_scale: float = 1e-4,
    source: str = "the dense state dict",
    calibration: Calibration | None = None,
    gate: GateInit = "auto",
    layout: Layout = "sequential",
) -> nn.Module:
    """Initialize ``model`` from the state dict of its dense variant (its MID-L layers'
    weights where ``layout`` says): MID-L layers through :func:`init_midl_from_linear`, every
    other tensor copied. Names or shapes that differ are a :class:`CheckpointError` naming the
    first differing tensor. With ``calibration`` (model
    inputs), the light paths are then fitted to the inputs each layer sees with every
    neuron on the full path (k = d, where the converted model computes the dense one), and
    the gate is chosen as :func:`midlify`'s ``gate`` says (``auto``: at k = d/2)."""
    check_gate(gate, calibration)
    midl = {n: m for n, m in model.named_modules() if isinstance(m, MIDL)}
    prefix = ".0" if layout == "sequential" else ""
    if layout == "either":
        prefix = ".0" if any(f"{n}.0.weight" in state for n in midl) else ""
    expected = _expected(model, midl, prefix)
    diff = _first_difference(expected, state)
    if diff is not None:
        hint = (
            "give the weights of the same architecture built with variant dense"
            if layout == "sequential"  # a built-in model; else a user's
            else "give the weights of its dense twin: an nn.Linear where each MID-L layer is "
            "(or nn.Sequential(nn.Linear, activation)), every other tensor as in the model"
        )
        raise CheckpointError(
            f"{source} does not fit the model (first difference at {diff}); {hint}"
        )
    for name, tensor in model.state_dict().items():
        if name in expected:
            tensor.copy_(state[name])
    for n, layer in midl.items():
        weight, bias = state[f"{n}{prefix}.weight"], state.get(f"{n}{prefix}.bias")
        init_midl_from_linear(layer, weight, bias, init=init, gate_scale=gate_scale)
    if calibration is None:
        return model
    batches = as_batches(calibration)
    ks = {n: layer.k for n, layer in midl.items()}
    for layer in midl.values():
        layer.k = None  # k = d: the converted model computes the dense one
    try:
        seen = layer_inputs(model, midl, batches)
        reference = model_outputs(model, batches) if gate == "auto" else None
    finally:
        for n, layer in midl.items():
            layer.k = ks[n]
    layers = {}
    for n, layer in midl.items():
        weight, bias = state[f"{n}{prefix}.weight"], state.get(f"{n}{prefix}.bias")
        init_midl_from_linear(
            layer,
            weight,
            bias,
            init=init,
            gate_scale=gate_scale,
            inputs=seen[n],
            gate="svd" if gate == "auto" else gate,
        )
        layers[n] = (layer, weight, bias, seen[n], None)
    if reference is not None:
        choose_gate(model, layers, batches, reference, GATE_CHOICE_FRACTION, gate_scale)
    return model
