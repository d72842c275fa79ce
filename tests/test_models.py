"""Tests for midl_autok.models, parametrized over every registered architecture and variant."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from midl_autok.errors import SpecError
from midl_autok.layers import MIDL
from midl_autok.models import MODELS, VARIANTS, MIDLNet, build_model

VOCAB = 20
# (arch, input_shape, options): small widths keep every case fast.
CASES: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "mlp-flat": ("mlp", (20,), {"hidden": [16, 8]}),
    "mlp-image": ("mlp", (1, 28, 28), {"hidden": [16, 8]}),
    "cnn-28x28x1": ("cnn", (1, 28, 28), {"channels": [4, 8], "hidden": [16]}),
    "cnn-28x28x3": ("cnn", (3, 28, 28), {"channels": [4], "hidden": [16, 8]}),
    "cnn-32x32x1": ("cnn", (1, 32, 32), {"channels": [4, 8], "hidden": [16]}),
    "cnn-32x32x3": ("cnn", (3, 32, 32), {"channels": [4, 8], "hidden": [16]}),
    "lstm-tokens": ("lstm", (7,), {"embed_dim": 8, "hidden_size": 12, "hidden": [16]}),
}
HIDDEN = {name: options["hidden"] for name, (_, _, options) in CASES.items()}


def build(case: str, variant: str = "midl", **extra: Any) -> MIDLNet:
    arch, shape, options = CASES[case]
    vocab = VOCAB if arch == "lstm" else None
    return build_model(
        arch,
        input_shape=shape,
        num_classes=5,
        vocab_size=vocab,
        variant=variant,
        gate_rank=3,
        light_rank=2,
        **{**options, **extra},
    )


def batch(case: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    arch, shape, _ = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    if arch == "lstm":
        return torch.randint(0, VOCAB, (n, *shape), generator=gen)
    return torch.randn(n, *shape, generator=gen)


def test_every_registered_arch_is_covered() -> None:
    # the transformer has no ``hidden`` list: tests/test_transformer.py covers it, per variant
    assert {arch for arch, _, _ in CASES.values()} | {"transformer"} == set(MODELS)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_forward_shape(case: str, variant: str) -> None:
    model = build(case, variant)
    assert model.arch == CASES[case][0]
    for mode in (True, False):
        out = model.train(mode)(batch(case, 3))
        assert out.shape == (3, 5)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_layer_specs(case: str, variant: str) -> None:
    model = build(case, variant)
    assert len(model.body) == len(HIDDEN[case])
    if variant == "midl":
        expected = tuple((f"body.{i}", d) for i, d in enumerate(HIDDEN[case]))
        assert tuple((s.name, s.width) for s in model.layer_specs()) == expected
        assert all(isinstance(block, MIDL) for block in model.body)
        assert [n for n, _ in model.midl_layers()] == [n for n, _ in expected]
    else:
        assert model.layer_specs() == ()
        assert model.current_k() == {}
        assert not any(isinstance(m, MIDL) for m in model.modules())
        has_dropout = any(isinstance(m, nn.Dropout) for m in model.modules())
        assert has_dropout == (variant == "dropout")


@pytest.mark.parametrize("case", CASES)
def test_set_k_and_current_k(case: str) -> None:
    model = build(case)
    widths = HIDDEN[case]
    assert model.current_k() == {f"body.{i}": d for i, d in enumerate(widths)}
    model.set_k({"body.0": 3})
    assert model.current_k()["body.0"] == 3
    model.eval()(batch(case, 6))
    first = model.body[0]
    assert isinstance(first, MIDL)
    assert first.last_mask is not None
    assert first.last_mask.sum(dim=-1).tolist() == [3] * 6
    model.set_k({"body.0": None})  # type: ignore[dict-item]
    assert model.current_k()["body.0"] == widths[0]


def test_set_k_errors() -> None:
    model = build("mlp-flat")
    with pytest.raises(SpecError, match=r"no MID-L layer named body\.5; layers: body\.0, body\.1"):
        model.set_k({"body.5": 1})
    with pytest.raises(ValueError, match=r"1 <= k <= 16 .* but got 17"):
        model.set_k({"body.0": 17})
    dense = build("mlp-flat", "dense")
    with pytest.raises(SpecError, match=r"layers: \(none\)"):
        dense.set_k({"body.0": 1})


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_signature(case: str, variant: str) -> None:
    torch.manual_seed(1)
    a = build(case, variant)
    torch.manual_seed(2)
    b = build(case, variant)
    assert a.signature() == b.signature()
    assert len(a.signature()) == 16
    int(a.signature(), 16)
    wider = build(case, variant, hidden=[h + 1 for h in HIDDEN[case]])
    assert wider.signature() != a.signature()
    other_variant = next(v for v in VARIANTS if v != variant)
    assert build(case, other_variant).signature() != a.signature()


def test_signature_depends_on_input_shape_and_classes() -> None:
    base = build_model("mlp", input_shape=(10,), num_classes=3)
    assert build_model("mlp", input_shape=(10,), num_classes=3).signature() == base.signature()
    assert build_model("mlp", input_shape=(11,), num_classes=3).signature() != base.signature()
    assert build_model("mlp", input_shape=(10,), num_classes=4).signature() != base.signature()


@pytest.mark.parametrize("case", CASES)
def test_seeded_determinism(case: str) -> None:
    def run() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        torch.manual_seed(123)
        model = build(case)
        model.set_k({"body.0": 2})
        x = batch(case, 5)
        train_out = model.train()(x)  # dropout-free, but the trained path
        with torch.no_grad():
            eval_out = model.eval()(x)
        return model.state_dict(), train_out, eval_out

    s1, t1, e1 = run()
    s2, t2, e2 = run()
    assert s1.keys() == s2.keys()
    for key in s1:
        assert torch.equal(s1[key], s2[key]), key
    assert torch.equal(t1, t2)
    assert torch.equal(e1, e2)
    torch.manual_seed(124)
    assert not torch.equal(build(case).state_dict()["body.0.weight"], s1["body.0.weight"])


def test_seeded_determinism_of_dropout_in_training() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build("mlp-flat", "dropout").train()
        outs.append(model(batch("mlp-flat", 8)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("case", ["mlp-flat", "cnn-28x28x1", "lstm-tokens"])
def test_schedule_template_fits_the_model(case: str) -> None:
    model = build(case)
    schedule = model.schedule_template(4, 0.5)
    model.check_schedule(schedule)
    assert schedule.arch == model.arch
    assert schedule.signature == model.signature()
    assert schedule.epochs == 4
    assert schedule.final() == {f"body.{i}": round(d / 2) for i, d in enumerate(HIDDEN[case])}


@pytest.mark.parametrize(
    ("arch", "shape", "options", "match"),
    [
        ("mlp", (10,), {"hiden": [8]}, "unknown option 'hiden' for model mlp; valid: "),
        ("mlp", (10,), {"channels": [8]}, "unknown option 'channels' for model mlp"),
        ("cnn", (1, 8, 8), {"hidden_size": 8}, "unknown option 'hidden_size' for model cnn"),
        ("mlpp", (10,), {}, "unknown model 'mlpp'; did you mean 'mlp'"),
        ("mlp", (10,), {"variant": "sparse"}, "unknown model variant 'sparse'"),
        ("mlp", (10,), {"activation": "rellu"}, "unknown activation 'rellu'; did you mean"),
        ("mlp", (10,), {"hidden": [8, 0]}, r"'hidden' must be a list of integers >= 1"),
        ("mlp", (10,), {"hidden": [8.0]}, r"'hidden' must be a list of integers >= 1"),
        ("mlp", (10,), {"hidden": [True]}, r"'hidden' must be a list of integers >= 1"),
        ("mlp", (10,), {"hidden": 8}, r"'hidden' must be a list of integers >= 1, got 8"),
        ("cnn", (64,), {}, r"model 'cnn' needs image input \(C, H, W\), but .* shape \(64,\)"),
        ("cnn", (1, 8, 8), {"channels": [2, 2, 2, 2]}, "too small for 4 pooling blocks"),
        ("lstm", (7,), {}, "model 'lstm' needs a token dataset"),
    ],
)
def test_bad_options_are_spec_errors(arch, shape, options, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        build_model(arch, input_shape=shape, num_classes=3, **options)


def test_options_reach_the_layers() -> None:
    model = build_model(
        "mlp",
        input_shape=(10,),
        num_classes=3,
        hidden=[8],
        gate_rank=5,
        light_rank=0,
        activation="tanh",
    )
    layer = model.body[0]
    assert isinstance(layer, MIDL)
    assert (layer.in_features, layer.out_features) == (10, 8)
    assert (layer.gate_rank, layer.light_rank) == (5, 0)
    assert isinstance(layer.act, nn.Tanh)
    dropout = build_model("mlp", input_shape=(10,), num_classes=3, variant="dropout", dropout=0.2)
    assert [m.p for m in dropout.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_eval_short_paths_keep_hooks_and_outputs(arch: str, kernels) -> None:
    # in eval, repeated calls on the same shapes skip nn.Module.__call__ for hook-free MID-L
    # blocks and an nn.Linear head; a hook (on a block, on the head, or global) still runs,
    # and the outputs stay those of the plain module calls
    torch.manual_seed(0)
    shape = (32,) if arch == "mlp" else (1, 8, 8)
    options: dict[str, Any] = {"hidden": [48, 32], "gate_rank": 4, "light_rank": 4}
    if arch == "cnn":
        options["channels"] = [4]
    model = build_model(arch, input_shape=shape, num_classes=5, **options).eval()
    model.set_k({"body.0": 12, "body.1": 8})
    for layer in (m for _, m in model.midl_layers()):
        layer.sparse_eval = "kernel"
    x = torch.randn(3, *shape)

    def plain() -> torch.Tensor:  # every block and the head through nn.Module.__call__
        h = model.features(x).flatten(1) if arch == "cnn" else x.flatten(1)
        for block in model.body:
            h = block(h)
        return model.head(h)

    with torch.no_grad():
        want = plain()
        model(x)  # the blocks' last call: the kernel on these shapes
        assert all(m.__dict__.get("_fast_key") for _, m in model.midl_layers())
        torch.testing.assert_close(model(x), want)
        calls: list[str] = []
        handles = [
            model.body[1].register_forward_hook(lambda *_: calls.append("block")),
            model.head.register_forward_hook(lambda *_: calls.append("head")),
        ]
        torch.testing.assert_close(model(x), want)
        assert calls == ["block", "head"]
        for h in handles:
            h.remove()
        handle = nn.modules.module.register_module_forward_hook(lambda *_: calls.append("g"))
        try:
            model(x)
        finally:
            handle.remove()
        assert calls.count("g") >= 4  # the model, both blocks and the head at least
        calls.clear()
        model(x)
        assert calls == []
