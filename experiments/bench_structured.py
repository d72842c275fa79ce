"""Structured gating: accuracy, FLOPs and wall-clock time of neuron vs block gating.

    python experiments/bench_structured.py                       # both sections, ~10 min here
    python experiments/bench_structured.py --sections layer      # the single-layer target only
    python experiments/bench_structured.py --sections models --seeds 0 1 --epochs 8
    python experiments/bench_structured.py --experiments tokens-transformer --gatings neuron head
    python experiments/bench_structured.py --render experiments/results/bench_structured.json

Sections:

- ``layer``: one layer, d = d_in = 1024 (``--d``), k = d / 4, gate and light rank 16, in
  ``torch.inference_mode``, one torch thread (``--threads``), batch 1 and 256: ``nn.Linear`` +
  ReLU (dense) against MID-L with neuron gating and with each block gating (each layer picks
  its own eval path: for block gating at batch 256 the compiled block kernel
  ``midl_block_eval``). The issue's target: block:32 >= 2.2x faster than dense at batch 256.
- ``models``: the shipped MLP experiments (``--experiments``: digits-mlp, mnist1d-mlp),
  trained with every gating (``--gatings``) at the same constant k (``--k-fraction`` of each
  layer's width, snapped to a multiple of the largest block so all gatings keep the same k),
  for ``--seeds``; reported: test accuracy (mean and range over seeds), the accuracy cost
  against neuron gating, inference FLOPs ratio to dense, and eval wall-clock time at batch 1
  and 256 (one thread) against the dense variant of the same architecture.

**Hook for head gating**: ``--gatings`` takes any ``model.gating`` text and ``--experiments``
any experiment name; a gating an architecture refuses (``head`` on an MLP: a ``SpecError``) is
recorded as a skipped row. Once the transformer family is merged, ``--experiments
tokens-transformer digits-vit --gatings neuron block:8 block:32 head`` adds its rows.

Timing: interleaved rounds (``bench_speed.compare``), inputs rotating through a pool; the
time is the median of the per-round means, a speed-up the median of the per-round ratios
with its range (min-max over rounds). Writes ``experiments/results/bench_structured.json``
and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import benchkit
import torch
from bench_speed import _cpu_name, compare, inputs  # experiments/ is on sys.path
from torch import nn

from midl_autok.errors import UserError
from midl_autok.experiment import model_for_spec
from midl_autok.flops import cost_model
from midl_autok.gating import Gating
from midl_autok.kernels import cpu_kernels, cpu_kernels_status
from midl_autok.layers import MIDL
from midl_autok.models import build_model
from midl_autok.spec import load_spec
from midl_autok.trainer import dataset_for_spec, run_experiment

OUT = Path(__file__).parent / "results" / "bench_structured.json"
RANK = 16
BATCHES = (1, 256)


def ratio_stats(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Per-round ratios ``num / den``: median, min, max."""
    ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def bench_layer(args: argparse.Namespace) -> list[dict[str, Any]]:
    d = args.d
    k = d // 4
    rows = []
    for batch in BATCHES:
        xs = inputs(8, batch, d, torch.device("cpu"))
        torch.manual_seed(0)
        layers: dict[str, nn.Module] = {"dense": nn.Sequential(nn.Linear(d, d), nn.ReLU())}
        for gating in args.gatings:
            try:
                layers[gating] = MIDL(
                    d, d, k, gate_rank=RANK, light_rank=RANK, gating=gating
                ).eval()
            except UserError as exc:
                print(f"layer: {gating}: skipped ({exc})", file=sys.stderr)
        fns = {name: (lambda i, m=m, xs=xs: m(xs[i % len(xs)])) for name, m in layers.items()}
        with torch.inference_mode():
            paths = {n: m.eval_path(xs[0], k) for n, m in layers.items() if isinstance(m, MIDL)}
            result = compare(fns, torch.device("cpu"), budget_s=args.budget_s, min_rounds=9)
        times = result["times"]
        for name in layers:
            rows.append(
                {
                    "d": d,
                    "k": k,
                    "batch": batch,
                    "variant": name,
                    "path": paths.get(name, "dense"),
                    "median_ms": result["median_s"][name] * 1e3,
                    "speedup_vs_dense": ratio_stats(times, "dense", name),
                    "rounds": len(times[name]),
                }
            )
            s = rows[-1]["speedup_vs_dense"]
            print(
                f"layer d={d} k={k} B={batch} {name:>9}: {rows[-1]['median_ms']:.3f} ms, "
                f"{s['median']:.2f}x dense ({s['min']:.2f}-{s['max']:.2f})",
                file=sys.stderr,
            )
    return rows


def _common_k_fraction(width: int, fraction: float, gatings: list[str]) -> float:
    """The fraction whose k is a multiple of every block size (so all gatings keep one k)."""
    sizes = [Gating.parse(g).size for g in gatings if Gating.parse(g).kind == "block"]
    size = max(sizes, default=1)
    return Gating("block", size).snap(round(fraction * width), width) / width


def bench_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name in args.experiments:
        base = load_spec(name)
        data = dataset_for_spec(base)
        # the narrowest MID-L layer of the neuron-gated model (an MLP's hidden layer, a
        # transformer's FFN), so the snapped k fits every layer and every gating
        width = min(m.out_features for _, m in model_for_spec(base, data).midl_layers())
        fraction = _common_k_fraction(width, args.k_fraction, args.gatings)
        for gating in args.gatings:
            accs: list[float] = []
            models = []
            for seed in args.seeds:
                spec = base.override(
                    **{
                        "model.gating": gating,
                        "seed": seed,
                        "training.epochs": args.epochs or None,
                        "training.k_fraction": fraction,
                    }
                )
                try:
                    result = run_experiment(spec, device="cpu")
                except UserError as exc:
                    print(f"{name} {gating}: skipped ({exc})", file=sys.stderr)
                    break
                accs.append(float(result.metrics["test_accuracy"]))
                models.append((spec, result))
            if not models:
                rows.append({"experiment": name, "gating": gating, "skipped": True})
                continue
            spec, result = models[0]
            model = result.model.eval()
            example = data.x_test[:1]
            costs = cost_model(model, example)
            k = model.current_k()
            row: dict[str, Any] = {
                "experiment": name,
                "gating": gating,
                "k": k,
                "epochs": spec.training.epochs,
                "seeds": list(args.seeds),
                "test_accuracy": accs,
                "test_accuracy_mean": statistics.mean(accs),
                "flops_ratio": costs.ratio(k),
                "time": {},
            }
            dense = build_model(
                spec.model.arch,
                input_shape=data.input_shape,
                num_classes=data.num_classes,
                vocab_size=data.vocab_size,  # token models (transformer, lstm)
                **{**spec.model.options(), "variant": "dense", "gating": "neuron"},
            ).eval()
            for batch in BATCHES:
                pool = [data.x_test[i * batch : (i + 1) * batch] for i in range(4)]
                # a test set smaller than 4 batches: batches of test rows drawn with
                # replacement (real inputs, token ids included, rather than noise)
                gen = torch.Generator().manual_seed(batch)
                pool = [p for p in pool if len(p) == batch] or [
                    data.x_test[torch.randint(len(data.x_test), (batch,), generator=gen)]
                    for _ in range(4)
                ]
                fns = {
                    "dense": lambda i, pool=pool, m=dense: m(pool[i % len(pool)]),
                    "midl": lambda i, pool=pool, m=model: m(pool[i % len(pool)]),
                }
                with torch.inference_mode():
                    res = compare(fns, torch.device("cpu"), budget_s=args.budget_s / 4)
                row["time"][str(batch)] = {
                    "dense_ms": res["median_s"]["dense"] * 1e3,
                    "midl_ms": res["median_s"]["midl"] * 1e3,
                    "speedup_vs_dense": ratio_stats(res["times"], "dense", "midl"),
                }
            rows.append(row)
            print(
                f"{name} {gating}: acc {row['test_accuracy_mean']:.4f} {accs}, FLOPs "
                f"{row['flops_ratio']:.3f}, speed-up b1 "
                f"{row['time']['1']['speedup_vs_dense']['median']:.2f}x b256 "
                f"{row['time']['256']['speedup_vs_dense']['median']:.2f}x",
                file=sys.stderr,
            )
    neuron = {r["experiment"]: r for r in rows if r["gating"] == "neuron" and "k" in r}
    for r in rows:
        if "k" in r and r["experiment"] in neuron:
            r["accuracy_cost_vs_neuron"] = (
                neuron[r["experiment"]]["test_accuracy_mean"] - r["test_accuracy_mean"]
            )
    return rows


def render(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']}; torch threads {result['threads']}.", ""]
    if result.get("layer"):
        lines += [
            "| d | k | batch | variant | path | time (ms) | speed-up vs dense (range) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in result["layer"]:
            s = r["speedup_vs_dense"]
            lines.append(
                f"| {r['d']} | {r['k']} | {r['batch']} | {r['variant']} | {r['path']} | "
                f"{r['median_ms']:.3f} | {s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f}) |"
            )
        lines.append("")
    if result.get("models"):
        lines += [
            "| experiment | gating | k | test acc. (seeds) | cost vs neuron | FLOPs ratio "
            "| speed-up b=1 | speed-up b=256 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["models"]:
            if r.get("skipped"):
                lines.append(f"| {r['experiment']} | {r['gating']} | skipped | | | | | |")
                continue
            accs = ", ".join(f"{a:.3f}" for a in r["test_accuracy"])
            t1, t256 = (r["time"][b]["speedup_vs_dense"] for b in ("1", "256"))
            lines.append(
                f"| {r['experiment']} | {r['gating']} | {'/'.join(map(str, r['k'].values()))} "
                f"| {r['test_accuracy_mean']:.4f} ({accs}) | "
                f"{100 * r.get('accuracy_cost_vs_neuron', 0.0):+.2f} pt | "
                f"{r['flops_ratio']:.3f} | {t1['median']:.2f}x ({t1['min']:.2f}-{t1['max']:.2f})"
                f" | {t256['median']:.2f}x ({t256['min']:.2f}-{t256['max']:.2f}) |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=["layer", "models"])
    parser.add_argument("--gatings", nargs="+", default=["neuron", "block:8", "block:32"])
    parser.add_argument("--experiments", nargs="+", default=["digits-mlp", "mnist1d-mlp"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="0: the spec's epochs")
    parser.add_argument("--k-fraction", type=float, default=0.45)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=20.0, help="timing budget per cell")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render", type=Path, help="print the tables of a JSON result")
    args = parser.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    torch.set_num_threads(args.threads)
    cpu_kernels()  # build (or load) outside the timing
    start = time.time()
    result: dict[str, Any] = {
        "machine": f"{_cpu_name()}, kernels {cpu_kernels_status()}, "
        f"load average {os.getloadavg()[0]:.1f} at start",
        "threads": args.threads,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if "layer" in args.sections:
        result["layer"] = bench_layer(args)
    if "models" in args.sections:
        result["models"] = bench_models(args)
    result["seconds"] = time.time() - start
    result["load_average_end"] = os.getloadavg()[0]
    benchkit.write_json(args.out, result)
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
