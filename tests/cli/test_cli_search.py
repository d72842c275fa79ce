"""`midl-autok search | studies | pareto | export` as a user runs them: real subprocesses.

The main test kills a running search with SIGKILL, reruns the same command (only the
missing trials run), exports the knee and replays it with `midl-autok train --schedule`.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
from clikit import EXE, assert_user_error, cli_env, run_cli, started, wait_until
from searchkit import completed_trials, quiet, runs

from midl_autok.results.record import list_studies, load_study_record
from midl_autok.store import open_store

# synthetic-mlp (2 x 64 MLP, 2,000 samples), 2 epochs: well under a second per trial
SEARCH = ["search", "synthetic-mlp", "--epochs", "2", "--agent", "random", "--space", "cubic"]
STUDY_PREFIX = "synthetic-mlp-random-cubic-seed0-"


def start_and_stop_after(store: Path, trials: int, done: int, sig: signal.Signals) -> int:
    """Start a search, send ``sig`` once ``done`` trials completed; return its exit code."""
    with started([*EXE, *SEARCH, "--trials", str(trials), "--store", str(store)]) as proc:
        wait_until(proc, lambda: completed_trials(store / "optuna.db") >= done)
        proc.send_signal(sig)
        return proc.wait(timeout=120)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store whose search was killed (SIGKILL) after 2 trials and then rerun to 5."""
    quiet()
    store = tmp_path_factory.mktemp("cli") / "runs"
    code = start_and_stop_after(store, trials=5, done=2, sig=signal.SIGKILL)
    assert code == -signal.SIGKILL
    proc = run_cli(*SEARCH, "--trials", "5", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    study = re.search(r"Pareto front of (\S+):", out)
    assert study is not None, out
    assert study.group(1).startswith(STUDY_PREFIX)  # --epochs 2 differs from the shipped spec
    assert f"store: {store}" in out
    assert f"optuna-dashboard sqlite:///{store}/optuna.db" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{store}/mlflow.db" in out
    assert f"midl-autok dashboard --store {store}" in out
    return store, study.group(1)


def test_killed_search_resumes_without_losing_or_duplicating(searched: tuple[Path, str]) -> None:
    store_dir, study = searched
    store = open_store(store_dir)
    record = load_study_record(store, study)
    states = [t.state.name for t in record.trials]
    assert states.count("COMPLETE") == 5  # the target, not more
    assert len(record.trials) - 5 == states.count("FAIL") <= 1  # the trial killed mid-way
    for t in record.trials:
        if t.state.name == "FAIL":
            assert t.user_attrs["fail_reason"].startswith("interrupted: process")
    parents, children = runs(store, study)
    # one child run per trial that reached training (SIGKILL may land between the two)
    with_run = [
        t.user_attrs["mlflow_run_id"] for t in record.trials if "mlflow_run_id" in t.user_attrs
    ]
    assert len(with_run) >= 5
    assert sorted(c.info.run_id for c in children) == sorted(with_run)
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]  # none left RUNNING
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)


def test_rank_options_reach_the_searched_model(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    argv = [*SEARCH, "--epochs", "1", "--trials", "1", "--store", str(store)]
    proc = run_cli(*argv, "--gate-rank", "4", "--light-rank", "0")
    assert proc.returncode == 0, proc.stderr
    record = load_study_record(open_store(store))  # the only study
    assert record.attrs["spec"]["model"]["gate_rank"] == 4
    assert record.attrs["spec"]["model"]["light_rank"] == 0
    plain = run_cli(*argv)  # another setup, so another study
    assert plain.returncode == 0, plain.stderr
    assert len(list_studies(open_store(store))) == 2


def test_studies_pareto_export_and_replay(searched: tuple[Path, str], tmp_path: Path) -> None:
    store, study = searched
    listing = run_cli("studies", "--store", str(store), "--json")
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)
    assert (row["study"], row["agent"], row["space"], row["complete"]) == (
        study,
        "random",
        "cubic",
        5,
    )
    table = run_cli("studies", "--store", str(store))
    assert study in table.stdout
    # piped without COLUMNS (a log file, `| tee`): the whole table, not rich's 80 columns
    bare = {k: v for k, v in cli_env().items() if k != "COLUMNS"}
    piped = subprocess.run(
        [*EXE, "studies", "--store", str(store)], capture_output=True, text=True, env=bare
    )
    assert piped.returncode == 0, piped.stderr
    (line,) = [row for row in piped.stdout.splitlines() if study in row]
    assert line.rstrip().endswith("│") and "best acc" in piped.stdout
    front = run_cli("pareto", "--store", str(store), "--study", study, "--json")
    assert front.returncode == 0, front.stderr
    points = json.loads(front.stdout)
    assert points
    for p in points:
        assert {
            "trial",
            "val_accuracy",
            "test_accuracy",
            "inference_flops",
            "inference_flops_ratio",
        } <= set(p)
    assert "Pareto front of" in run_cli("pareto", "--store", str(store)).stdout  # the only study

    out = tmp_path / "knee.json"
    export = run_cli(
        "export", "--store", str(store), "--study", study, "--pick", "knee", "-o", str(out)
    )
    assert export.returncode == 0, export.stderr
    assert f"replay: midl-autok train --schedule {out}" in export.stdout
    exported = json.loads(out.read_text())
    prov = exported["provenance"]
    assert prov["study"] == study
    assert prov["agent"] == "random"
    assert prov["seed"] == 0
    assert prov["spec"]["training"]["epochs"] == 2
    assert prov["experiment"] == "synthetic-mlp"
    replay = run_cli("train", "--schedule", str(out), "--json", "--device", "cpu")
    assert replay.returncode == 0, replay.stderr
    metrics = json.loads(replay.stdout)
    assert metrics["val_accuracy"] == exported["metrics"]["val_accuracy"]
    assert metrics["inference_flops"] == exported["metrics"]["inference_flops"]

    some = min(t.number for t in load_study_record(open_store(store), study).completed())
    by_number = tmp_path / "trial.json"
    chosen = run_cli("export", "--store", str(store), "--trial", str(some), "-o", str(by_number))
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(by_number.read_text())["provenance"]["trial"] == some
    model_file = tmp_path / "model.pt2"
    with_model = run_cli(
        "export",
        "--store",
        str(store),
        "--trial",
        str(some),
        "-o",
        str(by_number),
        "--model",
        str(model_file),
    )
    assert with_model.returncode == 0, with_model.stderr
    table = " ".join(with_model.stdout.split())
    assert "MID-L speed-up" in table and "exported speed-up" in table and "|" not in table
    assert "above 1x is faster than dense" in table
    timing = json.loads((tmp_path / "model.pt2.latency.json").read_text())
    assert [r["batch"] for r in timing["rows"]] == [1, 16, 256]
    assert all(r["dense_ms"] > 0 and r["midl_ms"] > 0 for r in timing["rows"])
    for r in timing["rows"]:  # speed-up reads higher = better: dense time over MID-L time
        assert r["midl_speedup"] == pytest.approx(r["dense_ms"] / r["midl_ms"])
        assert f"{r['midl_speedup']:.2f}x" in table
    from midl_autok.deploy import load_model

    deployed = load_model(model_file)
    exported_k = json.loads(by_number.read_text())["k"]
    assert deployed.current_k() == {f"body.{i}": row[-1] for i, row in enumerate(exported_k)}
    missing = run_cli("export", "--store", str(store), "--trial", "999", "-o", str(by_number))
    assert missing.returncode == 2 and "has no completed trial 999" in missing.stderr

    yaml_out = tmp_path / "cheap.yaml"
    cheap = run_cli("export", "--store", str(store), "--pick", "min-flops", "-o", str(yaml_out))
    assert cheap.returncode == 0, cheap.stderr
    assert yaml_out.read_text().startswith("format: midl-autok/kschedule")


def test_sigterm_ends_the_search_cleanly(tmp_path: Path) -> None:
    store_dir = tmp_path / "runs"
    code = start_and_stop_after(store_dir, trials=50, done=1, sig=signal.SIGTERM)
    assert code == 143  # 128 + SIGTERM
    store = open_store(store_dir)
    (study,) = [p.name for p in store.reports_dir.iterdir() if p.is_dir()]  # Pareto files written
    record = load_study_record(store, study)
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in record.trials)  # none RUNNING
    parents, children = runs(store, study)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["search", "--agent", "tpx"], r"unknown agent 'tpx'; did you mean 'tpe'\?"),
        (["search", "--space", "cosin"], r"unknown search space 'cosin'; did you mean 'cosine'"),
        (["search", "--trials", "0"], r"--trials must be an integer >= 1, but got 0"),
        (["search", "--flops-budget", "2"], r"--flops-budget must satisfy 0 < R <= 1 .* got 2"),
        (["search", "--threads", "0"], r"--threads must satisfy 1 <= N <= 1024, but got 0"),
        (
            ["search", "--seed-grid", "-1"],
            r"--seed-grid must be an integer >= 0, but got -1$",
        ),
        (
            ["search", "--trials", "4", "--seed-grid", "5"],
            r"--seed-grid must be at most --trials \(4\): it gives the first N trials, but got 5$",
        ),
        (["search", "--seed-grid", "31"], r"--seed-grid must be at most --trials \(30\)"),
        (["search", "digts-mlp"], r"unknown experiment 'digts-mlp'; did you mean 'digits-mlp'"),
        (["search", "--storage", "optuna.db"], r"--storage must be a URL"),
        (["search", "--trials", "two"], r"Invalid value for '--trials'"),
        (["pareto", "--store", "{empty}"], r"no search results in .*run `midl-autok search"),
        (["studies", "--store", "{empty}"], r"no search results in"),
        (["export", "--store", "{empty}", "-o", "x.json"], r"no search results in"),
        (["export", "--pick", "kne", "-o", "x.json"], r"unknown --pick 'kne'; did you mean 'knee'"),
        (["export", "--max-flops-ratio", "-1", "-o", "x.json"], r"--max-flops-ratio must be"),
        (["export"], r"Missing option '--output'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], pattern: str, tmp_path: Path) -> None:
    args = [a.replace("{empty}", str(tmp_path / "nothing")) for a in args]
    assert_user_error(run_cli(*args, cwd=tmp_path), pattern)


def test_bad_input_against_a_real_store(searched: tuple[Path, str], tmp_path: Path) -> None:
    store, study = searched
    assert_user_error(
        run_cli("pareto", "--store", str(store), "--study", study[:-1]),
        rf"unknown study in {re.escape(str(store))} '{re.escape(study[:-1])}'; did you mean",
    )
    assert_user_error(
        run_cli(
            "export",
            "--store",
            str(store),
            "--max-flops-ratio",
            "0.0001",
            "-o",
            "x.json",
            cwd=tmp_path,
        ),
        r"no trial of study .* has inference_flops_ratio <= 0\.0001; the lowest is",
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(
        run_cli(*SEARCH, "--trials", "1", "--store", str(blocker)),
        r"the store .*file exists but is not a folder; choose another folder with --store",
    )
    assert_user_error(
        run_cli(*SEARCH, "--trials", "1", "--store", str(store), "--study", study, "--epochs", "3"),
        r"was made for another setup: training\.epochs is 2 there but 3 here",
    )


def test_seed_grid_from_the_command_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    args = ["search", "synthetic-mlp", "--epochs", "1", "--agent", "tpe", "--space", "budget"]
    proc = run_cli(*args, "--trials", "3", "--seed-grid", "2", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    (study,) = list_studies(open_store(store))
    trials = load_study_record(open_store(store), study).trials
    assert [t.user_attrs.get("seed_grid") for t in trials] == [0, 1, None]
    assert [t.user_attrs.get("seed_grid_fraction") for t in trials[:2]] == [1.0, 0.05]
