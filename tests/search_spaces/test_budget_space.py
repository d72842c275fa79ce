"""Tests for the ``budget`` search space: exact decoding of the target inference-FLOPs ratio
(over many random vectors and random cost models), the water-filling allocation, the ramp,
the error messages, and a real search whose trials land on their targets.

The space contract (any vector decodes to a valid schedule, Optuna and decode agree, a fixed-k
schedule encodes) covers ``budget`` without a cost model in ``test_search_spaces.py``; the
contract checks that need a cost model are repeated here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from searchkit import fresh_store, quiet, tiny_spec

from midl_autok.errors import ScheduleError, SpecError
from midl_autok.flops import CostModel, LayerCost, dense_flops
from midl_autok.schedule import KSchedule, LayerSpec, k_from_fraction
from midl_autok.search_spaces import BudgetSpace, make_space, water_fill
from midl_autok.search_spaces.budget import SHARE_SPREAD

optuna.logging.set_verbosity(optuna.logging.WARNING)


def midl(name: str, d_in: int, d: int, gate_rank: int = 16, light_rank: int = 16) -> LayerCost:
    return LayerCost(
        name,
        "midl",
        dense_flops(d_in, d),
        d_in=d_in,
        d=d,
        gate_rank=gate_rank,
        light_rank=light_rank,
    )


# The digits MLP: 64 -> 512 -> 512 -> 10, gate and light rank 16.
DIGITS = CostModel(
    (midl("body.0", 64, 512), midl("body.1", 512, 512), LayerCost("head", "linear", 10240))
)
DIGITS_LAYERS = [LayerSpec("body.0", 512), LayerSpec("body.1", 512)]


def final_k(schedule: KSchedule) -> dict[str, int]:
    return schedule.at(schedule.epochs - 1)


def one_step(cost: CostModel) -> float:
    """The inference-FLOPs ratio of one k step in every MID-L layer."""
    return sum(2 * c.d_in for c in cost.midl_layers) / cost.dense_flops()


@st.composite
def cost_models(draw: st.DrawFn) -> CostModel:
    """1-4 MID-L layers of random shapes and ranks, with or without a fixed head."""
    n = draw(st.integers(1, 4))
    layers = [
        midl(
            f"l{i}",
            draw(st.integers(1, 300)),
            draw(st.integers(1, 300)),
            draw(st.integers(0, 8)),
            draw(st.integers(0, 8)),
        )
        for i in range(n)
    ]
    head = draw(st.integers(0, 5000))
    if head:
        layers.append(LayerCost("head", "linear", head))
    return CostModel(tuple(layers))


def layers_of(cost: CostModel) -> list[LayerSpec]:
    return [LayerSpec(c.name, c.d) for c in cost.midl_layers]


# --------------------------------------------------------------------------- exact decoding


@settings(max_examples=200, deadline=None)
@given(
    cost=cost_models(),
    epochs=st.integers(1, 8),
    ramp=st.sampled_from(["cosine", "linear", "cubic", "none"]),
    min_fraction=st.floats(0.01, 0.5),
    data=st.data(),
)
def test_every_vector_decodes_to_its_target_ratio(
    cost: CostModel, epochs: int, ramp: str, min_fraction: float, data: st.DataObject
) -> None:
    space = make_space(
        "budget", layers_of(cost), epochs, cost=cost, ramp=ramp, min_fraction=min_fraction
    )
    for _ in range(5):
        u = np.array(
            data.draw(st.lists(st.floats(0, 1), min_size=space.dim(), max_size=space.dim()))
        )
        params = space.params_from_vector(u)
        schedule = space.decode(u)
        ratio = cost.ratio(final_k(schedule))
        # Each layer's k is its exact share rounded to the nearest integer: within half a
        # k step per layer (and so within the one step per layer the space promises).
        assert abs(ratio - params["budget"]) <= 0.5 * one_step(cost) + 1e-12
        for spec, row in zip(schedule.layers, schedule.k, strict=True):
            lo = k_from_fraction(min_fraction, spec.width)
            assert all(lo <= k <= spec.width for k in row), (spec, row)


@settings(max_examples=100, deadline=None)
@given(layers=st.lists(st.integers(1, 300), min_size=1, max_size=4), data=st.data())
def test_without_a_cost_model_the_target_is_the_final_active_fraction(
    layers: list[int], data: st.DataObject
) -> None:
    specs = [LayerSpec(f"l{i}", w) for i, w in enumerate(layers)]
    space = make_space("budget", specs, 5)
    assert space.unit == "active_fraction"
    u = np.array(data.draw(st.lists(st.floats(0, 1), min_size=space.dim(), max_size=space.dim())))
    schedule = space.decode(u)
    half_step = 0.5 * sum(1 / w for w in layers) / len(layers)
    assert abs(schedule.active_fraction() - space.params_from_vector(u)["budget"]) <= (
        half_step + 1e-12
    )


def test_the_budget_spans_the_floor_to_the_ceiling() -> None:
    space = BudgetSpace(DIGITS_LAYERS, 10, cost=DIGITS)
    assert space.unit == "inference_flops_ratio"
    assert space.param_names() == [
        "budget",
        "body.0.share",
        "body.1.share",
        "start",
        "t0",
        "span",
    ]
    low, high = space.param_bounds()["budget"]
    k_lo = k_from_fraction(0.05, 512)  # 26
    assert low == pytest.approx(DIGITS.ratio({"body.0": k_lo, "body.1": k_lo}))
    assert high == pytest.approx(DIGITS.ratio({"body.0": 512, "body.1": 512}))
    # The gate and light paths and the head alone: 2 * 32 * (576 + 1024) + 10240 FLOPs.
    assert space.floor(k1=True) == pytest.approx((102400 + 10240 + 2 * 64 + 2 * 512) / 600064)
    u = np.full(space.dim(), 0.5)
    u[0] = 0.0
    assert final_k(space.decode(u)) == {"body.0": k_lo, "body.1": k_lo}
    u[0] = 1.0
    assert final_k(space.decode(u)) == {"body.0": 512, "body.1": 512}


def test_equal_shares_put_every_layer_at_the_same_place_in_its_range() -> None:
    # The fixed-k setting is the diagonal of the space: equal shares, no ramp.
    space = BudgetSpace(DIGITS_LAYERS, 4, cost=DIGITS, ramp="none")
    for fraction in (0.05, 0.2, 0.45, 0.7, 1.0):
        fixed = KSchedule.constant(DIGITS_LAYERS, 4, fraction)
        target = DIGITS.ratio(final_k(fixed))
        schedule = space.decode_params({"budget": target, "body.0.share": 0.3, "body.1.share": 0.3})
        assert schedule == fixed


def test_a_larger_share_buys_that_layer_more_k_at_the_same_cost() -> None:
    space = BudgetSpace(DIGITS_LAYERS, 1, cost=DIGITS, ramp="none")
    even = final_k(space.decode_params({"budget": 0.5, "body.0.share": 0.5, "body.1.share": 0.5}))
    first = final_k(space.decode_params({"budget": 0.5, "body.0.share": 1.0, "body.1.share": 0.5}))
    assert first["body.0"] > even["body.0"] and first["body.1"] < even["body.1"]
    for k in (even, first):
        assert DIGITS.ratio(k) == pytest.approx(0.5, abs=0.5 * one_step(DIGITS))


def test_the_ramp_starts_high_and_ends_on_the_budget() -> None:
    space = BudgetSpace(DIGITS_LAYERS, 5, cost=DIGITS, ramp="linear")
    base = {"budget": 0.5, "body.0.share": 0.5, "body.1.share": 0.5, "t0": 0.0, "span": 1.0}
    flat = space.decode_params({**base, "start": 0.0})
    assert all(len(set(row)) == 1 for row in flat.k)  # start = 0: constant k
    ramped = space.decode_params({**base, "start": 1.0})
    assert final_k(ramped) == final_k(flat)  # the deployed k does not depend on the ramp
    for row, end in zip(ramped.k, final_k(flat).values(), strict=True):
        assert row[0] == 512  # from the highest k
        assert list(row) == sorted(row, reverse=True)  # monotone down to the end
        # linear: halfway through the window, halfway between 1.0 and end / 512
        assert row[2] == k_from_fraction((1.0 + end / 512) / 2, 512)
    half = space.decode_params({**base, "start": 0.5})
    for row, end in zip(half.k, final_k(flat).values(), strict=True):
        assert row[0] == k_from_fraction(end / 512 + 0.5 * (1 - end / 512), 512)


def test_a_fixed_k_schedule_encodes_and_replays_with_a_cost_model() -> None:
    space = BudgetSpace(DIGITS_LAYERS, 6, cost=DIGITS)
    for fraction in (0.05, 0.3, 0.5, 1.0):
        fixed = KSchedule.constant(DIGITS_LAYERS, 6, fraction)
        assert space.decode_params(space.encode_params(fixed)) == fixed
    uneven = KSchedule(layers=tuple(DIGITS_LAYERS), epochs=6, k=((400,) * 6, (100,) * 6))
    assert space.decode_params(space.encode_params(uneven)) == uneven
    # Positions 1 and 0.01 in the k range: more than SHARE_SPREAD^2 apart, not expressible.
    extreme = KSchedule(layers=tuple(DIGITS_LAYERS), epochs=6, k=((512,) * 6, (31,) * 6))
    with pytest.raises(ScheduleError, match="search space 'budget' cannot express"):
        space.encode_params(extreme)
    ramp = KSchedule(layers=tuple(DIGITS_LAYERS), epochs=6, k=((512, 256, 256, 256, 256, 256),) * 2)
    with pytest.raises(ScheduleError, match="cannot express this schedule exactly"):
        space.encode_params(ramp)


def test_optuna_sampling_agrees_with_decode_with_a_cost_model() -> None:
    space = BudgetSpace(DIGITS_LAYERS, 6, cost=DIGITS)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        schedule = space.suggest(trial)
        assert schedule == space.decode_params(trial.params)
        assert schedule == space.decode(space.vector_from_params(trial.params))
        ratio = DIGITS.ratio(final_k(schedule))
        assert abs(ratio - trial.params["budget"]) <= 0.5 * one_step(DIGITS) + 1e-12
        return schedule.active_fraction(), ratio

    study = optuna.create_study(
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3),
    )
    study.optimize(objective, n_trials=8)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


# --------------------------------------------------------------------------- water filling


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.floats(0, 1e6), min_size=1, max_size=6),
    data=st.data(),
)
def test_water_fill_spends_exactly_the_amount(caps: list[float], data: st.DataObject) -> None:
    weights = data.draw(
        st.lists(st.floats(0.1, 10), min_size=len(caps), max_size=len(caps)), label="weights"
    )
    share = data.draw(st.floats(0, 1), label="share")
    amount = share * sum(caps)
    p = water_fill(amount, caps, weights)
    assert np.all((p >= 0) & (p <= 1))
    assert float(np.dot(caps, p)) == pytest.approx(amount, rel=1e-9, abs=1e-6)
    # One lam: every layer below 1 sits at lam * w (same lam for all of them), up to rounding
    # of positions in [0, 1] (atol: a subnormal amount such as 1e-323 splits as [5e-324, 0]).
    below = (p < 1) & (np.asarray(caps) > 0)
    lams = p[below] / np.asarray(weights)[below]
    if lams.size:
        np.testing.assert_allclose(lams, lams[0], rtol=1e-9, atol=1e-12)


def test_water_fill_by_hand() -> None:
    # Equal weights: equal positions.
    np.testing.assert_allclose(water_fill(3.0, [2, 4], [1, 1]), [0.5, 0.5])
    # Weight 4 vs 1: layer 0 fills up at lam = 1/4, then the rest goes to layer 1.
    # spend(lam) = 2 min(1, 4 lam) + 4 lam; = 4 at lam = 0.5 -> p = [1, 0.5]
    np.testing.assert_allclose(water_fill(4.0, [2, 4], [4, 1]), [1.0, 0.5])
    np.testing.assert_allclose(water_fill(0.0, [2, 4], [4, 1]), [0.0, 0.0])
    np.testing.assert_allclose(water_fill(99.0, [2, 4], [4, 1]), [1.0, 1.0])
    # A subnormal amount (hypothesis found it): no error, positions of subnormal size, and
    # the one-lam rule holds up to rounding (the property test's atol)
    tiny = water_fill(1e-323, [1.0, 1.0], [1.0, 0.5])
    assert np.all((tiny >= 0) & (tiny <= 1e-300))
    np.testing.assert_allclose(tiny / np.array([1.0, 0.5]), tiny[0], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="weights > 0"):
        water_fill(1.0, [1.0], [0.0])


def test_share_spread_bounds_the_weights() -> None:
    space = BudgetSpace([("a", 1000), ("b", 1000)], 1, ramp="none")
    lopsided = final_k(space.decode_params({"budget": 0.43, "a.share": 1.0, "b.share": 0.0}))
    # Weights R and 1/R: positions in the ratio R^2 while neither is full (about 0.8 and
    # 0.008 of the range 50..1000 here; b's k is rounded, hence the tolerance).
    pos = {n: (k - 50) / 950 for n, k in lopsided.items()}
    assert 0.5 < pos["a"] < 1
    assert pos["a"] / pos["b"] == pytest.approx(SHARE_SPREAD**2, rel=0.1)


# --------------------------------------------------------------------------- bad input


def test_a_target_below_the_floor_is_one_line_naming_it() -> None:
    with pytest.raises(SpecError) as info:
        BudgetSpace(DIGITS_LAYERS, 10, cost=DIGITS, min_budget=0.1)
    message = str(info.value)
    assert "\n" not in message
    assert re.fullmatch(
        r"min_budget must be >= 0\.2376, the inference-FLOPs ratio of this model with every "
        r"MID-L layer at its lowest k \(min_fraction=0\.05; the gate and light paths and the "
        r"non-MID-L layers cost 0\.1896 with k = 1 everywhere\), but got 0\.1",
        message,
    ), message


def test_without_a_cost_model_the_floor_is_the_lowest_active_fraction() -> None:
    with pytest.raises(
        SpecError,
        match=r"^min_budget must be >= 0\.05, the active fraction of this model with every "
        r"MID-L layer at its lowest k \(min_fraction=0\.05\), but got 0\.01$",
    ):
        BudgetSpace([("a", 100), ("b", 200)], 3, min_budget=0.01)


def test_budget_range_errors() -> None:
    with pytest.raises(SpecError, match=r"max_budget must be <= 1\.171, .* but got 2\.0"):
        BudgetSpace(DIGITS_LAYERS, 10, cost=DIGITS, max_budget=2.0)
    with pytest.raises(SpecError, match=r"min_budget <= max_budget, but got 0\.6 > 0\.5"):
        BudgetSpace(DIGITS_LAYERS, 10, cost=DIGITS, min_budget=0.6, max_budget=0.5)
    with pytest.raises(SpecError, match="min_budget of search space 'budget' must be a finite"):
        BudgetSpace(DIGITS_LAYERS, 10, min_budget=float("nan"))
    with pytest.raises(SpecError, match=r"ramp .* must be one of 'linear', .* but got 'sine'"):
        BudgetSpace(DIGITS_LAYERS, 10, ramp="sine")  # type: ignore[arg-type]
    narrowed = BudgetSpace(DIGITS_LAYERS, 10, cost=DIGITS, min_budget=0.3, max_budget=0.5)
    assert narrowed.param_bounds()["budget"] == (0.3, 0.5)
    assert narrowed.options == {
        "min_fraction": 0.05,
        "max_fraction": 1.0,
        "min_budget": 0.3,
        "max_budget": 0.5,
        "ramp": "cosine",
    }


def test_a_cost_model_of_other_layers_is_refused() -> None:
    with pytest.raises(SpecError, match=r"lacks \['body\.1'\] and has extra \['x'\]"):
        BudgetSpace(DIGITS_LAYERS, 3, cost=CostModel((midl("body.0", 64, 512), midl("x", 1, 2))))
    with pytest.raises(
        SpecError, match=r"layer body\.0 with width 512, but the search space has width 8"
    ):
        BudgetSpace([("body.0", 8), ("body.1", 512)], 3, cost=DIGITS)
    with pytest.raises(SpecError, match=r"must be a midl_autok\.flops\.CostModel"):
        BudgetSpace(DIGITS_LAYERS, 3, cost={"body.0": 1})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- a real search


def test_a_search_in_the_budget_space_lands_on_its_targets(tmp_path: Path) -> None:
    from midl_autok.backends import run_search
    from midl_autok.store import load_study_record

    quiet()
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent="random", space="budget", trials=3, epochs=2)
    summary = run_search(spec, store=store, device="cpu")
    record = load_study_record(store, summary.study)
    assert record.attrs["space"] == "budget"
    assert record.attrs["space_options"]["ramp"] == "cosine"
    assert "cost" not in record.attrs["space_options"]
    done = [t for t in record.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3
    from midl_autok.flops import cost_model
    from midl_autok.trainer import build_for_spec, dataset_for_spec

    data = dataset_for_spec(spec)
    cost = cost_model(build_for_spec(spec, data), data.x_train[:1])
    assert record.attrs["dense_inference_flops"] == cost.dense_flops()
    for t in done:
        assert t.distributions["budget"].low == pytest.approx(
            BudgetSpace(layers_of(cost), 2, cost=cost).floor()
        )
        ratio = t.user_attrs["inference_flops_ratio"]
        assert abs(ratio - t.params["budget"]) <= 0.5 * one_step(cost) + 1e-12
