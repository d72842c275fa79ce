"""Ray backend vs local backend: throughput, framework overhead, and early stopping.

    python experiments/bench_backends.py                 # all three parts (~15 min on 2 cores)
    python experiments/bench_backends.py --parts throughput overhead --trials 8

1. **Throughput** (target: Ray with 2 workers >= 1.6x the trials per hour of the local
   backend on 2 cores, for trials of about 5 s): the same search (random agent, cubic space,
   ``--trials`` trials of a synthetic MLP sized to ~5 s of training on one thread) with the
   local backend and with Ray (2 workers, 1 CPU each, a local Ray started by the search).
   Trials per hour are measured over the search phase (from the progress callback's start,
   after the study, the MLflow parent run and Ray are up, to the last trial recorded) and,
   separately, over the whole invocation including Ray's start (~7 s here).
2. **Overhead** (target: <= 15% for ~10 s trials): Ray with one worker runs the trials one
   at a time; per trial, its search-phase time minus the training run inside it
   (``run_experiment``'s wall time as the worker measured it: data, model, training,
   evaluation), relative to that training run. That is everything around training: Optuna
   ask/tell and user attrs, the MLflow child run and its batched logging, the parent's
   hypervolume, Ray Tune's scheduling, result reporting each epoch and the worker's start
   (its first trial imports torch). Measured inside the same trials, it does not drift with
   the machine's load; the same schedules trained again bare in this process afterwards
   are reported too (``vs_bare``). The local backend is measured the same way.
3. **Early stopping**: TPE on Ray (2 workers) for a fixed wall-clock budget, with and without
   ``mo-asha``; hypervolume (normalized, against the study's fixed reference) after each
   recorded trial, and the time each run first reaches a target: ``--hv-fraction`` of the
   best hypervolume the run without early stopping reached with the same seed.

Other engineers share this machine: the load average before and after each part is in the
JSON. Prints a markdown table; writes ``experiments/results/bench_backends.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "results" / "bench_backends.json"
THROUGHPUT_TARGET = 1.6
OVERHEAD_TARGET = 0.15


def quiet() -> None:
    """:func:`midl_autok.search.quiet.quiet`, and no DeprecationWarning of any library."""
    from midl_autok.search.quiet import quiet as quiet_libraries

    quiet_libraries()
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --------------------------------------------------------------------------- the experiment


def make_spec(
    samples: int,
    *,
    trials: int,
    epochs: int,
    agent: str = "random",
    space: str = "cubic",
    seed: int = 0,
    timeout_s: float | None = None,
) -> Any:
    from midl_autok.spec import validate_spec

    return validate_spec(
        {
            "name": "bench-backends",
            "seed": seed,
            "dataset": {"name": "synthetic", "options": {"n_samples": samples}},
            "model": {"arch": "mlp", "hidden": [64, 64], "gate_rank": 8, "light_rank": 8},
            "training": {"epochs": epochs, "batch_size": 64, "lr": 0.01, "optimizer": "adam"},
            "budget": {"trials": trials, "timeout_s": timeout_s},
            "search": {"agent": agent, "space": space},
        }
    )


def bare_seconds(spec: Any, schedule: Any = None) -> float:
    """Wall time of one bare training run (dataset cached, one torch thread)."""
    import torch

    from midl_autok.trainer import run_experiment

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_experiment(spec, schedule=schedule, k_fraction=0.5, device="cpu")
    return time.perf_counter() - start


def calibrate(seconds: float, *, epochs: int) -> int:
    """Synthetic samples for about ``seconds`` of training (time is linear in samples)."""
    samples = 4000
    bare_seconds(make_spec(samples, trials=1, epochs=epochs))  # warm-up: imports, data
    took = statistics.median(
        bare_seconds(make_spec(samples, trials=1, epochs=epochs)) for _ in range(2)
    )
    return max(1000, int(samples * seconds / took))


class Clock:
    """A search callback: the start of the search phase and (time, state, HV) per trial."""

    def __init__(self) -> None:
        self.start = 0.0
        self.trials: list[dict[str, Any]] = []

    def on_start(self, session: Any, *, target: int, done: int) -> None:
        self.start = time.perf_counter()

    def on_trial_end(self, session: Any, trial: Any, outcome: Any) -> None:
        self.trials.append(
            {
                "t": time.perf_counter() - self.start,
                "trial": trial.number,
                "state": trial.state.name,
                "hv": session.normalized_hypervolume,
                "train_s": outcome.train_s,
            }
        )

    @property
    def phase_s(self) -> float:
        return self.trials[-1]["t"] if self.trials else 0.0


def search(backend: str, spec: Any, folder: Path, **ray: Any) -> tuple[Any, Clock, float, Any]:
    """Run one search in a fresh store; return (summary, clock, wall seconds, store)."""
    from midl_autok.store import open_store

    store = open_store(folder)
    clock = Clock()
    start = time.perf_counter()
    if backend == "local":
        from midl_autok.backends import run_search

        summary = run_search(spec, store=store, device="cpu", threads=1, callbacks=[clock])
    else:
        from midl_autok.backends.ray import RayOptions, run_ray_search

        summary = run_ray_search(
            spec,
            store=store,
            device="cpu",
            threads=1,
            options=RayOptions(num_cpus=2, **ray),
            callbacks=[clock],
        )
    return summary, clock, time.perf_counter() - start, store


# --------------------------------------------------------------------------- the parts


def throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    samples = calibrate(args.throughput_s, epochs=4)
    spec = make_spec(samples, trials=args.trials, epochs=4)
    out: dict[str, Any] = {"samples": samples, "trials": args.trials, "load_before": load()}
    for name, backend, ray in (
        ("local", "local", {}),
        ("ray_2_workers", "ray", {"workers": 2, "cpus_per_trial": 1}),
    ):
        summary, clock, wall, _ = search(backend, spec, work / name, **ray)
        assert summary.completed == args.trials, summary
        trained = [t["train_s"] for t in clock.trials]
        out[name] = {
            "train_s_mean": statistics.mean(trained),
            "phase_s": clock.phase_s,
            "wall_s": wall,
            "trials_per_hour": 3600 * args.trials / clock.phase_s,
            "trials_per_hour_incl_startup": 3600 * args.trials / wall,
        }
    local, ray = out["local"], out["ray_2_workers"]
    out["speedup"] = ray["trials_per_hour"] / local["trials_per_hour"]
    out["speedup_incl_startup"] = (
        ray["trials_per_hour_incl_startup"] / local["trials_per_hour_incl_startup"]
    )
    out["target"] = THROUGHPUT_TARGET
    out["met"] = out["speedup"] >= THROUGHPUT_TARGET
    out["load_after"] = load()
    return out


def overhead(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from midl_autok.schedule import KSchedule
    from midl_autok.store import load_study_record

    samples = calibrate(args.overhead_s, epochs=4)
    spec = make_spec(samples, trials=args.overhead_trials, epochs=4)
    out: dict[str, Any] = {
        "samples": samples,
        "trials": args.overhead_trials,
        "load_before": load(),
    }
    for name, backend, ray in (
        ("ray_1_worker", "ray", {"workers": 1, "cpus_per_trial": 1}),
        ("local", "local", {}),
    ):
        summary, clock, wall, store = search(backend, spec, work / f"overhead-{name}", **ray)
        record = load_study_record(store, summary.study)
        schedules = [KSchedule.from_dict(t.user_attrs["schedule"]) for t in record.completed()]
        bare_seconds(spec)  # warm-up
        bare = [bare_seconds(spec, s) for s in schedules]
        per_trial = clock.phase_s / len(schedules)
        trained = statistics.mean(t["train_s"] for t in clock.trials)
        out[name] = {
            "per_trial_s": per_trial,
            "train_s_mean": trained,
            "overhead": per_trial / trained - 1,
            "bare_s_mean": statistics.mean(bare),
            "vs_bare": per_trial / statistics.mean(bare) - 1,
            "wall_s": wall,
        }
    out["target"] = OVERHEAD_TARGET
    out["met"] = out["ray_1_worker"]["overhead"] <= OVERHEAD_TARGET
    out["load_after"] = load()
    return out


def first_reaching(curve: list[dict[str, Any]], target: float) -> float | None:
    for point in curve:
        if point["hv"] is not None and point["hv"] >= target:
            return float(point["t"])
    return None


def early_stopping(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    samples = calibrate(args.es_epoch_s * args.es_epochs, epochs=args.es_epochs)
    out: dict[str, Any] = {
        "samples": samples,
        "epochs": args.es_epochs,
        "budget_s": args.budget_s,
        "hv_fraction": args.hv_fraction,
        "load_before": load(),
        "seeds": [],
    }
    for seed in args.seeds:
        spec = make_spec(
            samples,
            trials=10_000,
            epochs=args.es_epochs,
            agent="tpe",
            space="cosine",
            seed=seed,
            timeout_s=args.budget_s,
        )
        runs: dict[str, Any] = {}
        for early_stop in ("none", "mo-asha"):
            summary, clock, _, _ = search(
                "ray",
                spec,
                work / f"es-{seed}-{early_stop}",
                workers=2,
                cpus_per_trial=1,
                early_stop=early_stop,
            )
            runs[early_stop] = {
                "completed": sum(t["state"] == "COMPLETE" for t in clock.trials),
                "pruned": summary.pruned,
                "failed": summary.failed,
                "final_hv": summary.hypervolume_normalized,
                "curve": clock.trials,
            }
        best = max(p["hv"] or 0.0 for p in runs["none"]["curve"])
        target = args.hv_fraction * best
        for run in runs.values():
            run["time_to_target_s"] = first_reaching(run["curve"], target)
        out["seeds"].append({"seed": seed, "target_hv": target, **runs})
    out["load_after"] = load()
    return out


# --------------------------------------------------------------------------- report


def table(result: dict[str, Any]) -> str:
    rows = ["| measure | local | Ray | target | met |", "|---|---:|---:|---:|:---:|"]
    tp = result.get("throughput")
    if tp:
        rows.append(
            f"| trials/hour, ~{tp['local']['train_s_mean']:.1f} s trials, 2 cores "
            f"(search phase) | {tp['local']['trials_per_hour']:.0f} | "
            f"{tp['ray_2_workers']['trials_per_hour']:.0f} (2 workers, "
            f"x{tp['speedup']:.2f}) | >= x{tp['target']} | {'yes' if tp['met'] else 'no'} |"
        )
        rows.append(
            f"| trials/hour incl. Ray start ({tp['trials']} trials) | "
            f"{tp['local']['trials_per_hour_incl_startup']:.0f} | "
            f"{tp['ray_2_workers']['trials_per_hour_incl_startup']:.0f} "
            f"(x{tp['speedup_incl_startup']:.2f}) | | |"
        )
    oh = result.get("overhead")
    if oh:
        ray, local = oh["ray_1_worker"], oh["local"]
        extra_local = local["per_trial_s"] - local["train_s_mean"]
        extra_ray = ray["per_trial_s"] - ray["train_s_mean"]
        rows.append(
            f"| overhead per trial around the training run (~{ray['train_s_mean']:.1f} s "
            f"trials, {oh['trials']} trials) | {local['overhead'] * 100:.1f}% "
            f"({extra_local:.2f} s) | {ray['overhead'] * 100:.1f}% ({extra_ray:.2f} s, "
            f"1 worker) | <= {oh['target'] * 100:.0f}% | {'yes' if oh['met'] else 'no'} |"
        )
        rows.append(
            f"| same, vs the schedules retrained bare afterwards | "
            f"{local['vs_bare'] * 100:.1f}% | {ray['vs_bare'] * 100:.1f}% | | |"
        )
    es = result.get("early_stopping")
    if es:
        for s in es["seeds"]:
            none, mo = s["none"], s["mo-asha"]

            def fmt(v: float | None) -> str:
                return "not reached" if v is None else f"{v:.0f} s"

            rows.append(
                f"| seed {s['seed']}: time to HV {s['target_hv']:.3f} "
                f"({es['hv_fraction']:.0%} of no-stop best), {es['budget_s']:.0f} s budget | "
                f"no early stop: {fmt(none['time_to_target_s'])}, final HV "
                f"{none['final_hv']:.3f} ({none['completed']} trials) | mo-asha: "
                f"{fmt(mo['time_to_target_s'])}, final HV {mo['final_hv']:.3f} "
                f"({mo['completed']} completed, {mo['pruned']} pruned) | | |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["throughput", "overhead", "early_stopping"],
        choices=["throughput", "overhead", "early_stopping"],
    )
    parser.add_argument("--trials", type=int, default=8, help="throughput: trials per backend")
    parser.add_argument("--throughput-s", type=float, default=5.0, help="throughput trial size")
    parser.add_argument("--overhead-s", type=float, default=10.0, help="overhead trial size")
    parser.add_argument("--overhead-trials", type=int, default=6)
    parser.add_argument("--es-epochs", type=int, default=8)
    parser.add_argument("--es-epoch-s", type=float, default=0.4, help="seconds per epoch")
    parser.add_argument("--budget-s", type=float, default=120.0, help="early stop: wall budget")
    parser.add_argument("--hv-fraction", type=float, default=0.95)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    quiet()
    for name in ("MLFLOW_TRACKING_URI", "MIDL_AUTOK_HOME", "RAY_ADDRESS"):
        os.environ.pop(name, None)
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    parts: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
        "throughput": throughput,
        "overhead": overhead,
        "early_stopping": early_stopping,
    }
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        for part in args.parts:
            print(f"bench_backends: {part} ...", flush=True)
            result[part] = parts[part](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["table"] = table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(
        f"load average: {result['machine']['load_average_start']} -> "
        f"{result['machine']['load_average_end']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
