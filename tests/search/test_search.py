"""Real searches on a tiny experiment: sqlite Optuna storage, sqlite MLflow store, real training.

One rule is checked from every side: each evaluated schedule is one Optuna trial (values,
user attrs) and one MLflow child run (params, per-epoch metrics, schedule.json) under the
invocation's parent run (hypervolume per trial, Pareto files at the end).
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState, create_trial
from searchkit import fresh_store, quiet, runs, tiny_spec

from midl_autok import metrics as M
from midl_autok.agents import AGENTS, ExternalAgent
from midl_autok.agents.host import SearchHost
from midl_autok.errors import SpecError
from midl_autok.results.record import load_study_record
from midl_autok.schedule import KSchedule
from midl_autok.search import SearchSummary, default_study_name, open_search, run_search
from midl_autok.search.recording import start_run
from midl_autok.search.recovery import UNOWNED_GRACE_S
from midl_autok.spec import load_spec
from midl_autok.store import Store, StoreError, open_store
from midl_autok.trainer import TrainHooks, run_experiment


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, SearchSummary]:
    """One finished 4-trial TPE search shared by the read-only tests below."""
    quiet()
    store = fresh_store(tmp_path_factory.mktemp("store"))
    spec = tiny_spec(trials=4, options={"n_startup_trials": 2})
    return store, run_search(spec, store=store, device="cpu")


# --------------------------------------------------------------------------- one search


def test_every_trial_is_one_optuna_trial_with_user_attrs(
    searched: tuple[Store, SearchSummary],
) -> None:
    store, summary = searched
    record = load_study_record(store, summary.study)
    assert summary.study == record.name
    assert [t.number for t in record.trials] == [0, 1, 2, 3]
    assert record.counts() == {"COMPLETE": 4}
    assert summary.completed == summary.new_trials == 4
    assert summary.failed == 0
    # study attrs, fixed before the first trial
    attrs = record.attrs
    assert attrs["agent"] == "tpe"
    assert attrs["space"] == "linear"
    assert attrs["seed"] == 1
    assert attrs["objectives"] == [M.VAL_ACCURACY, M.INFERENCE_FLOPS]
    assert attrs["reference_point"] == [0.0, attrs["dense_inference_flops"]]
    assert attrs["spec"]["training"]["epochs"] == 2
    assert attrs["layers"] == [["body.0", 32], ["body.1", 32]]
    for t in record.trials:
        ua = t.user_attrs
        assert t.values == [ua[M.VAL_ACCURACY], ua[M.INFERENCE_FLOPS]]
        for key in (
            M.TEST_ACCURACY,
            M.INFERENCE_FLOPS_RATIO,
            M.TRAINING_FLOPS,
            M.ACTIVE_FRACTION,
            "active_fraction/body.0",
            "k/body.1",
            "dense_inference_flops",
        ):
            assert key in ua, key
        schedule = KSchedule.from_dict(ua["schedule"])
        assert schedule.epochs == 2
        assert schedule.names == ("body.0", "body.1")
        assert schedule.k[1][-1] == ua["k/body.1"]  # realized k of the last epoch
        prov = schedule.provenance
        assert prov["study"] == record.name
        assert prov["trial"] == t.number
        assert prov["mlflow_run_id"] == ua["mlflow_run_id"]
        assert {"agent", "space", "seed", "midl_autok_version", "git_sha"} <= set(prov)
        assert "spec" not in prov  # the study holds it once
        assert set(t.params) == {
            "body.0.start",
            "body.0.end",
            "body.1.start",
            "body.1.end",
            "t0",
            "span",
        }


def test_every_trial_is_one_mlflow_child_run(searched: tuple[Store, SearchSummary]) -> None:
    store, summary = searched
    record = load_study_record(store, summary.study)
    parents, children = runs(store, summary.study)
    assert len(parents) == 1
    assert len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_id == summary.parent_run_id
    tags = parent.data.tags
    assert tags["experiment"] == "tiny"
    assert tags["agent"] == "tpe"
    assert tags["space"] == "linear"
    assert tags["seed"] == "1"
    assert "git_sha" in tags
    assert "version.optuna" in tags
    by_id = {r.info.run_id: r for r in children}
    client = store.mlflow_client()
    for t in record.trials:
        child = by_id[t.user_attrs["mlflow_run_id"]]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == f"trial-{t.number}"
        assert child.data.params["body.0.start"] == repr(round(t.params["body.0.start"], 10))
        assert child.data.metrics[M.TEST_ACCURACY] == t.user_attrs[M.TEST_ACCURACY]
        history = client.get_metric_history(child.info.run_id, M.VAL_ACCURACY)
        assert sorted(m.step for m in history) == [0, 1]  # step = epoch
        assert len(client.get_metric_history(child.info.run_id, "active_fraction/body.0")) == 2
        files = {f.path for f in client.list_artifacts(child.info.run_id)}
        assert "schedule.json" in files
        local = client.download_artifacts(child.info.run_id, "schedule.json")
        saved = json.loads(Path(local).read_text())
        assert saved["provenance"]["spec"] == record.attrs["spec"]  # self-contained replay
    # the parent's hypervolume: one point per completed trial, step = trial number
    hv = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in hv) == [0, 1, 2, 3]
    values = [m.value for m in sorted(hv, key=lambda m: m.step)]
    assert values == sorted(values)  # never decreases
    assert math.isclose(values[-1], record.hypervolume() or 0.0)
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.json", "pareto.html", "report.html", "spec.yaml"} <= artifacts


def test_pareto_files(searched: tuple[Store, SearchSummary]) -> None:
    store, summary = searched
    folder = store.report_dir(summary.study)
    names = [p.name for p in summary.files]
    assert names == ["pareto.json", "pareto.csv", "pareto.html", "report.html"]
    page = (folder / "report.html").read_text()
    assert summary.study in page and "plotly" in page.lower()  # the `midl-autok report` page
    data = json.loads((folder / "pareto.json").read_text())
    assert data["study"] == summary.study
    assert [p["trial"] for p in data["points"]] == [p["trial"] for p in summary.front]
    assert data["knee_trial"] in [p["trial"] for p in data["points"]]
    assert [p["trial"] for p in data["points"] if p["knee"]] == [data["knee_trial"]]
    csv_lines = (folder / "pareto.csv").read_text().splitlines()
    assert csv_lines[0].startswith("trial,val_accuracy,test_accuracy,inference_flops,")
    assert len(csv_lines) == 1 + len(data["points"])
    assert "plotly" in (folder / "pareto.html").read_text()[:5_000_000].lower()


def test_picks_and_exported_schedule_replays(searched: tuple[Store, SearchSummary]) -> None:
    store, summary = searched
    record = load_study_record(store, summary.study)
    front = record.front()
    best = record.pick("max-accuracy")
    cheap = record.pick("min-flops")
    knee = record.pick("knee")
    assert best.user_attrs[M.VAL_ACCURACY] == max(t.user_attrs[M.VAL_ACCURACY] for t in front)
    assert cheap.user_attrs[M.INFERENCE_FLOPS] == min(
        t.user_attrs[M.INFERENCE_FLOPS] for t in front
    )
    assert knee in front
    ratio = cheap.user_attrs[M.INFERENCE_FLOPS_RATIO]
    assert record.pick("max-accuracy", max_flops_ratio=ratio) == cheap
    with pytest.raises(StoreError, match=r"no trial .* has inference_flops_ratio <= 0\.001"):
        record.pick("knee", max_flops_ratio=0.001)
    with pytest.raises(StoreError, match="did you mean 'knee'"):
        record.pick("kne")
    schedule = record.schedule(knee, pick="knee")
    prov = schedule.provenance
    for key in (
        "study",
        "trial",
        "mlflow_run_id",
        "agent",
        "space",
        "seed",
        "midl_autok_version",
        "git_sha",
        "experiment",
        "spec",
    ):
        assert key in prov, key
    # replay in a fresh training run: same seed, same spec -> same validation accuracy
    from midl_autok.spec import validate_spec

    replay = run_experiment(validate_spec(prov["spec"]), schedule=schedule, device="cpu")
    assert replay.metrics[M.VAL_ACCURACY] == knee.user_attrs[M.VAL_ACCURACY]
    assert replay.metrics[M.INFERENCE_FLOPS] == knee.user_attrs[M.INFERENCE_FLOPS]


def test_same_seed_same_search(tmp_path: Path) -> None:
    """One --seed seeds split, init and sampler: a second store gets the very same trials."""
    spec = tiny_spec(trials=3, options={"n_startup_trials": 1})
    a = load_study_record(*_searched_again(spec, tmp_path / "a"))
    b = load_study_record(*_searched_again(spec, tmp_path / "b"))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.values for t in a.trials] == [t.values for t in b.trials]
    c = load_study_record(*_searched_again(tiny_spec(trials=3, seed=2), tmp_path / "c"))
    assert [t.params for t in c.trials] != [t.params for t in a.trials]


def _searched_again(spec: Any, root: Path) -> tuple[Store, str]:
    store = fresh_store(root)
    return store, run_search(spec, store=store, device="cpu").study


# --------------------------------------------------------------------------- resume


def test_rerun_runs_only_the_missing_trials(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    first = run_search(tiny_spec(trials=2), store=store, device="cpu")
    assert (first.completed, first.new_trials) == (2, 2)
    again = run_search(tiny_spec(trials=2), store=store, device="cpu")
    assert (again.completed, again.new_trials) == (2, 0)  # nothing to do
    more = run_search(tiny_spec(trials=4), store=store, device="cpu")
    assert (more.study, more.completed, more.new_trials) == (first.study, 4, 2)
    record = load_study_record(store, first.study)
    assert [t.number for t in record.trials] == [0, 1, 2, 3]
    parents, children = runs(store, first.study)
    assert len(parents) == 3
    assert len(children) == 4


class _InterruptAt(TrainHooks):
    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        raise KeyboardInterrupt


def test_interrupted_search_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=4)

    def hooks(request: Any) -> list[TrainHooks]:
        return [_InterruptAt()] if request.trial_number == 2 else []

    with pytest.raises(KeyboardInterrupt):
        run_search(spec, store=store, device="cpu", train_hooks=hooks)
    name = default_study_name(spec)
    record = load_study_record(store, name)
    assert [t.state.name for t in record.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert "interrupted" in record.trials[2].user_attrs["fail_reason"]
    parents, children = runs(store, name)
    assert parents[0].info.status == "KILLED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "KILLED"]
    assert (store.report_dir(name) / "pareto.json").is_file()  # what was found is kept

    summary = run_search(spec, store=store, device="cpu")
    record = load_study_record(store, name)
    states = [t.state.name for t in record.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert summary.completed == 4
    assert summary.new_trials == 2
    run_ids = [t.user_attrs["mlflow_run_id"] for t in record.trials]
    assert len(set(run_ids)) == 5


def test_trial_orphaned_by_a_dead_process_is_failed_on_resume(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=1)
    with open_search(spec, store=store, device="cpu") as session:
        trial = session.ask()
        orphan_run = start_run(session.tracker, "trial-0", parent_run_id=session.parent_run_id)
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        trial.set_user_attr("pid", int(dead.stdout))  # a process that has ended
        trial.set_user_attr("mlflow_run_id", orphan_run)
        session.close()
    summary = run_search(spec, store=store, device="cpu")
    record = load_study_record(store, summary.study)
    assert [t.state.name for t in record.trials] == ["FAIL", "COMPLETE"]
    assert record.trials[0].user_attrs["fail_reason"].startswith("interrupted: process")
    assert store.mlflow_client().get_run(orphan_run).info.status == "KILLED"


def test_child_run_of_an_ended_search_is_ended_on_resume(tmp_path: Path) -> None:
    # a Ray worker may still be shutting down (its process alive) when the rerun opens the
    # study after the driver was killed: the run's search is over, so nothing else ends it
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=1)
    with open_search(spec, store=store, device="cpu") as session:
        child = start_run(
            session.tracker,
            "trial-9",
            parent_run_id=session.parent_run_id,
            tags={"host": session.host, "pid": session.pid},  # a live process
        )
        session.close("KILLED")
    client = store.mlflow_client()
    assert client.get_run(child).info.status == "RUNNING"
    with open_search(spec, store=store, device="cpu"):
        pass
    run = client.get_run(child)
    assert run.info.status == "KILLED"
    assert run.data.tags["fail_reason"].startswith("interrupted: its search (parent run")


def test_running_trial_naming_no_process_is_failed_when_no_search_is_live(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=1)
    live = open_search(spec, store=store, device="cpu")  # its parent run is RUNNING
    try:
        live.storage.create_new_trial(live.study_id)  # RUNNING, no host/pid (older stores)
        with open_search(spec, store=store, device="cpu"):  # may be the live search's trial
            pass
        record = load_study_record(store, live.study_name)
        assert [t.state.name for t in record.trials] == ["RUNNING"]
        # ... unless it is older than a live search could take to name its trial
        old = datetime.datetime.now() - datetime.timedelta(seconds=UNOWNED_GRACE_S + 1)
        template = create_trial(state=TrialState.RUNNING)
        template.datetime_start = old
        live.storage.create_new_trial(live.study_id, template_trial=template)
        with open_search(spec, store=store, device="cpu"):
            pass
        record = load_study_record(store, live.study_name)
        assert [t.state.name for t in record.trials] == ["RUNNING", "FAIL"]
    finally:
        live.close()
    summary = run_search(spec, store=store, device="cpu")  # no search is live any more
    record = load_study_record(store, summary.study)
    assert [t.state.name for t in record.trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert record.trials[0].user_attrs["fail_reason"].startswith("interrupted: process unknown")


def test_a_study_is_resumed_only_with_the_same_setup(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    run_search(tiny_spec(trials=1), store=store, study="mine", device="cpu")
    with pytest.raises(SpecError, match=r"training\.epochs is 2 there but 3 here"):
        open_search(tiny_spec(trials=1, epochs=3), store=store, study="mine")
    with pytest.raises(SpecError, match=r"search\.agent is \"tpe\" there but \"random\" here"):
        open_search(tiny_spec(trials=1, agent="random"), store=store, study="mine")


def test_default_study_names() -> None:
    spec = load_spec("digits-mlp")
    assert default_study_name(spec) == "digits-mlp-tpe-budget-seed0"
    assert default_study_name(spec.override(seed=3)) == "digits-mlp-tpe-budget-seed3"
    assert default_study_name(spec.override(**{"budget.trials": 50})) == (
        "digits-mlp-tpe-budget-seed0"  # the target is not part of the setup
    )
    assert default_study_name(spec.override(**{"search.agent": "fixed-k"})) == (
        "digits-mlp-fixed-k-seed0"
    )
    shorter = default_study_name(spec.override(**{"training.epochs": 5}))
    assert shorter.startswith("digits-mlp-tpe-budget-seed0-")
    assert len(shorter) == 34
    assert shorter == default_study_name(spec.override(**{"training.epochs": 5}))


# --------------------------------------------------------------------------- failures


def test_diverging_trials_are_recorded_and_the_search_stops_when_all_fail(
    tmp_path: Path,
) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=3, lr=10.0, optimizer="sgd")  # the loss becomes NaN
    summary = run_search(spec, store=store, device="cpu", max_consecutive_failures=2)
    assert summary.stopped is not None
    assert "2 trials in a row failed" in summary.stopped
    assert "training diverged" in summary.stopped
    record = load_study_record(store, summary.study)
    assert record.counts() == {"FAIL": 2}
    assert all("diverged" in t.user_attrs["fail_reason"] for t in record.trials)
    _, children = runs(store, summary.study)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert all("diverged" in c.data.tags["fail_reason"] for c in children)
    assert M.VAL_ACCURACY in children[0].data.metrics  # the epoch that did complete
    assert summary.front == []
    assert summary.hypervolume == 0.0


def test_flops_budget_is_an_optuna_constraint(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    # fixed-k walks 1.0, 0.05, 0.525: the dense-width trial is over any budget below 1
    summary = run_search(tiny_spec(agent="fixed-k", trials=3, flops_budget=0.6), store=store)
    record = load_study_record(store, summary.study)
    by_fraction = {t.params["k_fraction"]: t for t in record.trials}
    assert sorted(by_fraction) == [0.05, 0.525, 1.0]
    over = by_fraction[1.0]
    assert over.constraints["flops_budget"] == pytest.approx(
        over.user_attrs[M.INFERENCE_FLOPS_RATIO] - 0.6
    )
    assert over.constraints["flops_budget"] > 0
    assert over not in record.feasible()
    assert over not in record.front()
    assert all(p[M.INFERENCE_FLOPS_RATIO] <= 0.6 for p in summary.front)
    assert record.pick("max-accuracy").user_attrs[M.INFERENCE_FLOPS_RATIO] <= 0.6


# --------------------------------------------------------------------------- external agents


def test_record_makes_one_trial_and_one_child_run(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=2, space="free")
    with open_search(spec, store=store, device="cpu") as session:
        result = run_experiment(spec, k_fraction=0.5, device="cpu")
        assert result.schedule is not None
        done = session.record(result.schedule, metrics=result.metrics, history=result.history)
        failed = session.record(
            result.schedule, metrics={M.VAL_ACCURACY: math.nan}, fail_reason="env diverged"
        )
        typo: Any = {"fail_reasons": "x"}  # RecordFields: a misspelt keyword is refused
        with pytest.raises(TypeError, match="unexpected keyword argument 'fail_reasons'"):
            session.record(result.schedule, metrics=result.metrics, **typo)
        with pytest.raises(TypeError, match="missing required keyword argument: 'metrics'"):
            session.record(result.schedule, **{})
        session.finish(target=2)
    assert done.state.name == "COMPLETE"
    assert failed.state.name == "FAIL"
    assert done.values == [result.metrics[M.VAL_ACCURACY], result.metrics[M.INFERENCE_FLOPS]]
    assert done.params == {f"body.{i}.e{e}": 0.5 for i in range(2) for e in range(2)}
    assert failed.user_attrs["fail_reason"] == "env diverged"
    _, children = runs(store, session.study_name)
    assert [c.info.status for c in children] == ["FINISHED", "FAILED"]
    assert children[0].info.run_id == done.user_attrs["mlflow_run_id"]


class ReplayAgent(ExternalAgent):
    """An external agent for the test: evaluates constant schedules itself."""

    name = "replay"

    def run(self, host: SearchHost, *, target: int) -> None:
        fraction = 1.0
        while host.counted_trials() < target:
            result = run_experiment(host.spec, k_fraction=fraction, device="cpu")
            assert result.schedule is not None
            host.record(result.schedule, metrics=result.metrics, history=result.history)
            fraction /= 2


def test_the_session_is_the_search_host_agents_see(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(agent="replay", trials=1).override(**{"budget.flops_budget": 0.9})
    with AgentRegistered("replay"), open_search(spec, store=store, device="cpu") as session:
        host: SearchHost = session
        assert isinstance(host, SearchHost)
        assert host.study_name == session.study_name
        assert host.spec_dict == spec.model_dump(mode="json")
        assert (host.device, host.threads, host.flops_budget) == ("cpu", 1, 0.9)
        assert host.files_root == store.root
        assert host.next_trial_number() == 0 and host.trials() == []
        result = run_experiment(host.spec, k_fraction=0.5, device="cpu")
        assert result.schedule is not None
        frozen = host.record(result.schedule, metrics=result.metrics, history=result.history)
        assert frozen.number == 0 and host.next_trial_number() == 1
        assert [t.number for t in host.trials()] == [0]
        assert host.counted_trials() == 1
        assert host.study_attr("policy") is None
        host.set_study_attr("policy", {"path": "policies/x.zip"})
        assert host.study_attr("policy") == {"path": "policies/x.zip"}
        note = tmp_path / "note.txt"
        note.write_text("kept with the search\n")
        host.log_artifact(note, "policy")
        parent = session.parent_run_id
    assert load_study_record(store, session.study_name).attrs["policy"] == {
        "path": "policies/x.zip"
    }
    listed = store.mlflow_client().list_artifacts(parent, "policy")
    assert [a.path for a in listed] == ["policy/note.txt"]


class AgentRegistered:
    """Registers :class:`ReplayAgent` under ``name`` for the block."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        AGENTS[self.name] = f"{__name__}:ReplayAgent"

    def __exit__(self, *exc: object) -> None:
        AGENTS.pop(self.name, None)


def test_an_external_agent_plugs_in_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(AGENTS, "replay", f"{__name__}:ReplayAgent")
    store = fresh_store(tmp_path / "store")
    summary = run_search(tiny_spec(agent="replay", trials=2), store=store)
    record = load_study_record(store, summary.study)
    assert record.counts() == {"COMPLETE": 2}
    assert [t.user_attrs[M.ACTIVE_FRACTION] for t in record.trials] == [1.0, 0.5]
    assert [t.params for t in record.trials] == [
        {
            "body.0.start": 1.0,
            "body.0.end": 1.0,
            "body.1.start": 1.0,
            "body.1.end": 1.0,
            "t0": 0.0,
            "span": 1.0,
        },
        {
            "body.0.start": 0.5,
            "body.0.end": 0.5,
            "body.1.start": 0.5,
            "body.1.end": 0.5,
            "t0": 0.0,
            "span": 1.0,
        },
    ]
    _, children = runs(store, summary.study)
    assert len(children) == 2


# --------------------------------------------------------------------------- the store


def test_store_location_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert open_store().root == tmp_path / "midl_runs"
    monkeypatch.setenv("MIDL_AUTOK_HOME", str(tmp_path / "home"))
    assert open_store().root == tmp_path / "home"
    assert open_store(tmp_path / "x").root == tmp_path / "x"  # --store wins
    store = open_store(tmp_path / "x", storage="sqlite:///elsewhere.db")
    assert store.storage_url == "sqlite:///elsewhere.db"
    assert not store.embedded_optuna
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    remote = open_store(tmp_path / "x")
    assert remote.tracking_uri == "http://127.0.0.1:5000"
    assert remote.artifact_location is None
    with pytest.raises(StoreError, match="--storage must be a URL"):
        open_store(storage="optuna.db")
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="exists but is not a folder"):
        open_store(tmp_path / "file").ensure_writable()
    with pytest.raises(StoreError, match=r"no search results in .*run `midl-autok search"):
        open_store(tmp_path / "empty").require_studies()
    assert "***" in open_store(storage="postgresql://u:secret@h/db").describe()["optuna_storage"]


def test_unknown_study_has_a_did_you_mean(searched: tuple[Store, SearchSummary]) -> None:
    store, summary = searched
    with pytest.raises(StoreError, match=f"did you mean '{summary.study}'"):
        load_study_record(store, summary.study[:-1])
    assert load_study_record(store).name == summary.study  # the only study: no name needed
