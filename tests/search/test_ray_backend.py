"""The Ray backend on a real local Ray (2 CPUs, 1 logical GPU): parallel trials, the same study
and MLflow runs as the local backend, fractional GPUs, and early stopping on two objectives.

The pure parts of the schedulers (rungs, crowding distance, promotion) are tested without Ray.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clikit import cli_env
from raykit import local_ray, ray_spec
from searchkit import assert_pruned, fresh_store, quiet, runs

from midl_autok import metrics as M
from midl_autok.agents import AGENTS
from midl_autok.errors import SpecError
from midl_autok.results.record import load_study_record
from midl_autok.search import SearchSummary, run_search
from midl_autok.search.ray import NODE_TAG, RayOptions, run_ray_search, worker_device
from midl_autok.search.ray.schedulers import (
    ParetoSuccessiveHalving,
    crowding_distance,
    promotable,
    rung_epochs,
    scalarize,
)
from midl_autok.search.rungs import RungRule
from midl_autok.store import Store

pytestmark = pytest.mark.xdist_group("ray")

MAX_MIN = ["maximize", "minimize"]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray for the module: 2 CPUs and 1 logical GPU (no GPU needed)."""
    with local_ray(num_cpus=2, num_gpus=1) as ray:
        yield ray


# --------------------------------------------------------------------------- pure policy


def test_rungs_lie_strictly_before_the_last_epoch() -> None:
    assert rung_epochs(12, grace_period=1, reduction_factor=2) == [1, 2, 4, 8]
    assert rung_epochs(12, grace_period=3, reduction_factor=2) == [3, 6]
    assert rung_epochs(4, grace_period=1, reduction_factor=3) == [1, 3]
    assert rung_epochs(2, grace_period=2, reduction_factor=2) == []
    with pytest.raises(ValueError, match="reduction_factor must be > 1"):
        rung_epochs(4, reduction_factor=1)


def test_crowding_distance_by_hand() -> None:
    # three points on a line: the extremes are infinite, the middle one spans the box
    front = np.array([[0.9, 10.0], [0.8, 6.0], [0.5, 2.0]])
    d = crowding_distance(front)
    assert math.isinf(d[0])
    assert math.isinf(d[2])
    assert d[1] == pytest.approx((0.9 - 0.5) / 0.4 + (10.0 - 2.0) / 8.0)
    assert np.isinf(crowding_distance(front[:2])).all()


def test_promotion_by_rank_then_crowding() -> None:
    # dominated: strictly worse in both objectives than the first trial at the rung
    assert not promotable([[0.9, 10.0], [0.8, 12.0]], 1, MAX_MIN, reduction_factor=2)
    assert promotable([[0.9, 10.0], [0.8, 12.0]], 0, MAX_MIN, reduction_factor=2)
    # two non-dominated points tie (both infinite crowding): both continue
    assert promotable([[0.9, 10.0], [0.8, 5.0]], 1, MAX_MIN, reduction_factor=2)
    # the first trial at a rung always continues
    assert promotable([[0.1, 100.0]], 0, MAX_MIN, reduction_factor=2)
    # on one front of four, keep ceil(4/2) = 2: the extremes beat the crowded middle
    front = [[0.9, 10.0], [0.85, 9.0], [0.84, 8.9], [0.5, 2.0]]
    assert [promotable(front, i, MAX_MIN, reduction_factor=2) for i in range(4)] == [
        True,
        False,
        False,
        True,
    ]


def test_pareto_successive_halving_decides_per_rung() -> None:
    keys = ["objective/val_accuracy", "objective/inference_flops"]
    rule = RungRule("mo-asha", directions=MAX_MIN, epochs=4, grace_period=1, reduction_factor=2)
    sched = ParetoSuccessiveHalving(rule, objectives=keys)
    assert sched.rungs == [1, 2]

    def result(acc: float, flops: float) -> dict[str, float]:
        return dict(zip(keys, (acc, flops), strict=True))

    assert sched.decide("a", 1, result(0.6, 100)) == "CONTINUE"
    assert sched.decide("b", 1, result(0.5, 150)) == "STOP"  # dominated by a at rung 1
    assert sched.decide("c", 1, result(0.7, 200)) == "CONTINUE"  # non-dominated
    assert sched.decide("a", 2, result(0.7, 100)) == "CONTINUE"
    assert sched.decide("a", 3, result(0.8, 100)) == "CONTINUE"  # no rung at epoch 3
    assert sched.decide("c", 2, result(math.nan, 200)) == "CONTINUE"  # not comparable
    assert sched.stopped == {"b": 1}


def test_scalarized_score() -> None:
    assert scalarize([0.8, 25.0], [0.0, 100.0], [1.0, 0.0]) == pytest.approx((0.8 + 0.75) / 2)
    assert scalarize([-1.0, 200.0], [0.0, 100.0], [1.0, 0.0]) == 0.0  # clipped


def test_trial_device_and_option_errors() -> None:
    assert worker_device("auto", 0) == "cpu"
    assert worker_device("auto", 0.5) == "cuda"
    assert worker_device("cpu", 0.5) == "cpu"
    with pytest.raises(SpecError, match="needs --gpus-per-trial G > 0"):
        worker_device("cuda", 0)
    with pytest.raises(SpecError, match="must be a whole number"):
        RayOptions(gpus_per_trial=1.5).check()
    with pytest.raises(SpecError, match="--early-stop"):
        RayOptions(early_stop="hyperband").check()
    with pytest.raises(SpecError, match=r"Ray Client address.*ray job submit"):
        RayOptions(address="ray://head:10001").check()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--early-stop", "hyperband"], "unknown --early-stop 'hyperband'"),
        (["--backend", "ray", "--gpus-per-trial", "1.5"], "must be a whole number"),
        (["--backend", "ray", "--device", "cuda"], "needs --gpus-per-trial G > 0"),
        (["--backend", "ray", "--ray-address", "ray://head:10001"], "Ray Client address"),
    ],
)
def test_bad_ray_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", "search", "--store", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=cli_env(),
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "optuna.db").exists()  # nothing was opened


# --------------------------------------------------------------------------- real searches

SAMPLES = 20_000  # ~1 s per trial: long enough for two trials to overlap


@pytest.fixture(scope="module")
def both(
    ray_local: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[tuple[Store, SearchSummary], tuple[Store, SearchSummary]]:
    """The same 4-trial search, on Ray with 2 workers and with the local backend."""
    quiet()
    spec = ray_spec(trials=4, epochs=3, samples=SAMPLES)
    ray_store = fresh_store(tmp_path_factory.mktemp("ray"))
    on_ray = run_ray_search(spec, store=ray_store, device="cpu", options=RayOptions(workers=2))
    local_store = fresh_store(tmp_path_factory.mktemp("local"))
    local = run_search(spec, store=local_store, device="cpu")
    return (ray_store, on_ray), (local_store, local)


def windows(store: Store, study: str) -> dict[int, tuple[int, int]]:
    """Trial number -> (start, end) in ms of its MLflow child run (set by the worker)."""
    _, children = runs(store, study)
    return {int(c.data.tags["trial"]): (c.info.start_time, c.info.end_time) for c in children}


def test_two_workers_run_trials_at_the_same_time(both: Any) -> None:
    (store, summary), _ = both
    assert summary.completed == summary.new_trials == 4
    assert summary.failed == summary.pruned == 0
    spans = windows(store, summary.study)
    assert sorted(spans) == [0, 1, 2, 3]
    overlapping = [
        (a, b)
        for a in spans
        for b in spans
        if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]
    ]
    assert overlapping, spans
    busy = sum(end - start for start, end in spans.values())
    wall = max(e for _, e in spans.values()) - min(s for s, _ in spans.values())
    assert busy > 1.2 * wall  # more than one trial at a time on average


def test_study_and_runs_match_the_local_backend(both: Any) -> None:
    (ray_store, on_ray), (local_store, local) = both
    ray_record = load_study_record(ray_store, on_ray.study)
    local_record = load_study_record(local_store, local.study)
    assert on_ray.study == local.study
    assert ray_record.counts() == local_record.counts() == {"COMPLETE": 4}
    assert {k: v for k, v in ray_record.attrs.items() if k != "git_sha"} == {
        k: v for k, v in local_record.attrs.items() if k != "git_sha"
    }
    for r, loc in zip(ray_record.trials, local_record.trials, strict=True):
        assert r.number == loc.number
        assert set(r.user_attrs) == set(loc.user_attrs)
        # TPE's startup trials are seeded by --seed and the trial number: same schedule,
        # and training is deterministic on CPU: same results, whichever worker ran it
        assert r.params == loc.params
        assert r.values == pytest.approx(loc.values, rel=1e-9)
        assert r.user_attrs["schedule"]["k"] == loc.user_attrs["schedule"]["k"]
        assert r.user_attrs[M.TEST_ACCURACY] == pytest.approx(loc.user_attrs[M.TEST_ACCURACY])

    ray_parents, ray_children = runs(ray_store, on_ray.study)
    local_parents, local_children = runs(local_store, local.study)
    assert len(ray_parents) == len(local_parents) == 1
    assert ray_parents[0].data.tags["backend"] == "ray"
    assert len(ray_children) == len(local_children) == 4
    by_run = {c.info.run_id: c for c in ray_children}
    local_by_trial = {int(c.data.tags["trial"]): c for c in local_children}
    client = ray_store.mlflow_client()
    for t in ray_record.trials:
        child = by_run[t.user_attrs["mlflow_run_id"]]  # the trial names its own child run
        twin = local_by_trial[t.number]
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"trial-{t.number}"
        assert child.data.tags["mlflow.parentRunId"] == ray_parents[0].info.run_id
        assert set(twin.data.tags) - {"mlflow.user"} <= set(child.data.tags)
        assert child.data.tags[NODE_TAG]  # where it ran
        assert child.data.params == twin.data.params
        assert set(child.data.metrics) == set(twin.data.metrics)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, M.VAL_ACCURACY)]
        assert sorted(steps) == [0, 1, 2]
        assert "schedule.json" in {f.path for f in client.list_artifacts(child.info.run_id)}
    hv = client.get_metric_history(ray_parents[0].info.run_id, "hypervolume")
    assert sorted(m.step for m in hv) == [0, 1, 2, 3]
    assert max(m.value for m in hv) == pytest.approx(ray_record.hypervolume())
    assert {Path(f).name for f in on_ray.files} == {
        "pareto.json",
        "pareto.csv",
        "pareto.html",
        "report.html",
    }
    ray_dirs = list((ray_store.ray_dir).glob("*/*/trial-*"))
    assert len(ray_dirs) == 4  # Ray Tune's own results, under the store's ray/


def test_fractional_gpus_share_one_gpu(ray_local: Any, tmp_path: Path) -> None:
    """Two trials reserve 0.5 GPU each of the one (logical) GPU and run at the same time."""
    store = fresh_store(tmp_path / "store")
    summary = run_ray_search(
        ray_spec(trials=2, epochs=3, samples=SAMPLES),
        store=store,
        device="cpu",  # the GPU is logical: reserve it, train on the CPU
        options=RayOptions(workers=2, cpus_per_trial=1, gpus_per_trial=0.5),
    )
    assert summary.completed == 2
    _, children = runs(store, summary.study)
    assert [c.data.tags["ray.gpu_ids"] for c in children] == ["0", "0"]
    (s0, e0), (s1, e1) = windows(store, summary.study).values()
    assert s0 < e1
    assert s1 < e0


def test_a_trial_that_fits_no_node_is_a_clear_error(ray_local: Any, tmp_path: Path) -> None:
    from midl_autok.search.ray.runtime import check_resources

    with pytest.raises(SpecError, match=r"no Ray node has 4 CPU\(s\).*largest has 2 CPU"):
        check_resources(RayOptions(cpus_per_trial=4), local=True)
    assert check_resources(RayOptions(cpus_per_trial=1), local=True) == 2
    assert check_resources(RayOptions(cpus_per_trial=1, gpus_per_trial=0.25), local=True) == 2
    assert check_resources(RayOptions(cpus_per_trial=0.5, gpus_per_trial=0.5), local=True) == 2


# --------------------------------------------------------------------------- early stopping


@pytest.mark.parametrize("early_stop", ["mo-asha", "asha"])
def test_early_stop_prunes_the_dominated_trial(
    early_stop: str, ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(AGENTS, "planned", "searchkit:PlannedAgent")
    store = fresh_store(tmp_path / "store")
    summary = run_ray_search(
        ray_spec(agent="planned", trials=2, epochs=4),
        store=store,
        device="cpu",
        options=RayOptions(workers=1, early_stop=early_stop),  # trial 0 first, then 1
    )
    assert (summary.completed, summary.new_trials, summary.pruned) == (2, 2, 1)
    assert_pruned(store, summary.study, 1, f"stopped early by {early_stop} after epoch 1 of 4")
    # the front holds completed trials only
    assert [p["trial"] for p in summary.front] == [0]
