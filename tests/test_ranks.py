"""Per-layer MID-L ranks: models built with them, schedules carrying them (exact round trip,
old files still loading), the spec accepting them, and the trainer building them."""

from __future__ import annotations

import json

import pytest

from midl_autok.errors import ScheduleError, SpecError
from midl_autok.models import build_model
from midl_autok.schedule import KSchedule
from midl_autok.spec import validate_spec
from midl_autok.trainer import run_experiment

LAYERS = [("body.0", 16), ("body.1", 8)]


def mlp(**options: object):  # type: ignore[no-untyped-def]
    return build_model("mlp", input_shape=(6,), num_classes=3, hidden=[16, 8], **options)


def ranks_of(model) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {n: (m.gate_rank, m.light_rank) for n, m in model.midl_layers()}


def test_per_layer_ranks_as_a_list_or_a_mapping() -> None:
    by_list = mlp(gate_rank=[2, 4], light_rank=[0, 8])
    by_name = mlp(gate_rank={"body.1": 4, "body.0": 2}, light_rank={"body.0": 0, "body.1": 8})
    assert ranks_of(by_list) == ranks_of(by_name) == {"body.0": (2, 0), "body.1": (4, 8)}
    assert by_list.config["gate_rank"] == [2, 4]  # a list in the config: in the signature
    assert by_list.signature() == by_name.signature()
    assert by_list.layer_ranks() == {"body.0": (2, 0), "body.1": (4, 8)}
    assert by_list.midl_layers()[0][1].light_in is None  # light_rank 0: no light path


def test_one_rank_keeps_the_config_and_signature_of_before() -> None:
    model = mlp(gate_rank=4, light_rank=4)
    assert model.config["gate_rank"] == 4 and model.config["light_rank"] == 4
    assert model.layer_ranks() == {}  # its schedules carry no ranks
    assert model.schedule_template(2).ranks == {}
    assert mlp(gate_rank=[4, 4], light_rank=[4, 4]).signature() != model.signature()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gate_rank": [2]}, r"'gate_rank' as a list needs one value per hidden layer \(2\)"),
        ({"light_rank": {"body.0": 1}}, "must name every hidden layer .* lacks layer body.1"),
        ({"light_rank": {"body.0": 1, "body.1": 1, "x": 1}}, "has no layer 'x'"),
        ({"gate_rank": [0, 1]}, "'gate_rank' must be an integer >= 1"),
        ({"light_rank": [-1, 1]}, r"'light_rank' must be an integer >= 0 \(0 = no light path\)"),
    ],
)
def test_bad_per_layer_ranks_name_the_rule(options: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        mlp(**options)


def test_a_schedule_with_ranks_round_trips_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = KSchedule.constant(LAYERS, 3, 0.5, ranks={"body.0": (2, 0), "body.1": (4, 8)})
    data = schedule.to_dict()
    assert data["ranks"] == {
        "body.0": {"gate_rank": 2, "light_rank": 0},
        "body.1": {"gate_rank": 4, "light_rank": 8},
    }
    for name in ("s.json", "s.yaml"):
        assert KSchedule.load(schedule.save(tmp_path / name)) == schedule
    old = KSchedule.constant(LAYERS, 3, 0.5)
    assert "ranks" not in old.to_dict()  # files without ranks are as before
    assert KSchedule.from_json(old.to_json()).ranks == {}
    assert schedule.rank_options() == {
        "gate_rank": {"body.0": 2, "body.1": 4},
        "light_rank": {"body.0": 0, "body.1": 8},
    }


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ({"body.0": {"gate_rank": 2}}, r"ranks.body.0 must be an object with exactly"),
        ({"body.0": {"gate_rank": 2, "light_rank": "a"}}, "ranks.body.0.light_rank must be an"),
        ({"body.0": {"gate_rank": 0, "light_rank": 0}}, "gate_rank >= 1 and light_rank >= 0"),
        ({"body.0": {"gate_rank": 1, "light_rank": 0}}, "layer body.1 is missing"),
        ({"zz": {"gate_rank": 1, "light_rank": 0}}, "ranks name layer 'zz'"),
        ([1], "'ranks' must be an object, got list"),
    ],
)
def test_bad_ranks_in_a_file_name_the_field(ranks: object, message: str) -> None:
    data = KSchedule.constant(LAYERS, 2, 0.5).to_dict()
    data["ranks"] = ranks
    with pytest.raises(ScheduleError, match=message):
        KSchedule.from_json(json.dumps(data), source="f.json")


def test_the_spec_takes_per_layer_ranks() -> None:
    spec = validate_spec({"model": {"gate_rank": [4, 8], "light_rank": {"body.0": 0}}})
    assert spec.model.gate_rank == [4, 8]
    with pytest.raises(SpecError, match=r"^spec: model.gate_rank: must be an integer in \[1, "):
        validate_spec({"model": {"gate_rank": [0]}})
    assert validate_spec({"search": {"ranks": True}}).search.ranks is True


def test_the_trainer_builds_the_schedule_s_ranks() -> None:
    spec = validate_spec(
        {
            "dataset": {"name": "synthetic", "options": {"n_samples": 300}},
            "model": {"arch": "mlp", "hidden": [16, 8], "gate_rank": 4, "light_rank": 4},
            "training": {"epochs": 1, "batch_size": 64},
        }
    )
    schedule = KSchedule.constant(LAYERS, 1, 0.5, ranks={"body.0": (2, 0), "body.1": (1, 8)})
    result = run_experiment(spec, schedule=schedule, device="cpu")
    assert ranks_of(result.model) == {"body.0": (2, 0), "body.1": (1, 8)}
    assert result.schedule is not None and result.schedule.ranks == schedule.ranks
    again = run_experiment(spec, schedule=result.schedule, device="cpu")
    assert again.metrics["val_accuracy"] == result.metrics["val_accuracy"]
    assert again.schedule is not None and again.schedule.signature == result.schedule.signature
    plain = run_experiment(spec, schedule=KSchedule.constant(LAYERS, 1, 0.5), device="cpu")
    assert plain.metrics["inference_flops"] > result.metrics["inference_flops"]
