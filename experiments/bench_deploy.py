"""Whole-model inference speed: MID-L MLPs in Python and as exported programs, against dense.

    python experiments/bench_deploy.py                    # full grid, a few minutes here
    python experiments/bench_deploy.py --quick            # 784-512-512-10 at ~0.33, threads 1
    python experiments/bench_deploy.py --models mlp784 --ratios 0.33 --out /tmp/before.json
    python experiments/bench_deploy.py --render experiments/results/bench_deploy.json

Models (``--models``): the shipped MLP experiments ``digits-mlp`` (64-512-512-10),
``mnist1d-mlp`` (40-512-512-10), ``synthetic-mlp`` (32-64-64-4, gate and light rank 8) and
``mlp784`` (784-512-512-10, gate and light rank 16: MNIST-sized), with random weights (each
MID-L layer selects exactly k neurons whatever the input, so latency does not depend on
training). Each model is set to a uniform k fraction whose inference FLOPs ratio (the cost
model of :mod:`midl_autok.flops`) is closest to each ``--ratios`` target (~0.25, 0.33, 0.5;
the small synthetic model's gate and light path may keep it above a target: the ratio reached
is reported).

Variants, each timed at batch 1, 16, 64, 256 with 1 and 2 torch threads:

- ``dense``: the same architecture built with ``nn.Linear`` (``variant="dense"``);
- ``midl``: the MID-L model in Python, ``eval()`` (each layer picks its path);
- ``exported``: the program ``midl-autok export --model`` writes (``deploy.export_model``,
  loaded with ``deploy.load_program``): the custom op ``midl_autok::midl_eval`` per layer;
- ``portable``: the ``--portable`` program (masked dense in ATen ops).

Timing: ``torch.inference_mode``; inputs rotate through a pool of distinct batches; each
round times every variant once (random order), each for about ``--target-ms`` of calls; the
reported time is the median over ``--rounds`` rounds of the per-call mean, and each speed-up
(dense / variant) the median of the per-round ratios. The load average is recorded. Writes
``experiments/results/bench_deploy.json`` and ``.md``. The script only calls public
``midl_autok.deploy`` functions, so it can be rerun on any later kernel build (an older
checkout without ``portable=`` simply has no portable column).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_speed import _cpu_name  # experiments/ is the script's folder: on sys.path

from midl_autok import deploy
from midl_autok.flops import cost_model
from midl_autok.kernels import cpu_kernels, cpu_kernels_status
from midl_autok.models import MIDLNet, build_model

OUT = Path(__file__).parent / "results" / "bench_deploy.json"
VARIANTS = ("dense", "midl", "exported", "portable")
# name -> (input features, classes, model options); the shipped specs' architectures
MODELS: dict[str, tuple[int, int, dict[str, Any]]] = {
    "digits-mlp": (64, 10, {"hidden": [512, 512], "gate_rank": 16, "light_rank": 16}),
    "mnist1d-mlp": (40, 10, {"hidden": [512, 512], "gate_rank": 16, "light_rank": 16}),
    "synthetic-mlp": (32, 4, {"hidden": [64, 64], "gate_rank": 8, "light_rank": 8}),
    "mlp784": (784, 10, {"hidden": [512, 512], "gate_rank": 16, "light_rank": 16}),
}


def set_ratio(model: MIDLNet, d_in: int, target: float) -> tuple[dict[str, int], float]:
    """Set a uniform k fraction whose inference FLOPs ratio is closest to ``target``."""
    costs = cost_model(model, torch.zeros(1, d_in))
    layers = model.midl_layers()
    best: tuple[float, dict[str, int], float] | None = None
    for step in range(1, 201):
        fraction = step / 200
        k = {name: max(1, round(fraction * layer.out_features)) for name, layer in layers}
        ratio = costs.ratio(k)
        if best is None or abs(ratio - target) < best[0]:
            best = (abs(ratio - target), k, ratio)
    assert best is not None
    model.set_k(best[1])
    return best[1], best[2]


def build(name: str, target: float, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The variants' callables for one model at one FLOPs ratio, and what was built."""
    d_in, classes, options = MODELS[name]
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(d_in,), num_classes=classes, **options)
    k, ratio = set_ratio(model, d_in, target)
    model.eval()
    dense = build_model(
        "mlp", input_shape=(d_in,), num_classes=classes, variant="dense", **options
    ).eval()
    example = torch.randn(2, d_in)
    fns: dict[str, Any] = {"dense": dense, "midl": model}
    path = deploy.export_model(model, folder / f"{name}-{target}.pt2", example=example)
    fns["exported"] = deploy.load_program(path, trusted=True)
    program = deploy.read_metadata(path).get("program", "portable (older version)")
    try:
        portable = deploy.export_model(
            model,
            folder / f"{name}-{target}-portable.pt2",
            example=example,
            portable=True,  # type: ignore[call-arg]  (absent before the custom op)
        )
        fns["portable"] = deploy.load_program(portable, trusted=True)
    except TypeError:
        pass
    info = {"model": name, "target": target, "ratio": ratio, "k": k, "program": program}
    return fns, info


def time_cell(
    fns: dict[str, Callable[[torch.Tensor], Any]],
    d_in: int,
    batch: int,
    *,
    rounds: int,
    target_s: float,
) -> dict[str, Any]:
    pool = [torch.randn(batch, d_in) for _ in range(4)]
    repeats = {}
    for name, fn in fns.items():
        for x in pool:
            fn(x)  # warm-up: path decisions, allocator, a kernel load
        start = time.perf_counter()
        fn(pool[0])
        spent = time.perf_counter() - start
        repeats[name] = max(1, min(2000, int(target_s / max(spent, 1e-7))))
    per_round: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            fn, n = fns[name], repeats[name]
            start = time.perf_counter()
            for i in range(n):
                fn(pool[i % len(pool)])
            per_round[name].append((time.perf_counter() - start) / n)
    row: dict[str, Any] = {"batch": batch}
    for name, values in per_round.items():
        row[f"{name}_ms"] = 1e3 * statistics.median(values)
        if name != "dense":  # speed-up: dense time / this variant's time, per round
            ratios = [d / v for d, v in zip(per_round["dense"], values, strict=True)]
            row[f"{name}_speedup"] = statistics.median(ratios)
    if "exported" in per_round:
        row["exported_vs_midl"] = statistics.median(
            e / m for e, m in zip(per_round["exported"], per_round["midl"], strict=True)
        )
    return row


def render(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"Whole-model latency, median ms per call (torch {meta['torch']}, kernels "
        f"{meta['kernels']}, blocked path {meta['blocked_path']}, {meta['cpu']}; load "
        f"{meta['load_before']} -> {meta['load_after']}). Speed-up = dense / variant; "
        "exported / MID-L = the program's time over the Python model's.",
        "",
    ]
    has_portable = any("portable_ms" in r for r in result["rows"])
    for threads in sorted({r["threads"] for r in result["rows"]}):
        lines.append(f"**{threads} thread(s)**")
        lines.append("")
        head = (
            "| model | FLOPs ratio | batch | dense ms | MID-L ms | MID-L speed-up | "
            "exported ms | exported speed-up | exported / MID-L |"
        )
        rule = "|---|---|---|---|---|---|---|---|---|"
        if has_portable:
            head += " portable ms |"
            rule += "---|"
        lines += [head, rule]
        for r in result["rows"]:
            if r["threads"] != threads:
                continue
            line = (
                f"| {r['model']} | {r['ratio']:.2f} | {r['batch']} | {r['dense_ms']:.3f} | "
                f"{r['midl_ms']:.3f} | {r['midl_speedup']:.2f}x | {r['exported_ms']:.3f} | "
                f"{r['exported_speedup']:.2f}x | {r['exported_vs_midl']:.2f} |"
            )
            if has_portable:
                line += f" {r['portable_ms']:.3f} |" if "portable_ms" in r else " - |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(deploy.__file__).parent,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.33, 0.5])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--target-ms", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="mlp784 at ~0.33, 1 thread")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render", type=Path, help="print the tables of an earlier run")
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    if args.quick:
        args.models, args.ratios, args.threads = ["mlp784"], [0.33], [1]
    random.seed(0)
    cpu_kernels()  # build or load outside the timing
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    builds = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for name in args.models:
            for target in args.ratios:
                with torch.inference_mode(False):
                    fns, info = build(name, target, Path(tmp))
                if any(b["model"] == name and b["k"] == info["k"] for b in builds):
                    continue  # a small model may reach the same k for several targets
                builds.append(info)
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    for batch in args.batches:
                        row = time_cell(
                            fns,
                            MODELS[name][0],
                            batch,
                            rounds=args.rounds,
                            target_s=args.target_ms / 1e3,
                        )
                        row = {
                            "model": name,
                            "target": target,
                            "ratio": info["ratio"],
                            "threads": threads,
                            **row,
                        }
                        rows.append(row)
                        print(
                            f"{name} ratio {info['ratio']:.2f} threads {threads} batch {batch}: "
                            + ", ".join(f"{v} {row[f'{v}_ms']:.3f} ms" for v in fns),
                            flush=True,
                        )
    blocked = cpu_kernels()
    result = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "kernels": cpu_kernels_status(),
            "blocked_path": bool(blocked.midl_blocked_available()) if blocked else False,
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "rounds": args.rounds,
            "target_ms": args.target_ms,
            "command": "python experiments/bench_deploy.py " + " ".join(argv or sys.argv[1:]),
        },
        "builds": builds,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    table = render(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
