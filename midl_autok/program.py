"""A loaded ``torch.export`` program run as its graph with the weights passed in directly
(:class:`ProgramModule`, what :func:`midl_autok.deploy.load_program` returns).

``ExportedProgram.module()`` spends per call on pytree flattening, input-constraint hooks,
guards and one ``Module.__getattr__`` per weight, which at batch 1 cost more than the MID-L
layers themselves; this module calls the graph directly and checks the input itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ProgramModule"]


class ProgramModule(nn.Module):
    """An exported program, run as its graph with the weights passed in directly.

    ``ExportedProgram.module()`` (still available as :attr:`unlifted`) wraps the graph in
    per-call pytree flattening, input-constraint hooks, guard checks and one
    ``Module.__getattr__`` per weight: on a MID-L MLP at batch 1 that cost more than the
    layers themselves. Here a call checks the input's trailing shape and dtype (what the
    program was exported for; the batch size is free) and calls the graph module with the
    program's parameters, buffers and constants in its signature's order. Programs whose
    signature needs more (several inputs, mutated buffers) run through ``module()``."""

    def __init__(self, program: Any, meta: Mapping[str, Any]) -> None:
        from torch.export.graph_signature import InputKind, OutputKind

        super().__init__()
        self.program = program
        self.unlifted = program.module()
        signature = program.graph_signature
        state = {**program.state_dict, **program.constants}
        users = [
            i for i, spec in enumerate(signature.input_specs) if spec.kind == InputKind.USER_INPUT
        ]
        direct = (
            len(users) == 1
            and all(spec.kind == OutputKind.USER_OUTPUT for spec in signature.output_specs)
            and all(
                spec.kind == InputKind.USER_INPUT or spec.target in state
                for spec in signature.input_specs
            )
        )
        self._direct = direct
        self._before: list[Any] = []
        self._after: list[Any] = []
        if direct:
            args = [
                state.get(spec.target) if spec.target else None for spec in signature.input_specs
            ]
            self._before, self._after = args[: users[0]], args[users[0] + 1 :]
        self._graph_module = program.graph_module
        tensors = [a for a in self._before + self._after if isinstance(a, torch.Tensor)]
        self._device = tensors[0].device if tensors else torch.device("cpu")
        self._shape = tuple(meta.get("input_shape", ()))
        self._dtype = getattr(torch, str(meta.get("input_dtype", "float32")), None)

    @property
    def graph(self) -> Any:
        """The graph that runs (the program's, with its weights as inputs)."""
        return self._graph_module.graph

    def forward(self, x: torch.Tensor) -> Any:
        if not self._direct or x.device != self._device:  # e.g. after .to("cuda")
            return self.unlifted(x)
        if tuple(x.shape[1:]) != self._shape or (
            self._dtype is not None and x.dtype != self._dtype
        ):
            raise ValueError(
                f"the program takes input of shape (B, {', '.join(map(str, self._shape))}) and "
                f"dtype {self._dtype}, but got {tuple(x.shape)} {x.dtype}"
            )
        out = self._graph_module(*self._before, x, *self._after)
        return out[0] if len(out) == 1 else out
