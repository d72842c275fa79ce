"""Block gating (``gating="block:B"``) in PyTorch ops: the group selection and the sparse eval
path that runs the full path as small dense products over contiguous rows of W.

With block gating a MID-L layer of ``d`` neurons has ``G = d / B`` groups of ``B`` contiguous
neurons. The gate is the neuron gate (``G2 · G1 · x``, ``d`` logits); a group's score is the
sum of its neurons' logits (pooled scores: the gate keeps its shape and its per-neuron value
``g`` in the mix, so checkpoints, the kernels' parameter order and the exported program are
those of neuron gating)::

    s_j   = sum_{i in group j} logits_i                  (B, G)   G = d / B
    m     = 1 on the k / B groups with the largest s_j   (B, G) -> repeated to (B, d)

Everything else is neuron gating's equation with this ``m`` (straight-through gradient,
light path on unselected neurons). Pooling is d additions per sample and the top-k runs
over G scores instead of d: elementwise work, not counted by the FLOPs model.

The sparse eval path: per sample the selected groups are contiguous row blocks ``W_j``
(B x d_in), so the (sample, group) pairs are sorted by group and each group runs one dense
product ``X[samples selecting j] @ W_j^T``, written back into the output with the light path
and the mix. FLOPs: ``2 * k * d_in`` per sample for the full path, as neuron gating.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["block_eval", "block_mask", "group_scores"]


def group_scores(logits: torch.Tensor, size: int) -> torch.Tensor:
    """``s_j = sum of the logits of group j``: (B, d) -> (B, d / size)."""
    batch, d = logits.shape
    return logits.reshape(batch, d // size, size).sum(-1)  # (B, G)


def block_mask(logits: torch.Tensor, k: int, size: int) -> torch.Tensor:
    """Hard mask (B, d), 1.0 on the ``k / size`` groups with the largest pooled scores."""
    d = logits.shape[1]
    if k >= d:
        return torch.ones_like(logits)
    scores = group_scores(logits, size)  # (B, G)
    idx = scores.topk(k // size, dim=-1, sorted=False).indices  # (B, k / size)
    groups = torch.zeros_like(scores).scatter_(-1, idx, 1.0)  # (B, G)
    return groups.repeat_interleave(size, dim=1)  # (B, d)


def block_eval(
    x: torch.Tensor,
    params: Sequence[torch.Tensor | None],
    k: int,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block-gated MID-L layer in eval mode, full path only on the selected groups.

    ``params``: the layer's parameters in the kernels' order ``(G1, G2, W, b, V, U, c)``
    (``None`` for an absent bias or light path). Returns ``(y before the activation (B, d),
    logits (B, d), group indices (B, k / size))``.
    """
    gate_in, gate_out, weight, bias, light_in, light_out, light_bias = params
    if gate_in is None or gate_out is None or weight is None:
        raise ValueError("block_eval needs the gate (G1, G2) and the weight W")
    batch, d_in = x.shape
    d = weight.shape[0]
    groups_n, per = d // size, k // size
    logits = F.linear(F.linear(x, gate_in), gate_out)  # (B, d)
    idx = group_scores(logits, size).topk(per, dim=-1, sorted=False).indices  # (B, per)
    groups, order = idx.reshape(-1).sort(stable=True)  # (P,) pairs sorted by group
    samples = order // per  # (P,) the sample of each pair
    counts = torch.bincount(groups, minlength=groups_n).tolist()
    xs = x.index_select(0, samples)  # (P, d_in)
    w = weight.reshape(groups_n, size, d_in)  # (G, size, d_in)
    f = x.new_empty((xs.shape[0], size))  # (P, size)
    start = 0
    for j, count in enumerate(counts):
        if count:
            end = start + count
            torch.mm(xs[start:end], w[j].t(), out=f[start:end])
            start = end
    if bias is not None:
        f += bias.reshape(groups_n, size).index_select(0, groups)
    g = torch.sigmoid(logits.reshape(batch, groups_n, size)[samples, groups])  # (P, size)
    if light_in is None or light_out is None:
        y = x.new_zeros((batch, d))
        y.view(batch, groups_n, size)[samples, groups] = g * f
    else:
        y = F.linear(F.linear(x, light_in), light_out, light_bias)  # (B, d) light everywhere
        view = y.view(batch, groups_n, size)
        light_sel = view[samples, groups]  # (P, size)
        view[samples, groups] = light_sel + g * (f - light_sel)
    return y, logits, idx
