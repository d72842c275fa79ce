"""Tests for midl_autok.spec (experiment specs) and midl_autok.metrics (the metric names).

Specs are built from dicts here; the shipped YAML files are tested elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from midl_autok import metrics as M
from midl_autok.errors import SpecError
from midl_autok.models import build_model
from midl_autok.spec import ExperimentSpec, load_spec, validate_spec

SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "dataset": {"name": "synthetic", "val_fraction": 0.25, "options": {"n": 100}},
    "model": {"arch": "mlp", "hidden": [16, 8], "gate_rank": 4, "light_rank": 0},
    "training": {"epochs": 4, "batch_size": 32, "lr": 0.01, "optimizer": "sgd"},
    "objectives": [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": "inference_flops_ratio", "direction": "minimize"},
    ],
    "budget": {"trials": 5, "flops_budget": 0.5},
    "search": {"agent": "random", "space": "constant"},
}


def test_valid_spec() -> None:
    spec = validate_spec(SPEC)
    assert spec.seed == 3
    assert spec.model.hidden == [16, 8]
    assert spec.training.epochs == 4
    assert spec.training.optimizer == "sgd"
    assert [o.metric for o in spec.objectives] == ["val_accuracy", "inference_flops_ratio"]
    assert spec.dataset.options == {"n": 100}


def test_defaults() -> None:
    spec = validate_spec({})
    assert validate_spec(None) == spec == ExperimentSpec()
    assert [(o.metric, o.direction) for o in spec.objectives] == [
        ("val_accuracy", "maximize"),
        ("inference_flops", "minimize"),
    ]
    assert spec.training.k_fraction == 1.0


def test_yaml_round_trip() -> None:
    spec = validate_spec(SPEC)
    assert validate_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_model_options_build_the_model() -> None:
    spec = validate_spec(SPEC)
    options = spec.model.options()
    assert "arch" not in options
    assert "channels" not in options  # unset options are left to the model's defaults
    model = build_model(spec.model.arch, input_shape=(12,), num_classes=3, **options)
    assert [(s.name, s.width) for s in model.layer_specs()] == [("body.0", 16), ("body.1", 8)]
    assert model(torch.zeros(2, 12)).shape == (2, 3)


def _with(path: str, value: Any) -> dict[str, Any]:
    """A deep copy of SPEC with ``value`` at the dotted ``path`` (list indices allowed)."""
    doc = yaml.safe_load(yaml.safe_dump(SPEC))
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(leaf) if isinstance(node, list) else leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("training.epochs", 0, r"^spec: training\.epochs: .*greater than or equal to 1 \(got 0\)"),
        ("training.epochs", "many", r"^spec: training\.epochs: .*\(got 'many'\)"),
        ("training.epoch", 5, r"^spec: training\.epoch: Extra inputs are not permitted"),
        ("training.optimizer", "rmsprop", r"^spec: training\.optimizer: .*'adam'"),
        ("trainig", {}, r"^spec: trainig: Extra inputs are not permitted"),
        ("model.variant", "sparse", r"^spec: model\.variant: "),
        ("model.hidden", [16, 0], r"^spec: model\.hidden: must be a non-empty list"),
        ("model.hidden", [], r"^spec: model\.hidden: must be a non-empty list"),
        ("model.light_rank", -1, r"^spec: model\.light_rank: "),
        ("dataset.val_fraction", 1.0, r"^spec: dataset\.val_fraction: .*less than 1"),
        ("dataset.colour", "red", r"^spec: dataset\.colour: Extra inputs"),
        ("budget.flops_budget", 2.0, r"^spec: budget\.flops_budget: "),
        ("objectives.1.direction", "down", r"^spec: objectives\.1\.direction: "),
        ("objectives.0.goal", "x", r"^spec: objectives\.0\.goal: Extra inputs"),
        ("objectives", [], r"^spec: objectives: .*at least 1 item"),
        ("seed", -1, r"^spec: seed: "),
    ],
)
def test_errors_name_the_field_path(path: str, value: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        validate_spec(_with(path, value))


def test_error_counts_further_problems() -> None:
    doc = _with("training.epochs", 0)
    doc["training"]["lr"] = -1
    with pytest.raises(SpecError, match=r"training\.epochs: .* \(and 1 more\)$"):
        validate_spec(doc)


@pytest.mark.parametrize("metric", ["test_accuracy", "accuracy", "epoch_time_s"])
def test_unknown_objective_metric_is_rejected(metric: str) -> None:
    doc = _with("objectives.0.metric", metric)
    with pytest.raises(SpecError, match=f"objectives: unknown objective metric '{metric}'; valid:"):
        validate_spec(doc)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        validate_spec([1, 2])


def test_spec_is_frozen() -> None:
    spec = validate_spec(SPEC)
    with pytest.raises(ValueError, match="frozen"):
        spec.seed = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- overrides


def test_override() -> None:
    spec = validate_spec(SPEC)
    changed = spec.override(**{"training.epochs": 9, "seed": 7, "model.hidden": [4]})
    assert (changed.training.epochs, changed.seed, changed.model.hidden) == (9, 7, [4])
    assert changed.training.lr == spec.training.lr
    assert spec.training.epochs == 4  # the original is untouched
    assert spec.override(**{"training.epochs": None}) == spec  # None keeps the value
    whole = spec.override(dataset={"name": "digits"})
    assert whole.dataset.name == "digits"
    assert whole.dataset.options == {}


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("training.epochs", 0, r"^overrides: training\.epochs: "),
        ("training.epoch", 3, r"^overrides: training\.epoch: Extra inputs"),
        ("trainig.epochs", 3, r"cannot set trainig\.epochs: trainig is not a section"),
        ("seed.value", 3, r"cannot set seed\.value: seed is not a section"),
        ("dataset.path.x", 3, r"cannot set dataset\.path\.x: dataset\.path is not a section"),
    ],
)
def test_bad_overrides(path: str, value: Any, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        validate_spec(SPEC).override(**{path: value})


# --------------------------------------------------------------------------- files


def test_load_spec_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert load_spec(path) == validate_spec(SPEC)
    assert load_spec(str(path)) == validate_spec(SPEC)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("training: {epochs: 0}\n", r"exp\.yaml: training\.epochs: "),
        ("training: [1\n", r"exp\.yaml: not valid YAML"),
        ("- 1\n", "expected a mapping at the top level"),
    ],
)
def test_load_spec_errors_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match):
        load_spec(path)


def test_load_spec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"experiment file not found: .*nope\.yaml"):
        load_spec(tmp_path / "nope.yaml")


def test_load_spec_unknown_name() -> None:
    with pytest.raises(SpecError, match=r"unknown experiment 'no-such-experiment-xyz'.*path"):
        load_spec("no-such-experiment-xyz")


# --------------------------------------------------------------------------- metric names


def test_metric_names() -> None:
    assert len(set(M.METRICS)) == len(M.METRICS)
    assert set(M.OBJECTIVE_METRICS) <= set(M.METRICS)
    assert M.TEST_ACCURACY in M.METRICS
    assert M.TEST_ACCURACY not in M.OBJECTIVE_METRICS  # reported, never optimized
    assert M.active_fraction_key("body.1") == "active_fraction/body.1"
    assert M.k_key("body.0") == "k/body.0"


@pytest.mark.parametrize(
    "override",
    [
        {"dataset": {"options": {"": float("inf")}}},  # hypothesis found it: dumped as null
        {"search": {"options": {"n": [1.0, float("nan")]}}},
        {"budget": {"timeout_s": float("inf")}},
    ],
)
def test_non_finite_numbers_are_refused_because_a_dump_would_lose_them(
    override: dict[str, Any],
) -> None:
    with pytest.raises(SpecError, match=r"infinity and NaN|finite number"):
        validate_spec(override)
