"""Latency of a MID-L model against the same architecture built dense: in Python, and as an
exported program (:func:`latency_report`, printed by ``midl-autok export --model``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from midl_autok.models import MIDLNet, build_model

__all__ = ["example_input", "latency_report"]


def _time_call(fn: Any, x: torch.Tensor, *, repeats: int, rounds: int) -> list[float]:
    per_round = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        per_round.append((time.perf_counter() - start) / repeats)
    return per_round


def example_input(model: MIDLNet, batch: int = 2, *, seed: int = 0) -> torch.Tensor:
    """A random input of the shape ``model`` was built for (tokens for a token model):
    enough to time it, since each MID-L layer selects exactly k neurons whatever the input."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, *cfg["input_shape"])
    if cfg.get("vocab_size"):
        return torch.randint(0, int(cfg["vocab_size"]), shape, generator=gen)
    return torch.randn(shape, generator=gen)


def latency_report(
    model: MIDLNet,
    *,
    example: torch.Tensor,
    exported: nn.Module | None = None,
    batches: Sequence[int] = (1, 16, 256),
    rounds: int = 15,
    target_s: float = 0.01,
) -> dict[str, Any]:
    """Median latency per batch size of: the same architecture with dense layers
    (``variant="dense"``, its own random weights: latency only), the MID-L model in eval mode
    (each layer picks its path: the compiled CPU kernel at small batches), and the exported
    graph when given (e.g. ``load_program(path, trusted=True)``). Variants are interleaved
    per round; returns a dict with ``rows`` and a ``markdown`` table."""
    was_training = model.training
    model.eval()
    cfg = dict(model.config)
    twin = getattr(model, "dense_twin", None)  # a factory-built model makes its own
    if callable(twin):
        dense = twin().eval()
    else:
        options = {
            key: cfg[key]
            for key in ("hidden", "channels", "embed_dim", "hidden_size", "activation")
            if key in cfg
        }
        dense = build_model(
            model.arch,
            input_shape=cfg["input_shape"],
            num_classes=cfg["num_classes"],
            vocab_size=cfg.get("vocab_size"),
            variant="dense",
            **options,
        ).eval()
    device = next(model.parameters()).device
    dense.to(device)
    candidates: dict[str, Any] = {"dense": dense, "midl": model}
    if exported is not None:
        candidates["exported"] = exported
    rows = []
    try:
        with torch.inference_mode():
            for batch in batches:
                reps = example[:1].expand(batch, *example.shape[1:]).contiguous().to(device)
                x = reps + 0.01 * torch.randn_like(reps) if reps.is_floating_point() else reps
                repeats = {}
                for name, fn in candidates.items():
                    fn(x)  # warm-up (and any kernel build) outside the timing
                    t = _time_call(fn, x, repeats=1, rounds=1)[0]
                    repeats[name] = max(1, min(1000, int(target_s / max(t, 1e-7))))
                times: dict[str, list[float]] = {name: [] for name in candidates}
                for _ in range(rounds):
                    for name, fn in candidates.items():
                        times[name] += _time_call(fn, x, repeats=repeats[name], rounds=1)
                row: dict[str, Any] = {"batch": batch}
                for name, values in times.items():
                    row[f"{name}_ms"] = 1e3 * statistics.median(values)
                row["midl_vs_dense"] = row["midl_ms"] / row["dense_ms"]
                row["midl_speedup"] = row["dense_ms"] / row["midl_ms"]  # > 1: faster than dense
                if "exported_ms" in row:
                    row["exported_vs_dense"] = row["exported_ms"] / row["dense_ms"]
                    row["exported_speedup"] = row["dense_ms"] / row["exported_ms"]
                rows.append(row)
    finally:
        model.train(was_training)
    return {
        "rows": rows,
        "k": model.current_k(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "markdown": _latency_table(rows),
    }


def _latency_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: ms per call and the speed-up over dense (dense ms / ms: above 1x is faster)."""
    exported = any("exported_ms" in r for r in rows)
    head = "| batch | dense ms | MID-L ms | MID-L speed-up |"
    rule = "|---|---|---|---|"
    if exported:
        head += " exported ms | exported speed-up |"
        rule += "---|---|"
    lines = [head, rule]
    for r in rows:
        line = (
            f"| {r['batch']} | {r['dense_ms']:.3f} | {r['midl_ms']:.3f} | "
            f"{r['midl_speedup']:.2f}x |"
        )
        if exported:
            line += f" {r['exported_ms']:.3f} | {r['exported_speedup']:.2f}x |"
        lines.append(line)
    return "\n".join(lines)
