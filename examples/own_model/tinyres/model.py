"""A small residual MLP whose hidden layers are MID-L layers.

midl-autok calls :func:`make_model` with the data set's input shape, its number of classes
and the spec's ``model.options`` (here ``width``, ``blocks`` and ``rank``,
the MID-L gate and light-path rank).
"""

from __future__ import annotations

import torch
from torch import nn

from midl_autok import MIDL


class Block(nn.Module):
    """x + MIDL(norm(x)): the MID-L layer picks its top-k neurons per sample."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mix = MIDL(width, width, gate_rank=rank, light_rank=rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(self.norm(x))  # (B, width)


class TinyResNet(nn.Module):
    def __init__(self, d_in: int, num_classes: int, width: int, blocks: int, rank: int) -> None:
        super().__init__()
        self.stem = nn.Linear(d_in, width)
        self.blocks = nn.Sequential(*(Block(width, rank) for _ in range(blocks)))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.flatten(1))  # (B, width)
        return self.head(self.blocks(h))  # (B, classes)


def make_model(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 64,
    blocks: int = 2,
    rank: int = 4,
) -> nn.Module:
    d_in = 1
    for size in input_shape:
        d_in *= size
    return TinyResNet(d_in, num_classes, width, blocks, rank)
