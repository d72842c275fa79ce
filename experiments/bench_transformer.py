"""Issue 20's acceptance target on tokens-transformer: a searched schedule within 0.5 points of
dense test accuracy (mean of 3 seeds) at <= 0.6x the FFN FLOPs of dense.

    python experiments/bench_transformer.py                     # 30 trials, 3 seeds
    python experiments/bench_transformer.py --trials 12 --seeds 2   # reduced

1. A search with the experiment's defaults (TPE, budget space, seed grid 5), ``--trials``
   trials, in ``--store`` (resumes).
2. Dense (``variant: dense``) is trained on seed 0; candidates are the searched schedules whose
   final-epoch FFN FLOPs are <= ``--max-ffn-ratio`` x dense, cheapest first, among those within
   ``--tolerance`` points of dense's validation accuracy (the search sees only validation).
3. Each candidate (at most ``--candidates``) is retrained on ``--seeds`` seeds (the seed moves
   the data split, the initialization and the shuffling; dense is retrained on the same seeds)
   and confirmed when its mean test accuracy is within ``--tolerance`` points of dense's.

Writes ``experiments/results/bench_transformer.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from midl_autok.backends import run_search
from midl_autok.flops import cost_model
from midl_autok.flops_transformer import ffn_flops
from midl_autok.spec import ExperimentSpec, load_spec
from midl_autok.store import load_study_record, open_store
from midl_autok.trainer import build_for_spec, dataset_for_spec, run_experiment

RESULTS = Path(__file__).parent / "results"


def ffn_ratio(spec: ExperimentSpec, k: dict[str, int]) -> tuple[float, float]:
    """(FFN FLOPs ratio, whole-model inference FLOPs ratio) of final ``k`` against dense."""
    data = dataset_for_spec(spec)
    costs = cost_model(build_for_spec(spec, data), data.x_train[:1])
    ffn, dense = ffn_flops(costs, k)
    return ffn / dense, costs.ratio(k)


def train(spec: ExperimentSpec, seed: int, schedule: Any = None) -> dict[str, float]:
    seeded = spec.override(seed=seed)
    if schedule is None:
        result = run_experiment(seeded.override(**{"model.variant": "dense"}), device="cpu")
    else:
        result = run_experiment(seeded, schedule=schedule, device="cpu")
    return {m: float(result.metrics[m]) for m in ("val_accuracy", "test_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="tokens-transformer")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.5, help="points of accuracy")
    parser.add_argument("--max-ffn-ratio", type=float, default=0.6)
    parser.add_argument("--store", default="midl_runs/bench_transformer")
    parser.add_argument("--out", default=str(RESULTS / "bench_transformer.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(args.experiment).override(**{"budget.trials": args.trials})
    t0 = time.perf_counter()
    summary = run_search(spec, store=args.store, device="cpu", threads=1, plotlyjs="cdn")
    search_s = time.perf_counter() - t0
    record = load_study_record(open_store(args.store), summary.study)

    dense = {s: train(spec, s) for s in range(args.seeds)}
    tol = args.tolerance / 100
    trials = []
    for trial in record.completed():
        schedule = record.schedule(trial)
        ratio, model_ratio = ffn_ratio(spec, schedule.final())
        metrics = record.metrics(trial)
        trials.append(
            {
                "trial": trial.number,
                "val_accuracy": metrics["val_accuracy"],
                "test_accuracy": metrics.get("test_accuracy"),
                "ffn_flops_ratio": ratio,
                "inference_flops_ratio": model_ratio,
                "final_k": schedule.final(),
                "schedule": schedule,
            }
        )
    near = [
        t
        for t in trials
        if t["ffn_flops_ratio"] <= args.max_ffn_ratio
        and t["val_accuracy"] >= dense[0]["val_accuracy"] - tol
    ]
    near.sort(key=lambda t: t["ffn_flops_ratio"])
    confirmed = None
    checked = []
    for cand in near[: args.candidates]:
        runs = {s: train(spec, s, cand["schedule"]) for s in range(args.seeds)}
        mean = sum(r["test_accuracy"] for r in runs.values()) / len(runs)
        dense_mean = sum(r["test_accuracy"] for r in dense.values()) / len(dense)
        row = {
            "trial": cand["trial"],
            "ffn_flops_ratio": cand["ffn_flops_ratio"],
            "inference_flops_ratio": cand["inference_flops_ratio"],
            "final_k": cand["final_k"],
            "test_accuracy": {str(s): r["test_accuracy"] for s, r in runs.items()},
            "mean_test_accuracy": mean,
            "dense_mean_test_accuracy": dense_mean,
            "gap_points": 100 * (dense_mean - mean),
            "confirmed": mean >= dense_mean - tol,
        }
        checked.append(row)
        if row["confirmed"] and confirmed is None:
            confirmed = row
            break
    out = {
        "experiment": args.experiment,
        "config": vars(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1},
        "study": summary.study,
        "search_s": search_s,
        "dense": {str(s): r for s, r in dense.items()},
        "trials": [{k: v for k, v in t.items() if k != "schedule"} for t in trials],
        "checked": checked,
        "confirmed": confirmed,
        "target_met": confirmed is not None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    dense_mean = sum(r["test_accuracy"] for r in dense.values()) / len(dense)
    print(f"search: {len(trials)} trials in {search_s:.0f} s; study {summary.study}")
    print(f"dense test accuracy: {dense_mean:.4f} (mean of {args.seeds} seeds)")
    print("| trial | FFN FLOPs / dense | model FLOPs / dense | test acc (mean) | gap (pts) | ok |")
    print("|---|---|---|---|---|---|")
    for row in checked:
        print(
            f"| {row['trial']} | {row['ffn_flops_ratio']:.3f} | "
            f"{row['inference_flops_ratio']:.3f} | {row['mean_test_accuracy']:.4f} | "
            f"{row['gap_points']:+.2f} | {'yes' if row['confirmed'] else 'no'} |"
        )
    if not checked:
        print(f"no searched schedule at <= {args.max_ffn_ratio}x FFN FLOPs near dense")


if __name__ == "__main__":
    main()
