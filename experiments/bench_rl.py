"""RL agents against Optuna at equal training runs, and closed-loop vs open-loop control.

    python experiments/bench_rl.py                       # digits, 10 epochs, 40 runs, 2 seeds
    python experiments/bench_rl.py --runs 20 --seeds 1 --epochs 5 --agents ppo
    python experiments/bench_rl.py pool [...]            # one policy over a task pool
                                                         # (experiments/bench_rl_pool.py)
    python experiments/bench_rl.py pool --budgets auto   # the same, budget-conditioned

For every seed this runs real searches in the store ``--store`` (default
``midl_runs/bench_rl``; studies resume): an Optuna agent (``--baseline``, default tpe, cosine
space) for ``--runs`` trials, and every RL agent of ``--agents`` with ``--runs - len(lambdas)``
training episodes + one rollout per lambda of ``--lambdas``, i.e. the same number of
training runs. Reported, per agent (mean over seeds):

* **hypervolume** (normalized: accuracy 0..1 x inference FLOPs 0..dense, the study's fixed
  reference point) of all the agent's runs (for RL: training episodes + rollouts, since every
  episode is a real training run recorded in the study), and of the RL rollouts alone (the
  front the trained policy makes on its own);
* per lambda, the rollout's validation accuracy and FLOPs ratio (does the policy follow
  lambda?);
* **closed-loop vs open-loop** on ``--fresh`` new run seeds (new init and shuffling, the
  same data split): the policy choosing k live (:class:`~midl_autok.rl.PolicyController`)
  against its own rolled-out schedule replayed fixed (``train(schedule=...)``), per lambda:
  mean validation accuracy, FLOPs ratio and how often the live controller changed the
  schedule.

Writes ``results/bench_rl.json`` and ``results/bench_rl.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import benchkit
import numpy as np
from bench_search import quiet

from midl_autok import metrics as M
from midl_autok.agents import derive_seed
from midl_autok.backends import run_search
from midl_autok.schedule import KSchedule
from midl_autok.spec import ExperimentSpec, load_spec, validate_spec
from midl_autok.store import StudyRecord, load_study_record, open_store

EXPERIMENTS = {"digits": "digits-mlp", "mnist1d": "mnist1d-mlp", "synthetic": "synthetic-mlp"}
OUT = Path(__file__).parent / "results"


def hv(record: StudyRecord, trials: list[Any]) -> float:
    value = record.normalized_hypervolume(trials)
    return float(value) if value is not None else 0.0


def closed_vs_open(
    spec: ExperimentSpec, record: StudyRecord, store: Path, *, fresh: int, seed: int
) -> list[dict[str, Any]]:
    """Per rollout (lambda): the policy live vs its rollout schedule fixed, on fresh seeds."""
    import torch

    from midl_autok.agents.sb3 import ATTR_POLICY
    from midl_autok.rl import PolicyController
    from midl_autok.trainer import TrainConfig, build_for_spec, dataset_for_spec, train

    torch.set_num_threads(1)
    policy = store / record.attrs[ATTR_POLICY]["path"]
    data = dataset_for_spec(spec)
    rows = []
    for t in record.trials:
        if t.user_attrs.get("phase") != "rollout" or t.state.name != "COMPLETE":
            continue
        lam = float(t.user_attrs["lam"])
        fixed = KSchedule.from_dict(t.user_attrs["schedule"])
        closed, opened, changed = [], [], 0
        for i in range(fresh):
            run_seed = derive_seed(seed, 9_000 + i)
            model = build_for_spec(spec, data, seed=run_seed)
            config = TrainConfig.from_spec(spec, device="cpu", seed=run_seed)
            live = PolicyController.from_file(
                policy, model=model, data=data, epochs=config.epochs, lam=lam
            )
            a = train(model, data, config=config, controller=live)
            model = build_for_spec(spec, data, seed=run_seed)
            b = train(model, data, config=config, schedule=fixed)
            closed.append(a.metrics)
            opened.append(b.metrics)
            assert a.schedule is not None
            changed += int(a.schedule.k != fixed.k)
        rows.append(
            {
                "lam": lam,
                "rollout_val_accuracy": t.user_attrs[M.VAL_ACCURACY],
                "rollout_flops_ratio": t.user_attrs[M.INFERENCE_FLOPS_RATIO],
                "closed_val_accuracy": _mean(closed, M.VAL_ACCURACY),
                "open_val_accuracy": _mean(opened, M.VAL_ACCURACY),
                "closed_test_accuracy": _mean(closed, M.TEST_ACCURACY),
                "open_test_accuracy": _mean(opened, M.TEST_ACCURACY),
                "closed_flops_ratio": _mean(closed, M.INFERENCE_FLOPS_RATIO),
                "open_flops_ratio": _mean(opened, M.INFERENCE_FLOPS_RATIO),
                "closed_schedules_differ": changed / fresh,
            }
        )
    return rows


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet()
    store = open_store(args.store)
    base = load_spec(EXPERIMENTS[args.dataset])
    if args.epochs is not None:
        base = base.override(**{"training.epochs": args.epochs})
    started = time.perf_counter()
    searches: list[dict[str, Any]] = []
    loops: list[dict[str, Any]] = []
    episodes = args.runs - len(args.lambdas)
    for seed in range(args.seeds):
        baseline = [] if args.baseline == "none" else [args.baseline]
        for agent in [*baseline, *args.agents]:
            rl = agent in ("ppo", "sac", "a2c")
            changes: dict[str, Any] = {"seed": seed, "search.agent": agent}
            if rl:
                options = {"episodes": episodes, "lambdas": args.lambdas}
                changes["search.options"] = options
            else:
                changes.update({"search.space": args.space, "budget.trials": args.runs})
            spec = base.override(**changes)
            t0 = time.perf_counter()
            summary = run_search(spec, store=store, device="cpu", threads=1, plotlyjs="cdn")
            wall = time.perf_counter() - t0
            record = load_study_record(store, summary.study)
            done = [t for t in record.trials if t.state.name == "COMPLETE"]
            rollouts = [t for t in done if t.user_attrs.get("phase") == "rollout"]
            row: dict[str, Any] = {
                "agent": agent,
                "seed": seed,
                "study": summary.study,
                "runs": len(record.trials),
                "completed": len(done),
                "hv_all": hv(record, done),
                "hv_rollouts": hv(record, rollouts) if rl else None,
                "front_size": len(record.front(done)),
                "best_val_accuracy": max(t.user_attrs[M.VAL_ACCURACY] for t in done),
                "wall_s": wall,
                "rollouts": [
                    {
                        "lam": t.user_attrs["lam"],
                        "val_accuracy": t.user_attrs[M.VAL_ACCURACY],
                        "flops_ratio": t.user_attrs[M.INFERENCE_FLOPS_RATIO],
                        "k": t.user_attrs["schedule"]["k"],
                    }
                    for t in rollouts
                ],
            }
            searches.append(row)
            print(
                f"{agent} seed {seed}: {row['runs']} runs, HV {row['hv_all']:.4f}"
                + (f" (rollouts {row['hv_rollouts']:.4f})" if rl else "")
                + f", {wall:.0f} s",
                flush=True,
            )
            if rl and args.fresh > 0:
                t0 = time.perf_counter()
                spec_run = validate_spec(record.attrs["spec"])
                for item in closed_vs_open(
                    spec_run, record, store.root, fresh=args.fresh, seed=seed
                ):
                    loops.append({"agent": agent, "seed": seed, **item})
                print(f"  closed vs open loop: {time.perf_counter() - t0:.0f} s", flush=True)
    return {
        "config": {
            "dataset": args.dataset,
            "experiment": base.name,
            "epochs": base.training.epochs,
            "runs": args.runs,
            "episodes": episodes,
            "lambdas": args.lambdas,
            "seeds": args.seeds,
            "baseline": args.baseline,
            "space": args.space,
            "agents": args.agents,
            "fresh_seeds": args.fresh,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_end": os.getloadavg(),
        },
        "wall_s": time.perf_counter() - started,
        "searches": searches,
        "closed_vs_open": loops,
    }


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"### RL vs {cfg['baseline']} baseline on {cfg['experiment']} ({cfg['epochs']} epochs, "
        f"{cfg['runs']} training runs each, {cfg['seeds']} seed(s))",
        "",
        f"RL: {cfg['episodes']} training episodes + one rollout per lambda "
        f"({', '.join(f'{v:g}' for v in cfg['lambdas'])}). Normalized hypervolume, mean "
        "(min-max) over seeds.",
        "",
        "| agent | HV, all runs | HV, rollouts only | front size | best val acc | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    agents = [cfg["baseline"], *cfg["agents"]]
    for agent in agents:
        rows = [r for r in result["searches"] if r["agent"] == agent]
        if not rows:
            continue
        hv_all = [r["hv_all"] for r in rows]
        hv_ro = [r["hv_rollouts"] for r in rows if r["hv_rollouts"] is not None]
        lines.append(
            f"| {agent} | {_spread(hv_all)} | {_spread(hv_ro) if hv_ro else '-'} | "
            f"{np.mean([r['front_size'] for r in rows]):.1f} | "
            f"{np.mean([r['best_val_accuracy'] for r in rows]):.4f} | "
            f"{np.mean([r['wall_s'] for r in rows]):.0f} |"
        )
    lines += [
        "",
        "Rollouts per lambda (mean over seeds): validation accuracy / inference FLOPs ratio.",
        "",
        "| agent | " + " | ".join(f"lambda {v:g}" for v in cfg["lambdas"]) + " |",
        "|---|" + "---|" * len(cfg["lambdas"]),
    ]
    for agent in cfg["agents"]:
        rows = [r for r in result["searches"] if r["agent"] == agent]
        cells = []
        for lam in cfg["lambdas"]:
            pts = [p for r in rows for p in r["rollouts"] if abs(p["lam"] - lam) < 1e-12]
            cells.append(
                f"{np.mean([p['val_accuracy'] for p in pts]):.4f} / "
                f"{np.mean([p['flops_ratio'] for p in pts]):.3f}"
                if pts
                else "-"
            )
        lines.append(f"| {agent} | " + " | ".join(cells) + " |")
    if result["closed_vs_open"]:
        lines += [
            "",
            f"Closed loop (policy as controller) vs open loop (its rolled-out schedule, fixed) on "
            f"{cfg['fresh_seeds']} fresh run seed(s) per lambda, mean over seeds: validation "
            "accuracy, test accuracy, FLOPs ratio; 'differs' = share of runs whose live "
            "schedule differed from the fixed one.",
            "",
            "| agent | lambda | val acc closed / open | test acc closed / open | "
            "FLOPs ratio closed / open | differs |",
            "|---|---|---|---|---|---|",
        ]
        for agent in cfg["agents"]:
            for lam in cfg["lambdas"]:
                rows = [
                    r
                    for r in result["closed_vs_open"]
                    if r["agent"] == agent and abs(r["lam"] - lam) < 1e-12
                ]
                if not rows:
                    continue
                m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "agent"}
                lines.append(
                    f"| {agent} | {lam:g} | {m['closed_val_accuracy']:.4f} / "
                    f"{m['open_val_accuracy']:.4f} | {m['closed_test_accuracy']:.4f} / "
                    f"{m['open_test_accuracy']:.4f} | {m['closed_flops_ratio']:.3f} / "
                    f"{m['open_flops_ratio']:.3f} | {m['closed_schedules_differ']:.2f} |"
                )
        both = result["closed_vs_open"]
        dv = [r["closed_val_accuracy"] - r["open_val_accuracy"] for r in both]
        df = [r["closed_flops_ratio"] - r["open_flops_ratio"] for r in both]
        lines += [
            "",
            f"Closed minus open, over all agents, lambdas and seeds: val accuracy "
            f"{np.mean(dv):+.4f} (min {np.min(dv):+.4f}, max {np.max(dv):+.4f}), FLOPs ratio "
            f"{np.mean(df):+.4f}.",
        ]
    lines += benchkit.wall_time_lines(result)
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def main() -> None:
    if sys.argv[1:2] == ["pool"]:
        import bench_rl_pool

        bench_rl_pool.main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENTS), default="digits")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", type=int, default=40, help="training runs per search")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1")
    p.add_argument("--agents", type=lambda s: s.split(","), default=["ppo", "sac"])
    p.add_argument("--baseline", default="tpe", help="an Optuna agent, or none")
    p.add_argument("--space", default="cosine", help="the baseline's search space")
    p.add_argument(
        "--lambdas",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.01, 0.03, 0.1, 0.3, 1.0],
    )
    p.add_argument("--fresh", type=int, default=3, help="fresh run seeds for closed vs open")
    p.add_argument("--store", default="midl_runs/bench_rl", help="store of the studies")
    p.add_argument("--out", default=str(OUT / "bench_rl"), help="output path without suffix")
    args = p.parse_args()
    result = run(args)
    write_results(Path(args.out), result, markdown(result))


def write_results(out: Path, result: dict[str, Any], text: str) -> None:
    """``out.json`` (the result) and ``out.md`` (``text``, also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
