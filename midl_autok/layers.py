"""The MID-L layer: input-dependent top-k neuron gating between a full and a low-rank path.

MID-L is described in words by arXiv 2505.11416; its equations were not available to us, so
this module is **our explicit definition**. For an input ``x`` (``d_in``) and ``d`` output
neurons::

    gate   g = sigmoid(G2 · G1 · x)          G1: r_g x d_in, G2: d x r_g   (low-rank gate)
    mask   m = TopK(g, k)                    1 for the k largest g per sample, else 0;
                                             forward uses the hard m, backward passes the
                                             gradient straight through to g
    full   f = W · x + b                     needed only where m = 1 (rows of W)
    light  l = U · (V · x) + c               V: r x d_in, U: d x r  (low-rank, every neuron)
    out    y = act(a ⊙ f + (1 - a) ⊙ l),  a = m ⊙ g

``light_rank=0`` removes the light path (``l = 0``), which turns MID-L into pure top-k gating.

``gating="block:B"`` (:mod:`midl_autok.block`) gates groups of B contiguous neurons: a group's
score is the sum of its neurons' logits, ``m`` is 1 on the k / B best groups (k counts neurons
and is a multiple of B), everything else as above. Its sparse eval paths run the full path as
one small dense product per group (``"gather"``: PyTorch ops; ``"kernel"``: the compiled
``midl_block_eval``, the custom op ``midl_autok::midl_block_eval`` in a recorded graph).

Execution paths (all compute the same function; tests hold each to the masked dense result):

- **training** (grad enabled): masked dense; the mask, the gate product and the mix are one
  autograd function (``_GateMix``: forward ``a ⊙ f + (1 - a) ⊙ l`` with ``a = m ⊙ g``,
  backward with the straight-through gradient ``d a / d g = m + g``), so few ``(B, d)``
  temporaries are made; at ``k = d`` no top-k runs at all. On CPU (float32, ReLU/identity,
  a build with AVX-512 or AVX2 + FMA, ``d * d_in >= 65536`` or ``B * d >= 8192``) the whole
  layer is one C++ autograd function (``midl_train``: GEMMs for ``W x`` and ``[G1; V] x``,
  then top-k, sigmoid and mix in one pass per sample; the thin products of gate and light
  path run per sample inside the passes with AVX-512, as GEMMs with AVX2); otherwise, for
  ``B * d >= 8192`` and a ReLU/identity activation, sigmoid, mix and activation run as one
  compiled pass each way (``_FusedMixCPU``).
- **eval** (no grad), chosen per call by :meth:`MIDL.eval_path`:
  ``"dense"`` masked dense (best at large batch: one GEMM), ``"gather"`` pure-PyTorch
  sparse (computes only rows some sample selected; any device; what ``FlopCounterMode``
  sees), ``"kernel"`` a compiled CPU kernel (:mod:`midl_autok.kernels`) that computes only
  the selected (sample, row) products of the full path -- row-grouped dot products for a few
  samples, a blocked sampled dense-dense product for float32 batches (AVX-512 or AVX2 +
  FMA) -- and fuses gate, selection, light path, mix and activation into one call. While
  ``torch.export`` or ``torch.compile`` record a graph (no grad, float32/64), this path is the
  custom op ``midl_autok::midl_eval`` (:mod:`midl_autok.ops`): one node that runs the same
  kernel. Decisions are cached per (batch, k, dtype, device, mode, grad) once the kernels'
  availability is settled.

On CPU the exact top-k selection uses the compiled radix-select kernel when it is built
(``torch.topk`` costs several times more at large k); results are identical except for exact
ties in the gate logits, which the kernel breaks by lowest index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from midl_autok import ops as _ops  # registers the custom op midl_autok::midl_eval
from midl_autok.block import block_eval, block_mask
from midl_autok.errors import SpecError
from midl_autok.gating import Gating
from midl_autok.kernels.cpu import (  # light: builds nothing yet
    clear_cache,
    cpu_kernels,
    cpu_kernels_status,
)

__all__ = ["ACTIVATIONS", "EVAL_PATHS", "MIDL", "make_activation", "topk_mask"]

SparseMode = Literal["auto", "always", "never", "gather", "kernel"]
EvalPath = Literal["dense", "gather", "kernel"]
EVAL_PATHS: tuple[EvalPath, ...] = ("dense", "gather", "kernel")
SPARSE_MODES = ("auto", "always", "never", "gather", "kernel")

# Eval path decisions a layer remembers (one per batch size, k, dtype, ...).
_MAX_CACHED_PATHS = 64

# Below this many scores (B * d), torch.topk beats a call into the compiled kernel.
_CPP_TOPK_MIN = 8192

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def _kernel_pays(batch: int, k: int, d: int, d_in: int, *, blocked: bool = False) -> bool:
    """Cost rule for the compiled CPU kernel against the masked dense GEMM.

    The kernel does ``B * k * d_in`` multiply-adds as dot products of the selected rows; the
    GEMM does ``B * d * d_in`` at a higher rate once the batch is large enough to reuse each
    row of W. The break-even active fraction k/d falls with the batch. ``blocked``: the kernel
    runs its blocked batch path (float32, AVX-512 or AVX2 + FMA, ``B >= 8``), which reuses W
    across samples like a GEMM and so pays up to a much larger fraction. Thresholds measured
    by ``experiments/bench_speed.py`` and a kernel-vs-masked sweep (CPU, float32, 1-2
    threads; they hold for the AVX2 build too: there it beats masked dense up to k/d ~0.6-0.7
    at batch 64-256, and beyond 0.75 at batch 16).
    """
    fraction = k / d
    if blocked:
        if batch <= 16:
            return fraction <= 0.85
        if batch <= 64:
            return fraction <= 0.7
        return fraction <= 0.6
    if batch <= 32:
        return fraction <= 0.75
    if batch <= 128:
        return fraction <= 0.45
    return fraction <= 0.35


def _blocked_info(ops: Any) -> tuple[bool, int]:
    """(the build has the SIMD paths -- AVX-512 or AVX2 + FMA: the blocked batch product
    and the fused training step --, the blocked path's smallest batch)."""
    global _BLOCKED
    if _BLOCKED is None:
        _BLOCKED = (bool(ops.midl_blocked_available()), int(ops.midl_blocked_min_batch()))
    return _BLOCKED


def _blocked_path(ops: Any, x: torch.Tensor) -> bool:
    """Whether the compiled kernel takes its blocked batch path for ``x`` (float32, a build
    with AVX-512 or AVX2 + FMA, at least ``midl_blocked_min_batch()`` samples)."""
    available, min_batch = _blocked_info(ops)
    return available and x.dtype == torch.float32 and x.shape[0] >= min_batch


def _block_kernel_pays(batch: int, k: int, d: int) -> bool:
    """Cost rule for the compiled block kernel (``midl_block_eval``) against masked dense:
    it does ``B * k * d_in`` multiply-adds in small dense products over contiguous rows, at
    close to the GEMM's rate, so it pays up to a large active fraction k/d. Measured by
    ``experiments/bench_structured.py`` (CPU, float32, one thread, AVX2 build)."""
    return k / d <= (0.5 if batch >= 64 else 0.75)


_BLOCKED: tuple[bool, int] | None = None  # (available, min batch) of the loaded kernels
_BLOCKED_MIN_BATCH = 8  # the kernel's kTileBatch (confirmed by midl_blocked_min_batch)


def make_activation(activation: str | nn.Module | None) -> nn.Module:
    """An activation module from a name (``relu``, ``gelu``, ``silu``, ``tanh``, ``identity``)."""
    if activation is None:
        return nn.Identity()
    if isinstance(activation, nn.Module):
        return activation
    if activation not in ACTIVATIONS:
        from midl_autok.errors import unknown_name

        raise unknown_name("activation", str(activation), ACTIVATIONS)
    return ACTIVATIONS[activation]()


def _cpu_ops(x: torch.Tensor) -> Any:
    """The compiled CPU kernels for ``x`` (building them on first use), or ``None``: not on
    another device, and not while torch.export / torch.compile / jit.trace record the graph
    (the kernels are opaque to them; the PyTorch ops compute the same function)."""
    if x.device.type != "cpu" or _tracing():
        return None
    return cpu_kernels()


_is_exporting: Callable[[], bool] = getattr(torch.compiler, "is_exporting", lambda: False)


def _tracing() -> bool:
    return bool(torch.compiler.is_compiling() or _is_exporting() or torch.jit.is_tracing())


def _op_traceable(x: torch.Tensor) -> bool:
    """Whether a graph being recorded takes the custom op ``midl_autok::midl_eval`` for ``x``:
    torch.export / torch.compile, float32/64, no gradient recorded (the op has no backward).
    ``jit.trace`` records masked dense instead: a TorchScript file runs in libtorch, where
    the op is not registered."""
    return (
        not torch.jit.is_tracing()
        and not torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.float64)
    )


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Hard top-k mask along the last dimension: 1.0 for the ``k`` largest scores, else 0.0.

    Exactly ``k`` ones per row, ties included. On CPU, large inputs use the compiled kernel.
    """
    d = scores.shape[-1]
    if k >= d:
        return torch.ones_like(scores)
    if (
        not _tracing()  # no branch on the (symbolic) size while a graph is recorded
        and scores.dim() == 2
        and scores.numel() >= _CPP_TOPK_MIN
        and not scores.requires_grad
    ):
        ops = _cpu_ops(scores)
        if ops is not None:
            return ops.midl_topk_mask(scores, k)
    idx = scores.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


_ACT_CODES: dict[type, int] = {nn.Identity: 0, nn.ReLU: 1, nn.Tanh: 2, nn.SiLU: 3, nn.GELU: 4}


def _act_code(act: nn.Module) -> int | None:
    """The compiled kernel's code for ``act``, or ``None`` (then it is applied in PyTorch)."""
    code = _ACT_CODES.get(type(act))
    if code == 4 and getattr(act, "approximate", "none") != "none":
        return None
    return code


class _TopKStraightThrough(torch.autograd.Function):
    """Forward: the hard top-k mask of ``logits``. Backward: identity to ``gate``.

    Selection uses the gate logits (same order as ``sigmoid(logits)``, but without the ties
    that saturation creates); the gradient flows to the gate values ``g``.
    """

    @staticmethod
    def forward(ctx, gate: torch.Tensor, logits: torch.Tensor, k: int) -> torch.Tensor:
        return topk_mask(logits, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


class _GateMix(torch.autograd.Function):
    """``a ⊙ f + (1 - a) ⊙ l`` (or ``a ⊙ f`` without a light path) with ``a = m ⊙ g`` for a
    hard mask ``m`` (``None`` = all ones, for ``k = d``), as one autograd node.

    Backward is the straight-through rule of DESIGN §2: the mask's gradient passes to ``g``
    unchanged, so ``d a / d g = m + g``.
    """

    @staticmethod
    def forward(
        ctx, g: torch.Tensor, m: torch.Tensor | None, f: torch.Tensor, light: torch.Tensor | None
    ) -> torch.Tensor:
        a = g if m is None else m * g  # (B, d)
        ctx.save_for_backward(g, m, a, f, light)
        return _mix(a, f, light)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        g, m, a, f, light = ctx.saved_tensors
        grad_f = grad * a
        if light is None:
            grad_a, grad_light = grad * f, None
        else:
            grad_a = (f - light).mul_(grad)  # d mixed / d a = f - l
            grad_light = grad - grad_f
        grad_g = grad_a.mul_(g + 1.0 if m is None else m + g)  # straight-through: m + g
        return grad_g, None, grad_f, grad_light


class _FusedMixCPU(torch.autograd.Function):
    """:class:`_GateMix` plus the activation (identity or ReLU) as one compiled pass each way
    (CPU): forward writes ``y`` and ``g``, backward writes the gradients of the logits (through
    the sigmoid and the straight-through mask), of ``f`` and of ``l``."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        m: torch.Tensor | None,
        f: torch.Tensor,
        light: torch.Tensor | None,
        act: int,
        ops: Any,
    ) -> torch.Tensor:
        y, g = ops.midl_mix_forward(logits, m, f, light, act)  # (B, d), (B, d)
        ctx.save_for_backward(y, g, m, f, light)
        ctx.act, ctx.ops = act, ops
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        y, g, m, f, light = ctx.saved_tensors
        d_logits, d_f, d_light = ctx.ops.midl_mix_backward(grad, y, g, m, f, light, ctx.act)
        return d_logits, None, d_f, d_light, None, None


def _mix(a: torch.Tensor, f: torch.Tensor, light: torch.Tensor | None) -> torch.Tensor:
    """``a ⊙ f + (1 - a) ⊙ l`` (in place on fresh temporaries; rounding as written)."""
    if light is None:
        return a * f
    return (a * f).add_((1.0 - a).mul_(light))


class _GateFactors(NamedTuple):
    """A forward's gate logits ``G2 h``, kept as their factors: ``h = G1 x`` (B, r), ``G2`` and
    G2's version counter at that forward. The block kernel's eager call returns ``h``; the
    (B, d) logits are computed only when ``last_gate`` / ``last_mask`` ask for them. Once ``G2``
    changes in place they cannot be recovered, and those views are ``None``."""

    h: torch.Tensor
    g2: torch.Tensor
    version: int


class MIDL(nn.Module):
    """A MID-L layer (see the module docstring for the equations).

    Args:
        in_features: ``d_in``.
        out_features: ``d``, the number of neurons.
        k: neurons per sample that take the full path, ``1 <= k <= d``; ``None`` = all.
            Set it between epochs with ``layer.k = ...`` (the schedule does).
        gate_rank: ``r_g``, rank of the gate ``G2 · G1``.
        light_rank: ``r``, rank of the light path ``U · V``; 0 = no light path.
        activation: name or module applied to the mixed output.
        bias: learn ``b`` (full path) and ``c`` (light path).
        ste: straight-through estimator for the hard mask; only ``"identity"`` for now.
        gating: the gate's unit (:class:`~midl_autok.gating.Gating` or its text):
            ``"neuron"`` (default) or ``"block:B"`` (groups of B contiguous neurons; ``d``
            and every k must be multiples of B; see :mod:`midl_autok.block`). ``"head"`` is
            for attention layers and is refused here (one line, ``SpecError``).
        sparse_eval: how ``eval()`` computes the full path (see :meth:`eval_path`):
            ``"auto"`` picks the fastest path by a cost rule; ``"never"`` masked dense;
            ``"always"`` or ``"gather"`` the pure-PyTorch sparse path; ``"kernel"`` the
            compiled CPU kernel (falls back to ``"gather"`` where it cannot run).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        k: int | None = None,
        *,
        gate_rank: int = 16,
        light_rank: int = 16,
        activation: str | nn.Module | None = "relu",
        bias: bool = True,
        ste: str = "identity",
        sparse_eval: SparseMode = "auto",
        gating: str | Gating = "neuron",
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, but got {in_features}, {out_features}"
            )
        if gate_rank < 1:
            raise ValueError(f"gate_rank must be >= 1, but got {gate_rank}")
        if light_rank < 0:
            raise ValueError(f"light_rank must be >= 0 (0 = no light path), but got {light_rank}")
        if ste != "identity":
            raise ValueError(f"ste must be 'identity', but got {ste!r}")
        if sparse_eval not in SPARSE_MODES:
            raise ValueError(
                f"sparse_eval must be auto|always|never|gather|kernel, but got {sparse_eval!r}"
            )
        self.gating = Gating.parse(gating)
        if self.gating.kind == "head":
            raise SpecError(
                "gating 'head' needs attention heads; a MID-L layer without heads gates "
                "'neuron' or 'block:B'"
            )
        self.gating.check_width(out_features, f"MIDL({in_features}, {out_features})")
        self.in_features = in_features
        self.out_features = out_features
        self.gate_rank = gate_rank
        self.light_rank = light_rank
        self.ste = ste
        self.sparse_eval: SparseMode = sparse_eval
        self._k: int | None = None
        self.k = k

        self.gate_in = nn.Parameter(torch.empty(gate_rank, in_features))  # G1 (r_g, d_in)
        self.gate_out = nn.Parameter(torch.empty(out_features, gate_rank))  # G2 (d, r_g)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))  # W (d, d_in)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None  # b (d,)
        if light_rank > 0:
            self.light_in: nn.Parameter | None = nn.Parameter(torch.empty(light_rank, in_features))
            self.light_out: nn.Parameter | None = nn.Parameter(
                torch.empty(out_features, light_rank)
            )
            self.light_bias = nn.Parameter(torch.empty(out_features)) if bias else None
        else:
            self.light_in = self.light_out = self.light_bias = None
        self.act = make_activation(activation)
        # What the last forward selected, kept cheaply: (logits or their _GateFactors, idx
        # (B, k) or mask (B, d)), or the gate itself in place of the logits (``_last_is_gate``).
        # ``last_mask`` / ``last_gate`` are derived from it on first access.
        self._last: (
            tuple[torch.Tensor | _GateFactors, torch.Tensor | None, torch.Tensor | None] | None
        ) = None
        self._last_is_gate = False
        self._last_views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reset_parameters()

    # -- parameters -------------------------------------------------------------------------

    def reset_parameters(self) -> None:
        """``nn.Linear``-style init for W, U·V; the gate starts small so g ≈ 0.5 ± noise."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.kaiming_uniform_(self.gate_in, a=math.sqrt(5))
        nn.init.uniform_(
            self.gate_out, -1.0 / math.sqrt(self.gate_rank), 1.0 / math.sqrt(self.gate_rank)
        )
        if self.light_in is not None and self.light_out is not None:
            nn.init.kaiming_uniform_(self.light_in, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.light_out, a=math.sqrt(5))
            if self.light_bias is not None:
                nn.init.uniform_(self.light_bias, -bound, bound)

    @property
    def k(self) -> int | None:
        """Neurons per sample on the full path; ``None`` means all ``out_features``."""
        return self._k

    @k.setter
    def k(self, value: int | None) -> None:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"k must be an int or None, but got {value!r}")
            if not 1 <= value <= self.out_features:
                raise ValueError(
                    f"k must satisfy 1 <= k <= {self.out_features} (out_features), but got {value}"
                )
            self.gating.check_k(value, self.out_features, f"MIDL(out_features={self.out_features})")
        self._k = value

    @property
    def effective_k(self) -> int:
        return self.out_features if self._k is None else self._k

    # -- what the last forward did ----------------------------------------------------------

    def _record(
        self,
        logits: torch.Tensor | _GateFactors,
        *,
        idx: torch.Tensor | None = None,
        mask: Any = None,
        is_gate: bool = False,
        tracing: bool | None = None,
    ) -> None:
        """Keep what this forward selected; ``is_gate``: ``logits`` holds the gate values;
        ``tracing=False``: the caller knows no graph is being recorded (skips the check).
        (Plain attributes written to ``__dict__`` directly: ``nn.Module.__setattr__`` costs
        microseconds per call, which shows on a whole model at batch 1.)"""
        # Python state, not part of an exported or jit-traced graph
        if tracing is not False and (_is_exporting() or torch.jit.is_tracing()):
            return
        state = self.__dict__
        kept = (  # (detach is a new view, ~0.9 us: only where there is a graph to cut)
            logits
            if isinstance(logits, _GateFactors) or not logits.requires_grad
            else logits.detach()
        )
        state["_last"] = (kept, idx, None if mask is None else mask.detach())
        state["_last_is_gate"] = is_gate
        state["_last_views"] = None

    def _views(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._last is None:
            return None
        if self._last_views is None:
            logits, idx, mask = self._last
            if isinstance(logits, _GateFactors):  # G2 h, unless G2 changed since
                if logits.g2._version != logits.version:
                    return None
                logits = F.linear(logits.h, logits.g2.detach())
            if idx is not None and self.gating.kind == "block":  # idx: selected groups
                size = self.gating.size
                groups = torch.zeros(
                    (logits.shape[0], self.out_features // size),
                    dtype=torch.bool,
                    device=logits.device,
                ).scatter_(-1, idx, True)
                sel = groups.repeat_interleave(size, dim=1)
            elif idx is not None:
                sel = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, idx, True)
            elif mask is not None:
                sel = mask > 0
            else:  # k = d: every neuron
                sel = torch.ones_like(logits, dtype=torch.bool)
            self._last_views = (sel, logits if self._last_is_gate else torch.sigmoid(logits))
        return self._last_views

    @property
    def last_mask(self) -> torch.Tensor | None:
        """(B, d) bool: which neurons took the full path in the last forward pass."""
        views = self._views()
        return None if views is None else views[0]

    @property
    def last_gate(self) -> torch.Tensor | None:
        """(B, d): the gate values ``g`` of the last forward pass."""
        views = self._views()
        return None if views is None else views[1]

    def train(self, mode: bool = True) -> MIDL:
        """``nn.Module.train``, and the compiled kernels' cached copies of parameters are
        dropped (:func:`midl_autok.kernels.clear_cache`; on ``eval()`` too): a fused
        optimizer updates the parameters without bumping their version counters, which key
        that cache, and a train/validate loop switches modes around its updates. For the
        same reason gate factors kept by the last forward (:class:`_GateFactors`) become the
        logits now, while G2 is still the one they were computed with."""
        clear_cache()
        last = self._last
        if last is not None and isinstance(last[0], _GateFactors) and self._views() is not None:
            state = self.__dict__
            views = state["_last_views"]
            state["_last"] = (F.linear(last[0].h, last[0].g2.detach()), last[1], last[2])
            state["_last_views"] = views
        return super().train(mode)

    # -- forward ----------------------------------------------------------------------------

    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``G2 · G1 · x`` for ``x`` of shape (B, d_in) -> (B, d)."""
        return F.linear(F.linear(x, self.gate_in), self.gate_out)

    def light(self, x: torch.Tensor) -> torch.Tensor | None:
        """The light path ``U · (V · x) + c`` (B, d), or ``None`` without one."""
        if self.light_in is None or self.light_out is None:
            return None
        return F.linear(F.linear(x, self.light_in), self.light_out, self.light_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.dim() == 2
        # eval: whether a graph is recorded, once per call (~0.5 us: it shows at batch 1)
        tracing = False if self.training else _tracing()
        fast = self.__dict__.get("_fast_key")
        if fast is not None and not self.training and flat:
            y = self._fast_forward(x, fast, tracing=tracing)
            if y is not None:
                return y
        lead = x.shape[:-1]
        if not flat:
            x = x.reshape(-1, self.in_features)  # (B, d_in)
        k = self.out_features if self._k is None else self._k
        path = "dense" if self.training else self._cached_eval_path(x, k, tracing)
        if path == "kernel":
            y = self._kernel_forward(x, k, tracing)
            if flat and not tracing and x.is_cpu and self.gating.kind == "neuron":
                self.__dict__["_fast_key"] = self._fast_key_of(x)
        elif path == "gather":
            y = self._gather_forward(x, k)
        else:
            y = self._dense_forward(x, k)
        return y if flat else y.reshape(*lead, self.out_features)

    def _fast_key_of(self, x: torch.Tensor) -> tuple[Any, ...] | None:
        """What :meth:`_fast_forward` checks: everything the neuron kernel call depends on
        besides the parameters (read anew on every call); then the kernel's activation code
        and the short path's record, ``(logits (B, d), idx (B, k), None)``: buffers the
        kernel writes on every short call (never handed out: ``last_mask`` and ``last_gate``
        are computed from them). ``None`` (no short path) for an activation the kernel does
        not apply."""
        act: Any = self._modules["act"]
        code = _act_code(act)
        if code is None or self._k is None:
            return None
        batch = x.shape[0]
        record = (  # (on x's device, the CPU: not torch's default device)
            torch.empty((batch, self.out_features), dtype=x.dtype, device=x.device),
            torch.empty((batch, self._k), dtype=torch.long, device=x.device),
            None,
        )
        return (
            batch,
            self._k,
            x.dtype,
            torch.is_grad_enabled(),
            self.sparse_eval,
            act,
            self.gating,
            code,
            record,
        )

    def _fast_forward(
        self, x: torch.Tensor, key: tuple[Any, ...], tracing: bool | None = None
    ) -> torch.Tensor | None:
        """The last eval forward again, when it ran the compiled neuron kernel on a CPU input
        of this batch size, k, dtype, grad mode, mode, activation and gating, and no graph is
        being recorded: the kernel call and the record, without the path rule, the kernel
        lookup and the tracing checks of the general path (~10 us around the kernel call
        become ~1.5 at batch 1).
        ``None``: take the general path. ``tracing``: :func:`_tracing`, if the caller knows.
        """
        if _tracing() if tracing is None else tracing:  # (first: no guard on the batch size
            return None  # may enter a recorded graph)
        batch, k, dtype, grad, mode, act, gating, code, record = key  # _fast_key_of's fields
        if (
            x.shape[0] != batch
            or self._k != k
            or x.dtype is not dtype
            or torch.is_grad_enabled() is not grad
            or self.sparse_eval != mode
            or self._modules["act"] is not act
            or self.gating is not gating
            or not x.is_cpu
            or (
                code == 4 and getattr(act, "approximate", "none") != "none"
            )  # (the one setting _act_code reads)
        ):
            return None
        ops = cpu_kernels()
        if ops is None:
            return None
        y = ops.midl_sparse_eval_into(x, *self._kernel_params(), k, code, record[0], record[1])
        state = self.__dict__  # _record, without its checks (no graph; no grad on logits)
        state["_last"] = record
        state["_last_is_gate"] = False
        state["_last_views"] = None
        return y

    def _cached_eval_path(self, x: torch.Tensor, k: int, tracing: bool | None = None) -> EvalPath:
        """:meth:`eval_path`, remembered per (batch, k, dtype, device, mode, grad) once the
        kernels' availability is settled (it is what the rule depends on), so a model called
        again on the same shapes pays a dict lookup instead of the rule. Never cached while
        a graph is recorded (``tracing``: :func:`_tracing`, if the caller knows it)."""
        if _tracing() if tracing is None else tracing:
            return self.eval_path(x, k)
        key = (x.shape[0], k, x.dtype, x.device, self.sparse_eval, torch.is_grad_enabled())
        paths: dict[tuple[Any, ...], EvalPath] = self.__dict__.setdefault("_eval_paths", {})
        path = paths.get(key)
        if path is None:
            path = self.eval_path(x, k)
            if cpu_kernels_status() != "not built":  # built, disabled or failed: settled
                if len(paths) >= _MAX_CACHED_PATHS:
                    paths.clear()
                paths[key] = path
        return path

    def eval_path(self, x: torch.Tensor, k: int | None = None) -> EvalPath:
        """The path an ``eval()`` forward takes for the (B, d_in) input ``x`` at ``k``.

        ``"dense"`` when ``k = d`` or ``sparse_eval="never"``; ``"gather"`` for ``"always"``
        and ``"gather"``. Otherwise the compiled kernel runs when it can (CPU, float32/64, no
        gradient being recorded: it has no backward) and either ``sparse_eval="kernel"`` or
        the cost rule :func:`_kernel_pays` says it beats the masked dense GEMM; failing that,
        ``"gather"`` when very few rows are needed (``B * k <= d / 2``), else ``"dense"``.
        """
        k = self.effective_k if k is None else k
        mode = self.sparse_eval
        if k >= self.out_features or mode == "never":
            return "dense"
        if _tracing():  # a graph is being recorded: the custom op, or masked dense
            return "kernel" if _op_traceable(x) else "dense"
        if mode in ("always", "gather"):
            return "gather"
        if self.gating.kind == "block":
            return self._block_eval_path(x, k)
        batch = x.shape[0]
        d, d_in = self.out_features, self.in_features
        # the blocked rule is the wider one: no build where neither could pay
        maybe_blocked = batch >= _BLOCKED_MIN_BATCH and x.dtype == torch.float32
        if (
            (mode == "kernel" or _kernel_pays(batch, k, d, d_in, blocked=maybe_blocked))
            and not torch.is_grad_enabled()
            and x.dtype in (torch.float32, torch.float64)
        ):
            ops = _cpu_ops(x)
            if ops is not None and (
                mode == "kernel"
                or not maybe_blocked
                or _kernel_pays(batch, k, d, d_in, blocked=_blocked_path(ops, x))
            ):
                return "kernel"
        if mode == "kernel":
            return "gather"
        return "gather" if batch * k <= self.out_features // 2 else "dense"

    def _block_eval_path(self, x: torch.Tensor, k: int) -> EvalPath:
        """:meth:`eval_path` for block gating (``k < d``, not ``never``/``gather``): the
        compiled block kernel (``midl_block_eval``) for float32 CPU input without a gradient
        when ``sparse_eval="kernel"`` or :func:`_block_kernel_pays`; ``"gather"`` (the
        PyTorch block path) for ``"kernel"`` where the kernel cannot run and no gradient is
        recorded (it has no backward); else masked dense."""
        mode = self.sparse_eval
        if (
            not torch.is_grad_enabled()
            and x.dtype == torch.float32
            and (mode == "kernel" or _block_kernel_pays(x.shape[0], k, self.out_features))
            and _cpu_ops(x) is not None
        ):
            return "kernel"
        return "gather" if mode == "kernel" and not torch.is_grad_enabled() else "dense"

    def _use_sparse(self, x: torch.Tensor, k: int) -> bool:
        """Whether an ``eval()`` forward on ``x`` skips rows of W (any sparse path)."""
        return not self.training and self.eval_path(x, k) != "dense"

    def _dense_forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Masked dense: every row of W, then the mask (the training path)."""
        if torch.is_grad_enabled() and self.gating.kind == "neuron":
            ops = self._train_ops(x)
            if ops is not None:
                return self._train_forward(x, k, ops)
        logits = self.gate_logits(x)  # (B, d)
        f = F.linear(x, self.weight, self.bias)  # (B, d) every row
        light = self.light(x)
        m = None if k >= self.out_features else self._mask(logits.detach(), k)  # (B, d)
        code = _act_code(self.act)
        ops = self._fused_ops(logits, f) if code in (0, 1) else None
        if ops is not None:  # CPU: sigmoid, mix, activation (and backward) in one pass each
            self._record(logits, mask=m)
            if torch.is_grad_enabled():
                return _FusedMixCPU.apply(logits, m, f, light, code, ops)
            return ops.midl_mix_forward(logits, m, f, light, code)[0]
        g = torch.sigmoid(logits)
        if torch.is_grad_enabled():
            mixed = _GateMix.apply(g, m, f, light)
        else:
            mixed = _mix(g if m is None else m * g, f, light)
        self._record(logits, mask=m)
        return self.act(mixed)

    def _mask(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """The hard mask (B, d) of this layer's gating: top-k neurons or top-k/B groups."""
        if self.gating.kind == "block":
            return block_mask(logits, k, self.gating.size)
        return topk_mask(logits, k)

    def _train_ops(self, x: torch.Tensor) -> Any:
        """Compiled kernels for the whole training step of the layer (``midl_train``): CPU,
        float32 (input and parameters), identity or ReLU, a build with AVX-512 or AVX2 + FMA
        (``midl_blocked_available()``), and a layer or batch large enough to be worth a build
        (``d * d_in >= 65536`` or ``B * d >= 8192``; the rule depends on sizes only)."""
        if (
            _tracing()
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or _act_code(self.act) not in (0, 1)
            or (
                self.out_features * self.in_features < 65536
                and x.shape[0] * self.out_features < _CPP_TOPK_MIN
            )
            or any(p.dtype != torch.float32 for p in self._parameters.values() if p is not None)
        ):
            return None
        ops = _cpu_ops(x)
        return ops if ops is not None and _blocked_info(ops)[0] else None

    def _train_forward(self, x: torch.Tensor, k: int, ops: Any) -> torch.Tensor:
        """The training step through ``midl_train`` (a C++ autograd function): masked dense,
        the same function and straight-through gradients as :class:`_FusedMixCPU`."""
        y, g, m = ops.midl_train(x, *self._kernel_params(), k, _act_code(self.act))
        self._record(g, mask=m if m.numel() else None, is_gate=True)
        return y

    def _kernel_params(self) -> tuple[torch.Tensor | None, ...]:
        """The parameters in the compiled kernels' order (absent light path: ``None``)."""
        p = self._parameters
        return (
            p["gate_in"],
            p["gate_out"],
            p["weight"],
            p.get("bias"),
            p.get("light_in"),
            p.get("light_out"),
            p.get("light_bias"),
        )

    @staticmethod
    def _fused_ops(logits: torch.Tensor, f: torch.Tensor) -> Any:
        """Compiled kernels for the masked dense mix: CPU, float32/64, and large enough that one
        call beats a dozen elementwise ops (the rule depends on sizes only, so a run's numbers
        do not depend on what else the process did)."""
        if (
            _tracing()
            or logits.numel() < _CPP_TOPK_MIN
            or logits.dtype not in (torch.float32, torch.float64)
            or f.dtype != logits.dtype
        ):
            return None
        return _cpu_ops(logits)

    def _gather_forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Pure-PyTorch sparse path: the full path only for rows some sample selected (with
        block gating: one dense product per group over the samples that selected it)."""
        if self.gating.kind == "block":
            y, logits, idx = block_eval(x, self._kernel_params(), k, self.gating.size)
            self._record(logits, idx=idx)
            return self.act(y)
        logits = self.gate_logits(x)  # (B, d)
        idx = logits.topk(k, dim=-1, sorted=False).indices  # (B, k)
        g = torch.sigmoid(logits)
        a = torch.zeros_like(g).scatter_(-1, idx, g.gather(-1, idx))  # (B, d) = m ⊙ g
        light = self.light(x)
        rows = idx.unique() if x.shape[0] > 1 else idx[0]  # (R,) rows any sample selected
        w = self.weight.index_select(0, rows)  # (R, d_in)
        bias = None if self.bias is None else self.bias.index_select(0, rows)
        f_rows = F.linear(x, w, bias)  # (B, R)
        a_rows = a.index_select(1, rows)  # (B, R); zero where this sample did not select
        if light is None:
            mixed = torch.zeros_like(a).index_copy_(1, rows, a_rows * f_rows)
        else:
            l_rows = light.index_select(1, rows)
            mixed = light.index_copy(1, rows, _mix(a_rows, f_rows, l_rows))
        self._record(logits, idx=idx)
        return self.act(mixed)

    def _kernel_forward(self, x: torch.Tensor, k: int, tracing: bool | None = None) -> torch.Tensor:
        """The compiled CPU kernel: one call for gate, selection, rows, light, mix, act.
        While a graph is recorded, the custom op ``midl_autok::midl_eval`` (the same kernel
        at run time, one node in the graph). ``tracing``: :func:`_tracing`, if known."""
        act: Any = self._modules["act"]
        code = 0 if (c := _act_code(act)) is None else c
        if tracing is None:
            tracing = _tracing()
        ops: Any = None if tracing else cpu_kernels()
        if self.gating.kind == "block":
            size = self.gating.size
            if ops is None or x.dtype != torch.float32:
                y, logits, idx = _ops.midl_block_eval(x, *self._kernel_params(), k, size, code)
                self._record(logits, idx=idx)
            else:  # the logits only if asked for (last_gate): G2 and h = G1 x kept
                params = self._kernel_params()
                y, h, idx = ops.midl_block_eval(x, *params, k, size, code, True)
                g2 = self._parameters["gate_out"]
                assert g2 is not None
                if g2.is_inference():  # no version counter: the logits now
                    self._record(F.linear(h, g2), idx=idx)
                else:
                    self._record(_GateFactors(h, g2, g2._version), idx=idx)
            return y if c is not None else act(y)
        run: Any = _ops.midl_eval if ops is None else ops.midl_sparse_eval
        y, logits, idx = run(x, *self._kernel_params(), k, code)
        self._record(logits, idx=idx, tracing=tracing)
        return y if c is not None else act(y)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"gate_rank={self.gate_rank}, light_rank={self.light_rank}, "
            f"sparse_eval={self.sparse_eval!r}"
            + ("" if self.gating.kind == "neuron" else f", gating='{self.gating}'")
        )
