"""The transformer family: MID-L FFNs, head gating, its FLOPs model, search and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from clikit import run_cli
from torch.utils.flop_counter import FlopCounterMode

from midl_autok.errors import SpecError
from midl_autok.flops import cost_model, dense_flops, midl_flops
from midl_autok.flops_transformer import (
    attention_flops,
    ffn_flops,
    flops_by_group,
    transformer_ffn_flops,
)
from midl_autok.layers import MIDL
from midl_autok.models import build_model
from midl_autok.spec import list_experiments, load_spec, validate_spec
from midl_autok.transformer import HeadGate, Transformer, sparse_projection

VOCAB = 20


def tokens(
    seq: int = 8, *, variant: str = "midl", gating: str = "neuron", **options: Any
) -> Transformer:
    options = {"d_model": 16, "depth": 2, "heads": 4, "ffn": 24, "gate_rank": 3, **options}
    model = build_model(
        "transformer",
        input_shape=(seq,),
        num_classes=5,
        vocab_size=VOCAB,
        variant=variant,
        gating=gating,
        **options,
    )
    assert isinstance(model, Transformer)
    return model


def token_batch(n: int, seq: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def counted(fn: Any) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("variant", ["midl", "dense", "dropout"])
@pytest.mark.parametrize(
    ("shape", "patches"), [((8,), 8), ((64,), 16), ((1, 28, 28), 16), ((3, 8, 8), 16)]
)
def test_tokens_and_images_give_logits(variant: str, shape: tuple[int, ...], patches: int) -> None:
    vocab = VOCAB if len(shape) == 1 and shape[0] == 8 else None
    model = build_model(
        "transformer", input_shape=shape, num_classes=3, vocab_size=vocab, variant=variant
    )
    assert isinstance(model, Transformer) and model.seq_len == patches
    x = token_batch(4, shape[0]) if vocab else torch.randn(4, *shape)
    assert model(x).shape == (4, 3)
    names = [s.name for s in model.layer_specs()]
    assert names == (["body.0.ffn", "body.1.ffn"] if variant == "midl" else [])


def test_head_gating_adds_per_block_head_layers() -> None:
    model = tokens(gating="head")
    assert [(s.name, s.width) for s in model.layer_specs()] == [
        ("body.0.heads", 4),
        ("body.0.ffn", 24),
        ("body.1.heads", 4),
        ("body.1.ffn", 24),
    ]
    model.set_k({"body.0.heads": 2, "body.1.ffn": 5})
    assert model.current_k() == {"body.0.heads": 2, "body.0.ffn": 24, "body.1.heads": 4,
                                 "body.1.ffn": 5}  # fmt: skip
    template = model.schedule_template(3, 0.5)
    model.check_schedule(template)
    assert template.final() == {"body.0.heads": 2, "body.0.ffn": 12, "body.1.heads": 2,
                                "body.1.ffn": 12}  # fmt: skip


def test_eval_computes_only_the_kept_heads_and_matches_the_masked_path() -> None:
    torch.manual_seed(0)
    model = tokens(gating="head").eval()
    x = token_batch(6)
    for k in (1, 2, 3):
        model.set_k({"body.0.heads": k, "body.1.heads": k})
        with torch.no_grad():
            selected = model(x)  # only the kept heads' rows, scores and columns
        with torch.enable_grad():
            masked = model(x)  # every head computed, the dropped ones scaled by 0
        torch.testing.assert_close(selected, masked.detach())
        gate = model.body[0].heads
        assert isinstance(gate, HeadGate) and gate.last_mask is not None
        assert gate.last_mask.sum(dim=1).tolist() == [k] * 6
    with torch.no_grad():  # a dropped head changes nothing: zero it, same output
        model.set_k({"body.0.heads": 1, "body.1.heads": 4})
        before = model(x[:1])
        mask = model.body[0].heads.last_mask
        assert mask is not None
        dropped = int((~mask[0]).nonzero()[0])
        rows = model.body[0].qkv.weight.view(3, 4, 4, 16)
        rows[:, dropped] = 0
        torch.testing.assert_close(model(x[:1]), before)


def test_head_gate_trains_straight_through() -> None:
    torch.manual_seed(0)
    model = tokens(gating="head")
    model.set_k({"body.0.heads": 1, "body.1.heads": 2})
    loss = model(token_batch(8)).logsumexp(dim=1).sum()
    loss.backward()
    for block in model.body:
        grad = block.heads.proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0  # the gate learns through top-k


def test_ffn_projection_over_the_selected_columns_is_exact() -> None:
    torch.manual_seed(0)
    model = tokens(light_rank=0).eval()
    model.set_k({"body.0.ffn": 5, "body.1.ffn": 7})
    x = token_batch(3)
    with torch.no_grad():
        fast = model(x)  # 24 rows: projection over the k selected columns
    with torch.enable_grad():
        reference = model(x)  # dense projection of the (mostly zero) hidden layer
    torch.testing.assert_close(fast, reference.detach())
    hidden = torch.zeros(4, 24)
    hidden[:, :3] = torch.randn(4, 3)
    proj = model.body[0].proj
    torch.testing.assert_close(sparse_projection(hidden, proj, 3), proj(hidden))
    assert counted(lambda: sparse_projection(hidden, proj, 3)) == 4 * 2 * 3 * 16


# --------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("variant", ["dense", "midl"])
@pytest.mark.parametrize("shape", [(8,), (64,), (1, 28, 28)])
def test_dense_forward_matches_flop_counter(variant: str, shape: tuple[int, ...]) -> None:
    """Dense variant, and MID-L at k = ffn (masked dense: every row of W), all heads."""
    vocab = VOCAB if shape == (8,) else None
    model = build_model(
        "transformer", input_shape=shape, num_classes=10, vocab_size=vocab, variant=variant
    ).eval()
    x = token_batch(1, 8) if vocab else torch.randn(1, *shape)
    costs = cost_model(model, x)
    assert counted(lambda: model(x)) == costs.inference_flops()
    dense = build_model(
        "transformer", input_shape=shape, num_classes=10, vocab_size=vocab, variant="dense"
    )
    assert costs.dense_flops() == cost_model(dense, x).inference_flops()


@pytest.mark.parametrize("light_rank", [0, 3])
def test_gated_forward_matches_flop_counter(light_rank: int) -> None:
    """One token (T = 1), so MID-L's gather path computes exactly k rows of W; heads gated."""
    torch.manual_seed(0)
    model = tokens(1, gating="head", light_rank=light_rank, ffn=32).eval()
    for layer in model.modules():
        if isinstance(layer, MIDL):
            layer.sparse_eval = "always"
    x = token_batch(1, 1)
    costs = cost_model(model, x)
    for k_heads, k_ffn in ((1, 3), (2, 17), (4, 32)):
        k = {"body.0.heads": k_heads, "body.1.heads": k_heads, "body.0.ffn": k_ffn,
             "body.1.ffn": k_ffn}  # fmt: skip
        model.set_k(k)
        assert counted(lambda: model(x)) == costs.inference_flops(k), k


def test_flops_formulas() -> None:
    t, d, h, dh, f = 7, 16, 4, 4, 24
    assert attention_flops(t, d, h, dh) == 2 * t * d * 3 * d + 4 * t * t * d + 2 * t * d * d
    assert attention_flops(t, d, 1, dh) == 2 * t * d * 3 * dh + 4 * t * t * dh + 2 * t * dh * d
    mid = midl_flops(d, f, 5, gate_rank=3, light_rank=0)
    assert transformer_ffn_flops(t, d, f, 5, gate_rank=3, light_rank=0) == t * (mid + 2 * 5 * d)
    mid = midl_flops(d, f, 5, gate_rank=3, light_rank=2)
    assert transformer_ffn_flops(t, d, f, 5, gate_rank=3, light_rank=2) == t * (mid + 2 * f * d)
    model = tokens(t, gating="head", light_rank=0)
    costs = cost_model(model, token_batch(1, t))
    k = {"body.0.ffn": 6, "body.1.ffn": 6, "body.0.heads": 2, "body.1.heads": 2}
    ffn, ffn_dense = ffn_flops(costs, k)
    assert ffn_dense == 2 * t * (dense_flops(d, f) + dense_flops(f, d))
    assert ffn / ffn_dense == (3 * (d + f) + 2 * 6 * d) / (2 * d * f)
    groups = flops_by_group(costs, k)
    assert set(groups) == {"attention", "ffn", "head"}
    assert sum(groups.values()) == costs.inference_flops(k) and groups["ffn"] == ffn
    assert groups["attention"] == 2 * (attention_flops(t, d, 2, dh) + 2 * d * h)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("arch", "options", "pattern"),
    [
        ("mlp", {"gating": "head"}, "gating 'head' needs attention heads, but model 'mlp'"),
        ("transformer", {"heads": 5}, "d_model 32 must be a multiple of heads 5"),
        ("transformer", {"gating": "block:7"}, "width 128 is not a multiple of the gating block 7"),
        ("transformer", {"gating": "heads"}, "unknown gating 'heads'"),
        ("transformer", {"patch": 3}, "patch 3 does not divide the image size 8x8"),
        ("transformer", {"depth": 0}, "'depth' must be an integer >= 1"),
        ("transformer", {"hidden": [8]}, "unknown option 'hidden' for model transformer"),
    ],
)
def test_bad_options_are_spec_errors(arch: str, options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(SpecError, match=pattern):
        build_model(arch, input_shape=(64,), num_classes=3, **options)


def test_bad_input_shapes_and_head_k() -> None:
    with pytest.raises(SpecError, match="needs token input"):
        build_model("transformer", input_shape=(10,), num_classes=3)
    with pytest.raises(ValueError, match=r"1 <= k <= 4 \(out_features\)"):
        tokens(gating="head").set_k({"body.0.heads": 5})
    with pytest.raises(SpecError, match=r"model\.gating: unknown gating 'bloc:8'"):
        validate_spec({"model": {"arch": "transformer", "gating": "bloc:8"}})


# --------------------------------------------------------------------------- shipped specs


def test_shipped_experiments_build() -> None:
    assert {"tokens-transformer", "digits-vit"} <= set(list_experiments())
    for name in ("tokens-transformer", "digits-vit"):
        spec = load_spec(name)
        assert spec.model.arch == "transformer" and spec.model.light_rank == 0


# --------------------------------------------------------------------------- search + export


@pytest.mark.slow
def test_search_three_trials_and_export_model(tmp_path: Path) -> None:
    """A 3-trial search over a tiny tokens-transformer with head gating; then `export
    --model`, whose program gives the replayed model's outputs."""
    spec = load_spec("tokens-transformer").model_dump(mode="json")
    spec["dataset"]["options"] = {"n_samples": 200, "seq_len": 8}
    spec["model"].update(d_model=16, ffn=32, gating="head")
    spec["training"].update(epochs=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(spec))
    store = tmp_path / "runs"
    proc = run_cli("search", str(path), "--trials", "3", "--store", str(store), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    schedule, model = tmp_path / "best.json", tmp_path / "model.pt2"
    proc = run_cli(
        "export", "--store", str(store), "--pick", "min-flops", "-o", str(schedule),
        "--model", str(model), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(schedule.read_text())
    assert [layer["name"] for layer in exported["layers"]] == [
        "body.0.heads",
        "body.0.ffn",
        "body.1.heads",
        "body.1.ffn",
    ]
    from midl_autok.deploy import load_model, load_program, read_metadata

    meta = read_metadata(model)
    assert meta["arch"] == "transformer" and meta["config"]["gating"] == "head"
    final = {
        layer["name"]: row[-1] for layer, row in zip(exported["layers"], exported["k"], strict=True)
    }
    live = load_model(model)
    assert live.current_k() == final == meta["k"]
    x = token_batch(5)
    live.eval()
    with torch.no_grad():
        torch.testing.assert_close(load_program(model, trusted=True)(x), live(x))
