"""The fast paths behind MID-L: compiled CPU kernels, their fallbacks, and the path rule.

Speed itself is measured by ``experiments/bench_speed.py``, never here; these tests hold every
fast path to the plain PyTorch result.
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from midl_autok.kernels import cpu as cpu_mod
from midl_autok.kernels import cpu_kernels, no_build
from midl_autok.layers import MIDL, _blocked_path, _kernel_pays, topk_mask


def cpu_simd() -> str | None:
    """The SIMD level the kernels build for on this CPU (``-march=native``), or None."""
    flags = set(cpu_mod._cpu_flags().split())
    if "avx512f" in flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2 + FMA"
    return None


@pytest.fixture(scope="module")
def blocked_ops(kernels):
    """The kernels with the blocked batch path and the fused training step: built on every
    CPU with AVX-512 or AVX2 + FMA (a build there without them fails the test); skipped only
    on a CPU with neither."""
    simd = cpu_simd()
    if simd is None:
        pytest.skip("this CPU has neither AVX-512 nor AVX2 + FMA: no blocked path, no fused step")
    assert kernels.midl_blocked_available(), (
        f"the build on a CPU with {simd} lacks the blocked path"
    )
    return kernels


def torch_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def reference_output(
    layer: MIDL, p: dict[str, torch.Tensor], x: torch.Tensor, k: int, *, straight_through: bool
) -> torch.Tensor:
    """``layer``'s output written out in float64 from its parameters ``p`` (DESIGN §2):
    ``act(a * f + (1 - a) * light)`` with ``a = mask * sigmoid(logits)``, the light path left
    out at light rank 0; ``straight_through``: the mask passes the gate's gradient."""
    xd = x.double()
    logits = xd @ p["gate_in"].T @ p["gate_out"].T
    g = torch.sigmoid(logits)
    m = torch_topk_mask(logits.detach(), k)
    if straight_through:
        m = m + g - g.detach()
    a = m * g
    f = xd @ p["weight"].T + p["bias"]
    if not layer.light_rank:
        return layer.act(a * f)
    light = xd @ p["light_in"].T @ p["light_out"].T + p["light_bias"]
    return layer.act(a * f + (1 - a) * light)


# --------------------------------------------------------------------------- top-k kernel


@pytest.mark.parametrize(("batch", "d"), [(1, 7), (3, 64), (130, 512), (5, 1000)])
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.99, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_kernel_equals_torch_topk(
    kernels, batch: int, d: int, fraction: float, dtype: torch.dtype
) -> None:
    k = max(1, round(fraction * d))
    scores = torch.randn(batch, d, dtype=dtype, generator=torch.Generator().manual_seed(d))
    assert torch.equal(kernels.midl_topk_mask(scores, k), torch_topk_mask(scores, k))


def test_topk_kernel_selects_exactly_k_with_ties_and_nan(kernels) -> None:
    scores = torch.zeros(4, 10)
    scores[1, 3] = float("nan")
    scores[2, :5] = 1.0  # a tie across the k-th place
    scores[3, 6] = -0.0
    mask = kernels.midl_topk_mask(scores, 4)
    assert mask.sum(dim=1).tolist() == [4.0] * 4
    assert mask[0].tolist() == [1.0] * 4 + [0.0] * 6  # ties break by lowest index
    assert mask[2, :5].sum() == 4


def test_topk_kernel_on_half_precision(kernels) -> None:
    scores = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.bfloat16, torch.float16):
        low = scores.to(dtype)
        mask = kernels.midl_topk_mask(low, 9)
        assert mask.dtype == dtype
        assert mask.sum(dim=1).tolist() == [9.0] * 6
        assert torch.equal(mask, torch_topk_mask(low.float(), 9).to(dtype))


def test_topk_kernel_rejects_bad_k(kernels) -> None:
    with pytest.raises(RuntimeError, match="1 <= k <= 5"):
        kernels.midl_topk_mask(torch.zeros(2, 5), 6)


def test_topk_mask_uses_the_kernel_for_large_inputs(kernels) -> None:
    scores = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))  # >= 8192 scores
    assert torch.equal(topk_mask(scores, 100), torch_topk_mask(scores, 100))


# --------------------------------------------------------------------------- training path


@pytest.mark.parametrize("k", [37, 128])
@pytest.mark.parametrize("light_rank", [0, 8])
@pytest.mark.parametrize("activation", ["relu", "identity", "tanh"])
def test_training_gradients_with_the_compiled_kernels(
    kernels, k: int, light_rank: int, activation: str
) -> None:
    # B * d >= 8192: compiled top-k, and (relu/identity) the compiled mix forward/backward;
    # gradients as in DESIGN §2
    torch.manual_seed(0)
    layer = MIDL(48, 128, k, gate_rank=8, light_rank=light_rank, activation=activation).train()
    x = torch.randn(70, 48, generator=torch.Generator().manual_seed(2))
    upstream = torch.randn(70, 128, generator=torch.Generator().manual_seed(3))
    (layer(x) * upstream).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    assert layer.last_mask is not None
    assert layer.last_mask.sum(dim=1).tolist() == [k] * 70

    p = {n: t.detach().double().requires_grad_() for n, t in layer.named_parameters()}
    y = reference_output(layer, p, x, k, straight_through=True)
    (y * upstream.double()).sum().backward()
    for name, grad in got.items():
        torch.testing.assert_close(grad, p[name].grad.float(), msg=name, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- path rule


def test_kernel_cost_rule() -> None:
    assert _kernel_pays(1, 256, 1024, 1024)  # batch 1, k = d/4: the target case
    assert _kernel_pays(16, 100, 1024, 1024)
    # the row-grouped kernel (float64, no AVX-512): at a large batch one GEMM wins
    assert not _kernel_pays(256, 512, 1024, 1024)
    assert not _kernel_pays(256, 400, 1024, 1024)
    # the blocked batch kernel reuses W like a GEMM: it pays up to larger fractions
    assert _kernel_pays(256, 512, 1024, 1024, blocked=True)
    assert not _kernel_pays(256, 700, 1024, 1024, blocked=True)
    assert _kernel_pays(16, 800, 1024, 1024, blocked=True)
    assert not _kernel_pays(16, 1000, 1024, 1024, blocked=True)


def test_auto_picks_the_kernel_at_batch_one_and_dense_at_large_batch(kernels) -> None:
    layer = MIDL(256, 256, 64).eval()
    blocked = bool(kernels.midl_blocked_available())
    with torch.no_grad():
        assert layer.eval_path(torch.zeros(1, 256)) == "kernel"
        assert layer.eval_path(torch.zeros(512, 256)) == "kernel"  # k/d = 0.25
        layer.k = 128
        assert layer.eval_path(torch.zeros(16, 256)) == "kernel"
        # k/d = 0.5: the blocked kernel where the build has it, else one GEMM
        assert layer.eval_path(torch.zeros(256, 256)) == ("kernel" if blocked else "dense")
        assert layer.eval_path(torch.zeros(256, 256, dtype=torch.float64)) == "dense"
        layer.k = 200  # k/d = 0.78
        assert layer.eval_path(torch.zeros(256, 256)) == "dense"
    layer.k = 64
    assert layer.eval_path(torch.zeros(1, 256)) == "gather"  # grad mode on: no kernel


# --------------------------------------------------------------------------- blocked batch path


def _masked_reference(layer: MIDL, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DESIGN §2 in float64 from the layer's parameters: (output, mask)."""
    p = {n: t.detach().double() for n, t in layer.named_parameters()}
    xd = x.double()
    logits = xd @ p["gate_in"].T @ p["gate_out"].T
    k = layer.effective_k
    m = torch_topk_mask(logits, k)
    a = m * torch.sigmoid(logits)
    f = xd @ p["weight"].T + p.get("bias", 0.0)
    if layer.light_rank:
        light = xd @ p["light_in"].T @ p["light_out"].T + p.get("light_bias", 0.0)
        mixed = a * f + (1 - a) * light
    else:
        mixed = a * f
    return layer.act(mixed), m.bool()


@pytest.mark.parametrize(
    ("batch", "d_in", "d"),
    [(8, 33, 40), (9, 64, 64), (37, 130, 100), (70, 256, 256), (130, 1100, 96), (300, 48, 260)],
)
@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.3, 0.5, 0.8, 1.0])
def test_blocked_kernel_equals_masked_dense(
    blocked_ops, batch: int, d_in: int, d: int, fraction: float
) -> None:
    # batches of 8 and more (float32): the blocked path -- tiles of samples, chunks of d_in
    # (d_in = 1100: several chunks and their partial sums), row blocks, odd sizes (tails);
    # at k = d the layer itself runs dense, so the kernel is called directly
    k = max(1, round(fraction * d))
    torch.manual_seed(batch + d)
    layer = MIDL(d_in, d, k, gate_rank=16, light_rank=16, sparse_eval="kernel").eval()
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(d_in))
    assert _blocked_path(blocked_ops, x)
    with torch.no_grad():
        if k < d:
            assert layer.eval_path(x) == "kernel"
            got = layer(x)
        else:
            got = layer._kernel_forward(x, k)
        want, mask = _masked_reference(layer, x)
        assert layer.last_mask is not None
        assert torch.equal(layer.last_mask, mask)
        assert layer.last_mask.sum(dim=1).tolist() == [k] * batch
        layer.sparse_eval = "never"
        torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("d_in", "d", "k"),
    [(33, 40, 1), (64, 64, 3), (130, 100, 37), (1100, 96, 24), (1024, 1024, 256), (7, 9, 9)],
)
@pytest.mark.parametrize("light_rank", [0, 8])
def test_one_sample_kernel_equals_masked_dense(
    blocked_ops, d_in: int, d: int, k: int, light_rank: int
) -> None:
    # batch 1 (float32, SIMD build): the selected rows four at a time against the one input
    # (rows_dot4), the last k % 4 one by one; d_in with and without a partial last vector
    torch.manual_seed(d_in + k)
    layer = MIDL(d_in, d, k, gate_rank=8, light_rank=light_rank, sparse_eval="kernel").eval()
    x = torch.randn(1, d_in, generator=torch.Generator().manual_seed(d))
    with torch.no_grad():
        got = layer._kernel_forward(x, k)
        want, mask = _masked_reference(layer, x)
    assert layer.last_mask is not None and torch.equal(layer.last_mask, mask)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("light_rank", [0, 8])
@pytest.mark.parametrize("activation", ["relu", "identity", "tanh", "gelu", "silu"])
@pytest.mark.parametrize("bias", [True, False])
def test_blocked_kernel_options(blocked_ops, light_rank: int, activation: str, bias: bool) -> None:
    torch.manual_seed(4)
    layer = MIDL(
        96, 128, 40, gate_rank=8, light_rank=light_rank, activation=activation, bias=bias
    ).eval()
    layer.sparse_eval = "kernel"
    x = torch.randn(50, 96, generator=torch.Generator().manual_seed(6))
    assert _blocked_path(blocked_ops, x)
    with torch.no_grad():
        assert layer.eval_path(x) == "kernel"
        got = layer(x)
        want, _ = _masked_reference(layer, x)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


def test_blocked_kernel_with_two_threads(blocked_ops) -> None:
    # row blocks split between threads (large enough work for the parallel rule)
    torch.manual_seed(5)
    layer = MIDL(512, 512, 200, sparse_eval="kernel").eval()
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(7))
    assert _blocked_path(blocked_ops, x)
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = layer(x)
            torch.set_num_threads(2)
            two = layer(x)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)
    want, _ = _masked_reference(layer, x)
    torch.testing.assert_close(two, want.float(), rtol=1e-5, atol=1e-5)


def test_blocked_kernel_extreme_logits(blocked_ops) -> None:
    # saturated gates (sigmoid 0 or 1 to float precision) in the blocked path's own sigmoid
    torch.manual_seed(6)
    layer = MIDL(32, 64, 20, gate_rank=4, light_rank=4, sparse_eval="kernel").eval()
    with torch.no_grad():
        layer.gate_out.mul_(400.0)
        x = torch.randn(16, 32, generator=torch.Generator().manual_seed(8))
        assert _blocked_path(blocked_ops, x)
        got = layer(x)
        want, _ = _masked_reference(layer, x)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- build and fallback


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch):
    """The loader as in a new process (nothing built yet); restored afterwards."""
    monkeypatch.setattr(cpu_mod, "_module", None)
    monkeypatch.setattr(cpu_mod, "_status", "not built")
    return cpu_mod


def test_failed_build_is_logged_once_and_layers_fall_back(
    fresh_loader, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def broken_build():
        calls.append(1)
        raise OSError("no C++ compiler found")

    monkeypatch.setattr(fresh_loader, "_build", broken_build)
    with caplog.at_level(logging.WARNING, logger="midl_autok.kernels"):
        assert cpu_kernels() is None
        assert cpu_kernels() is None
    assert len(calls) == 1
    assert fresh_loader.cpu_kernels_status() == "unavailable: no C++ compiler found"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "no C++ compiler found" in caplog.text

    torch.manual_seed(0)
    layer = MIDL(64, 96, 10).eval()
    x = torch.randn(2, 64)
    with torch.no_grad():
        assert layer.eval_path(x) == "gather"  # auto without kernels
        got = layer(x)
        layer.sparse_eval = "never"
        torch.testing.assert_close(got, layer(x))


def test_environment_variable_disables_the_build(
    fresh_loader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cpu_mod.DISABLE_ENV, "1")
    monkeypatch.setattr(fresh_loader, "_build", lambda: pytest.fail("must not build"))
    assert cpu_kernels() is None
    assert fresh_loader.cpu_kernels_status().startswith("disabled")


def test_no_build_block_never_compiles(fresh_loader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fresh_loader, "_build", lambda: pytest.fail("must not build"))
    with no_build():
        assert cpu_kernels() is None
        layer = MIDL(32, 64, 4).eval()
        with torch.no_grad():
            assert layer.eval_path(torch.zeros(1, 32)) == "gather"
    assert fresh_loader.cpu_kernels_status() == "not built"  # a later call may still build


def test_a_first_build_is_announced_and_a_cached_one_is_quiet(
    fresh_loader,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    where = fresh_loader.build_directory()
    assert where.startswith(str(tmp_path))

    def fake_build():  # what load_inline leaves behind: the module file in the directory
        build = Path(where)
        build.mkdir(parents=True, exist_ok=True)
        (build / f"{build.name}.so").write_bytes(b"")
        return sys.modules[__name__]

    monkeypatch.setattr(fresh_loader, "_build", fake_build)
    with caplog.at_level(logging.INFO, logger="midl_autok.kernels"):
        assert cpu_kernels() is not None
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(messages) == 2, messages
    assert messages[0].startswith("compiling the MID-L CPU kernels") and where in messages[0]
    assert messages[1].startswith("MID-L CPU kernels compiled in")

    caplog.clear()  # a new process finds the build: nothing at INFO
    monkeypatch.setattr(fresh_loader, "_module", None)
    monkeypatch.setattr(fresh_loader, "_status", "not built")
    with caplog.at_level(logging.INFO, logger="midl_autok.kernels"):
        assert cpu_kernels() is not None
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_each_python_environment_keeps_its_own_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # torch rebuilds an extension whose build.ninja changed, and its include paths name the
    # environment: two venvs under one name rebuilt each other's kernel on every switch
    here = cpu_mod.build_directory()
    monkeypatch.setattr(torch, "__file__", "/elsewhere/venv/site-packages/torch/__init__.py")
    assert cpu_mod.build_directory() != here
    monkeypatch.undo()
    # the same sources in another checkout: torch's build.ninja names them by path, so two
    # checkouts under one name rebuilt each other's kernel on every switch
    other = tmp_path / "checkout" / "csrc"
    other.mkdir(parents=True)
    copies = []
    for source in cpu_mod.SOURCES:
        copies.append(other / source.name)
        copies[-1].write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(cpu_mod, "SOURCES", tuple(copies))
    assert cpu_mod.build_directory() != here
    monkeypatch.undo()
    # the name is stable within one environment, whichever name its interpreter is run by
    # (a venv's `python` and its console scripts' `python3` built twice before)
    code = "from midl_autok.kernels.cpu import build_directory; print(build_directory())"
    bindir = Path(sys.executable).parent
    names = ("python", "python3", f"python3.{sys.version_info.minor}")
    aliases = [bindir / n for n in names if (bindir / n).exists()]
    assert aliases
    for exe in aliases:
        out = subprocess.run([str(exe), "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here, exe


def test_the_headers_are_shipped_and_part_of_the_build_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the kernels include simd.h (the SIMD layer): a header that changed must give a new build
    # (torch's cached build would otherwise be loaded, stale), and it ships with the sources
    import re

    included = {
        name
        for source in cpu_mod.SOURCES
        for name in re.findall(r'#include "([^"]+)"', source.read_text(encoding="utf-8"))
    }
    assert "simd.h" in included
    assert included <= {h.name for h in cpu_mod.HEADERS}, cpu_mod.HEADERS
    root = Path(cpu_mod.__file__).parents[2]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")  # (no tomllib on 3.10)
    shipped = re.search(
        r"(?m)^\[tool\.setuptools\.package-data\]\nmidl_autok = \[(.*)\]$", pyproject
    )
    assert shipped is not None
    assert {'"kernels/csrc/*.cpp"', '"kernels/csrc/*.h"'} <= set(shipped[1].split(", "))
    copies = []  # (in one folder: only the header's text changes below, not its path)
    for header in cpu_mod.HEADERS:
        copies.append(tmp_path / header.name)
        copies[-1].write_text(header.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(cpu_mod, "HEADERS", tuple(copies))
    before = cpu_mod.build_directory()
    simd_h = tmp_path / "simd.h"
    simd_h.write_text(simd_h.read_text(encoding="utf-8") + "// edited\n", encoding="utf-8")
    assert cpu_mod.build_directory() != before


def test_the_cli_prints_the_kernel_build_notice(capsys: pytest.CaptureFixture[str]) -> None:
    from midl_autok.cli import _show_kernel_build

    _show_kernel_build()
    _show_kernel_build()  # idempotent: one line per record, not two
    logging.getLogger("midl_autok.kernels").info("compiling the MID-L CPU kernels (test)")
    err = capsys.readouterr().err
    assert err == "midl-autok: compiling the MID-L CPU kernels (test)\n"


def test_import_and_small_layers_do_not_build() -> None:
    code = (
        "import torch; from midl_autok.layers import MIDL; "
        "from midl_autok.kernels import cpu_kernels_status; "
        "layer = MIDL(8, 16, 4); layer(torch.randn(3, 8)).sum().backward(); "
        "print(cpu_kernels_status())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "not built"


@pytest.mark.parametrize("light_rank", [0, 8])
@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_eval_masked_dense_with_the_compiled_mix(kernels, light_rank: int, activation: str) -> None:
    # B * d >= 8192 in eval: top-k and sigmoid/mix/activation compiled; same result as the
    # PyTorch formula in float64
    torch.manual_seed(1)
    layer = MIDL(40, 128, 50, gate_rank=8, light_rank=light_rank, activation=activation)
    layer.sparse_eval = "never"
    layer.eval()
    x = torch.randn(80, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = layer(x)
        p = {n: t.double() for n, t in layer.named_parameters()}
        want = reference_output(layer, p, x, 50, straight_through=False)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert layer.last_mask is not None
    assert layer.last_mask.sum(dim=1).tolist() == [50] * 80


@pytest.mark.parametrize("path", ["gather", "kernel"])
@pytest.mark.parametrize("batch", [1, 9])
def test_sparse_paths_without_biases(kernels, path: str, batch: int) -> None:
    torch.manual_seed(2)
    layer = MIDL(70, 48, 11, gate_rank=16, light_rank=16, bias=False).eval()
    x = torch.randn(batch, 70, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        layer.sparse_eval = "never"
        want = layer(x)
        layer.sparse_eval = path  # type: ignore[assignment]
        assert layer.eval_path(x) == path
        got = layer(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_compiled_training_without_biases_and_strided_input(kernels) -> None:
    torch.manual_seed(3)
    layer = MIDL(48, 128, 30, gate_rank=8, light_rank=8, bias=False).train()
    base = torch.randn(80, 96, generator=torch.Generator().manual_seed(4))
    x = base[:, ::2]  # (80, 48), not contiguous
    layer(x).pow(2).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    layer.sparse_eval = "never"
    with torch.no_grad():
        y_eval = layer.eval()(x.contiguous())
    layer.train()
    # the same computation in plain float64 autograd (straight-through mask)
    p = {n: t.detach().double().requires_grad_() for n, t in layer.named_parameters()}
    xd = x.double()
    logits = xd @ p["gate_in"].T @ p["gate_out"].T
    g = torch.sigmoid(logits)
    m = torch_topk_mask(logits.detach(), 30) + g - g.detach()
    a = m * g
    light = xd @ p["light_in"].T @ p["light_out"].T
    y = torch.relu(a * (xd @ p["weight"].T) + (1 - a) * light)
    y.pow(2).sum().backward()
    torch.testing.assert_close(y_eval, y.detach().float(), rtol=1e-5, atol=1e-5)
    for name, grad in got.items():
        torch.testing.assert_close(grad, p[name].grad.float(), msg=name, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- fused training step


@pytest.mark.parametrize(
    ("batch", "d_in", "d"),
    [(1, 256, 256), (7, 300, 250), (16, 64, 1100), (70, 300, 220), (130, 40, 70)],
)
@pytest.mark.parametrize("fraction", [0.2, 1.0])
@pytest.mark.parametrize(
    ("light_rank", "bias", "activation"),
    [(16, True, "relu"), (0, False, "identity"), (5, False, "relu")],
)
def test_fused_training_step_equals_the_autograd_path(
    blocked_ops,
    batch: int,
    d_in: int,
    d: int,
    fraction: float,
    light_rank: int,
    bias: bool,
    activation: str,
) -> None:
    # midl_train (one C++ autograd function, AVX-512 or AVX2 + FMA builds) against the
    # PyTorch autograd path (_GateMix): outputs, mask, gate and every gradient, input gradient
    # included; k = d (no top-k at all) and k < d; sizes large enough for the build rule
    k = max(1, round(fraction * d))
    torch.manual_seed(batch + d_in)
    fused = MIDL(d_in, d, k, gate_rank=16, light_rank=light_rank, bias=bias, activation=activation)
    plain = MIDL(d_in, d, k, gate_rank=16, light_rank=light_rank, bias=bias, activation=activation)
    plain.load_state_dict(fused.state_dict())
    plain._train_ops = lambda x: None  # type: ignore[method-assign]
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(batch, d, generator=torch.Generator().manual_seed(2))
    results = []
    for layer in (fused, plain):
        layer.train()
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * upstream).sum().backward()
        assert layer.last_mask is not None and layer.last_gate is not None
        grads = {n: p.grad for n, p in layer.named_parameters()}
        results.append((y.detach(), xi.grad, grads, layer.last_mask, layer.last_gate))
    assert fused._train_ops(x) is blocked_ops  # the fused step ran
    (y1, gx1, g1, m1, gate1), (y2, gx2, g2, m2, gate2) = results
    assert torch.equal(m1, m2)
    assert m1.sum(dim=1).tolist() == [k] * batch
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gate1, gate2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx1, gx2, rtol=1e-4, atol=1e-5)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-5, msg=name)


def test_fused_training_step_is_skipped_where_it_cannot_run(kernels) -> None:
    layer = MIDL(256, 256, 64).train()
    x = torch.randn(4, 256)
    assert layer._train_ops(x.double()) is None  # float32 only
    layer.act = torch.nn.Tanh()
    assert layer._train_ops(x) is None  # identity or ReLU only
    small = MIDL(8, 16, 4).train()
    assert small._train_ops(torch.randn(3, 8)) is None  # too small to be worth a build


def native_variant() -> str:
    """The SIMD variant that ``-march=native`` selects on this machine (the macros the
    sources test: ``__AVX512F__``, else ``__AVX2__`` and ``__FMA__``, else none)."""
    flags = set(cpu_mod._cpu_flags().split())
    if "avx512f" in flags:
        return "skylake-avx512"
    return "haswell" if {"avx2", "fma"} <= flags else "x86-64"


@pytest.mark.slow
@pytest.mark.parametrize("march", ["skylake-avx512", "haswell", "x86-64"])
def test_every_simd_variant_of_the_kernels_compiles(march: str, tmp_path: Path) -> None:
    # the kernels pick AVX-512, AVX2 + FMA or the generic loops at build time; this machine
    # builds one of them for real, so the others are checked here by a compile-only pass
    # (~15 s of torch's headers per translation unit: the sources with SIMD code are checked
    # as one unit that includes them all, so the headers are parsed once; each source's own
    # includes are checked by the real build, which compiles them one by one)
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    if march == native_variant() and cpu_kernels() is not None:
        assert cpu_mod.cpu_kernels_status() == "ready"  # this variant, built with -O3
        return
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    # (the SIMD code is in simd.h and the kernels written once over it, in these sources)
    simd = [p for p in cpu_mod.SOURCES if '#include "simd.h"' in p.read_text(encoding="utf-8")]
    assert len(simd) >= 2, cpu_mod.SOURCES  # midl_cpu.cpp and midl_block.cpp at least
    includes = [f"-I{p}" for p in [*include_paths(), sysconfig.get_paths()["include"]]]
    cmd = [compiler, "-std=c++17", "-fsyntax-only", f"-march={march}", "-fopenmp"]
    unit = tmp_path / "simd_sources.cpp"
    unit.write_text("".join(f'#include "{p}"\n' for p in simd), encoding="utf-8")
    cmd += ["-DTORCH_EXTENSION_NAME=midl_check", *includes, str(unit)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]


# -- an interrupted first-use compile must not hang later runs ---------------------------------


def test_a_stale_torch_build_lock_is_removed_under_our_lock(tmp_path: Path) -> None:
    """torch's ``lock`` file left by a killed build made every later kernel load wait forever."""
    from midl_autok.kernels.cpu import _build_lock

    directory = tmp_path / "midl_autok_cpu_x"
    directory.mkdir()
    (directory / "lock").touch()  # what a build killed midway leaves behind
    with _build_lock(str(directory)):
        assert not (directory / "lock").exists()


def test_the_build_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from midl_autok.kernels.cpu import _build_lock

    directory = tmp_path / "midl_autok_cpu_y"
    directory.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from midl_autok.kernels.cpu import _build_lock\n"
         f"with _build_lock({str(directory)!r}):\n"
         "    print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)  # a compile killed while it holds the lock
        holder.wait(timeout=30)
        with _build_lock(str(directory)):  # returns: the OS released the dead holder's lock
            pass
    finally:
        holder.kill()


def test_repeated_eval_calls_follow_every_change(kernels) -> None:
    # a second eval call on the same shapes takes the layer's short path (the kernel call
    # without the path rule); k, the activation, the parameters, the batch size and the grad
    # mode all change what the next call computes
    torch.manual_seed(0)
    layer = MIDL(40, 64, 16, light_rank=8, sparse_eval="kernel").eval()
    x = torch.randn(1, 40)

    def check(inp: torch.Tensor) -> None:
        with torch.no_grad():
            got = layer(inp)
            layer.sparse_eval = "never"
            want = layer(inp)
            layer.sparse_eval = "kernel"
            layer(inp)  # the kernel's record again (the dense call above replaced it)
            assert layer.last_mask is not None
            assert layer.last_mask.sum(-1).eq(layer.effective_k).all()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    check(x)
    assert layer.__dict__.get("_fast_key") is not None
    check(x)
    layer.k = 5
    check(x)
    layer.act = torch.nn.Tanh()
    check(x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    check(x)
    layer.weight = torch.nn.Parameter(torch.randn(64, 40))
    check(x)
    check(torch.randn(3, 40))
    with torch.enable_grad():  # grad mode: the kernel has no backward; gather records one
        y = layer(x)
    assert y.requires_grad


@pytest.mark.parametrize("batch", [1, 3, 6, 8, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("light_rank", [0, 8])
def test_the_kernel_writing_into_buffers_equals_the_allocating_one(
    kernels, batch: int, dtype: torch.dtype, light_rank: int
) -> None:
    # midl_sparse_eval_into: the short path's call (the record's logits and idx written into
    # the layer's buffers, y returned) computes what midl_sparse_eval returns, on every path
    # of the kernel (a few samples, 5-7 samples, the blocked batch path; float64)
    torch.manual_seed(batch)
    layer = MIDL(40, 64, 16, light_rank=light_rank).to(dtype)
    x = torch.randn(batch, 40, dtype=dtype)
    params = layer._kernel_params()
    with torch.no_grad():
        y, logits, idx = kernels.midl_sparse_eval(x, *params, 16, 1)
        logits_buf = torch.full((batch, 64), float("nan"), dtype=dtype)
        idx_buf = torch.full((batch, 16), -1, dtype=torch.long)
        got = kernels.midl_sparse_eval_into(x, *params, 16, 1, logits_buf, idx_buf)
    torch.testing.assert_close(got, y, rtol=0, atol=0)
    torch.testing.assert_close(logits_buf, logits, rtol=0, atol=0)
    assert torch.equal(idx_buf, idx)


def test_the_kernel_rejects_buffers_of_the_wrong_shape_or_dtype(kernels) -> None:
    layer = MIDL(40, 64, 16, light_rank=8)
    x = torch.randn(2, 40)
    params = layer._kernel_params()
    logits, idx = torch.empty(2, 64), torch.empty(2, 16, dtype=torch.long)
    for bad_logits, bad_idx, what in [
        (torch.empty(2, 63), idx, "logits buffer"),
        (torch.empty(2, 64, dtype=torch.float64), idx, "logits buffer"),
        (torch.empty(64, 2).t(), idx, "logits buffer"),  # not contiguous
        (logits, torch.empty(2, 15, dtype=torch.long), "idx buffer"),
        (logits, torch.empty(2, 16, dtype=torch.int32), "idx buffer"),
        (torch.empty(2, 64, device="meta"), idx, "logits buffer"),  # (meta: as if on CUDA)
        (logits, torch.empty(2, 16, dtype=torch.long, device="meta"), "idx buffer"),
    ]:
        with torch.no_grad(), pytest.raises(RuntimeError, match=what):
            kernels.midl_sparse_eval_into(x, *params, 16, 1, bad_logits, bad_idx)


def test_the_short_path_reuses_its_record_buffers_and_never_hands_them_out(kernels) -> None:
    # the short path writes each call's logits and idx into the same two tensors; what a
    # caller read from an earlier call (last_mask, last_gate) must not change with them
    torch.manual_seed(0)
    layer = MIDL(40, 64, 16, light_rank=8, sparse_eval="kernel").eval()
    xs = torch.randn(4, 1, 40)

    def expected(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = layer.gate_logits(x)
        return topk_mask(logits, 16).bool(), torch.sigmoid(logits)

    with torch.inference_mode():
        layer(xs[0])  # the general path: the short path's key and buffers
        layer(xs[1])  # the short path
        record = layer.__dict__["_last"]
        mask1, gate1 = layer.last_mask, layer.last_gate
        assert mask1 is not None and gate1 is not None
        layer(xs[2])
        assert layer.__dict__["_last"][0] is record[0]  # the same buffers, written again
        assert layer.__dict__["_last"][1] is record[1]
        want_mask, want_gate = expected(xs[2])
        assert torch.equal(layer.last_mask, want_mask)
        torch.testing.assert_close(layer.last_gate, want_gate)
        # the first reads are still the second input's
        want_mask1, want_gate1 = expected(xs[1])
        assert not torch.equal(want_mask1, want_mask)  # (the premise: the inputs differ)
        assert torch.equal(mask1, want_mask1)
        torch.testing.assert_close(gate1, want_gate1)
    with torch.no_grad():  # buffers made in inference mode, written outside it
        layer(xs[3])
        want_mask, _ = expected(xs[3])
        assert torch.equal(layer.last_mask, want_mask)


def test_the_kernels_refuse_parameters_off_the_cpu(kernels) -> None:
    # a CPU input given to a model whose parameters live elsewhere: an error naming the
    # parameters, not a read of device memory as host memory (a meta tensor stands in for
    # CUDA here)
    layer = MIDL(40, 64, 16, light_rank=8)
    x = torch.randn(2, 40)
    params = list(layer._kernel_params())
    with torch.no_grad():
        for i in (0, 2, 4):  # G1, W, V
            moved = list(params)
            moved[i] = params[i].detach().to("meta")
            with pytest.raises(RuntimeError, match="parameters must be on the CPU like x"):
                kernels.midl_sparse_eval(x, *moved, 16, 1)
            with pytest.raises(RuntimeError, match="parameters must be on the CPU like x"):
                kernels.midl_block_eval(x, *moved, 16, 8, 1, False)
            if cpu_simd() is not None:  # the fused training step (SIMD builds)
                with pytest.raises(RuntimeError, match="parameters must be on the CPU like x"):
                    kernels.midl_train(x, *moved, 16, 1)


def test_the_short_path_keeps_its_buffers_on_the_cpu_whatever_the_default_device(
    kernels,
) -> None:
    # torch.set_default_device("cuda") in a user's program must not put the layer's record
    # buffers on the GPU while it runs a CPU input (meta stands in for CUDA here)
    torch.manual_seed(0)
    layer = MIDL(40, 64, 16, light_rank=8, sparse_eval="kernel").eval()
    x = torch.randn(1, 40)
    with torch.no_grad():
        want = copy.deepcopy(layer)(x)
        with torch.device("meta"):
            layer(x)  # the general path: the short path's key and buffers
            got = layer(x)  # the short path
        assert layer.__dict__["_last"][0].device.type == "cpu"
    torch.testing.assert_close(got, want, rtol=0, atol=0)
