"""Tests for midl_autok.schedule: KSchedule construction, validation and exact round trips."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from midl_autok.errors import ScheduleError
from midl_autok.models import build_model
from midl_autok.schedule import (
    _MAX_FILE_BYTES,
    FORMAT,
    VERSION,
    KSchedule,
    LayerSpec,
    k_from_fraction,
    write_atomic,
)

LAYERS = (LayerSpec("body.0", 8), LayerSpec("body.1", 4))


@pytest.fixture
def schedule() -> KSchedule:
    return KSchedule(
        layers=LAYERS,
        epochs=3,
        k=((8, 6, 2), (4, 3, 1)),
        arch="mlp",
        signature="0123456789abcdef",
        metrics={"val_accuracy": 0.97, "test_accuracy": 0.96, "inference_flops": 123456},
        provenance={
            "study": "s1",
            "trial": 17,
            "mlflow_run_id": "abc",
            "agent": "tpe",
            "space": "cosine",
            "seed": 0,
            "midl_autok_version": "0.1.0",
            "git_sha": "1e5",  # looks like a float to YAML; must come back a string
            "spec": {"training": {"epochs": 3}, "tags": ["a", "yes", None]},
        },
    )


def document(schedule: KSchedule) -> dict[str, Any]:
    return copy.deepcopy(schedule.to_dict())


# --------------------------------------------------------------------------- round trips


def test_json_round_trip_is_exact(schedule: KSchedule) -> None:
    text = schedule.to_json()
    back = KSchedule.from_json(text)
    assert back == schedule
    assert back.metrics == schedule.metrics
    assert back.provenance == schedule.provenance
    assert back.to_json() == text
    data = json.loads(text)
    assert (data["format"], data["version"]) == (FORMAT, VERSION)
    assert data["model"] == {"arch": "mlp", "signature": "0123456789abcdef"}
    assert data["layers"] == [{"name": "body.0", "width": 8}, {"name": "body.1", "width": 4}]
    assert data["k"] == [[8, 6, 2], [4, 3, 1]]


def test_yaml_round_trip_is_exact(schedule: KSchedule) -> None:
    text = schedule.to_yaml()
    back = KSchedule.from_yaml(text)
    assert back == schedule
    assert back.provenance["git_sha"] == "1e5"
    assert back.to_yaml() == text


@pytest.mark.parametrize("name", ["s.json", "s.yaml", "s.yml", "sub/dir/s.JSON"])
def test_save_and_load(schedule: KSchedule, tmp_path: Path, name: str) -> None:
    path = schedule.save(tmp_path / name)
    assert KSchedule.load(path) == schedule
    text = path.read_text()
    assert text.lstrip().startswith("{") == name.lower().endswith(".json")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left over


def test_save_replaces_an_existing_file(schedule: KSchedule, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("old")
    schedule.save(path)
    assert KSchedule.load(path) == schedule


def test_write_atomic_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a" / "out.txt"
    write_atomic(target, "hello\n")
    write_atomic(target, "again\n")
    assert target.read_text() == "again\n"
    assert os.listdir(target.parent) == ["out.txt"]


# --------------------------------------------------------------------------- constructors


def test_schedule_is_frozen_and_normalizes_sequences() -> None:
    s = KSchedule(layers=[("a", 3)], epochs=2, k=[[1, 3]])  # type: ignore[arg-type]
    assert s.layers == (LayerSpec("a", 3),)
    assert s.k == ((1, 3),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.epochs = 5  # type: ignore[misc]


def test_constant() -> None:
    s = KSchedule.constant([("a", 10), ("b", 3)], 4, 0.5, arch="mlp")
    assert s.k == ((5, 5, 5, 5), (2, 2, 2, 2))  # round(1.5) = 2
    assert s.arch == "mlp"
    assert KSchedule.constant(LAYERS, 2, 1.0).k == ((8, 8), (4, 4))
    assert KSchedule.constant(LAYERS, 1, 0.01).k == ((1,), (1,))  # clipped to 1


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_constant_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(ScheduleError, match="0 < fraction <= 1"):
        KSchedule.constant(LAYERS, 2, fraction)


def test_from_fractions() -> None:
    s = KSchedule.from_fractions(LAYERS, [[1.0, 0.5, 0.0], [0.76, 2.0, 0.3]])
    assert s.epochs == 3
    assert s.k == ((8, 4, 1), (3, 4, 1))
    with pytest.raises(ScheduleError, match=r"one row per layer \(2\), but got 1"):
        KSchedule.from_fractions(LAYERS, [[1.0]])
    with pytest.raises(ScheduleError, match=r"layer body\.1 must have 2 entries"):
        KSchedule.from_fractions(LAYERS, [[1.0, 1.0], [1.0]])


@pytest.mark.parametrize(
    ("fraction", "width", "k"),
    [
        (0.5, 10, 5),
        (0.26, 10, 3),
        (0.24, 10, 2),
        (0.25, 10, 2),  # Python's round: half to even
        (0.35, 100, 35),
        (1.0, 7, 7),
        (0.01, 10, 1),  # clipped up to 1
        (0.0, 10, 1),
        (-1.0, 10, 1),
        (1.7, 10, 10),  # clipped down to the width
    ],
)
def test_k_from_fraction(fraction: float, width: int, k: int) -> None:
    got = k_from_fraction(fraction, width)
    assert got == k
    assert type(got) is int


@pytest.mark.parametrize("fraction", [float("nan"), float("inf"), -float("inf")])
def test_k_from_fraction_rejects_non_finite(fraction: float) -> None:
    with pytest.raises(ScheduleError, match="finite"):
        k_from_fraction(fraction, 10)


# --------------------------------------------------------------------------- views


def test_views(schedule: KSchedule) -> None:
    assert schedule.names == ("body.0", "body.1")
    assert schedule.widths == (8, 4)
    assert schedule.at(1) == {"body.0": 6, "body.1": 3}
    assert schedule.final() == {"body.0": 2, "body.1": 1}
    assert schedule.fractions() == [[1.0, 0.75, 0.25], [1.0, 0.75, 0.25]]
    assert schedule.active_fraction() == 0.25
    assert schedule.active_fraction(0) == 1.0
    with pytest.raises(ScheduleError, match=r"0 <= epoch < 3, but got 3"):
        schedule.at(3)


def test_with_info_merges(schedule: KSchedule) -> None:
    s = schedule.with_info(metrics={"val_accuracy": 0.5, "x": 1}, provenance={"trial": 3})
    assert s.metrics["val_accuracy"] == 0.5
    assert s.metrics["inference_flops"] == 123456
    assert s.provenance["trial"] == 3
    assert s.provenance["study"] == "s1"
    assert s.k == schedule.k
    assert schedule.metrics["val_accuracy"] == 0.97  # the original is untouched


# --------------------------------------------------------------------------- validation


def test_message_names_layer_epoch_and_value() -> None:
    rows = [[256] * 8, [256] * 7 + [300]]
    with pytest.raises(
        ScheduleError,
        match=r"^k must satisfy 1 <= k <= 256 for layer body\.1 at epoch 7, but got 300$",
    ):
        KSchedule(layers=(("body.0", 256), ("body.1", 256)), epochs=8, k=rows)  # type: ignore[arg-type]


def _set(path: str, value: Any):
    """A document edit: set ``value`` at a ``/``-separated path (``k/1/2``)."""

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        *parents, leaf = path.split("/")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(leaf) if isinstance(node, list) else leaf] = value
        return doc

    return edit


def _drop(key: str):
    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        del doc[key]
        return doc

    return edit


BAD_DOCUMENTS = [
    pytest.param(_set("format", "kschedule"), r"'format' must be 'midl-autok/kschedule'", id="fmt"),
    pytest.param(_drop("format"), r"'format' must be .* but got None", id="no-format"),
    pytest.param(_set("version", 2), "unsupported schedule version 2", id="version"),
    pytest.param(_set("version", "1"), "unsupported schedule version '1'", id="version-str"),
    pytest.param(_set("extra", 1), "unknown field 'extra'", id="unknown-field"),
    pytest.param(_set("model/foo", 1), "unknown field 'model.foo'", id="unknown-model-field"),
    pytest.param(_set("model/arch", 5), "'model.arch' must be a string", id="arch-type"),
    pytest.param(_set("model", []), "'model' must be an object", id="model-type"),
    pytest.param(
        _set("k/0/1", 0), r"1 <= k <= 8 for layer body\.0 at epoch 1, but got 0$", id="k-zero"
    ),
    pytest.param(
        _set("k/1/2", 5), r"1 <= k <= 4 for layer body\.1 at epoch 2, but got 5$", id="k-high"
    ),
    pytest.param(_set("k/0/0", -1), "at epoch 0, but got -1", id="k-negative"),
    pytest.param(
        _set("k/1/0", 2.0),
        r"k must be an integer for layer body\.1 at epoch 0, but got 2\.0",
        id="k-float",
    ),
    pytest.param(_set("k/0/2", True), "at epoch 2, but got True", id="k-bool"),
    pytest.param(_set("k/0/2", "3"), "at epoch 2, but got '3'", id="k-string"),
    pytest.param(_set("k/0/2", None), "at epoch 2, but got None", id="k-null"),
    pytest.param(
        _set("k", [[8, 6, 2]]), r"one row per layer \(2\), but got 1 rows", id="too-few-rows"
    ),
    pytest.param(
        _set("k", [[8, 6, 2], [4, 3, 1], [1, 1, 1]]), "but got 3 rows", id="too-many-rows"
    ),
    pytest.param(
        _set("k/1", [4, 3]),
        r"k for layer body\.1 must have 3 entries \(one per epoch\), but got 2",
        id="short-row",
    ),
    pytest.param(_set("epochs", 4), "must have 4 entries", id="epochs-mismatch"),
    pytest.param(_set("epochs", 0), "epochs must be an integer >= 1, but got 0", id="epochs-0"),
    pytest.param(_set("epochs", 3.0), "but got 3.0", id="epochs-float"),
    pytest.param(_drop("epochs"), "epochs must be an integer >= 1, but got None", id="no-epochs"),
    pytest.param(_set("k", "8,6,2"), "'k' must be a list of lists of integers", id="k-type"),
    pytest.param(_set("k", [8, 6, 2]), "'k' must be a list of lists", id="k-flat"),
    pytest.param(
        _set("layers/1/name", "body.0"), "layer name 'body.0' appears twice", id="duplicate-name"
    ),
    pytest.param(_set("layers/0/name", ""), "layer 0 needs a non-empty string name", id="no-name"),
    pytest.param(_set("layers/1/width", 0), r"width of layer body\.1 must be", id="width-0"),
    pytest.param(_set("layers/1/width", 4.0), r"width of layer body\.1 must be", id="width-float"),
    pytest.param(
        _set("layers/1", {"name": "x", "width": 4, "k": 1}),
        r"layers\[1\] must be an object with exactly 'name' and 'width'",
        id="layer-extra-key",
    ),
    pytest.param(_set("layers", {}), "'layers' must be a list, got dict", id="layers-type"),
    pytest.param(_set("layers", []), "needs at least one layer", id="no-layers"),
    pytest.param(_set("metrics", [1]), "'metrics' must be an object", id="metrics-type"),
    pytest.param(_set("provenance", "x"), "'provenance' must be an object", id="prov-type"),
]


@pytest.mark.parametrize(("edit", "match"), BAD_DOCUMENTS)
def test_bad_documents_are_rejected(schedule: KSchedule, edit, match: str) -> None:
    doc = edit(document(schedule))
    with pytest.raises(ScheduleError, match=match):
        KSchedule.from_dict(doc)
    # The same through the JSON and YAML readers, with the source named first.
    with pytest.raises(ScheduleError, match=f"^doc.json: .*{match}"):
        KSchedule.from_json(json.dumps(doc), source="doc.json")
    import yaml

    with pytest.raises(ScheduleError, match=f"^doc.yaml: .*{match}"):
        KSchedule.from_yaml(yaml.safe_dump(doc), source="doc.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"format": "midl-autok/kschedule", ', "not valid JSON"),
        ("", "not valid JSON"),
        ('{"k": NaN}', "not valid JSON"),
        ('{"k": Infinity}', "not valid JSON"),
        ("[1, 2]", "expected a JSON object at the top level, got list"),
        ("null", "expected a JSON object at the top level, got null"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_json(text: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=f"^s.json: {match}"):
        KSchedule.from_json(text, source="s.json")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("k: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a JSON object at the top level, got list"),
        ("", "expected a JSON object at the top level, got null"),
    ],
)
def test_malformed_yaml(text: str, match: str) -> None:
    with pytest.raises(ScheduleError, match=f"^s.yaml: {match}"):
        KSchedule.from_yaml(text, source="s.yaml")


def test_yaml_booleans_are_not_k(schedule: KSchedule) -> None:
    text = schedule.to_yaml().replace("- [8, 6, 2]", "- [8, 6, yes]")
    assert "yes" in text
    with pytest.raises(ScheduleError, match=r"layer body\.0 at epoch 2, but got True"):
        KSchedule.from_yaml(text)


# --------------------------------------------------------------------------- files


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ScheduleError, match=f"^schedule file not found: {path}$"):
        KSchedule.load(path)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="is a directory"):
        KSchedule.load(tmp_path)


def test_load_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScheduleError, match="not a UTF-8 text file"):
        KSchedule.load(path)


def test_load_too_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.truncate(_MAX_FILE_BYTES + 1)  # sparse: no real 64 MiB written
    with pytest.raises(ScheduleError, match=f"file is larger than {_MAX_FILE_BYTES} bytes"):
        KSchedule.load(path)


def test_load_names_the_file_in_errors(schedule: KSchedule, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(schedule.to_yaml().replace("version: 1", "version: 7"))
    with pytest.raises(ScheduleError, match=f"^{path}: unsupported schedule version 7"):
        KSchedule.load(path)


# --------------------------------------------------------------------------- against a model


@pytest.fixture
def model():
    return build_model("mlp", input_shape=(6,), num_classes=3, hidden=[8, 4], gate_rank=2)


def test_model_accepts_its_own_schedule(model) -> None:
    s = model.schedule_template(3, 0.5)
    model.check_schedule(s)
    assert s.k == ((4, 4, 4), (2, 2, 2))
    assert (s.arch, s.signature) == ("mlp", model.signature())


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ((("body.0", 8), ("body.1", 5)), r"layer body\.1 has width 5 in the schedule but 4 in"),
        ((("body.0", 8), ("body.2", 4)), r"layer body\.2 does not exist in the mlp model"),
        ((("body.0", 8),), r"the schedule has no k for layer body\.1 of the mlp model"),
    ],
)
def test_model_rejects_mismatched_schedules(model, layers, match: str) -> None:
    s = KSchedule(layers=layers, epochs=1, k=tuple((1,) for _ in layers))
    with pytest.raises(ScheduleError, match=match):
        model.check_schedule(s)
