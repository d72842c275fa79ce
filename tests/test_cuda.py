"""MID-L on CUDA: masked dense training with AMP, the eval paths, the custom op and an exported
sparse program, each held to the CPU result. Run by ``scripts/gpu-check.sh`` on a machine
with a CUDA GPU; skipped elsewhere (nothing here can run without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midl_autok.deploy import export_model, load_program, read_metadata
from midl_autok.layers import MIDL
from midl_autok.models import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TOL = {"rtol": 2e-3, "atol": 2e-3}  # TF32 / reduction order on the GPU


@pytest.fixture(autouse=True)
def exact_matmul():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("light_rank", [0, 16])
def test_training_step_on_cuda_matches_cpu_and_runs_under_amp(light_rank: int) -> None:
    torch.manual_seed(0)
    cpu = MIDL(128, 256, 64, light_rank=light_rank).train()
    gpu = MIDL(128, 256, 64, light_rank=light_rank).cuda().train()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(32, 128)
    y_cpu = cpu(x)
    y_cpu.square().mean().backward()
    y_gpu = gpu(x.cuda())
    y_gpu.square().mean().backward()
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, **TOL)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        assert p_gpu.grad is not None, name
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, **TOL, msg=name)
    gpu.zero_grad()
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = gpu(x.cuda()).float().square().mean()
    scaler.scale(loss).backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)


@pytest.mark.parametrize("mode", ["never", "gather", "auto", "kernel"])
@pytest.mark.parametrize("batch", [1, 16, 256])
def test_eval_paths_on_cuda_equal_cpu(mode: str, batch: int) -> None:
    torch.manual_seed(batch)
    cpu = MIDL(96, 192, 40, sparse_eval="never").eval()
    gpu = MIDL(96, 192, 40, sparse_eval=mode).cuda().eval()  # type: ignore[arg-type]
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(batch, 96)
    with torch.no_grad():
        want = cpu(x)
        got = gpu(x.cuda())
    assert gpu.eval_path(x.cuda()) in ("dense", "gather")  # the CPU kernel never runs here
    torch.testing.assert_close(got.cpu(), want, **TOL)
    assert torch.equal(gpu.last_mask.cpu(), cpu.last_mask)


def test_op_and_a_sparse_program_run_on_cuda(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model("mlp", input_shape=(40,), num_classes=5, hidden=[128, 64])
    model.set_k({"body.0": 40, "body.1": 20})
    model = model.cuda().eval()
    x = torch.randn(33, 40, device="cuda")
    path = export_model(model, tmp_path / "m.pt2", example=x[:2])
    assert read_metadata(path)["program"] == "sparse"
    program = load_program(path, trusted=True)
    assert any("midl_eval" in str(node.target) for node in program.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), **TOL)
