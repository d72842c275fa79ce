"""``arch: transformer``: a small pre-norm Transformer encoder whose FFNs are MID-L layers.

Input: token ids ``(B, T)`` (a token dataset: embedding + learned positions) or images
``(B, C, H, W)`` / flat square images ``(B, s*s)`` (non-overlapping ``patch x patch`` patches,
a linear patch embedding + learned positions, ViT-style). Then ``depth`` pre-norm blocks and a
classifier on the mean-pooled tokens::

    x = x + Attn(LN(x))                  heads: optionally gated as units (head gating)
    x = x + Proj(FFN(LN(x)))             FFN: MIDL(d_model, ffn) per token; Proj: ffn -> d_model
    logits = Head(LN(mean_t x))

Gated layers, in forward order, are what a :class:`~midl_autok.schedule.KSchedule` addresses
(per block, per epoch): ``body.<i>.ffn`` (the FFN hidden layer, width ``ffn``, k counts
neurons per token) and, with ``gating: head``, ``body.<i>.heads`` (width ``heads``, k counts
attention heads per sample).

**Head gating** (our definition, in the spirit of MIDL): a small gate scores the heads of
each sample from its mean token, ``g = sigmoid(W_g · mean_t(x) + b_g)`` (``W_g``: heads x
d_model); ``m = TopK(g, k)``; head ``h``'s output is scaled by ``a_h = m_h g_h``, so the
``H - k`` dropped heads contribute **zero** (no light estimate: attention outputs have no
cheap low-rank stand-in worth its cost at these sizes). Training uses the hard mask forward
and the straight-through gradient ``d a / d g = m + g``, exactly as MIDL's gate. In eval with
``k < heads`` the block computes only the selected heads of each sample (their rows of the
QKV projection, their scores and values, their columns of the output projection), as
batched products that ``FlopCounterMode`` and ``torch.export`` see as such.

**FFN output projection.** With ``light_rank: 0`` a MID-L hidden layer outputs exactly zero
outside the ``k`` selected neurons of each token, so the projection back to ``d_model`` needs
only those ``k`` columns; the FLOPs model counts ``2 k d_model`` per token for it, and eval
computes it that way for small batches (``N = B*T <= 64`` rows) or when the layer's
``sparse_eval`` is ``always``/``gather`` (larger batches use the dense product: same result,
faster on CPU). With a light path every hidden unit is non-zero and the projection is dense.

Variants: ``midl`` (above), ``dense`` (``nn.Linear`` + activation FFN, no gates) and
``dropout`` (dense + dropout after the FFN activation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from midl_autok.errors import SpecError
from midl_autok.gating import Gating
from midl_autok.layers import MIDL, _TopKStraightThrough, _tracing, make_activation
from midl_autok.models import MIDLNet

if TYPE_CHECKING:
    from midl_autok.flops import CostModel

__all__ = ["MAX_AUTO_PATCHES", "HeadGate", "Transformer", "TransformerBlock"]

#: ``patch: null`` picks the smallest patch side that divides the image into at most this
#: many patches (8x8 digits: 2x2 patches; 28x28 MNIST: 7x7; 32x32: 8x8).
MAX_AUTO_PATCHES = 16
_SPARSE_OUT_MAX_ROWS = 64  # FFN projection over the k selected columns up to B*T rows


class HeadGate(nn.Module):
    """Scores the ``heads`` attention heads of each sample and keeps the top ``k``.

    Duck-types the parts of :class:`~midl_autok.layers.MIDL` that schedules, the trainer and
    the environment read: ``out_features`` (heads), ``k``, ``effective_k``, ``last_mask``,
    ``last_gate``.
    """

    def __init__(self, d_model: int, heads: int, k: int | None = None) -> None:
        super().__init__()
        self.in_features = d_model
        self.out_features = heads
        self.proj = nn.Linear(d_model, heads)  # W_g (heads, d_model), b_g
        self._k: int | None = None
        self.k = k  # type: ignore[misc]  # MIDL.k checks 1 <= k <= out_features
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    gating = Gating("head")  # heads are the units: every k in 1..heads is valid
    k = MIDL.k  # MIDL's property, heads as the units: the same rule, 1 <= k <= heads

    @property
    def effective_k(self) -> int:
        """Heads kept per sample (``k``, or all)."""
        return self.out_features if self._k is None else self._k

    @property
    def last_gate(self) -> torch.Tensor | None:
        """(B, heads): the gate values of the last forward pass."""
        return None if self._last is None else self._last[0]

    @property
    def last_mask(self) -> torch.Tensor | None:
        """(B, heads) bool: which heads were kept in the last forward pass."""
        return None if self._last is None else self._last[1] > 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, logits)`` for ``x`` (B, T, d): ``a = m ⊙ g`` (B, heads), straight-through."""
        logits = self.proj(x.mean(dim=1))  # (B, H)
        g = torch.sigmoid(logits)
        k = self.effective_k
        m = _TopKStraightThrough.apply(g, logits, k) if k < self.out_features else None
        a = g if m is None else g * m  # d a / d g = m + g (the mask passes its gradient to g)
        if not _tracing():  # Python state, not part of a recorded graph
            mask = torch.ones_like(g) if m is None else m
            self.__dict__["_last"] = (g.detach(), mask.detach())
        return a, logits

    def extra_repr(self) -> str:
        return f"d_model={self.in_features}, heads={self.out_features}, k={self._k}"


class TransformerBlock(nn.Module):
    """One pre-norm block: attention (heads optionally gated) and a MID-L (or dense) FFN."""

    def __init__(self, cfg: Mapping[str, Any], gated_heads: bool) -> None:
        super().__init__()
        d, h, f = cfg["d_model"], cfg["heads"], cfg["ffn"]
        self.heads_n, self.head_dim = h, d // h
        self.norm1 = nn.LayerNorm(d)
        self.heads = HeadGate(d, h) if gated_heads else None
        self.qkv = nn.Linear(d, 3 * d)  # rows: (q | k | v) x head x head_dim
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ffn: nn.Module
        if cfg["variant"] == "midl":
            self.ffn = MIDL(
                d,
                f,
                gate_rank=cfg["gate_rank"],
                light_rank=cfg["light_rank"],
                activation=cfg["activation"],
                gating=cfg["gating"] if str(cfg.get("gating")).startswith("block") else "neuron",
            )
        else:
            parts: list[nn.Module] = [nn.Linear(d, f), make_activation(cfg["activation"])]
            if cfg["variant"] == "dropout":
                parts.append(nn.Dropout(cfg["dropout"]))
            self.ffn = nn.Sequential(*parts)
        self.proj = nn.Linear(f, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.norm1(x))  # (B, T, d)
        return x + self._project(self.ffn(self.norm2(x)))

    # -- attention --------------------------------------------------------------------------

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, dh = self.heads_n, self.head_dim
        a = None
        if self.heads is not None:
            a, logits = self.heads(x)  # (B, H), (B, H)
            k = self.heads.effective_k
            if k < h and not torch.is_grad_enabled():
                return self._selected_heads(x, a, logits, k)
        q, kk, v = self.qkv(x).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, dh)
        o = _attend(q, kk, v)  # (B, H, T, dh)
        if a is not None:
            o = o * a[:, :, None, None]
        return self.out(o.transpose(1, 2).reshape(b, t, d))

    def _selected_heads(
        self, x: torch.Tensor, a: torch.Tensor, logits: torch.Tensor, k: int
    ) -> torch.Tensor:
        """Eval with ``k < heads``: only the ``k`` kept heads of each sample are computed."""
        b, t, d = x.shape
        h, dh = self.heads_n, self.head_dim
        idx = logits.topk(k, dim=-1, sorted=False).indices  # (B, k): the heads the mask kept
        w = self.qkv.weight.view(3, h, dh, d)[:, idx]  # (3, B, k, dh, d)
        bias = self.qkv.bias.view(3, h, dh)[:, idx]  # (3, B, k, dh)
        w = w.permute(1, 0, 2, 3, 4).reshape(b, 3 * k * dh, d)
        bias = bias.permute(1, 0, 2, 3).reshape(b, 1, 3 * k * dh)
        qkv = torch.baddbmm(bias, x, w.transpose(1, 2))  # (B, T, 3 k dh)
        q, kk, v = qkv.view(b, t, 3, k, dh).permute(2, 0, 3, 1, 4)  # 3 x (B, k, T, dh)
        o = _attend(q, kk, v) * a.gather(1, idx)[:, :, None, None]  # (B, k, T, dh)
        wo = self.out.weight.view(d, h, dh)[:, idx]  # (d, B, k, dh)
        wo = wo.permute(1, 2, 3, 0).reshape(b, k * dh, d)  # (B, k dh, d)
        o = o.transpose(1, 2).reshape(b, t, k * dh)
        return torch.baddbmm(self.out.bias.expand(b, 1, d), o, wo)  # (B, T, d)

    # -- FFN output projection --------------------------------------------------------------

    def _project(self, hidden: torch.Tensor) -> torch.Tensor:
        """``Proj(hidden)``; over the ``k`` selected columns per token when that is exact
        (MID-L without a light path, eval) and pays (few rows, or ``sparse_eval`` asks)."""
        ffn = self.ffn
        if (
            isinstance(ffn, MIDL)
            and ffn.light_rank == 0
            and ffn.effective_k < ffn.out_features
            and not self.training
            and not torch.is_grad_enabled()
            and not _tracing()
            and (
                ffn.sparse_eval in ("always", "gather")
                or (ffn.sparse_eval == "auto" and hidden.numel() // ffn.out_features)
                <= _SPARSE_OUT_MAX_ROWS
            )
        ):
            return sparse_projection(hidden, self.proj, ffn.effective_k)
        return self.proj(hidden)


def sparse_projection(hidden: torch.Tensor, proj: nn.Linear, k: int) -> torch.Tensor:
    """``proj(hidden)`` for ``hidden`` (..., f) with at most ``k`` non-zeros per row, computed
    over the ``k`` largest-magnitude entries of each row only: ``2 k d_out`` FLOPs per row."""
    lead = hidden.shape[:-1]
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, f)
    idx = h.abs().topk(k, dim=-1, sorted=False).indices  # (N, k)
    vals = h.gather(1, idx).unsqueeze(1)  # (N, 1, k)
    cols = proj.weight.t()[idx]  # (N, k, d_out)
    y = torch.bmm(vals, cols).squeeze(1)  # (N, d_out)
    if proj.bias is not None:
        y = y + proj.bias
    return y.reshape(*lead, proj.out_features)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ / sqrt(dh)) v`` over the last two dims (explicit products, so that
    ``FlopCounterMode`` counts them as the FLOPs model does)."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (.., T, T)
    return torch.matmul(F.softmax(scores, dim=-1), v)  # (..., T, dh)


def _image_layout(input_shape: tuple[int, ...], patch: int | None) -> tuple[int, int, int, int]:
    """``(C, H, W, patch)`` for image input (C, H, W) or a flat square image (s*s,)."""
    if len(input_shape) == 3:
        c, hh, ww = input_shape
    elif len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0]:
        c, hh, ww = 1, math.isqrt(input_shape[0]), math.isqrt(input_shape[0])
    else:
        raise SpecError(
            "model 'transformer' needs token input (a token dataset), images (C, H, W) or "
            f"flat square images, but the data has shape {tuple(input_shape)}"
        )
    if patch is None:  # the smallest common divisor giving at most MAX_AUTO_PATCHES patches
        common = [p for p in range(1, math.gcd(hh, ww) + 1) if hh % p == 0 and ww % p == 0]
        patch = next((p for p in common if (hh // p) * (ww // p) <= MAX_AUTO_PATCHES), common[-1])
    if hh % patch or ww % patch:
        raise SpecError(
            f"model 'transformer': patch {patch} does not divide the image size {hh}x{ww}"
        )
    return c, hh, ww, patch


class Transformer(MIDLNet):
    """Token or patch embedding + positions -> ``depth`` blocks -> mean pool -> ``head``."""

    arch = "transformer"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key in ("d_model", "depth", "heads", "ffn", "patch"):
            value = config[key]
            if (value is not None or key != "patch") and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1
            ):
                raise SpecError(f"model option '{key}' must be an integer >= 1, got {value!r}")
        d, heads = config["d_model"], config["heads"]
        if d % heads:
            raise SpecError(f"model 'transformer': d_model {d} must be a multiple of heads {heads}")
        gating = Gating.parse(config.get("gating"))
        if gating.kind == "block":  # the FFN's MID-L layers gate groups of neurons
            gating.check_width(config["ffn"], "model 'transformer': the FFN")
        shape = tuple(config["input_shape"])
        self.tokens = bool(config.get("vocab_size")) and len(shape) == 1
        self.embed: nn.Module
        if self.tokens:
            self.embed = nn.Embedding(config["vocab_size"], d)
            n_pos = shape[0]
            self.layout: tuple[int, int, int, int] | None = None
        else:
            c, hh, ww, p = _image_layout(shape, config["patch"])
            self.layout = (c, hh, ww, p)
            self.embed = nn.Linear(c * p * p, d)
            n_pos = (hh // p) * (ww // p)
        self.seq_len = n_pos
        self.pos = nn.Parameter(torch.zeros(1, n_pos, d))
        nn.init.normal_(self.pos, std=0.02)
        gated = gating.kind == "head" and config["variant"] == "midl"
        self.body = nn.ModuleList(TransformerBlock(config, gated) for _ in range(config["depth"]))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config["num_classes"])

    @property
    def blocks(self) -> list[TransformerBlock]:
        """The encoder blocks (``self.body``), typed."""
        return [cast(TransformerBlock, block) for block in self.body]

    def midl_layers(self) -> list[tuple[str, Any]]:
        """``(name, layer)`` of every gated layer (MID-L FFNs and head gates), forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, (MIDL, HeadGate))]

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, H*W) images -> (B, P, C*p*p) non-overlapping patches."""
        assert self.layout is not None
        c, hh, ww, p = self.layout
        x = x.reshape(x.shape[0], c, hh // p, p, ww // p, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], -1, c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x if self.tokens else self.patches(x)) + self.pos  # (B, T, d)
        for block in self.body:
            h = block(h)
        return self.head(self.norm(h.mean(dim=1)))  # (B, classes)

    def cost_model(self, example: torch.Tensor) -> CostModel:
        """The analytic FLOPs model (:mod:`midl_autok.flops_transformer`)."""
        from midl_autok.flops_transformer import transformer_cost_model

        return transformer_cost_model(self)
