"""``--confirm N`` on the Ray backend: the front's retrainings run in the driver after the
Ray phase, recorded as on the local backend (one trial + one child run each, not counted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState
from raykit import local_ray, ray_spec
from searchkit import fresh_store, runs

from midl_autok.results.confirmed import is_confirmation
from midl_autok.results.record import load_study_record
from midl_autok.search.ray import RayOptions, run_ray_search

pytestmark = pytest.mark.xdist_group("ray")


@pytest.mark.slow
def test_a_ray_search_confirms_its_front_in_the_driver(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = ray_spec(trials=3, epochs=2, agent="random").override(**{"search.confirm": 1})
    with local_ray(num_cpus=2):
        summary = run_ray_search(spec, store=store, device="cpu", options=RayOptions(workers=2))
    assert summary.completed == 3
    record = load_study_record(store, summary.study)
    front = record.front()
    done = [t for t in record.trials if is_confirmation(t)]
    assert sorted(t.user_attrs["confirm_of"] for t in done) == sorted(t.number for t in front)
    assert all(t.state == TrialState.COMPLETE for t in done)
    _, children = runs(store, summary.study)
    confirm_runs = [c for c in children if c.data.tags.get("origin") == "confirm"]
    assert len(confirm_runs) == len(done)
    assert {c.info.status for c in confirm_runs} == {"FINISHED"}
    assert set(record.confirmed()) == {t.number for t in front}
