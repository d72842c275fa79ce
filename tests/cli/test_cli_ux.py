"""What a new user meets at the command line: help text, one-line errors, Ctrl-C and
SIGTERM, `train --threads/--force`, and `midl-autok show` (issue 17, points 11, 12, 14-16).

Commands run for real: in a subprocess where signals, exit statuses or stderr matter, else
in-process through :func:`midl_autok.cli.main`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clikit import EXE, cli_env, run_cli
from searchkit import completed_trials, fresh_store, quiet, tiny_spec

from midl_autok.cli import main

TINY = ["train", "synthetic-mlp", "--epochs", "2", "--device", "cpu"]


def env(**extra: str) -> dict[str, str]:
    # no GPU, even on a machine that has one
    return cli_env(**{"CUDA_VISIBLE_DEVICES": "", **extra})


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env())


def assert_user_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Exit status 2 and exactly one line on stderr (no blank line first), no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), repr(proc.stderr)
    assert re.search(pattern, proc.stderr), proc.stderr


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``midl-autok ARGS`` run by :func:`main`."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0), out, err


# -- --help -----------------------------------------------------------------------------------

COMMANDS = ("train", "search", "studies", "pareto", "export", "show", "report", "dashboard")


@pytest.mark.parametrize("command", ["", *COMMANDS, "experiments"])
def test_help_shows_meaningful_metavars(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = in_process(capsys, *([command] if command else []), "--help")
    assert code == 0
    # typer's own labels: <bool> for every flag (--help included), <str>, <int range>, ...
    assert not re.search(r"<(bool|str|int|float|path)[^>]*>", out), out
    assert re.search(r"--help\s+Show this message", out), out  # a flag: no metavar
    if command == "train":
        for option, metavar in (
            ("--schedule", "FILE"),
            ("--data-path", "PATH"),
            ("--epochs", "N"),
            ("--k-fraction", "F"),
            ("--threads", "N"),
            ("--device", "auto|cpu|cuda|cuda:N"),
        ):
            assert re.search(rf"{option}\s+{re.escape(metavar)}\s", out), option
        assert re.search(r"--json\s+Print only", out)
        assert "[EXPERIMENT]" in out  # the usage line names the argument as the help does
    if command == "search":  # options without a metavar of their own: by type, else name
        assert re.search(r"--trials\s+N\s", out) and re.search(r"--flops-budget\s+X\s", out)
        assert re.search(r"--agent\s+AGENT\s", out)
    if command == "show":
        assert re.search(r"--study\s+STUDY\s", out) and "{TRIAL}" in out


# -- one line, no blank line first ----------------------------------------------------------


def test_errors_after_a_progress_display_are_one_line(tmp_path: Path) -> None:
    # rich's progress display printed a blank line when it stopped on a non-terminal
    assert_user_error(run(*TINY, "--device", "cuda"), r"CUDA is not available")
    search = run(
        "search", "synthetic-mlp", "--epochs", "1", "--trials", "1", "--device", "cuda",
        "--store", str(tmp_path / "runs"),
    )  # fmt: skip
    assert_user_error(search, r"CUDA is not available")


def test_variant_is_answered_in_the_flags_words() -> None:
    proc = run(*TINY, "--variant", "dnse")
    assert_user_error(
        proc,
        r"^midl-autok: error: --variant must be one of midl, dense, dropout, but got 'dnse' "
        r"\(did you mean 'dense'\?\)$",
    )


def test_a_name_in_the_wrong_case_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(capsys, "search", "synthetic-mlp", "--agent", "PPO", "--trials", "1")
    assert code == 2
    assert "unknown agent 'PPO'; did you mean 'ppo'?" in err, err


def test_a_missing_data_path_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = in_process(capsys, "train", "mnist-cnn", "--epochs", "1")
    assert code == 2
    assert err.count("\n") == 1, err
    assert "give a directory with --data-path PATH" in err and "pass path=" not in err, err


def test_search_on_a_study_that_has_its_trials_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("search", "synthetic-mlp", "--epochs", "1", "--trials", "1", "--device", "cpu")
    store = ("--store", str(tmp_path / "runs"), "--study", "full")
    code, _, err = in_process(capsys, *args, *store)
    assert code == 0, err
    code, out, err = in_process(capsys, *args, *store)
    assert code == 0, err
    assert (
        "study full already has 1 trial(s), and --trials 1 counts them all: nothing new to run"
        in err
    )
    assert "1/1" in err and "2/1" not in err
    assert "0 new trial(s)" in out


# -- train --threads ----------------------------------------------------------------------------


def test_train_threads_is_applied_and_printed() -> None:
    one = run(*TINY)  # the default, as for search
    assert one.returncode == 0, one.stderr
    assert "per-epoch metrics (1 torch thread(s))" in one.stdout
    three = run(*TINY, "--threads", "3")
    assert three.returncode == 0, three.stderr
    assert "per-epoch metrics (3 torch thread(s))" in three.stdout
    assert_user_error(run(*TINY, "--threads", "0"), r"--threads must satisfy 1 <= N <= 1024")


# -- train --schedule from another model ---------------------------------------------------------


def test_schedule_of_another_model_is_an_error_unless_forced(tmp_path: Path) -> None:
    from midl_autok.spec import load_spec

    saved = tmp_path / "s.json"
    made = run(*TINY, "--k-fraction", "0.5", "--json", "--save-schedule", str(saved))
    assert made.returncode == 0, made.stderr
    doc = json.loads(saved.read_text())
    assert doc["model"]["signature"]
    spec = load_spec("synthetic-mlp")
    assert spec.model.gate_rank != 4
    doc["provenance"]["spec"] = spec.model_dump(mode="json")
    saved.write_text(json.dumps(doc))
    ours = run(*TINY, "--schedule", str(saved), "--json")  # the same model replays
    assert ours.returncode == 0, ours.stderr

    # same layer names and widths (64, 64), another gate rank: another model
    other = run(*TINY, "--schedule", str(saved), "--gate-rank", "4", "--json")
    assert_user_error(
        other,
        rf"{re.escape(str(saved))}: the schedule was made for another model: model signature "
        rf"{doc['model']['signature']} in the schedule, [0-9a-f]{{16}} for this mlp model "
        rf"\(model\.gate_rank {spec.model.gate_rank} in the schedule's experiment, 4 here\); "
        r"pass --force",
    )
    forced = run(*TINY, "--schedule", str(saved), "--gate-rank", "4", "--json", "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.count("\n") == 1
    assert forced.stderr.startswith("midl-autok: warning: ") and "--force" in forced.stderr
    assert json.loads(forced.stdout)["active_fraction"] == 0.5
    assert_user_error(run(*TINY, "--force"), r"--force applies to --schedule")


# -- Ctrl-C and SIGTERM ---------------------------------------------------------------------------


def _training(pid: int) -> bool:
    """True once the process handles SIGTERM (main() installs its handler) and has loaded
    torch (the train command imports it after registering its interrupt note)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    caught = [int(line.split()[1], 16) for line in status if line.startswith("SigCgt:")]
    if not caught or not caught[0] >> (signal.SIGTERM - 1) & 1:
        return False
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _signal_when(args: list[str], ready: Callable[[int], bool], sig: int) -> tuple[int, str, str]:
    """Start ``midl-autok ARGS``, send ``sig`` once ``ready(pid)``; (status, stdout, stderr)."""
    proc = subprocess.Popen(
        [*EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env()
    )
    try:
        deadline = time.monotonic() + 300
        while not ready(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        (signal.SIGINT, 130, "midl-autok: interrupted; "),
        (signal.SIGTERM, 143, "midl-autok: interrupted by SIGTERM; "),
    ],
)
def test_an_interrupted_train_prints_one_line(sig: int, code: int, line: str) -> None:
    args = ["train", "synthetic-mlp", "--epochs", "5000", "--device", "cpu", "--json"]
    status, out, err = _signal_when(args, _training, sig)
    assert status == code, err
    assert out == ""
    assert err == f"{line}nothing was written; rerun the command to train from the start\n"


def test_an_interrupted_search_says_what_was_kept(tmp_path: Path) -> None:
    db = tmp_path / "runs" / "optuna.db"
    search = ["search", "synthetic-mlp", "--epochs", "2", "--agent", "random", "--trials", "50"]
    status, _, err = _signal_when(
        [*search, "--store", str(db.parent)],
        lambda pid: db.exists() and completed_trials(db) >= 1,
        signal.SIGTERM,
    )
    assert status == 143, err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(
        r"midl-autok: interrupted by SIGTERM; (\d+) completed trials? kept; "
        r"rerun the same command to continue",
        last,
    )
    assert found, err
    assert int(found.group(1)) == completed_trials(db) >= 1  # as counted after exit
    assert err.count("\n") == len(err.splitlines())  # every line ended (the bar's too)
    assert "Traceback" not in err


# -- midl-autok show ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with study 'first' (3 trials), then study 'second' (2 trials, the latest)."""
    from midl_autok.backends import run_search

    quiet()
    root = tmp_path_factory.mktemp("show") / "runs"
    store = fresh_store(root)
    run_search(tiny_spec(trials=3, seed=1), store=store, study="first", device="cpu")
    run_search(tiny_spec(trials=2, seed=2), store=store, study="second", device="cpu")
    return root


def test_show_prints_a_trial_and_its_k_table(
    two_studies: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from midl_autok.store import load_study_record, open_store

    monkeypatch.setenv("COLUMNS", "200")
    record = load_study_record(open_store(two_studies), "first")
    trial = record.trials[1]
    code, out, err = in_process(
        capsys, "show", "--store", str(two_studies), "--study", "first", "1"
    )
    assert code == 0, err
    assert err == ""  # --study given: nothing to announce
    assert out.startswith("study first, trial 1: COMPLETE")
    acc = trial.user_attrs["val_accuracy"]
    assert f"values: val_accuracy {acc:.4f} (maximize)" in out
    assert re.search(rf"inference_flops\s+\S*\s+{trial.user_attrs['inference_flops']:,}", out)
    k = trial.user_attrs["schedule"]["k"]
    for name, row in zip(("body.0", "body.1"), k, strict=True):  # layers x epochs
        assert re.search(rf"{name} \(32\)\s+\S\s+{row[0]}\s+\S\s+{row[1]}\s", out), out


def test_show_json_and_the_latest_study(
    two_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from midl_autok.store import load_study_record, open_store

    code, out, err = in_process(capsys, "show", "--store", str(two_studies), "0", "--json")
    assert code == 0, err
    latest = f"the latest of 2 in {two_studies}; choose one with --study NAME"
    assert err == f"midl-autok: study second ({latest})\n"
    shown = json.loads(out)
    trial = load_study_record(open_store(two_studies), "second").trials[0]
    assert shown["study"] == "second" and shown["trial"] == 0 and shown["state"] == "COMPLETE"
    assert shown["values"] == dict(
        zip(["val_accuracy", "inference_flops"], trial.values, strict=True)
    )
    assert shown["schedule"] == trial.user_attrs["schedule"]
    assert shown["metrics"]["val_accuracy"] == trial.user_attrs["val_accuracy"]
    assert shown["attrs"]["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]


def test_show_unknown_trial_is_one_line(two_studies: Path) -> None:
    proc = run("show", "--store", str(two_studies), "--study", "first", "7")
    assert_user_error(
        proc, r"^midl-autok: error: study first has no trial 7; its trials are numbered 0-2\n$"
    )
    missing = run("show", "--store", str(two_studies), "--study", "frist", "0")
    assert_user_error(missing, r"did you mean 'first'")


# -- pareto / export without --study, export --threads (points 10, 11, 15) ----------------------


def test_pareto_and_export_use_the_latest_study_and_name_it(
    two_studies: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    latest = f"midl-autok: study second (the latest of 2 in {two_studies}; choose one with"
    code, out, err = in_process(capsys, "pareto", "--store", str(two_studies), "--json")
    assert code == 0, err
    assert err.startswith(latest) and err.count("\n") == 1
    assert {p["trial"] for p in json.loads(out)} <= {0, 1}  # study 'second' has 2 trials
    target = tmp_path / "knee.json"
    code, out, err = in_process(capsys, "export", "--store", str(two_studies), "-o", str(target))
    assert code == 0, err
    assert err.startswith(latest)
    assert json.loads(target.read_text())["provenance"]["study"] == "second"


def test_pareto_marks_the_knee_in_its_title_and_json(
    two_studies: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = in_process(capsys, "pareto", "--store", str(two_studies), "--study", "first")
    assert code == 0, err
    assert "(* = knee)" in out.splitlines()[0] + out.splitlines()[1]
    code, out, err = in_process(
        capsys, "pareto", "--store", str(two_studies), "--study", "first", "--json"
    )
    points = json.loads(out)
    assert sum(p["knee"] for p in points) == 1


def test_pareto_names_the_trials_over_the_flops_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from midl_autok.backends import run_search
    from midl_autok.store import load_study_record

    quiet()
    monkeypatch.setenv("COLUMNS", "200")
    store = fresh_store(tmp_path / "runs")
    spec = tiny_spec(trials=4, seed=3, agent="random", flops_budget=0.6)
    run_search(spec, store=store, study="budget", device="cpu")
    record = load_study_record(store, "budget")
    over = len(record.completed()) - len(record.feasible())
    assert over > 0  # random k: some schedules cost more than 0.6x dense
    code, out, err = in_process(capsys, "pareto", "--store", str(tmp_path / "runs"))
    assert code == 0, err
    assert f"; {over} over the FLOPs budget left out" in " ".join(out.split())


def test_studies_compare_two_studies(
    two_studies: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from midl_autok.store import load_study_record, open_store

    monkeypatch.setenv("COLUMNS", "200")
    root = str(two_studies)
    code, out, err = in_process(
        capsys, "studies", "--store", root, "--compare", "first", "second", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    first = load_study_record(open_store(two_studies), "first")
    second = load_study_record(open_store(two_studies), "second")
    # equal trial counts: "second" has only 2 trials, so it has no value at 3
    assert data["hypervolume_normalized"] == [
        {"trials": 3, "first": first.normalized_hypervolume(), "second": None}
    ]
    for name, mine, other in (("first", first, second), ("second", second, first)):
        points = [
            (t.user_attrs["val_accuracy"], t.user_attrs["inference_flops_ratio"])
            for t in mine.front()
        ]
        theirs = [
            (t.user_attrs["val_accuracy"], t.user_attrs["inference_flops_ratio"])
            for t in other.front()
        ]
        beaten = sum(any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in theirs) for p in points)
        assert data["front_dominance"][name] == {"front": len(points), "dominated_by_other": beaten}
    for row in data["by_flops_ratio"]:
        accs = {k: row[k] for k in ("first", "second") if row[k] is not None}
        assert row["better"] in ("tie", max(accs, key=lambda k: accs[k]))
    code, out, err = in_process(capsys, "studies", "--store", root, "--compare", "first", "second")
    assert code == 0, err
    assert "normalized hypervolume after the first N trials" in " ".join(out.split())
    assert "front points of first are dominated by second's front" in " ".join(out.split())
    code, _, err = in_process(capsys, "studies", "--store", root, "--compare", "first", "first")
    assert code == 2 and "two different studies" in err
    code, _, err = in_process(capsys, "studies", "--store", root, "--compare", "first", "secnd")
    assert code == 2 and "did you mean 'second'" in err, err


def test_export_unknown_trial_lists_the_completed_ones(two_studies: Path, tmp_path: Path) -> None:
    proc = run("export", "--store", str(two_studies), "--study", "first", "--trial", "999",
               "-o", str(tmp_path / "x.json"))  # fmt: skip
    assert_user_error(proc, r"study first has no completed trial 999; completed: 0, 1, 2\n$")


def test_export_threads_is_checked() -> None:
    proc = run("export", "--threads", "0", "-o", "x.json", "--model", "m.pt2")
    assert_user_error(proc, r"--threads must satisfy 1 <= N <= \d+, but got 0")
