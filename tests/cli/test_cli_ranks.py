"""``midl-autok search --search-ranks``: the ranks are searched, recorded (Optuna trial, MLflow
child run), exported, and replayed exactly by ``train --schedule``; bad input is one line and
exit status 2. Runs the real commands in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from clikit import assert_user_error, run_cli
from searchkit import quiet, runs

from midl_autok.results.record import load_study_record
from midl_autok.schedule import KSchedule
from midl_autok.store import open_store

SEARCH = [
    "search",
    "synthetic-mlp",
    "--epochs",
    "1",
    "--agent",
    "random",
    "--space",
    "budget",
    "--seed-grid",
    "0",
    "--search-ranks",
]


def test_rank_co_search_records_the_ranks_and_replays_exactly(tmp_path: Path) -> None:
    quiet()
    store = tmp_path / "runs"
    proc = run_cli(*SEARCH, "--trials", "3", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    record = load_study_record(open_store(store))  # the only study
    assert record.attrs["spec"]["search"]["ranks"] is True
    assert record.attrs["space_options"]["ranks"] is True
    done = record.completed()
    assert len(done) == 3
    seen = set()
    for trial in done:
        schedule = KSchedule.from_dict(trial.user_attrs["schedule"])
        assert set(schedule.ranks) == {"body.0", "body.1"}
        assert {"body.0.gate_rank", "body.0.light_rank"} <= set(trial.params)
        seen.add(tuple(sorted(schedule.ranks.items())))
    assert len(seen) > 1  # the ranks are searched, not the spec's for every trial

    _, children = runs(open_store(store), record.name)
    assert len(children) == 3
    by_trial = {t.number: KSchedule.from_dict(t.user_attrs["schedule"]) for t in done}
    for child in children:
        params = child.data.params
        ranks = {
            layer: (
                int(params[f"ranks.{layer}.gate_rank"]),
                int(params[f"ranks.{layer}.light_rank"]),
            )
            for layer in ("body.0", "body.1")
        }
        assert ranks == by_trial[int(child.data.tags["trial"])].ranks

    # Export the trial with the most unusual ranks and replay it: same model, same metrics.
    pick = max(done, key=lambda t: len(set(by_trial[t.number].ranks.values())))
    out = tmp_path / "ranked.json"
    export = run_cli("export", "--store", str(store), "--trial", str(pick.number), "-o", str(out))
    assert export.returncode == 0, export.stderr
    exported = json.loads(out.read_text())
    assert KSchedule.from_dict(exported).ranks == by_trial[pick.number].ranks
    replay = run_cli("train", "--schedule", str(out), "--json", "--device", "cpu")
    assert replay.returncode == 0, replay.stderr
    metrics = json.loads(replay.stdout)
    for key in ("val_accuracy", "test_accuracy", "inference_flops"):
        assert metrics[key] == exported["metrics"][key], key

    # A schedule file with broken ranks: one line, exit 2.
    exported["ranks"]["body.0"]["light_rank"] = -1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(exported))
    assert_user_error(
        run_cli("train", "--schedule", str(bad), "--device", "cpu"),
        r"gate_rank >= 1 and light_rank >= 0 .* light_rank=-1",
    )


def test_rank_co_search_needs_a_sampler_agent(tmp_path: Path) -> None:
    proc = run_cli(
        "search", "synthetic-mlp", "--agent", "fixed-k", "--search-ranks", "--trials", "2",
        "--store", str(tmp_path / "runs"),
    )  # fmt: skip
    assert_user_error(proc, r"--search-ranks \(search.ranks\) needs an agent that samples")


def test_bad_per_layer_ranks_in_a_spec_are_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "dataset: {name: synthetic}\nmodel: {arch: mlp, hidden: [8, 8], light_rank: [1, 2, 3]}\n"
    )
    assert_user_error(
        run_cli("train", str(spec), "--epochs", "1", "--device", "cpu"),
        r"'light_rank' as a list needs one value per hidden layer \(2\), but got 3",
    )
    spec.write_text("model: {gate_rank: [0, 1]}\n")
    assert_user_error(
        run_cli("train", str(spec), "--epochs", "1", "--device", "cpu"),
        r"model\.gate_rank: must be an integer in \[1, ",
    )
