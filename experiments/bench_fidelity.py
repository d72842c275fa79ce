"""Does multi-fidelity early stopping help at equal wall time? The default search with and without
``--early-stop``, on the same wall-clock budget.

    python experiments/bench_fidelity.py                          # digits, 3 seeds, 60 s each
    python experiments/bench_fidelity.py --seeds 0,1 --budget-s 40 --modes none,mo-asha,asha

For every seed and mode this runs the default search (``digits-mlp``: TPE, budget space, seed
grid 5, 20 epochs; rungs at epochs 5 and 10) on the local backend with ``--timeout``
``--budget-s`` and an unreachable ``--trials``, so the time budget ends it (no trial starts
after it; the last one finishes, so wall times differ by up to one trial: they are reported).
Each run is its own study in the store ``--store`` (default ``midl_runs/bench_fidelity``);
rerunning resumes finished studies at once, so delete the store to measure again.

Reported per mode (mean, min and max over seeds): the normalized hypervolume of the study at
the end (validation accuracy x inference FLOPs, the fixed reference point of the study),
trials evaluated (of which pruned), wall time. Writes ``bench_fidelity.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from midl_autok.search import run_search
from midl_autok.spec import load_spec
from midl_autok.store import open_store

OUT = Path(__file__).parent / "results" / "bench_fidelity"


def one_search(
    store: Any, experiment: str, seed: int, mode: str, budget_s: float, epochs: int | None
) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "seed": seed,
        "budget.trials": 10_000,
        "budget.timeout_s": budget_s,
    }
    if epochs is not None:
        overrides["training.epochs"] = epochs
    spec = load_spec(experiment).override(**overrides)
    start = time.perf_counter()
    summary = run_search(
        spec,
        store=store,
        study=f"fidelity-{experiment}-{mode}-seed{seed}-{budget_s:g}s",
        device="cpu",
        early_stop=mode,
        plotlyjs=False,
    )
    return {
        "seed": seed,
        "mode": mode,
        "hv": summary.hypervolume_normalized,
        "trials": summary.new_trials,
        "pruned": summary.pruned,
        "failed": summary.failed,
        "front": len(summary.front),
        "wall_s": time.perf_counter() - start,
        "train_s": summary.train_s,
    }


def table(rows: list[dict[str, Any]], modes: list[str]) -> str:
    lines = [
        "| --early-stop | HV at the end, mean [min, max] | trials (pruned) | wall s |",
        "|---|---|---|---|",
    ]
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        hv = [r["hv"] for r in mine if r["hv"] is not None]
        trials = sum(r["trials"] for r in mine) / len(mine)
        pruned = sum(r["pruned"] for r in mine) / len(mine)
        wall = [r["wall_s"] for r in mine]
        lines.append(
            f"| {mode} | {sum(hv) / len(hv):.4f} [{min(hv):.4f}, {max(hv):.4f}] "
            f"| {trials:.1f} ({pruned:.1f}) | {min(wall):.0f}-{max(wall):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="digits-mlp")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--modes", default="none,mo-asha")
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    parser.add_argument("--store", default="midl_runs/bench_fidelity")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from midl_autok.search.quiet import quiet

    quiet()
    seeds = [int(s) for s in args.seeds.split(",")]
    modes = args.modes.split(",")
    store = open_store(args.store)
    rows = []
    for seed in seeds:  # modes interleaved per seed: machine load drifts alike for both
        for mode in modes:
            row = one_search(store, args.experiment, seed, mode, args.budget_s, args.epochs)
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = table(rows, modes)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": {**vars(args), "out": str(args.out)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
        "table": text,
    }
    (args.out / "bench_fidelity.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
