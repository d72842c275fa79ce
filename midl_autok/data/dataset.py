"""The Dataset type: train, val and test tensors with the facts about them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

_KINDS = ("vector", "image", "tokens")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset split into train, val and test tensors.

    ``x_*`` are float32 (vector: ``(N, F)``, image: ``(N, C, H, W)``, standardized with the
    train statistics) or int64 token ids (tokens: ``(N, T)``); ``y_*`` are int64 class ids in
    ``0 .. num_classes - 1``. ``info`` holds JSON-friendly facts: the source, split sizes and
    settings, class names, feature names, standardization statistics.
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    vocab_size: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, but got {self.kind!r}")
        for part, x, y in self._parts():
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{part} split has x {tuple(x.shape)} and y {tuple(y.shape)}, "
                    f"expected (N, *{self.input_shape}) and (N,)"
                )

    def _parts(self) -> tuple[tuple[str, torch.Tensor, torch.Tensor], ...]:
        return (
            ("train", self.x_train, self.y_train),
            ("val", self.x_val, self.y_val),
            ("test", self.x_test, self.y_test),
        )

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with every tensor moved to ``device``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split: ``{"train": n, "val": n, "test": n}``."""
        return {part: int(y.shape[0]) for part, _, y in self._parts()}

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, sizes={self.sizes})"
        )
