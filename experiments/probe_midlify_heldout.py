"""midlify before fine-tuning, measured finer: held-out accuracy, prediction flips and logit error.

    python experiments/probe_midlify_heldout.py --experiments digits-mlp --seeds 100
    python experiments/probe_midlify_heldout.py --experiments digits-mlp --seeds 50 \
        --first-seed 50 --out /tmp/second_half.json             # seeds 50-99 on another core
    python experiments/probe_midlify_heldout.py --merge a.json b.json  # one table from both
    python experiments/probe_midlify_heldout.py --set model.gate_rank=32  # converted model's spec

Issue 18's target (``bench_midlify.py``): at k = d/2 the SVD-initialized light path loses at
least 3x fewer accuracy points than a random one. Besides ``bench_midlify``'s arms (the
``model.init_from`` path), :data:`MIDLIFY_ARMS` convert the same dense model with
``midl_autok.midlify`` itself. On 8x8 digits both lose a fraction of one
test image (359 images), below what the test split resolves. This probe converts the same
dense models the same way (``bench_midlify.converted``: arms ``svd``, ``svd-data``,
``svd-auto``, ``random``, ``random-auto``) and measures, at k = d/2 and d/4:

- ``test``: points lost on the test split (what ``bench_midlify.py`` reports);
- ``held``: points lost on the validation and test splits together (neither is used by the
  conversion, which calibrates on the training inputs, nor by anything else before
  fine-tuning): more images, the same kind of estimate;
- ``flips``: the share of held-out images whose predicted class differs from the dense
  model's (in %; accuracy points lost are flips to wrong minus flips to right);
- ``mse``: the mean squared difference of the held-out logits from the dense model's.

Means over seeds with standard errors, and the target's ratio (points lost by ``random`` and
``random-auto`` over points lost by ``svd-auto``, the default) with a 90% interval from
resampling the seeds (percentile bootstrap, 4,000 draws, fixed RNG): how far the data resolves
it. Writes ``experiments/results/probe_midlify_heldout.json``.
"""

from __future__ import annotations

import copy
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MIDL_AUTOK_NO_EXTENSIONS", "1")  # same function; no kernel build

import benchkit
import torch
from bench_midlify import INITS, accuracy, converted, logits, train_dense

import midl_autok
from midl_autok.data import Dataset
from midl_autok.models import MIDLNet
from midl_autok.spec import ExperimentSpec

OUT = Path(__file__).parent / "results" / "probe_midlify_heldout.json"
DIVISORS = (2, 4)
METRICS = ("test", "held", "flips", "mse")
#: ``midlify()`` itself on a copy of the dense model (its Linear + ReLU blocks are
#: ``nn.Sequential``), calibrated on the training inputs, gate ``auto``: the activation read
#: from the model (``midlify``), none (``midlify-identity``: the error gate before the ReLU, as
#: before session 10), and the random light path with the activation read (``midlify-random``).
MIDLIFY_ARMS = ("midlify", "midlify-identity", "midlify-random")
ARMS = (*INITS, *MIDLIFY_ARMS)
RATIOS = (
    ("random", "svd-auto"),
    ("random-auto", "svd-auto"),
    ("midlify-random", "midlify"),
)  # (numerator, denominator)
DRAWS = 4000
#: Points lost below this count as none: the accuracies are float32 means, so "nothing lost" can
#: read 1e-7 (one held-out image is 0.15 points).
TINY = 1e-4


def via_midlify(spec: ExperimentSpec, dense: MIDLNet, data: Dataset, arm: str) -> MIDLNet:
    """``arm`` of :data:`MIDLIFY_ARMS`: ``midlify`` on a copy of ``dense``, the spec's ranks."""
    ranks = {key: getattr(spec.model, key) for key in ("gate_rank", "light_rank")}
    if not all(isinstance(r, int) for r in ranks.values()):
        raise SystemExit(f"the midlify arms take one rank per model, not {ranks}")
    model, _ = midl_autok.midlify(
        copy.deepcopy(dense),
        calibration=data.x_train,
        init="random" if arm == "midlify-random" else "svd",
        activation=None if arm == "midlify-identity" else "auto",
        **ranks,
    )
    assert isinstance(model, MIDLNet)
    return model


def probe(
    name: str, first: int, seeds: int, overrides: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``overrides``: spec keys set for the converted models only (the dense one is trained
    from the shipped spec, whose ranks it does not use)."""
    spec = benchkit.experiment(name, epochs=0)
    converted_spec = spec.override(**(overrides or {}))
    rows = []
    for seed in range(first, first + seeds):
        start = time.perf_counter()
        dense, _, data = train_dense(spec, seed)
        x_held = torch.cat([data.x_val, data.x_test])
        y_held = torch.cat([data.y_val, data.y_test])
        ref_test, ref_held = logits(dense, data.x_test), logits(dense, x_held)
        row: dict[str, Any] = {"experiment": name, "seed": seed, "held_images": len(y_held)}
        row.update({f"set {k}": v for k, v in (overrides or {}).items()})
        for init in ARMS:
            if init in MIDLIFY_ARMS:
                # midlify's new layers draw from the global generator: seeded, and the state
                # restored after, so the other arms and later seeds read what they did before
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = via_midlify(converted_spec, dense, data, init)
            else:
                model = converted(converted_spec.override(seed=seed), dense, data, init)
            for divisor in DIVISORS:
                for _, layer in model.midl_layers():
                    layer.k = max(1, layer.out_features // divisor)
                out_test, out_held = logits(model, data.x_test), logits(model, x_held)
                key = f"d{divisor}_{init}"
                row[f"{key}_test"] = 100 * (
                    accuracy(ref_test, data.y_test) - accuracy(out_test, data.y_test)
                )
                row[f"{key}_held"] = 100 * (accuracy(ref_held, y_held) - accuracy(out_held, y_held))
                row[f"{key}_flips"] = 100 * float(
                    (out_held.argmax(1) != ref_held.argmax(1)).float().mean()
                )
                row[f"{key}_mse"] = float((out_held - ref_held).pow(2).mean())
        row["seconds"] = time.perf_counter() - start
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def arms(rows: list[dict[str, Any]]) -> list[str]:
    """The arms every row measured (results written before an arm existed lack it)."""
    return [a for a in ARMS if all(f"d{DIVISORS[0]}_{a}_held" in r for r in rows)]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted({r["experiment"] for r in rows}):
        mine = [r for r in rows if r["experiment"] == name]
        present = arms(mine)
        cells: dict[str, Any] = {"arms": present}
        for divisor in DIVISORS:
            for init in present:
                for metric in METRICS:
                    key = f"d{divisor}_{init}_{metric}"
                    values = [r[key] for r in mine]
                    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
                    cells[key] = {"mean": statistics.mean(values), "se": se}
        for divisor in DIVISORS:
            for split in ("test", "held"):
                for top, bottom in RATIOS:
                    if top not in present or bottom not in present:
                        continue
                    cells[f"d{divisor}_{top}/{bottom}_{split}"] = ratio(
                        [r[f"d{divisor}_{top}_{split}"] for r in mine],
                        [r[f"d{divisor}_{bottom}_{split}"] for r in mine],
                    )
        out[name] = {"seeds": len(mine), "held_images": mine[0]["held_images"], **cells}
    return out


def ratio(top: list[float], bottom: list[float]) -> dict[str, float | None]:
    """``sum(top) / sum(bottom)`` (points lost by one arm over another's, seed by seed paired)
    with the 5th and 95th percentiles over seed resamples; ``None`` where the denominator is
    below ``TINY`` (the arm lost nothing or gained: no finite ratio)."""

    def of(idx: list[int]) -> float | None:
        den = sum(bottom[i] for i in idx)
        return sum(top[i] for i in idx) / den if den > TINY else None

    rng = random.Random(0)
    n = len(top)
    draws = [of([rng.randrange(n) for _ in range(n)]) for _ in range(DRAWS)]
    # a resample with no finite ratio counts as above any bound (the arm lost nothing)
    ordered = sorted(draws, key=lambda v: float("inf") if v is None else v)
    return {
        "ratio": of(list(range(n))),
        "low": ordered[int(0.05 * DRAWS)],
        "high": ordered[int(0.95 * DRAWS) - 1],
    }


def _x(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}x"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| experiment | k | arm | test pts lost | held-out pts lost | held-out flips % "
        "| held-out logit MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        for divisor in DIVISORS:
            for init in s["arms"]:
                cells = " | ".join(
                    f"{s[f'd{divisor}_{init}_{m}']['mean']:.3f} "
                    f"({s[f'd{divisor}_{init}_{m}']['se']:.3f})"
                    for m in METRICS
                )
                lines.append(
                    f"| {name} ({s['seeds']} seeds, {s['held_images']} held-out) "
                    f"| d/{divisor} | {init} | {cells} |"
                )
    lines += [
        "",
        "mean (standard error) over seeds",
        "",
        "| experiment | k | points lost, ratio | test split (90% interval) "
        "| held-out (90% interval) |",
        "|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        for divisor in DIVISORS:
            for top, bottom in RATIOS:
                if f"d{divisor}_{top}/{bottom}_held" not in s:
                    continue
                cells = " | ".join(
                    "{} ({} - {})".format(
                        *(
                            _x(s[f"d{divisor}_{top}/{bottom}_{split}"][p])
                            for p in ("ratio", "low", "high")
                        )
                    )
                    for split in ("test", "held")
                )
                lines.append(f"| {name} | d/{divisor} | {top} / {bottom} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = benchkit.parser(__doc__, seeds=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--merge", nargs="+", type=Path, help="JSON files of earlier runs")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="spec overrides for the converted models, e.g. model.gate_rank=32 (YAML values)",
    )
    args = parser.parse_args()
    overrides = dict(benchkit.assignment(text) for text in args.set)
    torch.set_num_threads(1)
    if args.merge:
        rows = [r for path in args.merge for r in json.loads(path.read_text())["rows"]]
    else:
        rows = [
            r
            for name in args.experiments
            for r in probe(name, args.first_seed, args.seeds, overrides)
        ]
    benchkit.finish(args.out, {"rows": rows, "summary": summary(rows)}, table)


if __name__ == "__main__":
    main()
