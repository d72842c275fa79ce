"""The custom op midl_autok::midl_eval and the programs that call it.

The op is held to its PyTorch implementation (masked dense) and to the layer; exported
programs are held to the Python model (same selection, allclose outputs), loaded here, in a
fresh process, and in a process without the compiled kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midl_autok import ops
from midl_autok.deploy import export_model, load_model, load_program, read_metadata
from midl_autok.layers import MIDL
from midl_autok.models import build_model

OP = torch.ops.midl_autok.midl_eval.default
ACTS = {"identity": 0, "relu": 1, "tanh": 2, "silu": 3, "gelu": 4}


def calls_the_op(program: torch.nn.Module) -> int:
    return sum(
        node.op == "call_function" and node.target is OP
        for node in program.graph.nodes  # type: ignore[union-attr]
    )


def fresh_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


# --------------------------------------------------------------------------- the op


@pytest.mark.parametrize("batch", [1, 3, 9, 64])
@pytest.mark.parametrize("light_rank", [0, 6])
@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_equals_its_pytorch_implementation_and_the_masked_layer(
    kernels, batch: int, light_rank: int, activation: str, dtype: torch.dtype
) -> None:
    torch.manual_seed(batch + light_rank)
    layer = MIDL(40, 72, 20, gate_rank=5, light_rank=light_rank, activation=activation)
    layer = layer.to(dtype).eval()
    x = torch.randn(batch, 40, dtype=dtype)
    params = layer._kernel_params()
    with torch.no_grad():
        y, logits, idx = OP(x, *params, 20, ACTS[activation])
        y_ref, logits_ref, idx_ref = ops.midl_eval_reference(x, *params, 20, ACTS[activation])
        layer.sparse_eval = "never"
        masked = layer(x)
    assert idx.shape == (batch, 20) and idx.dtype == torch.long
    assert torch.equal(idx.sort(-1).values, idx_ref.sort(-1).values)  # the same selection
    torch.testing.assert_close(logits, logits_ref)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(y, masked)


def test_op_runs_the_compiled_kernel_once_loaded(kernels) -> None:
    assert torch._C._dispatch_has_kernel_for_dispatch_key(ops.OP_NAME, "CPU")
    layer = MIDL(30, 50, 7).eval()
    x = torch.randn(4, 30)
    with torch.no_grad():
        got = OP(x, *layer._kernel_params(), 7, 1)
        want = kernels.midl_sparse_eval(x, *layer._kernel_params(), 7, 1)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)  # bit for bit: the same C++ function


def test_op_passes_torch_library_opcheck() -> None:
    layer = MIDL(24, 40, 9, gate_rank=4, light_rank=4).eval()
    params = [p.detach() for p in layer._kernel_params() if p is not None]
    g1, g2, w, b, v, u, c = params
    for batch in (1, 5):
        x = torch.randn(batch, 24)
        torch.library.opcheck(
            OP,
            (x, g1, g2, w, b, v, u, c, 9, 1),
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"),
        )
        torch.library.opcheck(
            OP,
            (x, g1, g2, w, None, None, None, None, 3, 0),
            test_utils=("test_schema", "test_faketensor"),
        )


def test_fake_implementation_gives_the_output_shapes_with_a_symbolic_batch() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    layer = MIDL(16, 32, 5).eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        y, logits, idx = OP(torch.empty(7, 16), *layer._kernel_params(), 5, 1)
    assert (tuple(y.shape), tuple(logits.shape), tuple(idx.shape)) == ((7, 32), (7, 32), (7, 5))
    assert idx.dtype == torch.long


def test_op_reference_rejects_an_unknown_activation() -> None:
    layer = MIDL(8, 12, 3).eval()
    with pytest.raises(ValueError, match=r"act must be one of \[0, 1, 2, 3, 4\], but got 9"):
        ops.midl_eval_reference(torch.randn(2, 8), *layer._kernel_params(), 3, 9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu-check.sh)")
def test_op_on_cuda_equals_cpu() -> None:
    layer = MIDL(64, 128, 30).eval()
    x = torch.randn(16, 64)
    with torch.no_grad():
        want = layer(x)
        got = OP(x.cuda(), *[p.cuda() for p in layer._kernel_params()], 30, 1)[0]
        cuda_layer = layer.cuda()
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cuda_layer(x.cuda()).cpu(), want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- programs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    net = build_model("mlp", input_shape=(48,), num_classes=5, hidden=[96, 64], light_rank=8)
    net.set_k({"body.0": 30, "body.1": 20})
    return net.eval()


def test_sparse_program_calls_the_op_and_gives_the_models_outputs(
    kernels, model, tmp_path: Path
) -> None:
    path = export_model(model, tmp_path / "m.pt2", example=torch.randn(4, 48))
    assert read_metadata(path)["program"] == "sparse"
    program = load_program(path, trusted=True)
    assert calls_the_op(program) == 2  # one node per MID-L layer
    with torch.no_grad():
        for batch in (1, 2, 16, 300):
            x = torch.randn(batch, 48)
            torch.testing.assert_close(program(x), model(x), msg=f"batch {batch}")
            for name, layer in model.midl_layers():  # the same selection as in Python
                assert (
                    layer.last_mask is not None
                    and layer.last_mask.sum(-1).eq(model.current_k()[name]).all()
                )


def test_program_selects_the_same_neurons_as_the_model(kernels, model, tmp_path: Path) -> None:
    layer = MIDL(48, 96, 30, light_rank=8).eval()
    layer.load_state_dict(dict(model.midl_layers())["body.0"].state_dict())
    path = tmp_path / "layer.pt2"
    program = torch.export.export(
        layer,
        (torch.randn(2, 48),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
    )
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    x = torch.randn(33, 48)
    with torch.no_grad():
        want = layer(x)
        want_mask = layer.last_mask
        y, _, idx = OP(x, *layer._kernel_params(), 30, 1)
        torch.testing.assert_close(loaded(x), want)
    got_mask = torch.zeros_like(want_mask).scatter_(-1, idx, True)
    assert torch.equal(got_mask, want_mask)
    torch.testing.assert_close(y, want)


def test_portable_program_is_plain_aten(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "p.pt2", example=torch.randn(4, 48), portable=True)
    meta = read_metadata(path)
    assert meta["program"] == "portable"
    program = load_program(path, trusted=True)
    assert calls_the_op(program) == 0
    assert not any("midl_autok" in str(n.target) for n in program.graph.nodes)
    x = torch.randn(10, 48)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x))
        torch.testing.assert_close(load_model(path)(x), model(x))
    assert all(layer.sparse_eval == "auto" for _, layer in model.midl_layers())  # restored


def test_torchscript_file_never_calls_the_op(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "m.pt", example=torch.randn(4, 48), format="torchscript")
    assert read_metadata(path)["program"] == "portable"
    program = load_program(path, trusted=True)
    assert "midl_autok::" not in str(program.inlined_graph)  # type: ignore[attr-defined]


FRESH = """
import json, sys, torch
from midl_autok.deploy import load_program
from midl_autok.kernels import cpu_kernels_status
program = load_program(sys.argv[1] if len(sys.argv) > 1 else {path!r}, trusted=True)
x = torch.load({x!r}, weights_only=True)
with torch.no_grad():
    torch.save(program(x), {out!r})
compiled = torch._C._dispatch_has_kernel_for_dispatch_key("midl_autok::midl_eval", "CPU")
print(json.dumps({{"status": cpu_kernels_status(), "compiled_kernel": compiled}}))
"""


def run_fresh(path: Path, x: torch.Tensor, tmp: Path, **env: str) -> tuple[dict, torch.Tensor, str]:
    torch.save(x, tmp / "x.pt")
    code = FRESH.format(path=str(path), x=str(tmp / "x.pt"), out=str(tmp / "y.pt"))
    proc = fresh_python(code, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), torch.load(tmp / "y.pt", weights_only=True), proc.stderr


def test_sparse_program_runs_in_a_fresh_process(kernels, model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "m.pt2", example=torch.randn(4, 48))
    x = torch.randn(9, 48)
    info, y, _ = run_fresh(path, x, tmp_path)
    assert info == {"status": "ready", "compiled_kernel": True}
    with torch.no_grad():
        torch.testing.assert_close(y, model(x))


def test_without_extensions_programs_load_and_export_writes_the_portable_one(
    model, tmp_path: Path
) -> None:
    sparse = export_model(model, tmp_path / "sparse.pt2", example=torch.randn(4, 48))
    x = torch.randn(7, 48)
    with torch.no_grad():
        want = model(x)
    # a program written with the kernels runs where they are off (the op's PyTorch code)
    info, y, stderr = run_fresh(sparse, x, tmp_path, MIDL_AUTOK_NO_EXTENSIONS="1")
    assert info["status"].startswith("disabled")
    assert not info["compiled_kernel"]
    torch.testing.assert_close(y, want)
    if read_metadata(sparse)["program"] == "sparse":
        assert stderr.count("MID-L fast path off") == 1, stderr
    # export in such a process: the portable program, and one line says the fast path is off
    torch.save(model.state_dict(), tmp_path / "state.pt")
    code = f"""
import logging, torch
logging.basicConfig(level=logging.WARNING)
from midl_autok.deploy import export_model, load_model, load_program, read_metadata
from midl_autok.models import build_model
net = build_model("mlp", input_shape=(48,), num_classes=5, hidden=[96, 64], light_rank=8)
net.load_state_dict(torch.load({str(tmp_path / "state.pt")!r}, weights_only=True))
net.set_k({model.current_k()!r})
path = export_model(net.eval(), {str(tmp_path / "off.pt2")!r}, example=torch.randn(4, 48))
export_model(net.eval(), {str(tmp_path / "off2.pt2")!r}, example=torch.randn(4, 48))
print(read_metadata(path)["program"])
x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
with torch.no_grad():
    torch.testing.assert_close(load_program(path, trusted=True)(x), net(x))
    torch.testing.assert_close(load_model(path)(x), net(x))
"""
    proc = fresh_python(code, MIDL_AUTOK_NO_EXTENSIONS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "portable"
    lines = [line for line in proc.stderr.splitlines() if "MID-L fast path off" in line]
    assert len(lines) == 1, proc.stderr  # one line, however many exports
    assert "MIDL_AUTOK_NO_EXTENSIONS is set" in lines[0]
    with torch.no_grad():
        torch.testing.assert_close(load_program(tmp_path / "off.pt2", trusted=True)(x), want)


def test_loaded_program_runs_its_graph_directly_and_checks_the_input(model, tmp_path: Path) -> None:
    path = export_model(model, tmp_path / "m.pt2", example=torch.randn(4, 48))
    program = load_program(path, trusted=True)
    x = torch.randn(5, 48)
    with torch.no_grad():
        torch.testing.assert_close(program(x), program.unlifted(x))  # type: ignore[operator]
        with pytest.raises(ValueError, match=r"input of shape \(B, 48\) and dtype torch.float32"):
            program(torch.randn(5, 47))
        with pytest.raises(ValueError, match=r"but got \(5, 48\) torch.float64"):
            program(x.double())


def test_loaded_program_calls_the_kernel_directly_and_keeps_hooks(
    kernels, model, tmp_path: Path
) -> None:
    # on CPU the graph that runs calls the op's C++ function without the dispatcher; the
    # exported graph (program.graph) still names the op; hooks make it a normal Module call
    path = export_model(model, tmp_path / "m.pt2", example=torch.randn(4, 48))
    program = load_program(path, trusted=True)
    assert calls_the_op(program) == 2
    code = program._run.__self__.code  # type: ignore[union-attr]
    # (the model reads y only: each call site writes logits and idx into scratch of its own)
    assert code.count("midl_eval_y_only") == 2 and "midl_autok.midl_eval" not in code
    seen: list[torch.Tensor] = []
    x = torch.randn(6, 48)
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(program(x), want)
        handle = program.register_forward_hook(lambda _m, _i, out: seen.append(out))
        torch.testing.assert_close(program(x), want)
        handle.remove()
        program(x)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], want)


def test_a_direct_call_site_reads_y_only_where_the_graph_does(kernels, tmp_path: Path) -> None:
    # where the graph reads the op's logits or idx, they are the call's own tensors; where it
    # reads y only, the call site's scratch (per batch size) holds them and y is still right
    from midl_autok.program import _direct_graph

    layer = MIDL(48, 32, 8, light_rank=4).eval()

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y, logits, _ = ops.midl_eval(x, *self.layer._kernel_params(), 8, 1)
            return y, logits

    with torch.no_grad():
        program = torch.export.export(Both(), (torch.randn(4, 48),))
    code = _direct_graph(program.graph_module).code
    assert "_midl_eval_direct(" in code and "midl_eval_y_only" not in code

    net = build_model("mlp", input_shape=(48,), num_classes=3, hidden=[32, 32], gate_rank=4,
                      light_rank=4)  # fmt: skip
    net.set_k({"body.0": 8, "body.1": 8})
    path = export_model(net.eval(), tmp_path / "y.pt2", example=torch.randn(4, 48))
    loaded = load_program(path, trusted=True)
    with torch.no_grad():
        for batch in (1, 6, 1, 9, 6):  # scratch per batch size, reused
            x = torch.randn(batch, 48)
            torch.testing.assert_close(loaded(x), net(x))
        x = torch.randn(3, 48)
        want = net(x)
        with torch.device("meta"):  # a default device elsewhere (as CUDA would be): new scratch
            got = loaded(x)
        torch.testing.assert_close(got, want)
