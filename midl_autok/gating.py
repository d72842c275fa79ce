"""What a MID-L gate selects: single neurons, groups of contiguous neurons, or attention heads.

``gating`` is written as text in specs and on the command line (``neuron``, ``block:32``,
``head``) and as :class:`Gating` in Python. It is the one parser and the one rule for which k a
layer accepts, shared by the layers, the FLOPs model, the spec and the search spaces.

- ``neuron`` (the paper's setting): the gate scores each of the d output neurons and top-k keeps
  k of them.
- ``block:B``: the gate scores d / B groups of B contiguous neurons and top-k keeps k / B groups;
  k still counts neurons and must be a multiple of B (so must d). The full path then runs as
  small dense products over contiguous rows.
- ``head``: attention heads are the units (a Transformer block's attention); k counts heads.

>>> Gating.parse("block:32")
Gating(kind='block', size=32)
>>> str(Gating.parse("neuron")), Gating.parse("block:8").units(64)
('neuron', 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from midl_autok.errors import SpecError

if TYPE_CHECKING:
    from midl_autok.schedule import KSchedule

__all__ = ["Gating", "GatingKind", "snap_schedule"]

GatingKind = Literal["neuron", "block", "head"]

_VALID = "neuron, block:B (B a positive integer), head"


@dataclass(frozen=True)
class Gating:
    """A gate's unit: ``kind`` and, for ``block``, the number of neurons per group."""

    kind: GatingKind = "neuron"
    size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("neuron", "block", "head"):
            raise SpecError(f"unknown gating '{self.kind}'; valid: {_VALID}")
        if self.size < 1 or (self.kind != "block" and self.size != 1):
            raise SpecError(f"gating '{self.kind}' with group size {self.size}; valid: {_VALID}")

    @classmethod
    def parse(cls, value: str | Gating | None) -> Gating:
        """Read ``neuron``, ``block:B`` or ``head`` (``None`` is ``neuron``)."""
        if value is None:
            return cls()
        if isinstance(value, Gating):
            return value
        text = str(value).strip().lower()
        if text in ("neuron", "head"):
            return cls(text)  # type: ignore[arg-type]
        name, sep, size = text.partition(":")
        if name == "block" and sep:
            try:
                block = int(size)
            except ValueError:
                block = 0
            if block >= 1:
                return cls("block", block)
            raise SpecError(f"gating '{value}': the block size must be a positive integer")
        raise SpecError(f"unknown gating '{value}'; valid: {_VALID}")

    def __str__(self) -> str:
        return f"block:{self.size}" if self.kind == "block" else self.kind

    def units(self, width: int) -> int:
        """How many gated units a layer of ``width`` neurons (or heads) has."""
        return width // self.size

    def check_width(self, width: int, where: str = "layer") -> None:
        """One line when a layer of ``width`` cannot be split into this gating's groups."""
        if width % self.size:
            raise SpecError(
                f"{where}: width {width} is not a multiple of the gating block {self.size}"
            )

    def check_k(self, k: int, width: int, where: str = "layer") -> None:
        """One line when ``k`` (neurons kept) does not fit this gating on ``width`` neurons."""
        self.check_width(width, where)
        if k % self.size:
            raise SpecError(
                f"{where}: k = {k} is not a multiple of the gating block {self.size} "
                f"(with {self} k counts neurons and keeps whole groups)"
            )

    def snap(self, k: int, width: int) -> int:
        """The nearest k this gating accepts, at least one group, at most ``width``."""
        groups = max(1, min(self.units(width), round(k / self.size)))
        return groups * self.size


def snap_schedule(schedule: KSchedule, gatings: Mapping[str, Gating]) -> KSchedule:
    """``schedule`` with every k of the layers in ``gatings`` snapped to whole groups
    (:meth:`Gating.snap`); the same object when nothing changes. A search space knows widths,
    not gatings, so the search snaps what it proposes before a block-gated model trains it."""
    rows = tuple(
        tuple(gatings[spec.name].snap(k, spec.width) for k in row)
        if spec.name in gatings
        else tuple(row)
        for spec, row in zip(schedule.layers, schedule.k, strict=True)
    )
    if rows == tuple(tuple(row) for row in schedule.k):
        return schedule
    return dataclasses.replace(schedule, k=rows)
