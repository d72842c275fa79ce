"""Rank co-search (``ranks=True``): the rank choices, the budget space's exact target with the
ranks counted, schedules with ranks encoding and replaying, and the option errors.

The shared contract (any vector decodes to a valid schedule, Optuna and decode agree, a fixed-k
schedule encodes) runs over every space with ``ranks=True`` in ``test_search_spaces.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_budget_space import DIGITS, DIGITS_LAYERS, cost_models, final_k, layers_of, one_step

from midl_autok.errors import SpecError
from midl_autok.flops import CostModel
from midl_autok.schedule import KSchedule, LayerSpec, k_from_fraction
from midl_autok.search_spaces import SEARCH_SPACES, make_space
from midl_autok.search_spaces.ranks import rank_choices, rank_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def with_ranks(cost: CostModel, ranks: dict[str, tuple[int, int]]) -> CostModel:
    """``cost`` with its MID-L layers at ``ranks`` (the cost model of the trained model)."""
    return CostModel(
        tuple(
            dataclasses.replace(c, gate_rank=ranks[c.name][0], light_rank=ranks[c.name][1])
            if c.kind == "midl"
            else c
            for c in cost.layers
        )
    )


def test_rank_choices_are_powers_of_two_up_to_the_limit() -> None:
    assert rank_choices("gate_rank", 64) == (1, 2, 4, 8, 16, 32, 64)
    assert rank_choices("light_rank", 20) == (0, 1, 2, 4, 8, 16)
    assert rank_choices("light_rank", 20, base=12) == (0, 1, 2, 4, 8, 12, 16)
    assert rank_choices("gate_rank", 8, base=0) == (1, 2, 4, 8)  # gate_rank >= 1
    space = make_space("constant", [("a", 256), ("b", 6)], 3, ranks=True, max_rank=32)
    assert space.rank_search is not None
    assert space.rank_search.choices == {
        "a": ((1, 2, 4, 8, 16, 32), (0, 1, 2, 4, 8, 16, 32)),
        "b": ((1, 2, 4), (0, 1, 2, 4)),  # the width limits it
    }
    assert space.param_names()[-4:] == [
        "a.gate_rank",
        "a.light_rank",
        "b.gate_rank",
        "b.light_rank",
    ]
    assert space.options == {
        "min_fraction": 0.05,
        "max_fraction": 1.0,
        "ranks": True,
        "max_rank": 32,
    }


def test_each_choice_owns_an_equal_part_of_the_unit_interval() -> None:
    space = make_space("constant", [("a", 4)], 2, ranks=True)
    gates = space.rank_search.choices["a"][0]  # type: ignore[union-attr]
    assert gates == (1, 2, 4)
    seen = []
    for u in (0.0, 0.33, 0.34, 0.66, 0.67, 1.0):
        params = {"a.fraction": 0.5, "a.gate_rank": u, "a.light_rank": 0.0}
        seen.append(space.decode_params(params).ranks["a"])
    assert seen == [(1, 0), (1, 0), (2, 0), (2, 0), (4, 0), (4, 0)]


@settings(max_examples=150, deadline=None)
@given(
    cost=cost_models(),
    epochs=st.integers(1, 6),
    ramp=st.sampled_from(["cosine", "none"]),
    min_fraction=st.floats(0.01, 0.5),
    data=st.data(),
)
def test_with_ranks_every_vector_decodes_to_its_target_ratio(
    cost: CostModel, epochs: int, ramp: str, min_fraction: float, data: st.DataObject
) -> None:
    """The target counts the decoded ranks: the model built with them costs the target."""
    space = make_space(
        "budget",
        layers_of(cost),
        epochs,
        cost=cost,
        ramp=ramp,
        min_fraction=min_fraction,
        ranks=True,
    )
    for _ in range(5):
        u = np.array(
            data.draw(st.lists(st.floats(0, 1), min_size=space.dim(), max_size=space.dim()))
        )
        params = space.params_from_vector(u)
        schedule = space.decode(u)
        built = with_ranks(cost, dict(schedule.ranks))
        ratio = built.ratio(final_k(schedule))
        assert abs(ratio - params["budget"]) <= 0.5 * one_step(cost) + 1e-12
        assert ratio == pytest.approx(space.ratio(final_k(schedule), schedule.ranks))
        for spec, row in zip(schedule.layers, schedule.k, strict=True):
            lo = k_from_fraction(min_fraction, spec.width)
            assert all(lo <= k <= spec.width for k in row), (spec, row)


def test_the_budget_runs_from_the_lowest_to_the_highest_ranks() -> None:
    plain = make_space("budget", DIGITS_LAYERS, 4, cost=DIGITS)
    ranked = make_space("budget", DIGITS_LAYERS, 4, cost=DIGITS, ranks=True)
    low, high = ranked.param_bounds()["budget"]
    lowest = {s.name: (1, 0) for s in DIGITS_LAYERS}
    highest = {s.name: (64, 64) for s in DIGITS_LAYERS}
    k_lo = {s.name: k_from_fraction(0.05, s.width) for s in DIGITS_LAYERS}
    k_hi = {s.name: s.width for s in DIGITS_LAYERS}
    assert low == pytest.approx(with_ranks(DIGITS, lowest).ratio(k_lo))
    assert high == pytest.approx(with_ranks(DIGITS, highest).ratio(k_hi))
    assert low < plain.param_bounds()["budget"][0] < plain.param_bounds()["budget"][1] < high


def test_a_cheap_target_lowers_the_sampled_ranks() -> None:
    space = make_space("budget", DIGITS_LAYERS, 4, cost=DIGITS, ranks=True, ramp="none")
    low, _ = space.param_bounds()["budget"]
    params = {"budget": low, "body.0.share": 0.5, "body.1.share": 0.5}
    params |= {
        f"{s.name}.{kind}": 1.0 for s in DIGITS_LAYERS for kind in ("gate_rank", "light_rank")
    }
    schedule = space.decode_params(params)  # the highest ranks asked for, the lowest budget
    assert schedule.ranks == {"body.0": (1, 0), "body.1": (1, 0)}
    assert final_k(schedule) == {s.name: k_from_fraction(0.05, s.width) for s in DIGITS_LAYERS}


def test_a_schedule_with_ranks_encodes_and_replays_them() -> None:
    for name in SEARCH_SPACES:
        space = make_space(name, [("a", 64), ("b", 32)], 3, ranks=True)
        fixed = KSchedule.constant(
            [("a", 64), ("b", 32)], 3, 0.5, ranks={"a": (4, 0), "b": (32, 8)}
        )
        assert space.decode_params(space.encode_params(fixed)) == fixed, name
    space = make_space("budget", DIGITS_LAYERS, 6, cost=DIGITS, ranks=True)
    fixed = KSchedule.constant(DIGITS_LAYERS, 6, 0.3, ranks={"body.0": (8, 0), "body.1": (2, 32)})
    assert space.decode_params(space.encode_params(fixed)) == fixed
    # Without ranks: the model's own (the cost model's 16 / 16).
    plain = KSchedule.constant(DIGITS_LAYERS, 6, 0.3)
    assert space.decode_params(space.encode_params(plain)).ranks == {
        "body.0": (16, 16),
        "body.1": (16, 16),
    }


def test_rank_base_is_a_choice_and_the_default() -> None:
    space = make_space("linear", [("a", 64)], 3, ranks=True, rank_base={"a": (12, 3)})
    assert space.rank_search is not None
    assert 12 in space.rank_search.choices["a"][0] and 3 in space.rank_search.choices["a"][1]
    assert space.rank_search.default() == {"a": (12, 3)}


def test_rank_params_name_every_layer_and_kind() -> None:
    assert rank_params({"body.0": (8, 0)}) == {
        "ranks.body.0.gate_rank": 8,
        "ranks.body.0.light_rank": 0,
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ranks": "yes"}, "option ranks must be true or false, but got 'yes'"),
        ({"ranks": True, "max_rank": 0}, "max_rank must be an integer >= 1, but got 0"),
        ({"ranks": True, "rank_base": {"a": 3}}, "rank_base must map layer names to"),
    ],
)
def test_bad_rank_options_name_the_rule(options: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_space("constant", [LayerSpec("a", 8)], 2, **options)
