"""Analytic FLOPs of the Transformer family (:mod:`midl_autok.transformer`), per sample.

Same convention as :mod:`midl_autok.flops` (2 x multiply-adds of matrix products, forward,
one sample), with ``T`` tokens, width ``d``, ``H`` heads of ``dh = d / H``, FFN width ``f``::

    token embedding    0                              (a table lookup)
    patch embedding    2 * T * (C p^2) * d
    attention at k     2*T*d*3*k*dh  +  2*k*T*T*dh  +  2*k*T*T*dh  +  2*T*k*dh*d
                       (QKV of the kept heads, scores q kᵀ, weights x V, output projection)
    head gate          2 * d * H                      (on the mean token; only when gated)
    FFN at k           T * ( midl_flops(d, f, k) + 2 * k' * d ),   k' = k without a light
                       path (the hidden layer is zero off the k selected neurons, so the
                       projection back needs k columns), k' = f with one
    dense FFN          T * ( 2*d*f + 2*f*d )
    classifier         2 * d * classes

``midl_flops(d_in, d, k) = 2 * (r_g (d_in + d) + k d_in + r (d_in + d))`` (MID-L's gate,
full rows and light path). Not counted, as ``FlopCounterMode`` does not count them either:
layer norms, softmax, the 1/sqrt(dh) scaling, activations, the sigmoid, residual and position
adds, the mean pooling, top-k selection and the gathers of selected weights.

Each gated layer is one :class:`TransformerCost` whose cost is linear in its k (what the
``budget`` search space needs): ``body.<i>.ffn`` (k neurons per token) and, with head gating,
``body.<i>.heads`` (k heads per sample, the whole attention of that block). :func:`ffn_flops`
is the FFN part alone (the acceptance target of issue 20 reads its ratio to dense).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from midl_autok.flops import CostModel, LayerCost, dense_flops, midl_flops
from midl_autok.layers import MIDL

if TYPE_CHECKING:
    from midl_autok.transformer import Transformer

__all__ = [
    "TransformerCost",
    "attention_flops",
    "ffn_flops",
    "flops_by_group",
    "transformer_cost_model",
    "transformer_ffn_flops",
]


def attention_flops(tokens: int, d: int, heads: int, head_dim: int) -> int:
    """``2*T*d*3*H*dh + 4*H*T*T*dh + 2*T*H*dh*d``: QKV, scores, weights x V, output."""
    t, width = tokens, heads * head_dim
    return 2 * t * d * 3 * width + 4 * heads * t * t * head_dim + 2 * t * width * d


def transformer_ffn_flops(
    tokens: int, d: int, f: int, k: int, *, gate_rank: int, light_rank: int
) -> int:
    """``T * (midl_flops(d, f, k) + 2 * k' * d)`` with ``k' = k`` if ``light_rank == 0``
    else ``f``: one MID-L FFN (hidden layer and projection back to ``d``) at ``k``."""
    projected = k if light_rank == 0 else f
    hidden = midl_flops(d, f, k, gate_rank=gate_rank, light_rank=light_rank)
    return tokens * (hidden + 2 * projected * d)


@dataclass(frozen=True)
class TransformerCost(LayerCost):
    """A costed part of a transformer: ``group`` is ``embed``, ``attention``, ``ffn`` or
    ``head``; gated parts (``kind == "midl"``, the schedule's layers) cost :meth:`at` k."""

    group: str = ""
    tokens: int = 1
    head_dim: int = 0

    def at(self, k: int | None) -> int:
        if self.kind != "midl":
            return self.flops
        kept = self.d if k is None else k
        if self.group == "attention":  # d = heads; plus the gate on the mean token
            gate = 2 * self.d_in * self.d
            return attention_flops(self.tokens, self.d_in, kept, self.head_dim) + gate
        return transformer_ffn_flops(
            self.tokens,
            self.d_in,
            self.d,
            kept,
            gate_rank=self.gate_rank,
            light_rank=self.light_rank,
        )


def transformer_cost_model(model: Transformer) -> CostModel:
    """The :class:`~midl_autok.flops.CostModel` of a :class:`Transformer` (no tracing)."""
    t = model.seq_len
    costs: list[LayerCost] = []
    embed = model.embed
    if isinstance(embed, nn.Linear):  # patch embedding (a token embedding costs nothing)
        flops = t * dense_flops(embed.in_features, embed.out_features)
        costs.append(TransformerCost("embed", "linear", flops, group="embed"))
    for i, block in enumerate(model.blocks):
        d, h, dh = block.qkv.in_features, block.heads_n, block.head_dim
        dense_attention = attention_flops(t, d, h, dh)
        if block.heads is None:
            costs.append(
                TransformerCost(f"body.{i}.attn", "linear", dense_attention, group="attention")
            )
        else:
            costs.append(
                TransformerCost(
                    f"body.{i}.heads",
                    "midl",
                    dense_attention,
                    d_in=d,
                    d=h,
                    group="attention",
                    tokens=t,
                    head_dim=dh,
                )
            )
        f = block.proj.in_features
        dense_ffn = t * (dense_flops(d, f) + dense_flops(f, d))
        if isinstance(block.ffn, MIDL):
            costs.append(
                TransformerCost(
                    f"body.{i}.ffn",
                    "midl",
                    dense_ffn,
                    d_in=d,
                    d=f,
                    gate_rank=block.ffn.gate_rank,
                    light_rank=block.ffn.light_rank,
                    group="ffn",
                    tokens=t,
                )
            )
        else:
            costs.append(TransformerCost(f"body.{i}.ffn", "linear", dense_ffn, group="ffn"))
    head = model.head
    costs.append(
        TransformerCost(
            "head", "linear", dense_flops(head.in_features, head.out_features), group="head"
        )
    )
    return CostModel(tuple(costs))


def flops_by_group(costs: CostModel, k: Mapping[str, int] | None = None) -> dict[str, int]:
    """Per-sample FLOPs at ``k`` summed by group (``embed``, ``attention``, ``ffn``, ...)."""
    k = k or {}
    out: dict[str, int] = {}
    for c in costs.layers:
        group = c.group if isinstance(c, TransformerCost) and c.group else c.name
        out[group] = out.get(group, 0) + c.at(k.get(c.name))
    return out


def ffn_flops(costs: CostModel, k: Mapping[str, int] | None = None) -> tuple[int, int]:
    """``(FFN FLOPs at k, dense FFN FLOPs)`` per sample: the FFN share of a transformer."""
    k = k or {}
    ffn = [c for c in costs.layers if isinstance(c, TransformerCost) and c.group == "ffn"]
    return sum(c.at(k.get(c.name)) for c in ffn), sum(c.flops for c in ffn)
