"""midlify a trained dense MLP: SVD vs random light path at k = d/2, before any fine-tuning.

    python experiments/bench_midlify.py                          # digits + MNIST-1D, 3 seeds
    python experiments/bench_midlify.py --experiments digits-mlp --seeds 1 --epochs 5

For each experiment and seed: train the experiment's architecture dense (``variant: dense``,
the spec's epochs, lr and batch size), convert it with the ``model.init_from`` path
(:func:`midl_autok._midlify.init_from_dense_state`: full path from W and b, gate at
``g = 1/2``, light path by ``init``), then, with no fine-tuning, measure test accuracy

- at ``k = d`` (every neuron on the full path): should equal the dense model's; the largest
  absolute logit difference is reported too;
- at ``k = d/2`` (and d/4, d/8) with the light path the truncated SVD of W (``svd``), the
  truncated SVD fitted to the layers' inputs on the training set (``svd-data``: midlify's
  ``calibration``, every training input) and MIDL's random light path (``random``), all with
  the plain-SVD gate; and ``svd-auto`` / ``random-auto``: the same with the calibration's
  gate choice (``gate="auto"``: the plain gate, the one fitted to the inputs or the one fitted
  to the light path's error, whichever converted model is closer to the dense outputs on the
  training inputs at k = d/2; the row records the choice).

The accuracy loss is ``dense - converted`` in points; the target of issue 18 is that SVD
loses at least 3x fewer points than random. Prints a markdown table and writes
``experiments/results/bench_midlify.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MIDL_AUTOK_NO_EXTENSIONS", "1")  # same function; no kernel build

import benchkit
import torch

from midl_autok._midlify import init_from_dense_state
from midl_autok.data import Dataset
from midl_autok.experiment import build_for_spec, dataset_for_spec
from midl_autok.models import MIDLNet
from midl_autok.spec import ExperimentSpec
from midl_autok.trainer import TrainConfig, train

OUT = Path(__file__).parent / "results" / "bench_midlify.json"
DIVISORS = (2, 4, 8)  # k = d / divisor; issue 18's target is at d/2
INITS = ("svd", "svd-data", "svd-auto", "random", "random-auto")
LOSSES = tuple(f"d{d}_{i}_loss_points" for d in DIVISORS for i in INITS)


def train_dense(spec: ExperimentSpec, seed: int) -> tuple[MIDLNet, float, Dataset]:
    """The spec's architecture trained dense with ``seed``: (model, test accuracy, data)."""
    dense_spec = spec.override(**{"model.variant": "dense", "seed": seed})
    data = dataset_for_spec(dense_spec)
    model = build_for_spec(dense_spec, data)
    result = train(model, data, config=TrainConfig.from_spec(dense_spec, device="cpu"))
    return model, float(result.metrics["test_accuracy"]), data


@torch.no_grad()
def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(part) for part in x.split(1024)])


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(1) == y).float().mean())


def converted(spec: ExperimentSpec, dense: MIDLNet, data: Dataset, init: str) -> MIDLNet:
    model = build_for_spec(spec, data)
    calibration = data.x_train if init.endswith(("-data", "-auto")) else None
    mode = "random" if init.startswith("random") else "svd"
    gate = "auto" if init.endswith("-auto") else "svd"
    init_from_dense_state(model, dense.state_dict(), init=mode, calibration=calibration, gate=gate)
    return model


class _Choices(logging.Handler):
    """The gate choices midlify logs (``gate="auto"``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage().split("gate ", 1)[1].split()[0])  # svd/data/error


def run(args: argparse.Namespace) -> dict[str, Any]:
    choices = _Choices()
    logging.getLogger("midl_autok._midlify").addHandler(choices)
    logging.getLogger("midl_autok._midlify").setLevel(logging.INFO)
    rows: list[dict[str, Any]] = []
    for name in args.experiments:
        spec = benchkit.experiment(name, epochs=args.epochs)
        for seed in range(args.seeds):
            start = time.perf_counter()
            dense, dense_acc, data = train_dense(spec, seed)
            ref = logits(dense, data.x_test)
            row: dict[str, Any] = {
                "experiment": name,
                "seed": seed,
                "dense_test_accuracy": accuracy(ref, data.y_test),
                "dense_trainer_test_accuracy": dense_acc,
            }
            for init in INITS:
                choices.seen.clear()
                model = converted(spec.override(seed=seed), dense, data, init)
                if init.endswith("-auto"):
                    row[f"{init}_gate"] = choices.seen[-1]
                full = logits(model, data.x_test)
                if init == "svd":
                    row["k_d_accuracy"] = accuracy(full, data.y_test)
                    row["k_d_max_abs_logit_diff"] = float((full - ref).abs().max())
                    row["k_d_same_predictions"] = float(
                        (full.argmax(1) == ref.argmax(1)).float().mean()
                    )
                for divisor in DIVISORS:
                    for _, layer in model.midl_layers():
                        layer.k = max(1, layer.out_features // divisor)
                    acc = accuracy(logits(model, data.x_test), data.y_test)
                    row[f"d{divisor}_{init}_accuracy"] = acc
                    row[f"d{divisor}_{init}_loss_points"] = 100 * (row["dense_test_accuracy"] - acc)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(json.dumps(row))
    summary = {}
    for name in args.experiments:
        mine = [r for r in rows if r["experiment"] == name]
        summary[name] = {
            key: statistics.mean(r[key] for r in mine)
            for key in ("dense_test_accuracy", "k_d_accuracy", "k_d_max_abs_logit_diff", *LOSSES)
        }
    return {
        "experiments": args.experiments,
        "seeds": args.seeds,
        "epochs": args.epochs or "spec",
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "rows": rows,
        "summary": summary,
    }


def table(result: dict[str, Any]) -> str:
    arms = " / ".join(INITS)
    head = " | ".join(f"k=d/{d} loss (pts): {arms}" for d in DIVISORS)
    lines = [
        f"| experiment | dense acc | k=d acc | k=d max abs logit diff | {head} |",
        "|---|---|---|---|" + "---|" * len(DIVISORS),
    ]
    for name, s in result["summary"].items():
        cells = " | ".join(
            " / ".join(f"{s[f'd{d}_{i}_loss_points']:.2f}" for i in INITS) for d in DIVISORS
        )
        lines.append(
            f"| {name} | {100 * s['dense_test_accuracy']:.2f} | {100 * s['k_d_accuracy']:.2f} "
            f"| {s['k_d_max_abs_logit_diff']:.1e} | {cells} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = benchkit.parser(__doc__, seeds=3)
    parser.add_argument("--epochs", type=int, default=0, help="dense training epochs (0: spec)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    benchkit.finish(args.out, run(args), table)


if __name__ == "__main__":
    main()
