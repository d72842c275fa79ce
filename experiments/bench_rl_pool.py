"""One PPO policy trained on cheap episodes over a task pool, controlling full runs.

    python experiments/bench_rl.py pool                         # the full setting
    python experiments/bench_rl.py pool --episodes 600 --fresh 2 --tpe-trials 5   # reduced
    python experiments/bench_rl.py pool --budgets auto          # budget mode (below)

1. **Train** (:func:`midl_autok.rl.train_pool_policy`): PPO on ``--envs`` vectorized
   :class:`~midl_autok.env.TaskPoolEnv` (tasks ``--pool``, ``--max-samples`` training samples,
   ``--lo-epochs`` epochs, lambda log-uniform in [0.01, 1]) for ``--episodes`` episodes.
2. **Control full runs** of every ``--tasks`` experiment (full data, the spec's epochs; the
   first of ``--tasks`` not in ``--pool`` is the held-out one, rolled out zero-shot):

   * rollouts: the policy as a live controller at each of ``--lambdas``, one reference seed;
   * closed vs open loop: on ``--fresh`` new seeds per lambda, the live controller against its
     reference rollout's schedule replayed fixed (``train(schedule=...)``);
   * ``--fresh-grid``: the fixed-k grid on every fresh seed too, for the HV of the live
     policy's front, its replay's and the grid's per seed (one reference seed is one draw);
   * baselines at equal full runs: the fixed-k grid (``len(--lambdas)`` fractions evenly in
     [min_fraction, 1], reference seed) and TPE (``search --agent tpe --space budget``, no
     seed grid) with ``--tpe-trials`` trials.

   Hypervolume: accuracy 0..1 x inference FLOPs ratio 0..1, reference point (0, 1).

**Budget mode** (``--budgets auto`` or ``--budgets 0.3,0.5,...``): the policy is trained with
``train_pool_policy(..., budgets=(0, 1))`` (each episode a budget log-uniform in the task's
reachable range [floor, 1]; every epoch's k fit to it; reward = validation accuracy) on
``--pool`` (default in this mode digits-mlp + synthetic-mlp: tokens-lstm's MID-L head is
< 1% of its FLOPs, so its reachable range is [0.998, 1]: nothing to allocate), and every
"lambda" above becomes a budget: the rollouts, the closed/open pairs and the fixed-k grid's
size. ``auto``: per task, 5 budgets geometrically spaced from the task's floor (the FLOPs
ratio with every layer at ``--min-fraction``: the fixed-k grid's lowest point) to 0.9.
``--fresh`` may be per task (``digits-mlp=5,mnist1d-mlp=1``). Policy file
``<--store>/pool_budget_policy.zip``; output ``results/bench_rl_pool_budget.*``.

Writes ``results/bench_rl_pool.json`` and ``.md`` and prints the markdown; after every phase
and closed/open pair, ``results/bench_rl_pool.partial.json`` (what a run cut short finished).
The trained policy is kept as ``<--store>/pool_policy.zip`` and reused unless ``--retrain``.
On a machine where several checkouts build the C++ kernels at once, set
``MIDL_AUTOK_NO_EXTENSIONS=1`` (PyTorch ops, same results) rather than wait on the build lock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import benchkit
import numpy as np

from midl_autok import metrics as M
from midl_autok.agents import derive_seed
from midl_autok.agents.seedgrid import fixed_k_grid
from midl_autok.pareto import hypervolume_2d
from midl_autok.spec import load_spec

OUT = Path(__file__).parent / "results"
REF_SEED = 8_000


def hv(points: list[tuple[float, float]]) -> float:
    """Normalized hypervolume of (val accuracy, FLOPs ratio) points, reference (0, 1)."""
    if not points:
        return 0.0
    return hypervolume_2d(points, ref=[0.0, 1.0], directions=["maximize", "minimize"])


class Runner:
    """Full-fidelity runs of one experiment: live controller, fixed schedule, fixed k."""

    def __init__(self, task: str, policy: Path) -> None:
        from midl_autok.trainer import dataset_for_spec

        self.spec = load_spec(task)
        self.data = dataset_for_spec(self.spec)
        self.policy = policy

    def floor(self, min_fraction: float) -> float:
        """The lowest reachable inference-FLOPs ratio (every layer at ``min_fraction``)."""
        from midl_autok.flops import cost_model
        from midl_autok.schedule import k_from_fraction
        from midl_autok.trainer import build_for_spec

        model = build_for_spec(self.spec, self.data, seed=0)
        costs = cost_model(model, self.data.x_train[:1])
        return costs.ratio(
            {s.name: k_from_fraction(min_fraction, s.width) for s in model.layer_specs()}
        )

    def run(
        self,
        seed: int,
        *,
        lam: float | None = None,
        budget: float | None = None,
        schedule: Any = None,
        fraction: float | None = None,
    ) -> dict[str, Any]:
        from midl_autok.rl import PolicyController
        from midl_autok.trainer import TrainConfig, build_for_spec, train

        model = build_for_spec(self.spec, self.data, seed=seed)
        config = TrainConfig.from_spec(self.spec, device="cpu", seed=seed)
        controller = None
        if lam is not None or budget is not None:
            controller = PolicyController.from_file(
                self.policy,
                model=model,
                data=self.data,
                epochs=config.epochs,
                lam=lam,
                budget=budget,
            )
        elif fraction is not None:
            schedule = model.schedule_template(config.epochs, fraction)
        result = train(model, self.data, config=config, controller=controller, schedule=schedule)
        assert result.schedule is not None
        return {
            "val_accuracy": result.metrics[M.VAL_ACCURACY],
            "test_accuracy": result.metrics[M.TEST_ACCURACY],
            "flops_ratio": result.metrics[M.INFERENCE_FLOPS_RATIO],
            "schedule": result.schedule,
        }


def tpe_points(task: str, trials: int, store: str, seed: int) -> list[dict[str, float]]:
    from midl_autok.backends import run_search
    from midl_autok.store import load_study_record, open_store

    spec = load_spec(task).override(
        **{
            "seed": seed,
            "search.agent": "tpe",
            "search.space": "budget",
            "search.seed_grid": 0,
            "budget.trials": trials,
        }
    )
    opened = open_store(store)
    summary = run_search(spec, store=opened, device="cpu", threads=1, plotlyjs="cdn")
    record = load_study_record(opened, summary.study)
    done = [t for t in record.trials if t.state.name == "COMPLETE"]
    return [
        {
            "val_accuracy": t.user_attrs[M.VAL_ACCURACY],
            "flops_ratio": t.user_attrs[M.INFERENCE_FLOPS_RATIO],
        }
        for t in done
    ]


def evaluate_task(
    task: str, policy: Path, args: argparse.Namespace, save: Any = None
) -> dict[str, Any]:
    """Rollouts, the fixed-k grid, closed vs open loop, TPE; ``save(partial)`` after each
    phase and each closed/open pair (a run cut short keeps what finished)."""
    runner = Runner(task, policy)
    partial: dict[str, Any] = {"task": task, "held_out": task not in args.pool}
    ref = derive_seed(0, REF_SEED)
    t0 = time.perf_counter()
    knob = "budget" if args.budgets else "lam"
    floor = runner.floor(args.min_fraction)
    values = task_budgets(args.budgets, floor) if args.budgets else list(args.lambdas)
    partial.update(knob=knob, values=values, floor=floor)
    rollouts = []
    for value in values:
        r = runner.run(ref, **{knob: value})
        rollouts.append(
            {
                knob: value,
                **{k: v for k, v in r.items() if k != "schedule"},
                "k": [list(row) for row in r["schedule"].k],
                "_schedule": r["schedule"],
            }
        )
        print(
            f"  {task} rollout {knob} {value:g}: acc {r['val_accuracy']:.4f} "
            f"flops {r['flops_ratio']:.3f}",
            flush=True,
        )
    grid = []
    for f in sorted(fixed_k_grid(len(values), args.min_fraction, 1.0)):
        r = runner.run(ref, fraction=f)
        grid.append(
            {"fraction": f, "val_accuracy": r["val_accuracy"], "flops_ratio": r["flops_ratio"]}
        )
    partial.update(rollouts=[{k: v for k, v in r.items() if k != "_schedule"} for r in rollouts])
    partial["fixed_k"] = grid
    loops: list[dict[str, Any]] = []
    partial["closed_vs_open"] = loops
    fresh_grid: list[list[dict[str, Any]]] = []  # --fresh-grid: per fresh seed, the grid
    partial["fixed_k_fresh"] = fresh_grid
    if save is not None:
        save(partial)
    for i in range(fresh_for(args.fresh, task)):
        for ro in rollouts:
            seed = derive_seed(0, 9_000 + i)
            closed = runner.run(seed, **{knob: ro[knob]})
            opened = runner.run(seed, schedule=ro["_schedule"])
            loops.append(
                {
                    knob: ro[knob],
                    "seed": i,
                    "closed_val_accuracy": closed["val_accuracy"],
                    "open_val_accuracy": opened["val_accuracy"],
                    "closed_flops_ratio": closed["flops_ratio"],
                    "open_flops_ratio": opened["flops_ratio"],
                    "schedules_differ": closed["schedule"].k != ro["_schedule"].k,
                }
            )
            if save is not None:
                save(partial)
        if args.fresh_grid:
            seed = derive_seed(0, 9_000 + i)
            rows = []
            for f in sorted(fixed_k_grid(len(values), args.min_fraction, 1.0)):
                r = runner.run(seed, fraction=f)
                rows.append(
                    {
                        "fraction": f,
                        "val_accuracy": r["val_accuracy"],
                        "flops_ratio": r["flops_ratio"],
                    }
                )
            fresh_grid.append(rows)
            if save is not None:
                save(partial)
    for ro in rollouts:
        del ro["_schedule"]
    print(f"  {task}: rollouts + closed/open {time.perf_counter() - t0:.0f} s", flush=True)
    tpe = tpe_points(task, args.tpe_trials, args.store, 0) if args.tpe_trials > 0 else []
    ratios = [r["flops_ratio"] for r in rollouts]

    def pts(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
        return [(r["val_accuracy"], r["flops_ratio"]) for r in rows]

    per_lam = []
    for value in values:
        rows = [r for r in loops if r[knob] == value]
        if rows:
            per_lam.append(
                {
                    knob: value,
                    "closed_minus_open_val_accuracy": float(
                        np.mean([r["closed_val_accuracy"] - r["open_val_accuracy"] for r in rows])
                    ),
                    "closed_minus_open_flops_ratio": float(
                        np.mean([r["closed_flops_ratio"] - r["open_flops_ratio"] for r in rows])
                    ),
                    "schedules_differ": float(np.mean([r["schedules_differ"] for r in rows])),
                    "seeds": len(rows),
                    "closed_minus_open_sd": float(
                        np.std(
                            [r["closed_val_accuracy"] - r["open_val_accuracy"] for r in rows],
                            ddof=1,
                        )
                    )
                    if len(rows) > 1
                    else None,
                }
            )
    hv_fresh = []  # per fresh seed: the live policy's, its replay's and the grid's front
    for i, grid_rows in enumerate(fresh_grid):
        rows = [r for r in loops if r["seed"] == i]
        hv_fresh.append(
            {
                "seed": i,
                "closed": hv([(r["closed_val_accuracy"], r["closed_flops_ratio"]) for r in rows]),
                "open": hv([(r["open_val_accuracy"], r["open_flops_ratio"]) for r in rows]),
                "fixed_k": hv(pts(grid_rows)),
            }
        )
    return {
        "task": task,
        "held_out": task not in args.pool,
        "knob": knob,
        "values": values,
        "floor": floor,
        "rollouts": rollouts,
        "closed_vs_open": loops,
        "closed_vs_open_per_lam": per_lam,
        "fixed_k": grid,
        "tpe": tpe,
        "hv_rollouts": hv(pts(rollouts)),
        "hv_fixed_k": hv(pts(grid)),
        "hv_tpe": hv(pts(tpe)) if tpe else None,
        "fixed_k_fresh": fresh_grid,
        "hv_fresh": hv_fresh,
        "flops_span": max(ratios) / max(min(ratios), 1e-12),
        # lambda up: FLOPs down; budget up: FLOPs up
        "flops_monotone": all(
            (a <= b) if knob == "budget" else (a >= b) for a, b in itertools.pairwise(ratios)
        ),
        "within_budget": all(r["flops_ratio"] <= r["budget"] for r in rollouts)
        if knob == "budget"
        else None,
        "wall_s": time.perf_counter() - t0,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from bench_search import quiet

    from midl_autok.rl import train_pool_policy

    quiet()
    torch.set_num_threads(1)
    started = time.perf_counter()
    name = "pool_budget_policy.zip" if args.budgets else "pool_policy.zip"
    policy = Path(args.store) / name
    training: dict[str, Any] = {"reused": True}
    if args.retrain or not policy.is_file():
        t0 = time.perf_counter()
        trained = train_pool_policy(
            args.pool,
            policy,
            episodes=args.episodes,
            n_envs=args.envs,
            max_samples=args.max_samples,
            epochs=args.lo_epochs,
            seed=args.seed,
            min_fraction=args.min_fraction,
            learning_rate=args.lr,
            budgets=(0.0, 1.0) if args.budgets else None,
        )
        eps = trained.episodes
        wall = time.perf_counter() - t0
        last = eps[-len(eps) // 4 :]
        training = {
            "reused": False,
            "episodes": len(eps),
            "steps": trained.steps,
            "wall_s": wall,
            "s_per_episode": wall / max(1, len(eps)),
            "last_quarter_by_task": {
                t: {
                    "episodes": len(rows),
                    "val_accuracy": float(np.mean([r["val_accuracy"] or 0.0 for r in rows])),
                    "flops_ratio": float(np.mean([r["flops_ratio"] or 0.0 for r in rows])),
                    "budget": float(np.mean([r["budget"] or 0.0 for r in rows])),
                }
                for t in args.pool
                if (rows := [r for r in last if r["task"] == load_spec(t).name])
            },
        }
        print(f"trained: {len(eps)} episodes in {wall:.0f} s", flush=True)
    partial_out = Path(args.out).with_suffix(".partial.json")
    partial_out.parent.mkdir(parents=True, exist_ok=True)
    tasks: list[dict[str, Any]] = []

    def save(current: dict[str, Any]) -> None:
        body = {"config": vars(args), "training": training, "done": tasks, "current": current}
        partial_out.write_text(json.dumps(body, indent=2, default=str))

    for t in args.tasks:
        tasks.append(evaluate_task(t, policy, args, save))
    return {
        "config": {k: v for k, v in vars(args).items() if k != "mode"},
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_end": os.getloadavg(),
        },
        "training": training,
        "tasks": tasks,
        "wall_s": time.perf_counter() - started,
    }


def markdown(result: dict[str, Any]) -> str:
    cfg, tr = result["config"], result["training"]
    knob = result["tasks"][0]["knob"] if result["tasks"] else "lam"
    word = "budget" if knob == "budget" else "lambda"
    lines = [
        f"### One PPO policy over a task pool ({', '.join(cfg['pool'])}), zero-shot on the rest",
        "",
        f"Training: {tr.get('episodes', '?')} low-fidelity episodes ({cfg['max_samples']} "
        f"samples, {cfg['lo_epochs']} epochs, {cfg['envs']} vectorized envs), "
        f"{tr.get('s_per_episode', float('nan')):.2f} s per episode, "
        f"{tr.get('wall_s', float('nan')):.0f} s in all. Full runs: full data, the spec's "
        f"epochs; closed vs open loop on {cfg['fresh']} fresh seed(s) per {word}.",
        "",
        f"| task | held out | {word}s | FLOPs ratio per {word} | span | monotone | HV rollouts "
        "| HV fixed-k | HV TPE | closed - open val acc (seeds) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["tasks"]:
        values = ", ".join(f"{v:.3g}" for v in t["values"])
        ratios = " / ".join(f"{r['flops_ratio']:.3f}" for r in t["rollouts"])
        per = t["closed_vs_open_per_lam"]
        deltas = [r["closed_minus_open_val_accuracy"] for r in per]
        seeds = per[0]["seeds"] if per else 0
        delta = (
            f"{np.mean(deltas):+.4f} (best {word} {max(deltas):+.4f}) ({seeds})" if deltas else "-"
        )
        tpe = "-" if t["hv_tpe"] is None else f"{t['hv_tpe']:.4f}"
        lines.append(
            f"| {t['task']} | {'yes' if t['held_out'] else 'no'} | {values} | {ratios} | "
            f"{t['flops_span']:.2f}x | {'yes' if t['flops_monotone'] else 'no'} | "
            f"{t['hv_rollouts']:.4f} | {t['hv_fixed_k']:.4f} | {tpe} | {delta} |"
        )
    lines += ["", "Rollouts (val accuracy / FLOPs ratio) and the fixed-k grid:", ""]
    for t in result["tasks"]:
        ro = ", ".join(
            f"{word} {r[knob]:.3g}: {r['val_accuracy']:.3f} / {r['flops_ratio']:.3f}"
            for r in t["rollouts"]
        )
        fk = ", ".join(
            f"k {r['fraction']:.2f}: {r['val_accuracy']:.3f} / {r['flops_ratio']:.3f}"
            for r in t["fixed_k"]
        )
        lines += [f"* {t['task']}: policy {ro}; fixed-k {fk}"]
    lines += ["", f"Closed minus open loop per {word} (val accuracy mean, sd; FLOPs ratio):", ""]
    for t in result["tasks"]:
        for r in t["closed_vs_open_per_lam"]:
            sd = r["closed_minus_open_sd"]
            lines.append(
                f"* {t['task']} {word} {r[knob]:.3g}: {r['closed_minus_open_val_accuracy']:+.4f}"
                f" (sd {'-' if sd is None else f'{sd:.4f}'}, {r['seeds']} seeds), FLOPs "
                f"{r['closed_minus_open_flops_ratio']:+.4f}, schedules differ "
                f"{r['schedules_differ']:.0%}"
            )
    if any(t.get("hv_fresh") for t in result["tasks"]):
        lines += ["", "HV on the fresh seeds (live policy / its replay / fixed-k grid):", ""]
    for t in result["tasks"]:
        rows = t.get("hv_fresh") or []
        if rows:
            each = ", ".join(
                f"{r['closed']:.4f} / {r['open']:.4f} / {r['fixed_k']:.4f}" for r in rows
            )
            mean = {k: float(np.mean([r[k] for r in rows])) for k in ("closed", "open", "fixed_k")}
            wins = sum(r["closed"] >= r["fixed_k"] for r in rows)
            lines.append(
                f"* {t['task']}: mean {mean['closed']:.4f} / {mean['open']:.4f} / "
                f"{mean['fixed_k']:.4f}; live >= grid on {wins} of {len(rows)} seeds ({each})"
            )
    lines += benchkit.wall_time_lines(result)
    return "\n".join(lines)


def task_budgets(spec: str, floor: float, n: int = 5, top: float = 0.9) -> list[float]:
    """``--budgets``: ``auto`` = ``n`` budgets geometric from the task's ``floor`` to ``top``
    (rounded to 4 decimals, the lowest up so it stays reachable), else the listed values."""
    if spec != "auto":
        return [float(v) for v in spec.split(",")]
    ratios = np.geomspace(floor, top, n)
    return [math.ceil(float(ratios[0]) * 1e4) / 1e4] + [round(float(r), 4) for r in ratios[1:]]


def fresh_for(spec: str, task: str) -> int:
    """``--fresh``: one count for every task, or ``task=n,task=n`` (0 for unnamed tasks)."""
    if "=" not in spec:
        return int(spec)
    counts = dict(item.split("=") for item in spec.split(","))
    return int(counts.get(task, 0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", type=lambda s: s.split(","), default=None)
    p.add_argument(
        "--tasks",
        type=lambda s: s.split(","),
        default=["mnist1d-mlp", "digits-mlp"],
        help="full-run tasks",
    )
    p.add_argument("--episodes", type=int, default=1500, help="low-fidelity training episodes")
    p.add_argument("--envs", type=int, default=4, help="vectorized envs")
    p.add_argument("--max-samples", type=int, default=256)
    p.add_argument("--lo-epochs", type=int, default=4)
    p.add_argument("--min-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3, help="PPO learning rate")
    p.add_argument(
        "--lambdas",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.01, 0.03, 0.1, 0.3, 1.0],
    )
    p.add_argument(
        "--budgets",
        default=None,
        help="budget mode: 'auto' (5 per task, floor to 0.9) or a comma list of budgets",
    )
    p.add_argument(
        "--fresh", default="5", help="fresh seeds for closed vs open (N or task=N,task=N)"
    )
    p.add_argument(
        "--fresh-grid",
        action="store_true",
        help="also run the fixed-k grid on every fresh seed (HV per seed)",
    )
    p.add_argument("--tpe-trials", type=int, default=5)
    p.add_argument("--retrain", action="store_true", help="train even if the policy exists")
    p.add_argument("--store", default="midl_runs/bench_rl_pool")
    p.add_argument("--out", default=None, help="output path, no suffix")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if args.pool is None:
        args.pool = ["digits-mlp", "synthetic-mlp"]
        if not args.budgets:
            args.pool.append("tokens-lstm")
    if args.out is None:
        args.out = str(OUT / ("bench_rl_pool_budget" if args.budgets else "bench_rl_pool"))
    result = run(args)
    from bench_rl import write_results

    write_results(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
