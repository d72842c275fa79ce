"""The search benchmark suite (issue 16): hypervolume vs trials, and the cheapest schedule
confirmed at dense accuracy, per data set and agent.

    python experiments/bench_search.py                # the full suite: 4 data sets, 30 trials,
                                                      # 3 seeds, 7 agents, confirm over 3 seeds
    python experiments/bench_search.py --datasets digits,table --agents default,fixed-k,tpe \
        --seeds 1 --trials 30 --epochs 10             # a reduced run
    python experiments/bench_search.py --agents fixed-k,tpe,tpe:budget,gp:budget --trials 30 \
        --checkpoints 10,20 --out experiments/results/bench_search_budget

Data sets: ``digits`` (digits-mlp), ``mnist1d`` (mnist1d-mlp), ``table`` (a generated
24-feature, 7-class table written to a temporary CSV and read with the CSV reader:
``_suite.table_csv``), ``tokens`` (tokens-lstm: synthetic tokens through the LSTM).

``--agents`` takes ``agent`` or ``agent:space`` (e.g. ``tpe:budget``: TPE in the budget space;
a plain name searches ``--space``, default the experiment's), and two labels for the CLI
default search: ``default`` (the experiment's agent, space and seed grid, as ``midl-autok
search EXPERIMENT`` runs it) and ``default+ranks`` (the same with ``--search-ranks``: every
MID-L layer's gate and light rank co-searched). Each entry is one row of the tables.

Confirmation (``--confirm-seeds N``, default 3; 0: none): per data set and search seed the
dense variant is trained with N seeds, and per search the cheapest front schedules (those
within 2 points of dense validation accuracy, at most ``--confirm-candidates``) are retrained
with N seeds on the same split until one's mean test accuracy is within 0.5 points of the
dense mean: that schedule's inference-FLOPs ratio is the "cheapest confirmed" column.

For every dataset, agent and seed this runs a real search (``run_search``: one Optuna trial and
one MLflow child run per schedule, in the store ``--store``, default
``midl_runs/bench_search``) and reads back the study. Studies resume, so an
interrupted benchmark continues where it stopped when rerun with the same options.

Reported, per dataset (mean over seeds):

* normalized hypervolume (accuracy 0..1 x inference FLOPs 0..dense, reference point =
  accuracy 0 and the dense model's FLOPs, fixed before the search) after 10, 25 and ``--trials``
  completed trials, and the first trial count at which each agent's mean curve reaches
  random search's value at ``--trials`` trials.
  Target (issue 3): the best sampler reaches random@50 within 25 trials.
* the cheapest schedule at the best accuracy: per seed, the best validation accuracy any
  agent reached is the reference; per agent, the lowest inference-FLOPs ratio among its
  schedules within 0.5 points of it (mean over seeds; "-" when an agent has none on a seed).
* the best fixed-k schedule (highest validation accuracy of the fixed-k grid) against the
  searched schedules (all other agents) of the same seed: the largest FLOPs reduction
  ``fixed FLOPs / searched FLOPs`` among searched schedules whose validation accuracy is within
  0.3 points of the fixed-k one. Target: >= 1.3x on at least one dataset.

RL agents (``--agents tpe,ppo``) run at the same number of training runs: ``--trials`` minus
3 training episodes, then one rollout per lambda (0.01, 0.1, 1); every episode is a trial of
the study, so their hypervolume curves compare directly. ``bench_rl.py`` adds the
rollouts-only front and closed-loop vs open-loop control on fresh seeds.

Writes ``bench_search.json`` (config, curves, every trial's point, tables), ``bench_search.html``
(plotly: hypervolume vs trials, mean and min-max band over seeds; regenerated from the run,
not kept in git: the JSON and the PNG are the record) and ``bench_search.png`` (when kaleido
can render), and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _suite import CONFIRM_SEEDS, cheapest_confirmed, dense_baseline, experiment

from midl_autok.backends import run_search
from midl_autok.pareto import hypervolume_history
from midl_autok.store import StudyRecord, load_study_record, open_store

EXPERIMENTS = {
    "digits": "digits-mlp",
    "mnist1d": "mnist1d-mlp",
    "table": "table-mlp (generated CSV)",
    "tokens": "tokens-lstm",
}
AGENTS = ("default", "default+ranks", "tpe", "gp", "random", "fixed-k", "ppo")
DEFAULT_LABELS = ("default", "default+ranks")
RL_AGENTS = ("ppo", "sac", "a2c")  # accepted by --agents; closed vs open loop: bench_rl.py
RL_LAMBDAS = [0.01, 0.1, 1.0]
OUT = Path(__file__).parent / "results"
ACC_TOLERANCE = 0.003  # "within 0.3 points"
BEST_TOLERANCE = 0.005  # "within 0.5 points of the best validation accuracy"
CHECKPOINTS = (10, 20, 30)


def quiet() -> None:
    """:func:`midl_autok.search.quiet.quiet`, and no FutureWarning of any library."""
    from midl_autok.search.quiet import quiet as quiet_libraries

    quiet_libraries()
    warnings.filterwarnings("ignore", category=FutureWarning)


def hv_curve(record: StudyRecord, n: int) -> list[float]:
    """Normalized hypervolume after each of the first ``n`` completed trials (trial order)."""
    done = [t for t in record.trials if t.state.name == "COMPLETE" and t.values is not None]
    ref, ideal = record.reference_point, record.attrs["ideal"]
    if not done or ref is None:
        return [0.0] * n
    feasible = [all(v <= 0 for v in t.constraints.values()) for t in done]
    raw = hypervolume_history([t.values for t in done], ref, record.directions, include=feasible)
    box = float(np.prod([abs(r - i) for r, i in zip(ref, ideal, strict=True)]))
    curve = [float(v) / box for v in raw[:n]]
    return curve + [curve[-1]] * (n - len(curve))


def trial_points(record: StudyRecord) -> list[dict[str, Any]]:
    out = []
    for t in record.trials:
        if t.state.name != "COMPLETE":
            continue
        ua = t.user_attrs
        out.append(
            {
                "trial": t.number,
                "val_accuracy": ua["val_accuracy"],
                "test_accuracy": ua["test_accuracy"],
                "inference_flops": ua["inference_flops"],
                "inference_flops_ratio": ua["inference_flops_ratio"],
                "train_time_s": ua.get("train_time_s"),
                "schedule": ua.get("schedule"),
            }
        )
    return out


def write_json(out: Path, result: dict[str, Any]) -> None:
    """``<out>.json``, written atomically (a partial benchmark is readable at any time)."""
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out.with_suffix(".json"))


def run(args: argparse.Namespace, out: Path | None = None) -> dict[str, Any]:
    """Every search of ``args``; after each one, the results so far go to ``<out>.json``."""
    quiet()
    import torch

    torch.set_num_threads(args.threads)  # the dense runs and confirmations, as a trial trains
    store = open_store(args.store)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    dense: dict[str, dict[int, dict[str, Any]]] = {}
    for dataset in args.datasets:
        base = experiment(dataset)
        changes: dict[str, Any] = {
            "training.epochs": args.epochs,
            "dataset.max_samples": args.max_samples,
            "budget.trials": args.trials,
        }
        base = base.override(**changes)
        for seed in range(args.seeds):
            seeded = base.override(seed=seed)
            if args.confirm_seeds:
                t0 = time.perf_counter()
                dense.setdefault(dataset, {})[seed] = {
                    **dense_baseline(seeded, CONFIRM_SEEDS[: args.confirm_seeds]),
                    "wall_s": time.perf_counter() - t0,
                }
                print(
                    f"{dataset:8s} seed {seed} dense test accuracy "
                    f"{dense[dataset][seed]['test_accuracy_mean']:.4f}",
                    flush=True,
                )
            for label in args.agents:
                spec, label = search_spec(seeded, label, args)
                t0 = time.perf_counter()
                summary = run_search(
                    spec, store=store, device="cpu", threads=args.threads, plotlyjs="cdn"
                )
                record = load_study_record(store, summary.study)
                row = {
                    "dataset": dataset,
                    "agent": label,
                    "space": spec.search.space,
                    "seed": seed,
                    "study": summary.study,
                    "completed": summary.completed,
                    "failed": record.counts().get("FAIL", 0),
                    "hv_curve": hv_curve(record, args.trials),
                    "points": trial_points(record),
                    "wall_s": time.perf_counter() - t0,
                    "overhead_per_trial_s": summary.overhead_per_trial_s,
                }
                if args.confirm_seeds:
                    t1 = time.perf_counter()
                    row["confirm"] = cheapest_confirmed(
                        spec,
                        row["points"],
                        dense[dataset][seed],
                        seeds=CONFIRM_SEEDS[: args.confirm_seeds],
                        max_candidates=args.confirm_candidates,
                    )
                    row["confirm_wall_s"] = time.perf_counter() - t1
                runs.append(row)
                confirmed = (row.get("confirm") or {}).get("confirmed")
                print(
                    f"{dataset:8s} seed {seed} {label:14s} HV {row['hv_curve'][-1]:.4f} "
                    f"({row['completed']} trials, {row['wall_s']:.0f} s); cheapest confirmed "
                    f"{confirmed['inference_flops_ratio'] if confirmed else '-'}",
                    flush=True,
                )
                if out is not None:
                    write_json(out, snapshot(args, store, started, runs, dense))
    return snapshot(args, store, started, runs, dense)


def search_spec(base: Any, label: str, args: argparse.Namespace) -> tuple[Any, str]:
    """The spec of one row (``agent``, ``agent:space``, ``default``, ``default+ranks``) and
    its label."""
    if label in DEFAULT_LABELS:  # the experiment's own search section, as the CLI runs it
        return base.override(**{"search.ranks": label == "default+ranks" or None}), label
    agent, _, space = label.partition(":")
    changes: dict[str, Any] = {
        "search.agent": agent,
        "search.space": space or args.space or base.search.space,
        "search.seed_grid": 0,
    }
    if agent in RL_AGENTS:  # equal training runs: episodes + one rollout per lambda
        episodes = args.trials - len(RL_LAMBDAS)
        changes["search.options"] = {"episodes": episodes, "lambdas": RL_LAMBDAS}
    if args.seed_grid and agent not in (*RL_AGENTS, "fixed-k"):
        changes["search.seed_grid"] = args.seed_grid
        label = f"{label}+grid{args.seed_grid}"
    return base.override(**changes), label


def snapshot(
    args: argparse.Namespace,
    store: Any,
    started: float,
    runs: list[dict[str, Any]],
    dense: dict[str, dict[int, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    result = {
        "config": {**vars(args), "store": str(store.root)},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "wall_s": time.perf_counter() - started,
        "dense": {
            d: {str(s): v for s, v in by_seed.items()} for d, by_seed in (dense or {}).items()
        },
        "runs": runs,
    }
    add_tables(result, args.checkpoints)
    return result


def add_tables(result: dict[str, Any], checkpoints: tuple[int, ...] = CHECKPOINTS) -> None:
    runs = result["runs"]
    result["hypervolume"] = hv_table(runs, checkpoints)
    result["cheapest_at_best"] = cheapest_at_best(runs)
    result["fixed_k_vs_searched"] = fixed_k_table(runs)
    result["confirmed"] = confirmed_table(runs, result.get("dense", {}))


def merge(files: list[str]) -> dict[str, Any]:
    parts = [json.loads(Path(f).read_text()) for f in files]
    runs = [r for p in parts for r in p["runs"]]
    result = {
        "config": {
            **parts[0]["config"],
            "merged_from": files,
            "datasets": list(dict.fromkeys(r["dataset"] for r in runs)),
            "per_file": [p["config"] for p in parts],
        },
        "machine": parts[0]["machine"],
        "wall_s": sum(p["wall_s"] for p in parts),
        "dense": {d: v for p in parts for d, v in p.get("dense", {}).items()},
        "runs": runs,
    }
    add_tables(result, tuple(parts[0]["config"].get("checkpoints", CHECKPOINTS)))
    return result


def hv_table(
    runs: list[dict[str, Any]], checkpoints: tuple[int, ...] = CHECKPOINTS
) -> list[dict[str, Any]]:
    """Per dataset and agent: mean HV at 10, 25 and N trials (N = that dataset's --trials),
    and the first trial count whose mean HV reaches random search's mean HV at N."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        n = max(len(r["hv_curve"]) for r in runs if r["dataset"] == dataset)
        curves = {
            agent: np.array(
                [r["hv_curve"] for r in runs if r["dataset"] == dataset and r["agent"] == agent]
            )
            for agent in dict.fromkeys(r["agent"] for r in runs if r["dataset"] == dataset)
        }
        means = {a: c.mean(axis=0) for a, c in curves.items()}
        target = float(means["random"][-1]) if "random" in means else None
        for agent, mean in means.items():
            reach = None
            if target is not None:
                hits = np.flatnonzero(mean >= target - 1e-12)
                reach = int(hits[0]) + 1 if hits.size else None
            rows.append(
                {
                    "dataset": dataset,
                    "agent": agent,
                    "seeds": int(curves[agent].shape[0]),
                    "trials": n,
                    **{f"hv@{k}": float(mean[k - 1]) for k in checkpoints if k <= n},
                    **{
                        f"hv_std@{k}": float(curves[agent][:, k - 1].std())
                        for k in checkpoints
                        if k <= n
                    },
                    "hv_final": float(mean[-1]),
                    "hv_std_final": float(curves[agent][:, -1].std()),
                    "trials_to_random_final": reach,
                    "wall_s_mean": float(
                        np.mean(
                            [
                                r["wall_s"] + r.get("confirm_wall_s", 0.0)
                                for r in runs
                                if r["dataset"] == dataset and r["agent"] == agent
                            ]
                        )
                    ),
                    "search_wall_s_mean": float(
                        np.mean(
                            [
                                r["wall_s"]
                                for r in runs
                                if r["dataset"] == dataset and r["agent"] == agent
                            ]
                        )
                    ),
                }
            )
    return rows


def cheapest_at_best(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and agent: the cheapest schedule within 0.5 points of the best validation
    accuracy of its seed (best over all agents), mean over the seeds where it has one."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == dataset]
        best = {
            seed: max(p["val_accuracy"] for r in mine if r["seed"] == seed for p in r["points"])
            for seed in {r["seed"] for r in mine}
        }
        for agent in dict.fromkeys(r["agent"] for r in mine):
            per_seed = []
            for r in (r for r in mine if r["agent"] == agent):
                near = [
                    p
                    for p in r["points"]
                    if p["val_accuracy"] >= best[r["seed"]] - BEST_TOLERANCE - 1e-12
                ]
                if near:
                    top = min(near, key=lambda p: (p["inference_flops"], -p["val_accuracy"]))
                    per_seed.append({**top, "seed": r["seed"], "best": best[r["seed"]]})
            ratios = [p["inference_flops_ratio"] for p in per_seed]
            rows.append(
                {
                    "dataset": dataset,
                    "agent": agent,
                    "seeds_with_one": len(per_seed),
                    "seeds": sum(1 for r in mine if r["agent"] == agent),
                    "flops_ratio_mean": float(np.mean(ratios)) if ratios else None,
                    "flops_ratio_min": min(ratios) if ratios else None,
                    "flops_ratio_max": max(ratios) if ratios else None,
                    "per_seed": per_seed,
                }
            )
    return rows


def confirmed_table(
    runs: list[dict[str, Any]], dense: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per data set and agent: the cheapest schedule confirmed within 0.5 points of dense
    test accuracy, inference-FLOPs ratio per seed and mean over the seeds that have one, and
    how much cheaper than fixed-k's (same seeds; > 1: cheaper)."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        mine = [r for r in runs if r["dataset"] == dataset and "confirm" in r]
        by_agent: dict[str, dict[int, float | None]] = {}
        for r in mine:
            c = r["confirm"]["confirmed"]
            by_agent.setdefault(r["agent"], {})[r["seed"]] = (
                c["inference_flops_ratio"] if c else None
            )
        fixed = by_agent.get("fixed-k", {})
        for agent, per_seed in by_agent.items():
            found = [v for v in per_seed.values() if v is not None]
            pairs = [
                fixed[s] / v
                for s, v in per_seed.items()
                if v is not None and fixed.get(s) is not None
            ]
            dense_acc = [
                d["test_accuracy_mean"] for d in dense.get(dataset, {}).values() if d is not None
            ]
            rows.append(
                {
                    "dataset": dataset,
                    "agent": agent,
                    "dense_test_accuracy": float(np.mean(dense_acc)) if dense_acc else None,
                    "per_seed": {str(s): v for s, v in sorted(per_seed.items())},
                    "seeds_with_one": len(found),
                    "seeds": len(per_seed),
                    "flops_ratio_mean": float(np.mean(found)) if found else None,
                    "cheaper_than_fixed_k": float(np.mean(pairs)) if pairs else None,
                }
            )
    return rows


def fixed_k_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        for seed in sorted({r["seed"] for r in runs if r["dataset"] == dataset}):
            mine = [r for r in runs if r["dataset"] == dataset and r["seed"] == seed]
            fixed = [p for r in mine if r["agent"] == "fixed-k" for p in r["points"]]
            if not fixed:
                continue
            best = max(fixed, key=lambda p: (p["val_accuracy"], -p["inference_flops"]))
            searched = [
                {**p, "agent": r["agent"]}
                for r in mine
                if r["agent"] != "fixed-k"
                for p in r["points"]
                if p["val_accuracy"] >= best["val_accuracy"] - ACC_TOLERANCE
            ]
            row: dict[str, Any] = {
                "dataset": dataset,
                "seed": seed,
                "fixed_k_val_accuracy": best["val_accuracy"],
                "fixed_k_flops_ratio": best["inference_flops_ratio"],
            }
            if searched:
                top = min(searched, key=lambda p: (p["inference_flops"], -p["val_accuracy"]))
                row.update(
                    {
                        "searched_agent": top["agent"],
                        "searched_val_accuracy": top["val_accuracy"],
                        "searched_flops_ratio": top["inference_flops_ratio"],
                        "flops_reduction": best["inference_flops"] / top["inference_flops"],
                        "dominates": top["val_accuracy"] >= best["val_accuracy"]
                        and top["inference_flops"] < best["inference_flops"],
                    }
                )
            rows.append(row)
    return rows


def suite_markdown(result: dict[str, Any]) -> str:
    """The README's tables: HV@k mean (sd) and wall time; the cheapest confirmed schedule."""
    checkpoints = tuple(result["config"].get("checkpoints", CHECKPOINTS))
    lines = [
        "| dataset | agent | seeds | "
        + " | ".join(f"HV@{k}" for k in checkpoints)
        + " | wall s (search + confirm) |",
        "|---|---|---|" + "---|" * len(checkpoints) + "---|",
    ]
    for r in result["hypervolume"]:
        cells = " | ".join(
            f"{r[f'hv@{k}']:.3f} ({r[f'hv_std@{k}']:.3f})" if f"hv@{k}" in r else "-"
            for k in checkpoints
        )
        lines.append(
            f"| {r['dataset']} | {r['agent']} | {r['seeds']} | {cells} | "
            f"{r['search_wall_s_mean']:.0f} + {r['wall_s_mean'] - r['search_wall_s_mean']:.0f} |"
        )
    if result.get("confirmed"):
        lines += [
            "",
            "| dataset | agent | dense test acc | cheapest confirmed FLOPs ratio per seed | mean "
            "| x cheaper than fixed-k |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["confirmed"]:
            seeds = ", ".join(
                f"s{s}: {'-' if v is None else f'{v:.3f}'}" for s, v in r["per_seed"].items()
            )
            mean = "-" if r["flops_ratio_mean"] is None else f"{r['flops_ratio_mean']:.3f}"
            dense = "-" if r["dense_test_accuracy"] is None else f"{r['dense_test_accuracy']:.4f}"
            cheaper = (
                "-" if r["cheaper_than_fixed_k"] is None else f"{r['cheaper_than_fixed_k']:.2f}x"
            )
            lines.append(
                f"| {r['dataset']} | {r['agent']} | {dense} | {seeds} | {mean} | {cheaper} |"
            )
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    checkpoints = tuple(result["config"].get("checkpoints", CHECKPOINTS))
    heads = " | ".join(f"HV@{k}" for k in checkpoints)
    lines = [
        "Normalized hypervolume (mean over seeds) after k completed trials; N = trials per "
        "search; 'reach' = first k where the mean curve reaches random search's HV at N.",
        "",
        f"| dataset | agent | seeds | {heads} | HV@N (std) | N | reach random@N |",
        "|---|---|---|" + "---|" * len(checkpoints) + "---|---|---|",
    ]
    for r in result["hypervolume"]:
        cells = " | ".join(f"{r.get(f'hv@{k}', float('nan')):.4f}" for k in checkpoints)
        lines.append(
            f"| {r['dataset']} | {r['agent']} | {r['seeds']} | {cells} | {r['hv_final']:.4f} "
            f"({r['hv_std_final']:.4f}) | {r['trials']} | {r['trials_to_random_final'] or '-'} |"
        )
    lines += [
        "",
        "Cheapest schedule within 0.5 points of the best validation accuracy of its seed (best "
        "over all agents): inference-FLOPs ratio, mean [min, max] over the seeds that have one.",
        "",
        "| dataset | agent | seeds with one | FLOPs ratio mean [min, max] | per seed (val acc) |",
        "|---|---|---|---|---|",
    ]
    for r in result.get("cheapest_at_best", []):
        ratio = (
            "-"
            if r["flops_ratio_mean"] is None
            else f"{r['flops_ratio_mean']:.3f} [{r['flops_ratio_min']:.3f}, "
            f"{r['flops_ratio_max']:.3f}]"
        )
        seeds = ", ".join(
            f"s{p['seed']}: {p['inference_flops_ratio']:.3f} ({p['val_accuracy']:.4f})"
            for p in r["per_seed"]
        )
        lines.append(
            f"| {r['dataset']} | {r['agent']} | {r['seeds_with_one']}/{r['seeds']} | {ratio} "
            f"| {seeds} |"
        )
    lines += [
        "",
        "Best fixed-k schedule vs the cheapest searched schedule within 0.3 points of its "
        "validation accuracy (same seed).",
        "",
        "| dataset | seed | fixed-k acc | fixed-k FLOPs | searched (agent) acc | searched FLOPs "
        "| FLOPs reduction | dominates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["fixed_k_vs_searched"]:
        if "searched_agent" not in r:
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {r['fixed_k_val_accuracy']:.4f} | "
                f"{r['fixed_k_flops_ratio']:.3f} | none within 0.3 points | - | - | - |"
            )
            continue
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {r['fixed_k_val_accuracy']:.4f} | "
            f"{r['fixed_k_flops_ratio']:.3f} | {r['searched_val_accuracy']:.4f} "
            f"({r['searched_agent']}) | {r['searched_flops_ratio']:.3f} | "
            f"{r['flops_reduction']:.2f}x | {'yes' if r['dominates'] else 'no'} |"
        )
    return "\n".join(lines)


def figure(result: dict[str, Any]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    datasets = list(dict.fromkeys(r["dataset"] for r in result["runs"]))
    fig = make_subplots(rows=1, cols=len(datasets), subplot_titles=datasets)
    colors = {
        "random": "#7f7f7f",
        "fixed-k": "#8c564b",
        "tpe": "#1f77b4",
        "nsga2": "#2ca02c",
        "gp": "#d62728",
    }
    for col, dataset in enumerate(datasets, start=1):
        for agent in dict.fromkeys(r["agent"] for r in result["runs"]):
            curves = np.array(
                [
                    r["hv_curve"]
                    for r in result["runs"]
                    if r["dataset"] == dataset and r["agent"] == agent
                ]
            )
            if curves.size == 0:
                continue
            x = list(range(1, curves.shape[1] + 1))
            color = colors.get(agent, "#9467bd")
            fig.add_trace(
                go.Scatter(
                    x=x + x[::-1],
                    y=list(curves.max(0)) + list(curves.min(0))[::-1],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line={"width": 0},
                    showlegend=False,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=curves.mean(0),
                    name=agent,
                    legendgroup=agent,
                    showlegend=col == 1,
                    line={"color": color},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="completed trials", row=1, col=col)
    fig.update_yaxes(title_text="normalized hypervolume", row=1, col=1)
    fig.update_layout(
        title="Hypervolume vs trials (mean and min-max over seeds)",
        template="plotly_white",
        width=520 * len(datasets),
        height=460,
    )
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=30, help="trials per search")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument(
        "--datasets",
        type=lambda s: s.split(","),
        default=list(EXPERIMENTS),
        help=f"comma-separated: {','.join(EXPERIMENTS)}",
    )
    p.add_argument(
        "--agents",
        type=lambda s: s.split(","),
        default=list(AGENTS),
        help="comma-separated agent or agent:space (e.g. tpe:budget), default (the CLI "
        "default search) or default+ranks (the same with --search-ranks)",
    )
    p.add_argument(
        "--space",
        default=None,
        help="the space of agents given without one (default: the experiment's, budget)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=int,
        default=3,
        help="seeds of the dense baseline and of each confirmation (0: no confirmation)",
    )
    p.add_argument(
        "--confirm-candidates",
        type=int,
        default=3,
        help="most front schedules retrained per search, cheapest first",
    )
    p.add_argument(
        "--seed-grid",
        type=int,
        default=0,
        help="search.seed_grid of the sampler agents (not fixed-k); their rows are labelled "
        "AGENT+gridN",
    )
    p.add_argument(
        "--checkpoints",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=CHECKPOINTS,
        help="trial counts of the HV@k columns (comma-separated)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    p.add_argument("--max-samples", type=int, default=None, help="subsample the dataset")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    p.add_argument("--store", default="midl_runs/bench_search", help="store of the studies")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="no searches: merge the runs of earlier result files (e.g. one per dataset, run "
        "in parallel) and write the combined tables and plot",
    )
    p.add_argument(
        "--out",
        default=str(OUT / "bench_search"),
        help="path prefix of the .json/.html/.png results",
    )
    args = p.parse_args()
    for name in args.datasets:
        if name not in EXPERIMENTS:
            p.error(f"unknown dataset {name!r}; valid: {', '.join(EXPERIMENTS)}")
    if not 0 <= args.confirm_seeds <= len(CONFIRM_SEEDS):
        p.error(f"--confirm-seeds must be in [0, {len(CONFIRM_SEEDS)}]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = merge(args.merge) if args.merge else run(args, out)
    write_json(out, result)
    fig = figure(result)
    fig.write_html(out.with_suffix(".html"), include_plotlyjs="cdn")
    try:
        fig.write_image(out.with_suffix(".png"))
    except Exception as exc:  # kaleido needs a browser; the HTML is enough
        print(f"(no PNG: {exc})")
    print(suite_markdown(result))
    print()
    print(markdown(result))
    print(f"\nwrote {out.with_suffix('.json')} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
