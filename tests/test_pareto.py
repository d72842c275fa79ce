"""Tests for midl_autok.pareto against brute force on random point sets (with ties and
duplicates), against Optuna's own Pareto front and hypervolume history, and on hand cases."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midl_autok.pareto import (
    hypervolume_2d,
    hypervolume_history,
    knee_point,
    non_dominated,
    non_dominated_sort,
    reference_point,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

ACC_FLOPS = ["maximize", "minimize"]


# --------------------------------------------------------------------------- brute force


def better_or_equal(a: float, b: float, direction: str) -> bool:
    return a >= b if direction == "maximize" else a <= b


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    return all(better_or_equal(x, y, d) for x, y, d in zip(a, b, directions, strict=True)) and any(
        x != y for x, y in zip(a, b, strict=True)
    )


def brute_non_dominated(points: list[list[float]], directions: list[str]) -> list[bool]:
    return [not any(dominates(q, p, directions) for q in points) for p in points]


def brute_hypervolume(points: list[list[float]], ref: list[float], directions: list[str]) -> float:
    """Area of the union of the boxes between each point and ref, by summing the cells of the
    grid on all distinct coordinates that some box covers."""
    boxes = []
    for p in points:
        box = []
        for v, r, d in zip(p, ref, directions, strict=True):
            lo, hi = (r, v) if d == "maximize" else (v, r)
            box.append((lo, hi))
        if all(lo < hi for lo, hi in box):
            boxes.append(box)
    xs = sorted({ref[0], *(b[0][0] for b in boxes), *(b[0][1] for b in boxes)})
    ys = sorted({ref[1], *(b[1][0] for b in boxes), *(b[1][1] for b in boxes)})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(itertools.pairwise(xs), itertools.pairwise(ys)):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if any(b[0][0] <= cx <= b[0][1] and b[1][0] <= cy <= b[1][1] for b in boxes):
            area += (x1 - x0) * (y1 - y0)
    return area


directions_2d = st.lists(st.sampled_from(["maximize", "minimize"]), min_size=2, max_size=2)
# Small integer grids make ties and duplicates common.
grid_points_2d = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25)


@st.composite
def points_and_directions(draw: st.DrawFn) -> tuple[list[list[float]], list[str]]:
    m = draw(st.integers(1, 4))
    directions = draw(st.lists(st.sampled_from(["maximize", "minimize"]), min_size=m, max_size=m))
    values = st.one_of(st.integers(0, 4).map(float), st.floats(-1e3, 1e3))
    points = draw(st.lists(st.lists(values, min_size=m, max_size=m), max_size=25))
    return points, directions


# --------------------------------------------------------------------------- non-dominated


@settings(max_examples=300, deadline=None)
@given(case=points_and_directions())
def test_non_dominated_matches_brute_force(case: tuple[list[list[float]], list[str]]) -> None:
    points, directions = case
    arr = np.array(points, dtype=float).reshape(len(points), len(directions))
    mask = non_dominated(arr, directions)
    assert mask.dtype == bool
    assert mask.tolist() == brute_non_dominated(points, directions)


@settings(max_examples=200, deadline=None)
@given(case=points_and_directions())
def test_non_dominated_sort_peels_fronts(case: tuple[list[list[float]], list[str]]) -> None:
    points, directions = case
    arr = np.array(points, dtype=float).reshape(len(points), len(directions))
    ranks = non_dominated_sort(arr, directions)
    assert ranks.shape == (len(points),)
    if not points:
        return
    assert set(ranks.tolist()) == set(range(ranks.max() + 1))
    for i, p in enumerate(points):
        same = [q for j, q in enumerate(points) if ranks[j] == ranks[i]]
        assert not any(dominates(q, p, directions) for q in same)
        if ranks[i] > 0:
            previous = [q for j, q in enumerate(points) if ranks[j] == ranks[i] - 1]
            assert any(dominates(q, p, directions) for q in previous)
    assert (ranks == 0).tolist() == non_dominated(arr, directions).tolist()


def test_duplicates_share_their_status_and_rank() -> None:
    points = [[0.9, 10], [0.9, 10], [0.8, 10], [0.8, 10], [0.7, 3]]
    assert non_dominated(points, ACC_FLOPS).tolist() == [True, True, False, False, True]
    assert non_dominated_sort(points, ACC_FLOPS).tolist() == [0, 0, 1, 1, 0]


def test_non_dominated_agrees_with_optunas_best_trials() -> None:
    rng = np.random.default_rng(0)
    values = np.round(rng.random((60, 2)) * [1, 1e6], 1)
    values[10] = values[3]  # a duplicate
    study = optuna.create_study(directions=ACC_FLOPS)
    study.add_trials([optuna.trial.create_trial(values=v.tolist()) for v in values])
    best = {t.number for t in study.best_trials}
    assert set(np.flatnonzero(non_dominated(values, ACC_FLOPS)).tolist()) == best


def test_optuna_study_directions_are_accepted() -> None:
    study = optuna.create_study(directions=ACC_FLOPS)
    points = [[0.9, 10], [0.8, 5], [0.7, 8]]
    assert non_dominated(points, study.directions).tolist() == [True, True, False]


def test_empty_input() -> None:
    assert non_dominated(np.zeros((0, 2)), ACC_FLOPS).tolist() == []
    assert non_dominated_sort([], ACC_FLOPS).tolist() == []
    assert hypervolume_2d([], [0.0, 1.0], ACC_FLOPS) == 0.0
    assert hypervolume_history([], [0.0, 1.0], ACC_FLOPS).tolist() == []


@pytest.mark.parametrize(
    ("points", "directions", "message"),
    [
        ([[1.0, 2.0]], ["maximise", "minimize"], "must be 'maximize' or 'minimize'"),
        ([[1.0, 2.0]], ["maximize"], r"one entry per objective \(2\), but got 1"),
        ([[1.0, 2.0]], "maximize", "a sequence with one entry per objective"),
        ([[1.0, 2.0], [math.nan, 1.0]], ACC_FLOPS, r"finite, but row 1 is \[nan, 1.0\]"),
        ([1.0, 2.0], ACC_FLOPS, r"2-D array"),
    ],
)
def test_bad_input_is_named(points: list, directions: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        non_dominated(points, directions)


# --------------------------------------------------------------------------- hypervolume


@settings(max_examples=300, deadline=None)
@given(
    points=grid_points_2d,
    directions=directions_2d,
    ref=st.tuples(st.integers(-1, 7), st.integers(-1, 7)),
)
def test_hypervolume_matches_the_union_of_boxes(
    points: list[tuple[int, int]], directions: list[str], ref: tuple[int, int]
) -> None:
    pts = [list(map(float, p)) for p in points]
    expected = brute_hypervolume(pts, list(map(float, ref)), directions)
    got = hypervolume_2d(np.array(pts).reshape(-1, 2), ref, directions)
    assert got == pytest.approx(expected, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    points=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1e6)), min_size=1, max_size=20),
    extra=st.tuples(st.floats(0, 1), st.floats(0, 1e6)),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypervolume_is_permutation_invariant_and_monotone(
    points: list[tuple[float, float]], extra: tuple[float, float], seed: int
) -> None:
    ref = [0.0, 1e6]
    arr = np.array(points)
    hv = hypervolume_2d(arr, ref, ACC_FLOPS)
    shuffled = arr[np.random.default_rng(seed).permutation(len(arr))]
    assert hypervolume_2d(shuffled, ref, ACC_FLOPS) == pytest.approx(hv, rel=1e-12, abs=1e-9)
    more = np.vstack([arr, [extra]])
    assert hypervolume_2d(more, ref, ACC_FLOPS) >= hv - 1e-9 * max(1.0, hv)
    front = arr[non_dominated(arr, ACC_FLOPS)]
    assert hypervolume_2d(front, ref, ACC_FLOPS) == pytest.approx(hv, rel=1e-12, abs=1e-9)
    assert 0.0 <= hv <= 1e6 * (1 + 1e-12)  # the box between the ideal point and ref


def test_hypervolume_hand_case_and_reference_rules() -> None:
    # accuracy (max) vs FLOPs (min), reference = accuracy 0, dense FLOPs 100
    ref = [0.0, 100.0]
    assert hypervolume_2d([[0.5, 50.0]], ref, ACC_FLOPS) == pytest.approx(25.0)
    assert hypervolume_2d([[0.5, 50.0], [1.0, 80.0]], ref, ACC_FLOPS) == pytest.approx(
        0.5 * 50 + 0.5 * 20
    )
    # Points not strictly better than the reference add nothing (and are not an error).
    assert (
        hypervolume_2d([[0.5, 100.0], [0.0, 10.0], [-0.1, 5.0], [0.7, 150.0]], ref, ACC_FLOPS) == 0
    )
    with pytest.raises(ValueError, match="hypervolume_2d needs 2 directions"):
        hypervolume_2d([[1, 2, 3]], [0, 0, 0], ["minimize"] * 3)
    with pytest.raises(ValueError, match="ref must be 2 finite numbers"):
        hypervolume_2d([[1, 2]], [0, math.inf], ACC_FLOPS)


def test_hypervolume_history_matches_optunas_plot() -> None:
    """optuna.visualization.plot_hypervolume_history is Optuna's public hypervolume (Optuna 5
    has no public hypervolume function); its curve must equal ours, infeasible trials included."""
    pytest.importorskip("plotly")
    rng = np.random.default_rng(3)
    values = np.column_stack([rng.random(40), rng.random(40) * 1e6])
    feasible = rng.random(40) > 0.2
    values[5] = [1.5, 2e6]  # worse than the reference in FLOPs: adds nothing
    study = optuna.create_study(directions=ACC_FLOPS)
    study.add_trials(
        [
            optuna.trial.create_trial(
                values=v.tolist(), constraints={"flops_budget": 0.0 if ok else 1.0}
            )
            for v, ok in zip(values, feasible, strict=True)
        ]
    )
    ref = [0.0, 1e6]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        figure = optuna.visualization.plot_hypervolume_history(study, ref)
    theirs = np.array(figure.data[0].y, dtype=float)
    ours = hypervolume_history(values, ref, ACC_FLOPS, include=feasible)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_hypervolume_history_skips_excluded_rows() -> None:
    points = np.array([[0.5, 50.0], [math.nan, math.nan], [1.0, 80.0], [0.1, 90.0]])
    include = [True, False, True, True]
    history = hypervolume_history(points, [0.0, 100.0], ACC_FLOPS, include=include)
    np.testing.assert_allclose(history, [25.0, 25.0, 35.0, 35.0])
    assert np.all(np.diff(history) >= 0)
    with pytest.raises(ValueError, match="row 1 is"):
        hypervolume_history(points, [0.0, 100.0], ACC_FLOPS)
    with pytest.raises(ValueError, match=r"one entry per point \(4\)"):
        hypervolume_history(points, [0.0, 100.0], ACC_FLOPS, include=[True])


# --------------------------------------------------------------------------- knee point


def brute_knee_distances(points: np.ndarray, directions: list[str]) -> dict[int, float]:
    """Signed distance of each front point from the line through the front's two extremes
    (after scaling each axis by the extremes' spread), positive on the ideal side."""
    mask = brute_non_dominated(points.tolist(), directions)
    idx = [i for i, ok in enumerate(mask) if ok]
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    loss = points[idx] * signs
    a = loss[np.lexsort((loss[:, 1], loss[:, 0]))[0]]  # best in objective 0
    b = loss[np.lexsort((loss[:, 0], loss[:, 1]))[0]]  # best in objective 1
    scale = np.where(b - a != 0, np.abs(b - a), 1.0)
    a_n, b_n = a / scale, b / scale
    along = b_n - a_n
    normal = np.array([along[1], -along[0]])  # towards the ideal point
    norm = float(np.linalg.norm(normal)) or 1.0
    return {
        i: float(np.dot(p - a_n, normal)) / norm for i, p in zip(idx, loss / scale, strict=True)
    }


@settings(max_examples=150, deadline=None)
@given(points=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=30))
def test_knee_is_the_farthest_point_from_the_extremes_line(points: list[tuple[int, int]]) -> None:
    arr = np.array(points, dtype=float)
    knee = knee_point(arr, ACC_FLOPS)
    distances = brute_knee_distances(arr, ACC_FLOPS)
    farthest = max(distances.values())
    assert distances[knee] == pytest.approx(farthest, abs=1e-12)
    # Ties go to the earliest point.
    assert knee == min(i for i, d in distances.items() if d >= farthest - 1e-12)


def test_knee_point_is_scale_invariant_and_picks_the_bend() -> None:
    points = np.array([[0.97, 100.0], [0.95, 20.0], [0.60, 10.0], [0.50, 90.0]])
    assert knee_point(points, ACC_FLOPS) == 1
    assert knee_point(points * [1, 1e9], ACC_FLOPS) == 1
    assert knee_point(points[:1], ACC_FLOPS) == 0
    with pytest.raises(ValueError, match="at least one point"):
        knee_point(np.zeros((0, 2)), ACC_FLOPS)


# --------------------------------------------------------------------------- reference point


def test_reference_point_is_fixed_by_the_objectives() -> None:
    assert reference_point(["val_accuracy", "inference_flops"], dense_inference_flops=2e6) == [
        0.0,
        2e6,
    ]
    assert reference_point(["val_accuracy", "inference_flops_ratio"]) == [0.0, 1.0]
    with pytest.raises(ValueError, match="pass dense_inference_flops="):
        reference_point(["val_accuracy", "inference_flops"])
    with pytest.raises(ValueError, match="no fixed hypervolume reference for objective 'val_loss'"):
        reference_point(["val_loss", "inference_flops_ratio"])


def test_a_knee_tie_that_rounding_splits_goes_to_the_earliest_point() -> None:
    # normalized losses 1/26 + 10/26 and 9/26 + 2/26: equal, but not in floating point
    points = np.array([(4, 7), (29, 12), (21, 8), (30, 20)], dtype=float)
    assert knee_point(points, ACC_FLOPS) == 1
