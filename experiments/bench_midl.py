"""MID-L vs dense vs dropout at a fixed k fraction: accuracy, FLOPs and training step time.

    python experiments/bench_midl.py                      # digits + MNIST-1D, 3 seeds
    python experiments/bench_midl.py --seeds 1 --experiments digits-mlp --epochs 5
    python experiments/bench_midl.py --experiments mnist1d-mlp --light-rank 32 --k-fraction 0.3 \
        --out experiments/results/bench_midl_mnist1d_light32.json

For each experiment and seed, trains the same architecture three ways (MID-L at
``--k-fraction`` of every hidden layer's neurons, dense ``nn.Linear``, dense + dropout) and
reports test accuracy, active fraction, inference FLOPs ratio vs dense and the training step
time ratio vs dense (median over epochs of epoch time / steps). Prints a markdown table and
writes ``experiments/results/bench_midl.json``.

Targets (issue 2) at ~45% active neurons: test accuracy within 0.5 points of dense,
inference FLOPs >= 1.5x lower than dense, training step time <= 1.5x dense.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import benchkit
import torch

from midl_autok.spec import load_spec
from midl_autok.trainer import dataset_for_spec, run_experiment

VARIANTS = ("midl", "dense", "dropout")
OUT = Path(__file__).parent / "results" / "bench_midl.json"


def step_time(history: list[dict[str, float]], steps: int) -> float:
    """Median over epochs (the first one excluded as warm-up when there are more) of s/step."""
    times = [row["epoch_time_s"] for row in history]
    if len(times) > 1:
        times = times[1:]
    return statistics.median(times) / steps


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for name in args.experiments:
        spec = benchkit.experiment(name, epochs=args.epochs)
        ranks = {"model.gate_rank": args.gate_rank, "model.light_rank": args.light_rank}
        spec = spec.override(**{k: v for k, v in ranks.items() if v is not None})
        for seed in range(args.seeds):
            s = spec.override(seed=seed)
            data = dataset_for_spec(s)
            steps = math.ceil(data.sizes["train"] / s.training.batch_size)
            for variant in VARIANTS:
                v = s.override(**{"model.variant": variant})
                t0 = time.perf_counter()
                result = run_experiment(v, k_fraction=args.k_fraction, device=args.device)
                m = result.metrics
                rows.append(
                    {
                        "experiment": name,
                        "seed": seed,
                        "variant": variant,
                        "test_accuracy": m["test_accuracy"],
                        "val_accuracy": m["val_accuracy"],
                        "active_fraction": m["active_fraction"],
                        "inference_flops": m["inference_flops"],
                        "inference_flops_ratio": m["inference_flops_ratio"],
                        "step_time_s": step_time(result.history, steps),
                        "wall_s": time.perf_counter() - t0,
                    }
                )
                print(
                    f"  {name} seed {seed} {variant:8s} test acc {m['test_accuracy']:.4f} "
                    f"flops ratio {m['inference_flops_ratio']:.3f} "
                    f"step {rows[-1]['step_time_s'] * 1e3:.2f} ms",
                    flush=True,
                )
    return {"rows": rows, "summary": summarize(rows)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["experiment"] for r in rows):
        dense = [r for r in rows if r["experiment"] == name and r["variant"] == "dense"]
        dense_acc = statistics.mean(r["test_accuracy"] for r in dense)
        dense_step = statistics.mean(r["step_time_s"] for r in dense)
        for variant in VARIANTS:
            rs = [r for r in rows if r["experiment"] == name and r["variant"] == variant]
            accs = [r["test_accuracy"] for r in rs]
            acc = statistics.mean(accs)
            out.append(
                {
                    "experiment": name,
                    "variant": variant,
                    "seeds": len(rs),
                    "test_accuracy": acc,
                    "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "accuracy_gap_vs_dense_points": 100 * (acc - dense_acc),
                    "active_fraction": statistics.mean(r["active_fraction"] for r in rs),
                    "inference_flops_ratio": statistics.mean(
                        r["inference_flops_ratio"] for r in rs
                    ),
                    "flops_reduction_x": 1
                    / statistics.mean(r["inference_flops_ratio"] for r in rs),
                    "step_time_ratio": statistics.mean(r["step_time_s"] for r in rs) / dense_step,
                }
            )
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| experiment | variant | test acc (mean ± sd) | Δ vs dense (pts) | active | "
        "inference FLOPs ratio | FLOPs reduction | step time vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {100 * r['test_accuracy']:.2f} ± "
            f"{100 * r['test_accuracy_std']:.2f} | {r['accuracy_gap_vs_dense_points']:+.2f} | "
            f"{r['active_fraction']:.3f} | {r['inference_flops_ratio']:.3f} | "
            f"{r['flops_reduction_x']:.2f}x | {r['step_time_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = benchkit.parser(__doc__, seeds=3)
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    parser.add_argument("--k-fraction", type=float, default=0.45)
    parser.add_argument("--gate-rank", type=int, default=None, help="override the spec's")
    parser.add_argument(
        "--light-rank", type=int, default=None, help="override the spec's (0: pure top-k)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    # warm-up: one short run per variant, so no variant pays for first-call costs
    warm = load_spec(args.experiments[0]).override(**{"training.epochs": 1})
    for variant in VARIANTS:
        run_experiment(warm.override(**{"model.variant": variant}), device=args.device)
    result = run(args)
    result["config"] = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
    }
    benchkit.write_json(args.out, result)
    print()
    print(table(result["summary"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
