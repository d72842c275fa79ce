"""Tests for midl_autok.search_spaces: a shared contract run over every registered space, the
pure ramp functions against their formulas, each space's decoding on hand-computed cases, and
the error messages."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pytest
from clikit import imported_by
from hypothesis import given, settings
from hypothesis import strategies as st

from midl_autok.errors import ScheduleError, SpecError
from midl_autok.schedule import KSchedule, LayerSpec, k_from_fraction
from midl_autok.search_spaces import (
    SEARCH_SPACES,
    Param,
    SearchSpace,
    cosine_ramp,
    cubic_ramp,
    epoch_times,
    linear_ramp,
    make_space,
    piecewise_linear,
    ramp_progress,
    ramp_window,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

LAYERS = [LayerSpec("body.0", 256), LayerSpec("body.1", 7), LayerSpec("head", 1)]
EPOCHS = 6

# Every registered space with its defaults, plus the non-default options worth covering.
CASES: list[tuple[str, dict[str, Any]]] = (
    [(name, {}) for name in SEARCH_SPACES]
    + [
        ("linear", {"window": "per_layer"}),
        ("cubic", {"window": "per_layer", "min_fraction": 0.2, "max_fraction": 0.8}),
        ("knots", {"n_knots": 2}),
        ("knots", {"n_knots": 5, "search_times": True}),
        ("free", {"min_fraction": 0.5, "max_fraction": 0.5}),
        ("budget", {"ramp": "none"}),
        ("budget", {"ramp": "cubic", "min_fraction": 0.2, "max_fraction": 0.8}),
    ]
    + [(name, {"ranks": True}) for name in SEARCH_SPACES]
)  # rank co-search in every space
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CASES]

layer_lists = st.lists(
    st.tuples(st.sampled_from(["body.0", "body.1", "conv.2", "head", "x"]), st.integers(1, 300)),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t[0],
)


def k_bounds(space: SearchSpace, width: int) -> tuple[int, int]:
    return k_from_fraction(space.min_fraction, width), k_from_fraction(space.max_fraction, width)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
class TestSearchSpaceContract:
    """What every registered space promises; a new space is covered by being registered."""

    @settings(max_examples=25, deadline=None)
    @given(layers=layer_lists, epochs=st.integers(1, 9), data=st.data())
    def test_any_unit_vector_decodes_to_a_valid_schedule(
        self,
        name: str,
        options: dict[str, Any],
        layers: list[tuple[str, int]],
        epochs: int,
        data: st.DataObject,
    ) -> None:
        space = make_space(name, layers, epochs, **options)
        u = data.draw(
            st.lists(st.floats(0, 1), min_size=space.dim(), max_size=space.dim()), label="u"
        )
        schedule = space.decode(u)
        assert schedule.layers == tuple(LayerSpec(*layer) for layer in layers)
        assert schedule.epochs == epochs
        for spec, row in zip(schedule.layers, schedule.k, strict=True):
            lo, hi = k_bounds(space, spec.width)
            assert all(lo <= k <= hi for k in row), (spec, row)
            assert all(1 <= k <= spec.width for k in row)
        if space.rank_search is not None:  # ranks: one of each layer's choices
            assert set(schedule.ranks) == {spec.name for spec in schedule.layers}
            for layer, (gate, light) in schedule.ranks.items():
                gates, lights = space.rank_search.choices[layer]
                assert gate in gates and light in lights
        else:
            assert schedule.ranks == {}

    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_out_of_range_vectors_are_clipped(
        self, name: str, options: dict[str, Any], data: st.DataObject
    ) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        u = np.array(
            data.draw(st.lists(st.floats(-5, 5), min_size=space.dim(), max_size=space.dim()))
        )
        assert space.decode(u) == space.decode(np.clip(u, 0, 1))

    def test_vector_and_params_agree(self, name: str, options: dict[str, Any]) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        rng = np.random.default_rng(0)
        for _ in range(10):
            u = rng.random(space.dim())
            params = space.params_from_vector(u)
            assert list(params) == space.param_names()
            assert space.decode(u) == space.decode_params(params)
            bounds = space.param_bounds()
            assert all(bounds[n][0] <= v <= bounds[n][1] for n, v in params.items())
            if all(lo < hi for lo, hi in bounds.values()):
                np.testing.assert_allclose(space.vector_from_params(params), u, atol=1e-12)

    def test_optuna_sampling_agrees_with_decode(self, name: str, options: dict[str, Any]) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        seen: list[KSchedule] = []

        def objective(trial: optuna.Trial) -> tuple[float, float]:
            schedule = space.suggest(trial)
            assert schedule == space.decode_params(trial.params)
            assert schedule == space.decode(space.vector_from_params(trial.params))
            seen.append(schedule)
            return schedule.active_fraction(), -schedule.active_fraction(0)

        sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=4)
        assert len(seen) == 4
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        for t in study.trials:
            assert t.distributions == space.optuna_distributions()
            assert list(t.params) == space.param_names()

    def test_fixed_k_baseline_enqueues_and_replays(
        self, name: str, options: dict[str, Any]
    ) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        fixed = KSchedule.constant(LAYERS, EPOCHS, 0.5)
        params = space.encode_params(fixed)
        if space.rank_search is not None:  # decoded at the default ranks
            fixed = dataclasses.replace(fixed, ranks=space.rank_search.default())
        assert space.decode_params(params) == fixed
        assert space.decode(space.encode(fixed)) == fixed
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial(params)
        trial = study.ask()
        assert space.suggest(trial) == fixed

    def test_ray_param_space_matches_the_optuna_distributions(
        self, name: str, options: dict[str, Any]
    ) -> None:
        pytest.importorskip("ray.tune")
        from ray.tune.search.optuna import OptunaSearch
        from ray.tune.search.sample import Float

        space = make_space(name, LAYERS, EPOCHS, **options)
        param_space = space.ray_param_space()
        assert list(param_space) == space.param_names()
        for p in space.params:
            domain = param_space[p.name]
            assert isinstance(domain, Float)
            assert (domain.lower, domain.upper) == (p.low, p.high)
        # Ray's OptunaSearch converts the space to the very distributions `suggest` uses, so
        # both backends can write trials into one study.
        assert OptunaSearch.convert_search_space(param_space) == space.optuna_distributions()

    def test_param_names_are_safe_for_optuna_mlflow_and_ray(
        self, name: str, options: dict[str, Any]
    ) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        names = space.param_names()
        assert len(set(names)) == len(names) == space.dim()
        # MLflow's portable (Windows-safe) character set, minus '/', which Ray Tune nests on.
        assert all(re.fullmatch(r"[\w.\- ]+", n) for n in names), names
        # Stable: the same construction gives the same names and bounds.
        again = make_space(name, LAYERS, EPOCHS, **options)
        assert again.params == space.params

    def test_rejects_malformed_vectors(self, name: str, options: dict[str, Any]) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        d = space.dim()
        with pytest.raises(
            ScheduleError, match=rf"vector of length {d}, but got shape \({d + 1},\)"
        ):
            space.decode(np.zeros(d + 1))
        with pytest.raises(ScheduleError, match="vector of length"):
            space.decode(np.zeros((1, d)))
        u = np.full(d, 0.5)
        u[-1] = math.nan
        first = re.escape(space.param_names()[-1])
        with pytest.raises(ScheduleError, match=rf"u\[{d - 1}\] \({first}\) must be a finite"):
            space.decode(u)
        u[-1] = math.inf
        with pytest.raises(ScheduleError, match="must be a finite"):
            space.decode(u)

    def test_rejects_malformed_params(self, name: str, options: dict[str, Any]) -> None:
        space = make_space(name, LAYERS, EPOCHS, **options)
        good = space.params_from_vector(np.full(space.dim(), 0.5))
        first = space.param_names()[0]
        lo, hi = space.param_bounds()[first]
        with pytest.raises(ScheduleError, match=f"needs parameter '{re.escape(first)}'"):
            space.decode_params({k: v for k, v in good.items() if k != first})
        with pytest.raises(ScheduleError, match="parameter 'extra'; Valid: "):
            space.decode_params({**good, "extra": 0.5})
        with pytest.raises(ScheduleError, match=rf"must satisfy {lo} <= value <= {hi}, but got 2"):
            space.decode_params({**good, first: 2.0})
        with pytest.raises(ScheduleError, match="must be a finite number, but got nan"):
            space.decode_params({**good, first: math.nan})
        with pytest.raises(ScheduleError, match="must be a finite number, but got 'a'"):
            space.decode_params({**good, first: "a"})  # type: ignore[dict-item]


def test_every_registered_space_is_in_the_contract_cases() -> None:
    assert {name for name, _ in CASES} == set(SEARCH_SPACES)
    for name, cls in SEARCH_SPACES.items():
        assert cls.name == name
        assert {"min_fraction", "max_fraction"} <= set(cls.option_names())


def test_importing_the_package_pulls_in_neither_optuna_nor_ray() -> None:
    statement = "import midl_autok.search_spaces, midl_autok.pareto"
    assert imported_by(statement, ["optuna", "ray"]) == []


# --------------------------------------------------------------------------- ramp functions

RAMPS = [linear_ramp, cosine_ramp, cubic_ramp]
fractions = st.floats(0.0, 1.0)


def test_one_table_of_ramp_shapes() -> None:
    """The ramp spaces and the budget space's ``ramp`` option name the same curves."""
    from midl_autok.search_spaces.curves import RAMPS as BY_NAME

    spaces = [SEARCH_SPACES[name] for name in ("linear", "cosine", "cubic")]
    assert {cls.name: cls.ramp for cls in spaces} == BY_NAME  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match=r"'linear', 'cosine', 'cubic', 'none', but got 'step'"):
        make_space("budget", LAYERS, EPOCHS, ramp="step")


@pytest.mark.parametrize("ramp", RAMPS)
@settings(max_examples=60, deadline=None)
@given(start=fractions, end=fractions, a=st.floats(0, 1), b=st.floats(0, 1))
def test_ramps_hit_their_endpoints_and_stay_between_them(
    ramp: Any, start: float, end: float, a: float, b: float
) -> None:
    t0, t1 = min(a, b), max(a, b)
    t = np.linspace(0, 1, 41)
    f = ramp(t, start, end, t0, t1)
    # Exactly start before the window and exactly end from t1 on (t0 == t1 is a step).
    np.testing.assert_array_equal(f[t < t0], start)
    np.testing.assert_array_equal(f[t >= t1], end)
    assert float(ramp(t1, start, end, t0, t1)) == end
    if t1 > t0:
        assert float(ramp(t0, start, end, t0, t1)) == start
    lo, hi = min(start, end), max(start, end)
    assert np.all((f >= lo - 1e-12) & (f <= hi + 1e-12))
    steps = np.diff(f) * np.sign(end - start)  # monotone from start towards end
    assert np.all(steps >= -1e-12)


def test_cubic_ramp_is_the_zhu_gupta_schedule() -> None:
    # Zhu & Gupta (2017), eq. 1: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3 for
    # t in {t0, t0 + dt, ..., t0 + n dt}. The ramp runs on the kept fraction 1 - s.
    s_i, s_f, t0, n, dt = 0.0, 0.875, 10.0, 8, 5.0
    t = t0 + dt * np.arange(n + 1)
    expected_sparsity = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
    kept = cubic_ramp(t, 1 - s_i, 1 - s_f, t0, t0 + n * dt)
    np.testing.assert_allclose(1 - kept, expected_sparsity, rtol=0, atol=1e-15)
    # ... and holds s_i before t0 and s_f after t0 + n dt.
    assert float(cubic_ramp(0.0, 1 - s_i, 1 - s_f, t0, t0 + n * dt)) == 1 - s_i
    assert float(cubic_ramp(100.0, 1 - s_i, 1 - s_f, t0, t0 + n * dt)) == 1 - s_f


def test_ramp_midpoints() -> None:
    assert float(linear_ramp(0.5, 1.0, 0.2)) == pytest.approx(0.6)
    assert float(cosine_ramp(0.5, 1.0, 0.2)) == pytest.approx(0.6)
    assert float(cubic_ramp(0.5, 1.0, 0.2)) == pytest.approx(0.2 + 0.8 / 8)
    # Cosine is flat at both ends, linear is not: just after the start it has moved less.
    assert float(cosine_ramp(0.05, 1.0, 0.0)) > float(linear_ramp(0.05, 1.0, 0.0))
    # Cubic front-loads the change: it is below linear everywhere inside the window.
    t = np.linspace(0.01, 0.99, 50)
    assert np.all(cubic_ramp(t, 1.0, 0.0) < linear_ramp(t, 1.0, 0.0))


def test_zero_length_window_is_a_step() -> None:
    np.testing.assert_array_equal(ramp_progress([0.0, 0.49, 0.5, 0.9], 0.5, 0.5), [0, 0, 1, 1])
    np.testing.assert_array_equal(linear_ramp([0.2, 0.7], 1.0, 0.3, 0.5, 0.5), [1.0, 0.3])


def test_ramp_rejects_a_reversed_window() -> None:
    with pytest.raises(ValueError, match=r"`t0 <= t1` must hold, but got t0=0.8, t1=0.2"):
        linear_ramp(0.5, 1.0, 0.0, 0.8, 0.2)


def test_epoch_times_put_the_last_epoch_at_one() -> None:
    np.testing.assert_array_equal(epoch_times(1), [1.0])
    np.testing.assert_array_equal(epoch_times(3), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="`epochs >= 1` must hold, but got 0"):
        epoch_times(0)


def test_ramp_window_always_lies_in_zero_one() -> None:
    assert ramp_window(0.25, 2 / 3) == pytest.approx((0.25, 0.75))
    assert ramp_window(1.0, 1.0) == (1.0, 1.0)
    assert ramp_window(0.0, 0.0) == (0.0, 0.0)


def test_piecewise_linear_passes_through_its_knots() -> None:
    times, values = [0.0, 0.3, 1.0], [0.2, 1.0, 0.5]
    np.testing.assert_allclose(piecewise_linear(times, times, values), values)
    assert float(piecewise_linear(0.15, times, values)) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="`times` must be non-decreasing"):
        piecewise_linear(0.5, [0.0, 0.6, 0.3], [1, 2, 3])
    with pytest.raises(ValueError, match="same non-zero length"):
        piecewise_linear(0.5, [0.0, 1.0], [1.0])


# --------------------------------------------------------------------------- each space


def ks(space: SearchSpace, params: Mapping[str, float]) -> list[list[int]]:
    return [list(row) for row in space.decode_params(params).k]


@pytest.mark.parametrize(
    ("name", "middle"),
    [("linear", 60), ("cosine", 60), ("cubic", 30)],  # cubic: 0.2 + 0.8 * 0.5^3 = 0.3
)
def test_ramp_spaces_on_a_hand_computed_case(name: str, middle: int) -> None:
    # times 0, .25, .5, .75, 1; window [0.25, 0.25 + 2/3 * 0.75] = [0.25, 0.75]
    space = make_space(name, [("a", 100)], 5)
    assert space.param_names() == ["a.start", "a.end", "t0", "span"]
    params = {"a.start": 1.0, "a.end": 0.2, "t0": 0.25, "span": 2 / 3}
    assert ks(space, params) == [[100, 100, middle, 20, 20]]


def test_ramp_spaces_end_at_the_end_fraction() -> None:
    # The last epoch is the deployed model: its k is always the end fraction's.
    rng = np.random.default_rng(1)
    for name in ("linear", "cosine", "cubic"):
        space = make_space(name, LAYERS, EPOCHS, window="per_layer")
        for _ in range(20):
            params = space.params_from_vector(rng.random(space.dim()))
            final = space.decode_params(params).final()
            for spec in LAYERS:
                assert final[spec.name] == k_from_fraction(params[f"{spec.name}.end"], spec.width)


def test_per_layer_windows_are_independent() -> None:
    space = make_space("linear", [("a", 10), ("b", 10)], 5, window="per_layer")
    assert space.param_names() == [
        "a.start",
        "a.end",
        "a.t0",
        "a.span",
        "b.start",
        "b.end",
        "b.t0",
        "b.span",
    ]
    params = {
        "a.start": 1.0,
        "a.end": 0.2,
        "a.t0": 0.0,
        "a.span": 0.0,
        "b.start": 1.0,
        "b.end": 0.2,
        "b.t0": 1.0,
        "b.span": 0.0,
    }
    assert ks(space, params) == [[2, 2, 2, 2, 2], [10, 10, 10, 10, 2]]


def test_constant_space_holds_one_k_per_layer() -> None:
    space = make_space("constant", [("a", 10), ("b", 20)], 3)
    assert space.param_names() == ["a.fraction", "b.fraction"]
    assert ks(space, {"a.fraction": 0.3, "b.fraction": 0.96}) == [[3, 3, 3], [19, 19, 19]]


def test_knots_space_interpolates_between_knots() -> None:
    space = make_space("knots", [("a", 10)], 5, n_knots=3)
    assert space.param_names() == ["a.knot0", "a.knot1", "a.knot2"]
    # knots at t = 0, .5, 1; epochs at t = 0, .25, .5, .75, 1
    assert ks(space, {"a.knot0": 0.2, "a.knot1": 1.0, "a.knot2": 0.4}) == [[2, 6, 10, 7, 4]]


def test_knots_space_sorts_searched_times() -> None:
    space = make_space("knots", [("a", 100)], 5, n_knots=4, search_times=True)
    assert space.param_names() == [
        "a.knot0",
        "a.knot1",
        "a.knot2",
        "a.knot3",
        "knots.t1",
        "knots.t2",
    ]
    params = {
        "a.knot0": 1.0,
        "a.knot1": 0.5,
        "a.knot2": 0.5,
        "a.knot3": 0.1,
        "knots.t1": 0.75,
        "knots.t2": 0.25,
    }
    np.testing.assert_allclose(space.knot_times(params), [0.0, 0.25, 0.75, 1.0])
    assert ks(space, params) == [[100, 50, 50, 50, 10]]


def test_free_space_names_sort_in_epoch_order() -> None:
    space = make_space("free", [("a", 4)], 12)
    names = space.param_names()
    assert names[:3] == ["a.e00", "a.e01", "a.e02"]
    assert names == sorted(names)
    assert ks(space, {n: (i % 4 + 1) / 4 for i, n in enumerate(names)}) == [[1, 2, 3, 4] * 3]


@settings(max_examples=40, deadline=None)
@given(layers=layer_lists, epochs=st.integers(1, 8), data=st.data())
def test_free_space_encodes_any_schedule(
    layers: list[tuple[str, int]], epochs: int, data: st.DataObject
) -> None:
    space = make_space("free", layers, epochs, min_fraction=1e-6)
    k = [
        data.draw(st.lists(st.integers(1, w), min_size=epochs, max_size=epochs)) for _, w in layers
    ]
    schedule = KSchedule(layers=tuple(LayerSpec(*x) for x in layers), epochs=epochs, k=k)
    assert space.decode_params(space.encode_params(schedule)) == schedule
    assert space.decode(space.encode(schedule)) == schedule


def test_encode_refuses_what_a_space_cannot_express() -> None:
    schedule = KSchedule(layers=(LayerSpec("a", 10),), epochs=5, k=((10, 3, 9, 2, 7),))
    for name in ("constant", "linear", "cosine", "cubic", "knots"):
        with pytest.raises(ScheduleError, match=f"search space '{name}' cannot express"):
            make_space(name, [("a", 10)], 5).encode_params(schedule)
    # k = 1 of 100 is below min_fraction 0.05 in every space
    tiny = KSchedule.constant([("a", 100)], 4, 0.01)
    with pytest.raises(ScheduleError, match=r"k fractions in \[0.05, 1.0\]"):
        make_space("free", [("a", 100)], 4).encode_params(tiny)


def test_encode_accepts_exact_ramps() -> None:
    space = make_space("linear", [("a", 10)], 5)
    schedule = KSchedule(layers=(LayerSpec("a", 10),), epochs=5, k=((10, 8, 6, 4, 2),))
    assert space.decode_params(space.encode_params(schedule)) == schedule


def test_encode_checks_layers_and_epochs() -> None:
    space = make_space("constant", [("a", 10)], 4)
    with pytest.raises(ScheduleError, match="layer a has width 12 in the schedule but 10"):
        space.encode_params(KSchedule.constant([("a", 12)], 4, 0.5))
    with pytest.raises(ScheduleError, match="the schedule has 3 epochs but the search space"):
        space.encode_params(KSchedule.constant([("a", 10)], 3, 0.5))


# --------------------------------------------------------------------------- errors


def test_unknown_space_name_suggests_the_closest() -> None:
    with pytest.raises(SpecError, match=r"unknown search space 'cosin'; did you mean 'cosine'\?"):
        make_space("cosin", LAYERS, EPOCHS)


def test_unknown_option_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(
        SpecError, match=r"unknown linear search-space option 'windw'; did you mean 'window'\?"
    ):
        make_space("linear", LAYERS, EPOCHS, windw="shared")
    with pytest.raises(SpecError, match="unknown constant search-space option 'n_knots'"):
        make_space("constant", LAYERS, EPOCHS, n_knots=3)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("linear", {"window": "layer"}, "must be 'shared' or 'per_layer', but got 'layer'"),
        ("knots", {"n_knots": 1}, "2 <= n_knots <= 64, but got 1"),
        ("knots", {"n_knots": 2.5}, "2 <= n_knots <= 64, but got 2.5"),
        ("knots", {"search_times": "yes"}, "must be true or false, but got 'yes'"),
        ("free", {"min_fraction": 0.0}, "0 < min_fraction <= max_fraction <= 1"),
        ("free", {"min_fraction": 0.6, "max_fraction": 0.5}, "but got min_fraction=0.6"),
        ("free", {"max_fraction": 1.5}, "max_fraction=1.5"),
        ("free", {"min_fraction": math.nan}, "min_fraction must be a finite number"),
    ],
)
def test_bad_options_name_the_rule(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        make_space(name, LAYERS, EPOCHS, **options)


def test_bad_layers_or_epochs() -> None:
    with pytest.raises(ScheduleError, match="epochs must be an integer >= 1, but got 0"):
        make_space("constant", LAYERS, 0)
    with pytest.raises(ScheduleError, match="at least one layer"):
        make_space("constant", [], 3)
    with pytest.raises(ScheduleError, match="layer name 'a' appears twice"):
        make_space("constant", [("a", 3), ("a", 4)], 3)
    with pytest.raises(ScheduleError, match="width of layer a must be an integer >= 1"):
        make_space("constant", [("a", 0)], 3)


def test_ray_refuses_layer_names_with_a_slash() -> None:
    space = make_space("constant", [("enc/0", 8)], 3)
    with pytest.raises(SpecError, match="layer 'enc/0' has one"):
        space.ray_param_space()


def test_duplicate_parameter_names_are_refused() -> None:
    class Clash(SearchSpace):
        name = "clash"

        def _build_params(self) -> list[Param]:
            return [Param("p", 0, 1), Param("p", 0, 1)]

    with pytest.raises(SpecError, match="would have the parameter 'p' twice"):
        Clash(LAYERS, EPOCHS)
