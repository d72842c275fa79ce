"""Which neurons should a converted (midlify) layer put on the full path? A probe of the gate.

    python experiments/probe_midlify_gate.py --experiments digits-mlp --seeds 10
    python experiments/probe_midlify_gate.py --experiments mnist1d-mlp --seeds 3

For each seed: train the experiment's MLP dense (as ``bench_midlify.py``), fit each hidden
layer's rank-16 light path to its inputs on the training set (midlify's ``calibration``), then
run the converted MLP before any fine-tuning with the top-k neurons per sample chosen by a
given score instead of the gate: a selected neuron outputs ``W x + b`` (as a converted layer
does at its starting gate), the others the light path's estimate. Scores:

- ``plain``: the rank-16 truncated SVD of W applied to x (what the shipped gate ranks by);
- ``fitted``: the rank-16 map fitted to the inputs (centered), applied to x;
- ``exact``: ``W x``; ``exact_b``: ``W x + b`` (a bias-free gate cannot rank by this one);
- ``light``: the light path's own estimate (with its bias);
- ``resid`` / ``resid_abs``: the light estimate's error ``W x + b - l`` (signed / absolute);
- ``resid16``: the residual's best rank-16 map (the next 16 components of the fitted SVD);
- ``rrr_abs`` / ``rrr_relu``: a rank-16 map (no bias, as a gate) fitted by reduced-rank
  regression to ``|W x + b - l|`` / to the oracle's error after the ReLU;
- ``oracle``: the largest error of the light estimate after the ReLU (needs the answer);
- ``chosen``: midlify's ``gate="auto"``: of ``plain``, ``fitted`` and ``rrr_relu`` (its
  ``"svd"``, ``"data"``, ``"error"``), the one whose converted MLP is closest to the dense
  logits on the training inputs (squared error) at that k.

Prints the points lost against the dense model at k = d/2, d/4 and d/8 (mean over seeds) and
writes ``experiments/results/probe_midlify_gate_<experiment>.json``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("MIDL_AUTOK_NO_EXTENSIONS", "1")  # same function; no kernel build

import benchkit
import torch
from bench_midlify import DIVISORS, logits, train_dense

from midl_autok._calibrate import layer_inputs, whitened

OUT = Path(__file__).parent / "results"
RANK = 16
SCORES = (
    "plain",
    "fitted",
    "exact",
    "exact_b",
    "light",
    "resid",
    "resid_abs",
    "resid16",
    "rrr_abs",
    "rrr_relu",
    "oracle",
    "chosen",
)


def low_rank(w: torch.Tensor, inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank-RANK map (plain SVD, or fitted to ``inputs``) and the inputs' mean (or 0)."""
    if inputs is None:
        p, s, qh = torch.linalg.svd(w, full_matrices=False)
        mean = torch.zeros(w.shape[1], dtype=w.dtype)
    else:
        p, s, qh, mean = whitened(w, inputs)
    return (p[:, :RANK] * s[:RANK]) @ qh[:RANK], mean


def residual(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The next RANK components after the fitted light path's: the residual's best rank-RANK
    map on the inputs."""
    p, s, qh, _ = whitened(w, inputs)
    return (p[:, RANK : 2 * RANK] * s[RANK : 2 * RANK]) @ qh[RANK : 2 * RANK]


def error_gate(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The rank-RANK map of x (no intercept: a gate has no bias) closest to ``target`` (n, d):
    reduced-rank regression (least squares, then the fit's leading RANK output directions)."""
    gram = x.T @ x
    ridge = 1e-3 * float(gram.diagonal().mean())
    full = torch.linalg.solve(
        gram + ridge * torch.eye(gram.shape[0], dtype=x.dtype), x.T @ target
    ).T
    fit = x @ full.T
    _, _, vh = torch.linalg.svd(fit, full_matrices=False)
    keep = vh[:RANK].T @ vh[:RANK]  # (d, d) projector on the fit's leading output directions
    return keep @ full


def probe(name: str, seeds: int) -> dict[str, Any]:
    spec = benchkit.experiment(name, epochs=0)
    lost: dict[str, dict[int, list[float]]] = {s: {d: [] for d in DIVISORS} for s in SCORES}
    for seed in range(seeds):
        model, _, data = train_dense(spec, seed)
        dense = model.double()
        linears = [m for m in dense.modules() if isinstance(m, torch.nn.Linear)][:-1]
        named = {str(i): m for i, m in enumerate(linears)}
        seen = layer_inputs(dense, named, data.x_train.double())
        layers = []
        for key, lin in named.items():
            w, b = lin.weight.detach(), lin.bias.detach()
            fitted, mean = low_rank(w, seen[key])
            plain = low_rank(w, None)[0]
            c = b + (w - fitted) @ mean
            xs = seen[key]
            z, light = xs @ w.T + b, xs @ fitted.T + c
            gates = (
                error_gate(xs, (z - light).abs()),
                error_gate(xs, (torch.relu(z) - torch.relu(light)).abs()),
            )
            layers.append((lin, w, b, fitted, c, plain, residual(w, xs), gates))
        x, y = data.x_test.double(), data.y_test
        dense_acc = float((logits(dense, x).argmax(1) == y).float().mean())
        xt = data.x_train.double()
        dense_train = logits(dense, xt)
        for divisor in DIVISORS:
            mse = {}
            for score in SCORES[:-1]:
                hooks = [
                    lin.register_forward_hook(
                        _converted(w, b, uv, c, plain, res, gates, score, divisor)
                    )
                    for lin, w, b, uv, c, plain, res, gates in layers
                ]
                acc = float((logits(dense, x).argmax(1) == y).float().mean())
                mse[score] = float((logits(dense, xt) - dense_train).pow(2).mean())
                for h in hooks:
                    h.remove()
                lost[score][divisor].append(100 * (dense_acc - acc))
            pick = min(("plain", "fitted", "rrr_relu"), key=mse.__getitem__)
            lost["chosen"][divisor].append(lost[pick][divisor][-1])
            print(divisor, pick, {k: round(v, 4) for k, v in mse.items()})
        print(name, seed, {s: [round(lost[s][d][-1], 2) for d in DIVISORS] for s in SCORES})
    return {
        "experiment": name,
        "seeds": seeds,
        "rank": RANK,
        "points_lost": {s: {f"d/{d}": lost[s][d] for d in DIVISORS} for s in SCORES},
        "mean": {s: {f"d/{d}": statistics.mean(lost[s][d]) for d in DIVISORS} for s in SCORES},
    }


def _converted(w, b, uv, c, plain, res, gates, score: str, divisor: int):  # type: ignore[no-untyped-def]
    def forward(module: torch.nn.Module, args: tuple[torch.Tensor], out: torch.Tensor):  # type: ignore[no-untyped-def]
        h = args[0]
        z, light = h @ w.T + b, h @ uv.T + c
        scores = {
            "plain": lambda: h @ plain.T,
            "fitted": lambda: h @ uv.T,
            "exact": lambda: h @ w.T,
            "exact_b": lambda: z,
            "light": lambda: light,
            "resid": lambda: z - light,
            "resid_abs": lambda: (z - light).abs(),
            "resid16": lambda: h @ res.T,
            "rrr_abs": lambda: h @ gates[0].T,
            "rrr_relu": lambda: h @ gates[1].T,
            "oracle": lambda: (torch.relu(z) - torch.relu(light)).abs(),
        }[score]()
        top = scores.topk(z.shape[1] // divisor, dim=1).indices
        mask = torch.zeros_like(z).scatter_(1, top, 1.0)
        return mask * z + (1 - mask) * light

    return forward


def table(results: dict[str, Any]) -> str:
    lines = ["| experiment | score | " + " | ".join(f"k=d/{d} lost (pts)" for d in DIVISORS) + " |"]
    lines.append("|---|---|" + "---|" * len(DIVISORS))
    for r in results["runs"]:
        for s in SCORES:
            cells = " | ".join(f"{r['mean'][s][f'd/{d}']:.2f}" for d in DIVISORS)
            lines.append(f"| {r['experiment']} ({r['seeds']} seeds) | {s} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = benchkit.parser(__doc__, seeds=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [probe(name, args.seeds) for name in args.experiments]
    stem = "_".join(n.split("-")[0] for n in args.experiments)
    out = args.out or OUT / f"probe_midlify_gate_{stem}.json"
    benchkit.finish(out, {"runs": runs}, table)


if __name__ == "__main__":
    main()
