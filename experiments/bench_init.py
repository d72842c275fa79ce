"""A search started from a dense checkpoint (``model.init_from``) vs the same search from scratch.

    python experiments/bench_init.py                 # full: digits + MNIST-1D, 30 trials, 3 seeds
    python experiments/bench_init.py --experiments digits-mlp --trials 10 --seeds 1   # reduced

For each experiment and seed: train the architecture dense (``variant: dense``, the spec's
epochs) and save its ``state_dict``; then run three real searches (``run_search``: Optuna
study + MLflow runs in ``--store``; TPE in the budget space, the spec's seed grid) with the
same seed and trial count:

- ``scratch``: the spec as it is (random initialization, the spec's epochs per trial);
- ``init``: the spec with ``model.init_from`` = the dense checkpoint, same epochs;
- ``init-short``: from the checkpoint with ``--short-epochs`` epochs per trial (default a
  quarter of the spec's).

Reported per arm (mean over seeds): the dense model's test accuracy; the best test accuracy
of the search; how many trials reach dense test accuracy within ``--tolerance`` points (0.5);
the lowest inference-FLOPs ratio among those (``-`` when none). Issue 18's target: from the
checkpoint, dense accuracy is reached at a lower inference-FLOPs ratio, or with fewer epochs
per trial, on at least two shipped experiments. Writes ``experiments/results/bench_init.json``
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MIDL_AUTOK_NO_EXTENSIONS", "1")  # same function; no kernel build

import torch

sys.path.insert(0, str(Path(__file__).parent))
import benchkit
from bench_midlify import train_dense

from midl_autok.backends import run_search
from midl_autok.spec import load_spec
from midl_autok.store import load_study_record, open_store

OUT = Path(__file__).parent / "results" / "bench_init.json"
ARMS = ("scratch", "init", "init-short")


def trial_points(store: Any, study: str) -> list[dict[str, float]]:
    record = load_study_record(store, study)
    keys = ("val_accuracy", "test_accuracy", "inference_flops_ratio")
    return [
        {"trial": t.number, **{k: float(t.user_attrs[k]) for k in keys}} for t in record.completed()
    ]


def reached(points: list[dict[str, float]], dense: float, tolerance: float) -> dict[str, Any]:
    ok = [p for p in points if p["test_accuracy"] >= dense - tolerance / 100]
    return {
        "trials": len(points),
        "best_test_accuracy": max((p["test_accuracy"] for p in points), default=float("nan")),
        "reaching_dense": len(ok),
        "min_flops_ratio_at_dense": min((p["inference_flops_ratio"] for p in ok), default=None),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    store = open_store(args.store)
    ckpts = args.store / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in args.experiments:
        base = load_spec(name)
        epochs = base.training.epochs
        short = args.short_epochs or max(1, epochs // 4)
        for seed in range(args.seeds):
            spec = base.override(**{"seed": seed, "budget.trials": args.trials})
            start = time.perf_counter()
            dense, dense_acc, _ = train_dense(spec, seed)
            path = ckpts / f"{name}-s{seed}.pt"
            torch.save(dense.state_dict(), path)
            arms = {
                "scratch": spec,
                "init": spec.override(**{"model.init_from": str(path)}),
                "init-short": spec.override(
                    **{"model.init_from": str(path), "training.epochs": short}
                ),
            }
            for arm, arm_spec in arms.items():
                study = f"bench-init-{name}-{arm}-s{seed}-t{args.trials}"
                t0 = time.perf_counter()
                run_search(arm_spec, store=store, study=study, device="cpu", plotlyjs=False)
                row = {
                    "experiment": name,
                    "seed": seed,
                    "arm": arm,
                    "epochs_per_trial": arm_spec.training.epochs,
                    "dense_test_accuracy": dense_acc,
                    "search_s": time.perf_counter() - t0,
                    **reached(trial_points(store, study), dense_acc, args.tolerance),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                benchkit.write_json(args.out, {**header(args), "rows": rows, "partial": True})
            print(f"# {name} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return {**header(args), "rows": rows}


def header(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "experiments": args.experiments,
        "trials": args.trials,
        "seeds": args.seeds,
        "tolerance_points": args.tolerance,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def table(result: dict[str, Any]) -> str:
    lines = [
        "| experiment | arm | epochs/trial | dense test acc | best test acc "
        "| trials at dense (of N) | min FLOPs ratio at dense (seeds reaching) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in result["experiments"]:
        for arm in ARMS:
            mine = [r for r in result["rows"] if r["experiment"] == name and r["arm"] == arm]
            if not mine:
                continue
            ratio = _mean([r["min_flops_ratio_at_dense"] for r in mine])
            hits = sum(r["min_flops_ratio_at_dense"] is not None for r in mine)
            lines.append(
                f"| {name} | {arm} | {mine[0]['epochs_per_trial']} "
                f"| {100 * statistics.mean(r['dense_test_accuracy'] for r in mine):.2f} "
                f"| {100 * statistics.mean(r['best_test_accuracy'] for r in mine):.2f} "
                f"| {statistics.mean(r['reaching_dense'] for r in mine):.1f} "
                f"of {mine[0]['trials']} "
                f"| {'-' if ratio is None else f'{ratio:.3f}'} ({hits}/{len(mine)}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = benchkit.parser(__doc__, seeds=3)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--short-epochs", type=int, default=0, help="0: a quarter of the spec's")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points below dense")
    parser.add_argument("--store", type=Path, default=Path("midl_runs/bench_init"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    benchkit.finish(args.out, run(args), table)


if __name__ == "__main__":
    main()
