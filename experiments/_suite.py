"""The parts of ``bench_search.py``'s suite that are not searches: the data sets' experiments
(the tabular one is a generated table written to a CSV and read back with the CSV reader),
the dense baseline over seeds, and the confirmation of a study's cheapest schedules over seeds.

Retraining (dense or a schedule) keeps the search's data split (the experiment's ``seed``) and
changes only the model's initialization and the shuffling (``TrainConfig.seed``), so a
confirmed test accuracy is the same test set the search's trials were scored on.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from midl_autok.pareto import non_dominated
from midl_autok.schedule import KSchedule
from midl_autok.spec import ExperimentSpec, load_spec, validate_spec

DEFAULT_TOLERANCE = 0.005  # "within 0.5 points of dense"
CONFIRM_SEEDS = (1000, 1001, 1002)
TABLE_ROWS, TABLE_FEATURES, TABLE_CLASSES = 4000, 24, 7


def table_csv(folder: Path | None = None) -> Path:
    """A harder generated table (scikit-learn ``make_classification``: 4,000 rows,
    24 features of which 12 informative and 6 redundant, 7 classes, 5% label noise), written
    once to ``table.csv`` with a ``label`` column."""
    from sklearn.datasets import make_classification

    folder = folder or Path(tempfile.gettempdir()) / "midl-autok-bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "table.csv"
    if path.exists():
        return path
    x, y = make_classification(
        n_samples=TABLE_ROWS,
        n_features=TABLE_FEATURES,
        n_informative=12,
        n_redundant=6,
        n_classes=TABLE_CLASSES,
        n_clusters_per_class=2,
        class_sep=1.0,
        flip_y=0.05,
        random_state=0,
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"f{i}" for i in range(TABLE_FEATURES)] + ["label"])
        for row, label in zip(x, y, strict=True):
            writer.writerow([f"{v:.6g}" for v in row] + [f"c{label}"])
    tmp.replace(path)
    return path


def experiment(dataset: str) -> ExperimentSpec:
    """The suite's experiment for ``dataset`` (digits, mnist1d, table, tokens)."""
    if dataset == "table":
        return validate_spec(
            {
                "name": "table-mlp",
                "description": "MID-L MLP (2 x 256) on a generated 24-feature, 7-class table",
                "dataset": {"name": "csv", "path": str(table_csv()), "target": "label"},
                "model": {"arch": "mlp", "hidden": [256, 256]},
                "training": {"epochs": 20, "batch_size": 64, "lr": 0.001, "k_fraction": 0.45},
                "budget": {"trials": 30},
                "search": {"agent": "tpe", "space": "budget", "seed_grid": 5},
            },
            source="the table experiment",
        )
    return load_spec(
        {"digits": "digits-mlp", "mnist1d": "mnist1d-mlp", "tokens": "tokens-lstm"}[dataset]
    )


def retrain(spec: ExperimentSpec, schedule: KSchedule | None, seed: int) -> dict[str, float]:
    """Train ``spec``'s model (with ``schedule``'s k and ranks; None: the spec's variant at
    full k) from init/shuffle ``seed`` on the spec's split; its final metrics."""
    from midl_autok.trainer import TrainConfig, build_for_spec, dataset_for_spec, train

    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data, seed=seed, ranks=schedule)
    config = dataclasses.replace(TrainConfig.from_spec(spec, device="cpu"), seed=seed)
    if schedule is None and model.layer_specs():
        schedule = model.schedule_template(config.epochs, 1.0)
    result = train(model, data, config=config, schedule=schedule)
    return {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}


def dense_baseline(spec: ExperimentSpec, seeds: tuple[int, ...]) -> dict[str, Any]:
    """The dense variant (``nn.Linear`` layers) trained with each seed: test and validation
    accuracy per seed and their means."""
    dense = spec.override(**{"model.variant": "dense"})
    rows = [retrain(dense, None, s) for s in seeds]
    return {
        "seeds": list(seeds),
        "test_accuracy": [r["test_accuracy"] for r in rows],
        "val_accuracy": [r["val_accuracy"] for r in rows],
        "test_accuracy_mean": float(np.mean([r["test_accuracy"] for r in rows])),
        "test_accuracy_sd": float(np.std([r["test_accuracy"] for r in rows])),
        "val_accuracy_mean": float(np.mean([r["val_accuracy"] for r in rows])),
    }


def front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto front (max validation accuracy, min inference FLOPs), cheapest first."""
    if not points:
        return []
    values = [[p["val_accuracy"], p["inference_flops"]] for p in points]
    mask = non_dominated(values, ["maximize", "minimize"])
    chosen = [p for p, keep in zip(points, mask, strict=True) if keep]
    return sorted(chosen, key=lambda p: (p["inference_flops"], -p["val_accuracy"]))


def cheapest_confirmed(
    spec: ExperimentSpec,
    points: list[dict[str, Any]],
    dense: dict[str, Any],
    *,
    seeds: tuple[int, ...] = CONFIRM_SEEDS,
    tolerance: float = DEFAULT_TOLERANCE,
    max_candidates: int = 3,
    prefilter: float = 0.02,
) -> dict[str, Any]:
    """The cheapest front schedule whose mean test accuracy over ``seeds`` retrainings is
    within ``tolerance`` of the dense mean.

    Candidates: the study's front points whose validation accuracy is within ``prefilter``
    of the dense mean validation accuracy, cheapest first; at most ``max_candidates`` are
    retrained (each with every seed), stopping at the first that is confirmed.
    """
    target = dense["test_accuracy_mean"] - tolerance
    candidates = [
        p for p in front(points) if p["val_accuracy"] >= dense["val_accuracy_mean"] - prefilter
    ]
    tried = []
    for p in candidates[:max_candidates]:
        schedule = KSchedule.from_dict(p["schedule"], source=f"trial {p['trial']}")
        accs = [retrain(spec, schedule, s)["test_accuracy"] for s in seeds]
        row = {
            "trial": p["trial"],
            "inference_flops_ratio": p["inference_flops_ratio"],
            "search_val_accuracy": p["val_accuracy"],
            "test_accuracy": accs,
            "test_accuracy_mean": float(np.mean(accs)),
            "ranks": p["schedule"].get("ranks"),
        }
        tried.append(row)
        if row["test_accuracy_mean"] >= target - 1e-12:
            return {"confirmed": row, "tried": tried, "candidates": len(candidates)}
    return {"confirmed": None, "tried": tried, "candidates": len(candidates)}
