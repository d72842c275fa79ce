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
In ``eval()`` the layer computes ``f`` only for the selected rows when that is cheaper (the
sparse inference path); the result equals the masked dense computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "MIDL", "make_activation", "topk_mask"]

SparseMode = Literal["auto", "always", "never"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


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


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Hard top-k mask along the last dimension: 1.0 for the ``k`` largest scores, else 0.0."""
    d = scores.shape[-1]
    if k >= d:
        return torch.ones_like(scores)
    idx = scores.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


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
        sparse_eval: in ``eval()``, compute the full path only for selected rows:
            ``"auto"`` when it is cheaper, ``"always"``, or ``"never"`` (masked dense).
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
        if sparse_eval not in ("auto", "always", "never"):
            raise ValueError(f"sparse_eval must be auto|always|never, but got {sparse_eval!r}")
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
        self.last_mask: torch.Tensor | None = None  # (B, d) bool: selection of the last forward
        self.last_gate: torch.Tensor | None = None  # (B, d) gate values g of the last forward
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
        self._k = value

    @property
    def effective_k(self) -> int:
        return self.out_features if self._k is None else self._k

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
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # (B, d_in)
        k = self.effective_k
        logits = self.gate_logits(x)  # (B, d)
        g = torch.sigmoid(logits)
        if self.training and torch.is_grad_enabled():
            m = _TopKStraightThrough.apply(g, logits, k)  # (B, d) hard forward, STE backward
        else:
            m = topk_mask(logits, k)
        a = m * g  # (B, d)
        light = self.light(x)
        if self._use_sparse(x, k):
            mixed = self._sparse_mix(x, logits, a, light, k)
        else:
            f = F.linear(x, self.weight, self.bias)  # (B, d) every row (masked dense)
            mixed = a * f if light is None else a * f + (1.0 - a) * light
        self.last_mask = m.detach() > 0
        self.last_gate = g.detach()
        return self.act(mixed).reshape(*lead, self.out_features)

    def _use_sparse(self, x: torch.Tensor, k: int) -> bool:
        if self.training or k >= self.out_features or self.sparse_eval == "never":
            return False
        if self.sparse_eval == "always":
            return True
        # auto: row gathering only pays when few rows are needed (small batch, small k).
        return x.shape[0] * k <= self.out_features // 2

    def _sparse_mix(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        a: torch.Tensor,
        light: torch.Tensor | None,
        k: int,
    ) -> torch.Tensor:
        """Masked-dense result, computing the full path only for rows some sample selected."""
        idx = logits.topk(k, dim=-1, sorted=False).indices  # (B, k)
        rows = idx.unique() if x.shape[0] > 1 else idx[0]  # (R,) rows any sample selected
        w = self.weight.index_select(0, rows)  # (R, d_in)
        bias = None if self.bias is None else self.bias.index_select(0, rows)
        f_rows = F.linear(x, w, bias)  # (B, R)
        a_rows = a.index_select(1, rows)  # (B, R); zero where this sample did not select
        if light is None:
            mixed = torch.zeros_like(a)
            return mixed.index_copy_(1, rows, a_rows * f_rows)
        l_rows = light.index_select(1, rows)
        return light.index_copy(1, rows, a_rows * f_rows + (1.0 - a_rows) * l_rows)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, k={self.k}, "
            f"gate_rank={self.gate_rank}, light_rank={self.light_rank}, "
            f"sparse_eval={self.sparse_eval!r}"
        )
