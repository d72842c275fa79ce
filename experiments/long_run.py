"""A long search on a tiny experiment: does memory stay flat, do pareto and report stay fast?

Runs ``--trials`` (default 1,000) trials of a tiny MID-L MLP (2 x 32, 600 synthetic samples,
1 epoch) in this process through the real search loop (:func:`run_search`: Optuna sqlite
storage, MLflow sqlite store, one child run and ``schedule.json`` per trial, the parent's
hypervolume per trial). After every trial it records the resident set size (RSS) and the
wall time; at the end it times the user's commands ``midl-autok pareto --json``,
``midl-autok studies`` and ``midl-autok report`` (real subprocesses, as a user runs them,
including Python start-up) and the same reads in this process.

    python experiments/long_run.py                      # 1,000 trials (~10-20 min)
    python experiments/long_run.py --trials 200 --agent tpe

Writes ``experiments/results/long_run.json`` (every sample) and prints a table. Memory is
judged by the RSS growth between trial 100 and the last trial, per trial; timing by the
per-trial wall time of the first and last 100 trials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc; else the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3


def tiny_spec(trials: int, agent: str, space: str, timeout_s: float | None) -> Any:
    from midl_autok.spec import validate_spec

    return validate_spec(
        {
            "name": "long-run",
            "seed": 0,
            "dataset": {"name": "synthetic", "options": {"n_samples": 600}},
            "model": {"arch": "mlp", "hidden": [32, 32], "gate_rank": 4, "light_rank": 4},
            "training": {"epochs": 1, "batch_size": 64, "lr": 0.01},
            "budget": {"trials": trials, "timeout_s": timeout_s},
            "search": {"agent": agent, "space": space},
        },
        source="long-run spec",
    )


class Sampler:
    """Search callback: RSS and time after every trial."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.start = time.perf_counter()
        self.cpu = time.process_time()

    def on_start(self, session: Any, *, target: int, done: int) -> None:
        self.start, self.cpu = time.perf_counter(), time.process_time()
        self.rows.append(
            {"trials": float(done), "rss_mb": rss_mb(), "elapsed_s": 0.0, "cpu_s": 0.0}
        )

    def on_trial_end(self, session: Any, trial: Any, outcome: Any) -> None:
        n = trial.number + 1
        self.rows.append(
            {
                "trials": float(n),
                "rss_mb": rss_mb(),
                "elapsed_s": time.perf_counter() - self.start,
                "cpu_s": time.process_time() - self.cpu,  # this process only: load-independent
            }
        )
        if n % 100 == 0:
            last = self.rows[-1]
            print(
                f"  trial {n:5d}: RSS {last['rss_mb']:.0f} MB, {last['elapsed_s']:.0f} s "
                f"({last['cpu_s']:.0f} s CPU)",
                flush=True,
            )


def timed_command(label: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    return {
        "label": label,
        "command": "midl-autok " + " ".join(args),
        "wall_s": wall,
        "exit": proc.returncode,
    }


def at(rows: list[dict[str, float]], trials: int) -> dict[str, float] | None:
    """The sample taken when ``trials`` trials were done (or the nearest after)."""
    for row in rows:
        if row["trials"] >= trials:
            return row
    return None


def per_trial_s(
    rows: list[dict[str, float]], first: int, last: int, key: str = "elapsed_s"
) -> float | None:
    a, b = at(rows, first), at(rows, last)
    if a is None or b is None or b["trials"] == a["trials"]:
        return None
    return (b[key] - a[key]) / (b["trials"] - a["trials"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--agent",
        default="random",
        help="random (default) isolates the store and tracking; tpe adds the sampler's own growth",
    )
    parser.add_argument("--space", default="linear")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop the search after this long and report what was reached",
    )
    parser.add_argument("--store", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep-store", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_run.json")
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import optuna

    from midl_autok.backends import run_search
    from midl_autok.store import load_study_record, open_store
    from midl_autok.tracking import pareto_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    root = args.store or Path(tempfile.mkdtemp(prefix="midl-long-run-")) / "store"
    timeout = args.max_minutes * 60 if args.max_minutes else None
    spec = tiny_spec(args.trials, args.agent, args.space, timeout)
    store = open_store(root)
    sampler = Sampler()
    rss_before = rss_mb()
    print(f"long run: {args.trials} trials, agent {args.agent}, store {root}", flush=True)
    summary = run_search(
        spec, store=store, device="cpu", threads=1, callbacks=[sampler], plotlyjs="cdn"
    )
    rows = sampler.rows
    done = int(rows[-1]["trials"])

    # the user's commands, as subprocesses
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("MIDL_AUTOK_HOME", None)
    store_args = ["--store", str(root)]
    commands = [
        # Python start-up + CLI import, for reference
        timed_command("midl-autok --version", ["--version"], env),
        timed_command(
            "midl-autok pareto --json",
            ["pareto", *store_args, "--study", summary.study, "--json"],
            env,
        ),
        timed_command("midl-autok studies", ["studies", *store_args], env),
        timed_command(
            "midl-autok report",
            ["report", *store_args, "--study", summary.study, "-o", str(root / "report.html")],
            env,
        ),
    ]
    # the same reads in this process (no start-up)
    start = time.perf_counter()
    record = load_study_record(store, summary.study)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    pareto_summary(record)
    front_s = time.perf_counter() - start
    db_mb = {
        "optuna.db": store.optuna_db.stat().st_size / 1e6,
        "mlflow.db": store.mlflow_db.stat().st_size / 1e6,
        "mlartifacts": sum(
            p.stat().st_size for p in (root / "mlartifacts").rglob("*") if p.is_file()
        )
        / 1e6,
    }

    r100, rlast = at(rows, 100), rows[-1]
    growth = None
    if r100 is not None and rlast["trials"] > r100["trials"]:
        growth = (rlast["rss_mb"] - r100["rss_mb"]) / (rlast["trials"] - r100["trials"]) * 1000
    result = {
        "experiment": "long-run: 2 x 32 MID-L MLP, 600 synthetic samples, 1 epoch",
        "agent": args.agent,
        "space": args.space,
        "target_trials": args.trials,
        "trials_done": done,
        "completed": summary.completed,
        "failed": summary.failed,
        "stopped": summary.stopped,
        "wall_s": summary.wall_s,
        "rss_mb": {
            "before_search": rss_before,
            "trial_1": (at(rows, 1) or {}).get("rss_mb"),
            "trial_100": None if r100 is None else r100["rss_mb"],
            "trial_1000": (at(rows, 1000) or {}).get("rss_mb"),
            "last": rlast["rss_mb"],
            "peak": peak_rss_mb(),
            "growth_per_1000_trials_after_100": growth,
        },
        "seconds_per_trial": {
            "trials_1_100": per_trial_s(rows, 1, 100),
            "last_100": per_trial_s(rows, max(1, done - 100), done),
            "cpu_trials_1_100": per_trial_s(rows, 1, 100, "cpu_s"),
            "cpu_last_100": per_trial_s(rows, max(1, done - 100), done, "cpu_s"),
        },
        "commands": commands,
        "in_process_s": {"load_study_record": load_s, "pareto_summary": front_s},
        "store_mb": db_mb,
        "samples": rows,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "command": "python experiments/long_run.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    def fmt(v: Any, spec: str = "{:.1f}") -> str:
        return "-" if v is None else spec.format(v)

    rss = result["rss_mb"]
    spt = result["seconds_per_trial"]
    print()
    print(f"| {'measure':<50} | {'value':>12} |")
    print(f"|{'-' * 52}|{'-' * 14}|")
    lines = [
        ("trials done (completed / failed)", f"{done} ({summary.completed}/{summary.failed})"),
        ("RSS at trial 1 (MB)", fmt(rss["trial_1"])),
        ("RSS at trial 100 (MB)", fmt(rss["trial_100"])),
        ("RSS at trial 1,000 (MB)", fmt(rss["trial_1000"])),
        (f"RSS at the last trial ({done}) (MB)", fmt(rss["last"])),
        ("RSS growth per 1,000 trials after trial 100 (MB)", fmt(growth)),
        ("wall s per trial, trials 1-100", fmt(spt["trials_1_100"], "{:.3f}")),
        ("wall s per trial, last 100", fmt(spt["last_100"], "{:.3f}")),
        ("CPU s per trial, trials 1-100", fmt(spt["cpu_trials_1_100"], "{:.3f}")),
        ("CPU s per trial, last 100", fmt(spt["cpu_last_100"], "{:.3f}")),
        *[(f"{c['label']} (s)", fmt(c["wall_s"], "{:.2f}")) for c in commands],
        ("load_study_record in process (s)", fmt(load_s, "{:.3f}")),
        ("pareto_summary in process (s)", fmt(front_s, "{:.3f}")),
        *[(f"{name} (MB)", fmt(size)) for name, size in db_mb.items()],
    ]
    for label, value in lines:
        print(f"| {label:<50} | {value:>12} |")
    print(f"\nwrote {args.out}")
    if args.store is None and not args.keep_store:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
