"""`midl-autok search --confirm N` and what `pareto`, `export` and `report` show of it, as a
user runs them (real subprocesses); the bad input of issue 16 (``--confirm`` and
``--seed-grid`` out of range, FLOPs targets below the model's floor): one line, exit status 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from clikit import assert_user_error, run_cli
from test_cli_search import SEARCH

from midl_autok.results.confirmed import is_confirmation
from midl_autok.results.record import CONFIRMED_KEYS, POINT_KEYS, load_study_record
from midl_autok.store import open_store


@pytest.fixture(autouse=True, scope="module")
def _no_compile() -> Any:
    """PyTorch ops instead of the CPU kernels (same results): these tests are about what a
    search records, and a kernel build another process holds the lock of would stall them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MIDL_AUTOK_NO_EXTENSIONS", "1")
        yield


FLOOR = r"the gate and light paths and the non-MID-L layers cost"
CONFIRM = r"--confirm must be an integer with 0 <= N <= 20 \(seeds\), but got "


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--confirm", "-1"], CONFIRM + "-1$"),
        (["--confirm", "21"], CONFIRM + "21$"),
        (["--seed-grid", "-2"], r"--seed-grid must be an integer >= 0, but got -2$"),
        (["--trials", "3", "--seed-grid", "4"], r"--seed-grid must be at most --trials \(3\)"),
        # synthetic-mlp (2 x 64, gate and light rank 16): 0.615 of dense with k = 1 everywhere
        (["--flops-budget", "0.3"], rf"--flops-budget .*>= 0\.615, what {FLOOR}.*got 0\.3$"),
    ],
)  # fmt: skip
def test_bad_search_input_is_one_line_and_exit_2(
    args: list[str], pattern: str, tmp_path: Path
) -> None:
    proc = run_cli(*SEARCH, *args, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert_user_error(proc, pattern)
    assert not (tmp_path / "store" / "optuna.db").exists()  # refused before anything ran


def test_a_budget_space_target_below_the_floor_names_it(tmp_path: Path) -> None:
    shipped = run_cli("experiments", "synthetic-mlp").stdout
    spec = shipped.replace(
        "space: linear\n  options: {}", "space: budget\n  options: {min_budget: 0.05}"
    )
    assert "min_budget: 0.05" in spec
    path = tmp_path / "low.yaml"
    path.write_text(spec)
    proc = run_cli("search", str(path), "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert_user_error(proc, rf"min_budget must be >= 0\.6\d*, .*; {FLOOR} 0\.615 .*got 0\.05$")


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("confirmed") / "runs"
    proc = run_cli(*SEARCH, "--trials", "4", "--confirm", "2", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    front = len(load_study_record(open_store(store), study_of(store)).front())
    line = f"4 new trial(s), {2 * front} confirmation retraining(s) of the front in"
    assert line in " ".join(proc.stdout.split())  # the search's trials, the retrainings apart
    # the confirm phase has its own progress (stderr is not a terminal: one line per trial)
    assert f"retraining the front with more seeds: {2 * front} confirmation trial(s)" in (
        " ".join(proc.stderr.split())
    )
    lines = [x for x in proc.stderr.splitlines() if re.match(r"search \d+/\d+ .* confirm: acc ", x)]
    assert [x.split()[1] for x in lines] == [f"{i}/{2 * front}" for i in range(1, 2 * front + 1)]
    return store, study_of(store)


def study_of(store: Path) -> str:
    (study,) = [p.name for p in open_store(store).reports_dir.iterdir() if p.is_dir()]
    return study


def test_studies_counts_the_confirmations_apart(confirmed: tuple[Path, str]) -> None:
    store, study = confirmed
    front = len(load_study_record(open_store(store), study).front())
    (row,) = json.loads(run_cli("studies", "--store", str(store), "--json").stdout)
    assert (row["complete"], row["failed"]) == (4, 0)  # the search's 4 trials, not 4 + 2 x front
    assert (row["confirmations"], row["confirmed"]) == (2 * front, front)
    table = run_cli("studies", "--store", str(store)).stdout
    assert "confirmed" in table


def test_pareto_shows_mean_and_sd_over_the_seeds(confirmed: tuple[Path, str]) -> None:
    store, study = confirmed
    record = load_study_record(open_store(store), study)
    front = record.front()
    assert len([t for t in record.trials if is_confirmation(t)]) == 2 * len(front)
    points = json.loads(run_cli("pareto", "--store", str(store), "--json").stdout)
    assert [p["trial"] for p in points] == [t.number for t in front]
    for p in points:
        assert list(p) == [*POINT_KEYS, "mlflow_run_id", *CONFIRMED_KEYS, "knee"]
        assert p["confirm_seeds"] == 3
        assert 0 <= p["val_accuracy_sd"] <= 1
    table = run_cli("pareto", "--store", str(store)).stdout
    assert "val acc mean ± sd" in table
    c = record.confirmed()[front[0].number]
    assert f"{c.mean['val_accuracy']:.4f} ± {c.sd['val_accuracy']:.4f}" in table


def test_export_picks_from_the_confirmed_means(confirmed: tuple[Path, str], tmp_path: Path) -> None:
    store, study = confirmed
    record = load_study_record(open_store(store), study)
    means = record.confirmed()
    best = max(means.values(), key=lambda c: c.mean["val_accuracy"])
    proc = run_cli(
        "export", "--store", str(store), "--pick", "max-accuracy", "-o", "best.json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "(mean of 3 seeds" in proc.stdout
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["provenance"]["trial"] == best.trial
    assert exported["metrics"]["val_accuracy_mean"] == pytest.approx(best.mean["val_accuracy"])
    assert exported["metrics"]["confirm_seeds"] == 3
    assert exported["provenance"]["confirmed"]["seeds"] == [0, 1, 2]


def test_report_draws_the_confirmed_means(confirmed: tuple[Path, str], tmp_path: Path) -> None:
    store, _ = confirmed
    proc = run_cli("report", "--store", str(store), "-o", "r.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r.html").read_text()
    assert '"kind":"confirmed"' in page.replace(" ", "")  # the front figure's trace
    assert "val accuracy mean ± sd" in page  # the front table's column
