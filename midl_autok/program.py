"""A loaded ``torch.export`` program run as its graph with the weights passed in directly
(:class:`ProgramModule`, what :func:`midl_autok.deploy.load_program` returns).

``ExportedProgram.module()`` spends per call on pytree flattening, input-constraint hooks,
guards and one ``Module.__getattr__`` per weight, which at batch 1 cost more than the MID-L
layers themselves; this module calls the graph directly and checks the input itself. With
the compiled CPU kernels loaded, the graph it runs calls the kernel of
``midl_autok::midl_eval`` directly for CPU float input (:func:`_midl_eval_direct`): the same
C++ function the op's CPU registration calls, without the dispatcher's ~4 us per call.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from midl_autok import ops as _ops  # registers midl_autok::midl_eval
from midl_autok._hooks import global_hooks, hook_free
from midl_autok.kernels.cpu import cpu_kernels

__all__ = ["ProgramModule"]


_OP = _ops.midl_eval.default  # torch.ops.midl_autok.midl_eval.default


def _midl_eval_direct(x: torch.Tensor, *rest: Any) -> Any:
    """``midl_autok::midl_eval`` for a loaded program: the compiled kernel for CPU float32/64
    input (the function the op's CPU kernel calls), the op itself otherwise."""
    ops = cpu_kernels() if x.is_cpu and x.dtype in (torch.float32, torch.float64) else None
    if ops is None:
        return _OP(x, *rest)
    return ops.midl_sparse_eval(x, *rest)


_MAX_SCRATCH = 8  # batch shapes kept per call site


def _midl_eval_y_only() -> Any:
    """:func:`_midl_eval_direct` for a call site whose logits and idx the graph never reads
    (an exported model's usual case): the kernel writes them into scratch tensors of its own
    (per batch size and dtype) and only y is a new tensor, ``(y, None, None)``: each tensor a
    call creates costs ~1 us, a visible share of a layer at batch 1. The scratch is used
    within the call only (the kernel holds the GIL throughout)."""
    scratch: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def midl_eval_y_only(x: torch.Tensor, *rest: Any) -> Any:
        ops = cpu_kernels() if x.is_cpu and x.dtype in (torch.float32, torch.float64) else None
        if ops is None:
            return _OP(x, *rest)
        d, k = rest[2].shape[0], rest[7]  # (G1, G2, W, b, V, U, c, k, act)
        key = (x.shape[0], x.dtype, d, k)
        bufs = scratch.get(key)
        if bufs is None:
            if len(scratch) >= _MAX_SCRATCH:
                scratch.clear()
            bufs = scratch[key] = (  # (on x's device, the CPU: not torch's default device)
                torch.empty((x.shape[0], d), dtype=x.dtype, device=x.device),
                torch.empty((x.shape[0], k), dtype=torch.long, device=x.device),
            )
        return ops.midl_sparse_eval_into(x, *rest, *bufs), None, None

    return midl_eval_y_only


def _reads_y_only(node: Any) -> bool:
    """Whether the graph reads only output 0 of this op call (``getitem`` users only, those
    of outputs 1 and 2 unused)."""
    return all(
        user.op == "call_function"
        and user.target is operator.getitem
        and (user.args[1] == 0 or not user.users)
        for user in node.users
    )


def _direct_graph(graph_module: Any) -> Any:
    """A copy of ``graph_module`` whose ``midl_autok::midl_eval`` calls go through
    :func:`_midl_eval_direct` (or, where the graph reads y only, a :func:`_midl_eval_y_only`
    per call site), or ``graph_module`` itself when it has none or the kernels are not
    loaded."""
    calls = [n for n in graph_module.graph.nodes if n.op == "call_function" and n.target is _OP]
    if not calls or cpu_kernels() is None:
        return graph_module
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(graph_module.graph, {}))
    for node in graph.nodes:
        if node.op == "call_function" and node.target is _OP:
            node.target = _midl_eval_y_only() if _reads_y_only(node) else _midl_eval_direct
    return torch.fx.GraphModule(graph_module, graph)


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
        # the graph's code (not GraphModule.__call__: see __call__ below), with the op's
        # calls going straight to the compiled kernel on CPU
        self._run: Any = _direct_graph(program.graph_module).forward if direct else None
        tensors = [a for a in self._before + self._after if isinstance(a, torch.Tensor)]
        self._device = tensors[0].device if tensors else torch.device("cpu")
        self._shape = tuple(meta.get("input_shape", ()))
        self._dtype = getattr(torch, str(meta.get("input_dtype", "float32")), None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``forward`` directly when no hook is registered (on this module or globally):
        ``nn.Module.__call__`` costs a few microseconds per call, which at batch 1 is a
        visible share of a small model's time; with hooks, the usual call."""
        if (
            not hook_free(self)
            or global_hooks()
            or self._compiled_call_impl is not None  # Module.compile()
            or torch._C._get_tracing_state() is not None  # jit.trace
        ):
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)

    @property
    def graph(self) -> Any:
        """The program's graph (with its weights as inputs), as exported; on CPU its
        ``midl_autok::midl_eval`` calls run the compiled kernel directly."""
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
        out = self._run(*self._before, x, *self._after)  # the graph's code, no Module call
        return out[0] if len(out) == 1 else out
