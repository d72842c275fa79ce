"""Wall time of one episode of the Top-k schedule environment (one training run).

    python experiments/bench_env.py                          # digits-mlp, 10 epochs, 5 episodes
    python experiments/bench_env.py --threads 1 2 --episodes 10

Default thread counts: 1 and torch's default. On a shared 2-core machine, 2 intra-op threads
slow down sharply (several x) whenever another process competes for the cores; run vectorized
env workers with ``torch.set_num_threads(1)``.

Runs ``--episodes`` episodes (after one warm-up episode) with seeded random actions for each
torch thread count in ``--threads`` and reports per episode: the wall time from ``reset`` to
the final step, the trainer's training passes, and the rest (model build, validation passes,
probe-batch gate statistics, test pass). Also times ``import gymnasium`` in fresh processes
(the cost of ``register_envs`` on ``import midl_autok``). Prints a markdown table and writes
``experiments/results/bench_env.json``.

Target (issue 5): an episode of the digits environment with 10 epochs takes under 2 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchkit
import numpy as np
import torch

from midl_autok.env import TopKScheduleEnv

OUT = Path(__file__).parent / "results" / "bench_env.json"
TARGET_S = 2.0


def import_time(module: str, repeats: int = 3) -> float:
    """Median seconds to import ``module`` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(times)


def episode(env: TopKScheduleEnv, seed: int) -> dict[str, float]:
    t0 = time.perf_counter()
    env.reset(seed=seed)
    reset_s = time.perf_counter() - t0
    env.action_space.seed(seed)
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    timing = env.last_episode_timing
    total = timing["episode_time_s"]
    return {
        "episode_s": total,
        "train_s": timing["train_time_s"],
        "other_s": total - timing["train_time_s"],
        "reset_s": reset_s,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    default_threads = torch.get_num_threads()
    for threads in args.threads or sorted({1, default_threads}):
        torch.set_num_threads(threads)
        env = TopKScheduleEnv(args.experiment, epochs=args.epochs, device=args.device)
        episode(env, seed=10_000)  # warm-up: first-call costs of torch kernels
        runs = [episode(env, seed) for seed in range(args.episodes)]
        episode_s = [r["episode_s"] for r in runs]
        rows.append(
            {
                "threads": threads,
                "episodes": args.episodes,
                "median_episode_s": statistics.median(episode_s),
                "max_episode_s": max(episode_s),
                "median_train_s": statistics.median(r["train_s"] for r in runs),
                "median_other_s": statistics.median(r["other_s"] for r in runs),
                "median_reset_s": statistics.median(r["reset_s"] for r in runs),
                "under_target": bool(np.all(np.array(episode_s) < TARGET_S)),
                "runs": runs,
            }
        )
    torch.set_num_threads(default_threads)
    return {
        "experiment": args.experiment,
        "epochs": args.epochs,
        "device": args.device,
        "target_s": TARGET_S,
        "gymnasium_import_s": import_time("gymnasium"),
        "results": rows,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": torch.get_num_threads() if args.device == "cpu" else None,
            "platform": platform.platform(),
            # 1-minute load average: > 1 means other processes competed for the cores
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        "command": " ".join(sys.argv),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['experiment']}, {result['epochs']} epochs, device {result['device']}; "
        f"target < {result['target_s']} s per episode",
        "",
        "| threads | episodes | median episode s | max episode s | train s | other s | reset s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['threads']} | {r['episodes']} | {r['median_episode_s']:.3f} | "
            f"{r['max_episode_s']:.3f} | {r['median_train_s']:.3f} | {r['median_other_s']:.3f} | "
            f"{r['median_reset_s']:.3f} |"
        )
    machine = result["machine"]
    lines += [
        "",
        f"import gymnasium: {result['gymnasium_import_s'] * 1000:.0f} ms (fresh process); "
        f"load average {machine['load_average_before']:.2f} -> {machine['load_average_after']:.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="digits-mlp")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", help="torch thread counts to compare")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = run(args)
    print(table(result))
    benchkit.write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
