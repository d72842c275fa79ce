"""Wall-clock speed of MID-L: layer latency and training step vs dense, and trial time.

    python experiments/bench_speed.py                  # full grid (d 256/1024/4096), ~2 min here
    python experiments/bench_speed.py --quick          # reduced grid, under a minute
    python experiments/bench_speed.py --threads 2 --sections eval

Sections (``--sections``, default all):

- ``eval``: one layer in inference (``torch.inference_mode``) for d = d_in in {256, 1024,
  4096}, k/d in {0.1, 0.25, 0.5}, batch in {1, 16, 256}: MID-L (``sparse_eval="auto"``, and
  each path forced) against ``nn.Linear`` + ReLU, the dense layer it replaces. The ideal
  speed-up is ``dense_flops / midl_flops`` from the cost model (gate and light rank 16), and
  "of ideal" = measured speed-up / ideal speed-up.
- ``train``: forward + backward of one layer (loss ``sum(y * upstream)``), MID-L at k/d in
  {0.25, 0.5, 1.0} against ``nn.Linear`` + ReLU.
- ``trial``: the default experiment (``midl-autok train`` = digits-mlp) end to end, MID-L and
  dense, and the per-step time of the MLPs at ~45% active on digits and MNIST-1D.

Timing: ``torch.set_num_threads(--threads)`` (default 1: other jobs share this machine, and one
thread is the least disturbed); inputs rotate through a pool of distinct batches (no cache
reuse of one input's rows); variants are interleaved in random order within each round, and
the reported time is the median over rounds of the per-call mean; ratios are medians of the
per-round ratios (each round times all variants back to back). The load average before and
after is recorded, and the SIMD level the kernels were built for (AVX-512, or AVX2 + FMA: on
an AVX2-only CPU MKL's dense code and the kernels use the same instruction set). Prints
markdown tables and writes ``experiments/results/bench_speed.json`` and ``.md``
(``--render FILE.json`` prints the tables of an earlier run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchkit
import torch
from torch import nn

from midl_autok.flops import dense_flops, midl_flops
from midl_autok.kernels import cpu_kernels, cpu_kernels_status
from midl_autok.kernels.cpu import _cpu_flags
from midl_autok.layers import MIDL

OUT = Path(__file__).parent / "results" / "bench_speed.json"
RANK = 16
EVAL_VARIANTS = ("dense", "auto", "masked", "gather", "kernel")
FORCE = {"auto": "auto", "masked": "never", "gather": "gather", "kernel": "kernel"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    fns: dict[str, Callable[[int], object]],
    device: torch.device,
    *,
    budget_s: float,
    min_rounds: int = 5,
    max_rounds: int = 31,
) -> dict[str, Any]:
    """Interleaved rounds; per round each variant runs a block of calls sized to ~10 ms."""
    for fn in fns.values():  # warm-up (and kernel builds) outside the timing
        for i in range(3):
            fn(i)
    sync(device)
    per_call = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn(0)
        sync(device)
        per_call[name] = max(time.perf_counter() - t, 1e-7)
    block = {name: max(1, min(2000, int(0.01 / t))) for name, t in per_call.items()}
    round_cost = sum(block[n] * per_call[n] for n in fns)
    rounds = int(min(max_rounds, max(min_rounds, budget_s / max(round_cost, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in random.sample(list(fns.items()), len(fns)):
            n = block[name]
            sync(device)
            t = time.perf_counter()
            for i in range(n):
                fn(i)
            sync(device)
            times[name].append((time.perf_counter() - t) / n)
    return {"median_s": {n: statistics.median(v) for n, v in times.items()}, "times": times}


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def inputs(pool: int, batch: int, d: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(batch * 7919 + d)
    return [torch.randn(batch, d, generator=gen).to(device) for _ in range(pool)]


# --------------------------------------------------------------------------- sections


def bench_eval(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for d in args.dims:
        for batch in args.batches:
            xs = inputs(args.pool, batch, d, device)
            torch.manual_seed(0)
            dense = nn.Sequential(nn.Linear(d, d), nn.ReLU()).to(device).eval()
            for frac in args.fractions:
                k = max(1, round(frac * d))
                layer = MIDL(d, d, k, gate_rank=RANK, light_rank=RANK).to(device).eval()
                layers = {}
                for v in EVAL_VARIANTS[1:]:
                    clone = MIDL(d, d, k, gate_rank=RANK, light_rank=RANK, sparse_eval=FORCE[v])
                    clone.load_state_dict(layer.state_dict())
                    layers[v] = clone.to(device).eval()
                fns: dict[str, Callable[[int], object]] = {
                    "dense": lambda i, xs=xs, m=dense: m(xs[i % len(xs)])
                }
                for v, m in layers.items():
                    fns[v] = lambda i, xs=xs, m=m: m(xs[i % len(xs)])
                with torch.inference_mode():
                    paths = {v: m.eval_path(xs[0], k) for v, m in layers.items()}
                    if paths["kernel"] != "kernel":
                        fns.pop("kernel")  # not available here (GPU, no compiler)
                    result = compare(fns, device, budget_s=args.budget)
                med, times = result["median_s"], result["times"]
                ideal = midl_flops(d, d, k, gate_rank=RANK, light_rank=RANK) / dense_flops(d, d)
                speedup = paired_ratio(times, "dense", "auto")
                row = {
                    "d": d,
                    "batch": batch,
                    "k_fraction": frac,
                    "k": k,
                    "auto_path": paths["auto"],
                    "dense_us": 1e6 * med["dense"],
                    **{f"{v}_us": 1e6 * med[v] for v in fns if v != "dense"},
                    "speedup_auto": speedup,
                    "ideal_ratio": ideal,
                    "ideal_speedup": 1 / ideal,
                    "fraction_of_ideal": speedup * ideal,
                    "rounds": len(times["dense"]),
                }
                rows.append(row)
                print(
                    f"  eval d={d} B={batch} k/d={frac}: dense {row['dense_us']:.1f} us, "
                    f"MID-L auto[{paths['auto']}] {row['auto_us']:.1f} us, "
                    f"x{speedup:.2f} (ideal x{1 / ideal:.2f})",
                    flush=True,
                )
    return rows


def bench_train(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for d in args.dims:
        for batch in args.batches:
            xs = inputs(args.pool, batch, d, device)
            upstream = torch.randn(batch, d, generator=torch.Generator().manual_seed(1)).to(device)
            torch.manual_seed(0)
            dense = nn.Sequential(nn.Linear(d, d), nn.ReLU()).to(device).train()

            def step(m: nn.Module, x: torch.Tensor, upstream: torch.Tensor = upstream) -> None:
                m.zero_grad(set_to_none=True)
                (m(x) * upstream).sum().backward()

            for frac in args.train_fractions:
                k = max(1, round(frac * d))
                layer = MIDL(d, d, k, gate_rank=RANK, light_rank=RANK).to(device).train()
                fns = {
                    "dense": lambda i, xs=xs, m=dense: step(m, xs[i % len(xs)]),
                    "midl": lambda i, xs=xs, m=layer: step(m, xs[i % len(xs)]),
                }
                result = compare(fns, device, budget_s=args.budget)
                med, times = result["median_s"], result["times"]
                row = {
                    "d": d,
                    "batch": batch,
                    "k_fraction": frac,
                    "k": k,
                    "dense_us": 1e6 * med["dense"],
                    "midl_us": 1e6 * med["midl"],
                    "ratio": paired_ratio(times, "midl", "dense"),
                    "rounds": len(times["dense"]),
                }
                rows.append(row)
                print(
                    f"  train d={d} B={batch} k/d={frac}: dense {row['dense_us']:.0f} us, "
                    f"MID-L {row['midl_us']:.0f} us, x{row['ratio']:.2f}",
                    flush=True,
                )
    return rows


def bench_trial(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from midl_autok.spec import load_spec
    from midl_autok.trainer import dataset_for_spec, run_experiment

    out: dict[str, Any] = {"default_experiment": {}, "mlp_step": []}
    spec = load_spec("digits-mlp")
    dataset_for_spec(spec)  # load once (as the CLI does before training)
    for variant in ("midl", "dense"):
        run_experiment(spec.override(**{"model.variant": variant, "training.epochs": 1}))
    walls: dict[str, list[float]] = {"midl": [], "dense": []}
    for _ in range(args.trial_repeats):
        for variant in random.sample(["midl", "dense"], 2):
            t = time.perf_counter()
            result = run_experiment(spec.override(**{"model.variant": variant}), device=str(device))
            walls[variant].append(time.perf_counter() - t)
            if variant == "midl":
                out["default_experiment"]["test_accuracy"] = result.metrics["test_accuracy"]
    out["default_experiment"].update(
        {
            "experiment": "digits-mlp",
            "epochs": spec.training.epochs,
            "midl_s": statistics.median(walls["midl"]),
            "dense_s": statistics.median(walls["dense"]),
            "repeats": args.trial_repeats,
        }
    )
    print(
        f"  trial digits-mlp ({spec.training.epochs} epochs): MID-L "
        f"{out['default_experiment']['midl_s']:.2f} s, dense "
        f"{out['default_experiment']['dense_s']:.2f} s",
        flush=True,
    )
    for name in ("digits-mlp", "mnist1d-mlp"):
        s = load_spec(name).override(**{"training.epochs": args.mlp_epochs})
        data = dataset_for_spec(s)
        steps = math.ceil(data.sizes["train"] / s.training.batch_size)
        per_step: dict[str, list[float]] = {"midl": [], "dense": []}
        for _ in range(args.trial_repeats):
            for variant in random.sample(["midl", "dense"], 2):
                r = run_experiment(
                    s.override(**{"model.variant": variant}), k_fraction=0.45, device=str(device)
                )
                epochs = [h["epoch_time_s"] for h in r.history][1:]  # first epoch: warm-up
                per_step[variant].append(statistics.median(epochs) / steps)
        row = {
            "experiment": name,
            "batch": s.training.batch_size,
            "k_fraction": 0.45,
            "midl_step_ms": 1e3 * statistics.median(per_step["midl"]),
            "dense_step_ms": 1e3 * statistics.median(per_step["dense"]),
        }
        row["ratio"] = row["midl_step_ms"] / row["dense_step_ms"]
        out["mlp_step"].append(row)
        print(
            f"  MLP step {name} (45% active): MID-L {row['midl_step_ms']:.2f} ms, "
            f"dense {row['dense_step_ms']:.2f} ms, x{row['ratio']:.2f}",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- report


def tables(result: dict[str, Any]) -> str:
    lines = []
    if result.get("eval"):
        lines += [
            "### Layer eval latency (MID-L `sparse_eval=auto` vs `nn.Linear` + ReLU)",
            "",
            "| d | batch | k/d | dense us | MID-L us | path | masked us | gather us | "
            "kernel us | speed-up | ideal | of ideal |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["eval"]:
            kernel = f"{r['kernel_us']:.1f}" if "kernel_us" in r else "-"
            lines.append(
                f"| {r['d']} | {r['batch']} | {r['k_fraction']} | {r['dense_us']:.1f} | "
                f"{r['auto_us']:.1f} | {r['auto_path']} | {r['masked_us']:.1f} | "
                f"{r['gather_us']:.1f} | {kernel} | {r['speedup_auto']:.2f}x | "
                f"{r['ideal_speedup']:.2f}x | {100 * r['fraction_of_ideal']:.0f}% |"
            )
        lines.append("")
    if result.get("train"):
        lines += [
            "### Training step (forward + backward of one layer) vs `nn.Linear` + ReLU",
            "",
            "| d | batch | k/d | dense us | MID-L us | MID-L / dense |",
            "|---|---|---|---|---|---|",
        ]
        for r in result["train"]:
            lines.append(
                f"| {r['d']} | {r['batch']} | {r['k_fraction']} | {r['dense_us']:.0f} | "
                f"{r['midl_us']:.0f} | {r['ratio']:.2f}x |"
            )
        lines.append("")
    trial = result.get("trial")
    if trial:
        t = trial["default_experiment"]
        lines += [
            "### Trials",
            "",
            f"Default experiment `midl-autok train` (digits-mlp, {t['epochs']} epochs, median "
            f"of {t['repeats']}): MID-L {t['midl_s']:.2f} s, dense {t['dense_s']:.2f} s "
            f"(test accuracy {t['test_accuracy']:.4f}).",
            "",
            "| experiment | batch | active | MID-L ms/step | dense ms/step | MID-L / dense |",
            "|---|---|---|---|---|---|",
        ]
        for r in trial["mlp_step"]:
            lines.append(
                f"| {r['experiment']} | {r['batch']} | {r['k_fraction']} | "
                f"{r['midl_step_ms']:.2f} | {r['dense_step_ms']:.2f} | {r['ratio']:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced grid, fewer repeats")
    parser.add_argument("--sections", nargs="+", default=["eval", "train", "trial"])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--train-fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per grid point")
    parser.add_argument("--pool", type=int, default=16, help="distinct input batches")
    parser.add_argument("--trial-repeats", type=int, default=3)
    parser.add_argument("--mlp-epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--render", type=Path, default=None, help="only print the tables of a results JSON"
    )
    args = parser.parse_args()
    if args.render is not None:
        result = json.loads(args.render.read_text())
        print(tables(result))
        print(machine_line(result["config"]))
        return
    if args.quick:
        args.dims, args.batches = [256, 1024], [1, 256]
        args.fractions, args.train_fractions = [0.25], [1.0]
        args.budget, args.trial_repeats, args.mlp_epochs = 1.0, 1, 4
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        cpu_kernels()  # build (or load) before any timing
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    if "eval" in args.sections:
        result["eval"] = bench_eval(args, device)
    if "train" in args.sections:
        result["train"] = bench_train(args, device)
    if "trial" in args.sections:
        result["trial"] = bench_trial(args, device)
    result["config"] = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "simd": _simd(),
        "cpus": os.cpu_count(),
        "kernels": cpu_kernels_status(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_s": time.perf_counter() - t0,
    }
    benchkit.write_json(args.out, result)
    md = args.out.with_suffix(".md")
    md.write_text(f"{tables(result)}\n\n{machine_line(result['config'])}\n")
    print()
    print(tables(result))
    print(machine_line(result["config"]))
    print(f"wrote {args.out} and {md}")


def machine_line(c: dict[str, Any]) -> str:
    return (
        f"\n{c['processor']} ({c.get('simd', 'SIMD level not recorded')}), {c['cpus']} CPUs, "
        f"{c['threads']} torch thread(s), torch {c['torch']}, kernels: {c['kernels']}; "
        f"load average (1 min) before "
        f"{c['load_average_before'][0]:.2f}, after {c['load_average_after'][0]:.2f}; "
        f"benchmark wall time {c['wall_s']:.0f} s"
    )


def _simd() -> str:
    """The SIMD level the kernels were built for (``-march=native``: this CPU's)."""
    flags = set(_cpu_flags().split())
    if "avx512f" in flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2 + FMA, no AVX-512"
    return "no AVX2: generic loops"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
