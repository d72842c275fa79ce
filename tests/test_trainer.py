"""The trainer: schedules and controllers applied per epoch, metrics, determinism, NaN stop."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from midl_autok import metrics as M
from midl_autok.errors import ScheduleError, UserError
from midl_autok.schedule import KSchedule
from midl_autok.spec import ExperimentSpec, validate_spec
from midl_autok.trainer import (
    TIMING_KEYS,
    DivergedError,
    TrainConfig,
    TrainHooks,
    build_for_spec,
    dataset_for_spec,
    resolve_device,
    run_experiment,
    train,
)


@pytest.fixture(scope="module")
def spec() -> ExperimentSpec:
    return validate_spec(
        {
            "seed": 3,
            "dataset": {"name": "synthetic", "options": {"n_samples": 600}},
            "model": {"arch": "mlp", "hidden": [32, 24], "gate_rank": 4, "light_rank": 4},
            "training": {"epochs": 3, "batch_size": 64, "lr": 0.01},
        }
    )


def _strip_timing(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_same_seed_gives_identical_metrics_and_weights(spec: ExperimentSpec) -> None:
    a = run_experiment(spec, k_fraction=0.5)
    b = run_experiment(spec, k_fraction=0.5)
    assert _strip_timing(a.history) == _strip_timing(b.history)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    c = run_experiment(spec.override(seed=4), k_fraction=0.5)
    assert _strip_timing(c.history) != _strip_timing(a.history)


def test_schedule_sets_k_per_layer_and_epoch(spec: ExperimentSpec) -> None:
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    plan = KSchedule(
        layers=model.layer_specs(),
        epochs=3,
        k=((32, 16, 5), (24, 12, 2)),
        arch="mlp",
        signature=model.signature(),
    )
    seen: list[dict[str, int]] = []

    class Probe(TrainHooks):
        def on_epoch_end(self, epoch: int, metrics: object) -> None:
            # after the epoch, every layer selected exactly k neurons for every sample
            for name, layer in model.midl_layers():
                per_sample = layer.last_mask.sum(dim=1)
                assert torch.all(per_sample == layer.k), (name, epoch)
            seen.append(model.current_k())

    result = train(model, data, config=TrainConfig.from_spec(spec), schedule=plan, hooks=[Probe()])
    assert seen == [plan.at(e) for e in range(3)]
    assert [r[M.k_key("body.1")] for r in result.history] == [24, 12, 2]
    assert result.schedule is not None and result.schedule.k == plan.k
    # inference FLOPs use the final epoch's k; training FLOPs sum every epoch's k
    costs = result.history
    final = result.metrics
    assert final[M.INFERENCE_FLOPS] == costs[-1][M.INFERENCE_FLOPS]
    assert costs[0][M.INFERENCE_FLOPS] > costs[1][M.INFERENCE_FLOPS] > costs[2][M.INFERENCE_FLOPS]
    n = data.sizes["train"]
    assert final[M.TRAINING_FLOPS] == sum(3 * n * r[M.INFERENCE_FLOPS] for r in costs)
    assert final[M.ACTIVE_FRACTION] == pytest.approx((5 / 32 + 2 / 24) / 2)
    assert final[M.active_fraction_key("body.0")] == pytest.approx(5 / 32)
    assert 0.0 <= final[M.TEST_ACCURACY] <= 1.0
    assert result.schedule.metrics[M.VAL_ACCURACY] == final[M.VAL_ACCURACY]


def test_controller_sees_history_and_chooses_k(spec: ExperimentSpec) -> None:
    calls: list[int] = []

    def controller(epoch: int, history: object) -> dict[str, int]:
        assert isinstance(history, list) and len(history) == epoch
        calls.append(epoch)
        return {"body.0": 4 + epoch, "body.1": 3}

    result = run_experiment(spec, controller=controller)
    assert calls == [0, 1, 2]
    assert result.schedule is not None
    assert result.schedule.k == ((4, 5, 6), (3, 3, 3))


def test_controller_bad_k_names_layer_and_epoch(spec: ExperimentSpec) -> None:
    with pytest.raises(ScheduleError, match=r"layer body\.1 at epoch 0: .*got 99"):
        run_experiment(spec, controller=lambda e, h: {"body.1": 99})


def test_schedule_epochs_must_match(spec: ExperimentSpec) -> None:
    data = dataset_for_spec(spec)
    model = build_for_spec(spec, data)
    plan = model.schedule_template(5, 0.5)
    with pytest.raises(ScheduleError, match="the schedule has 5 epochs but training runs 3"):
        train(model, data, config=TrainConfig.from_spec(spec), schedule=plan)


def test_nan_loss_stops_at_once(spec: ExperimentSpec) -> None:
    data = dataset_for_spec(spec)
    x = data.x_train.clone()
    x[5, 0] = math.nan
    bad = dataclasses.replace(data, x_train=x)
    epochs_run: list[int] = []

    class Count(TrainHooks):
        def on_epoch_end(self, epoch: int, metrics: object) -> None:
            epochs_run.append(epoch)

    model = build_for_spec(spec, bad)
    with pytest.raises(DivergedError, match="loss became nan in epoch 0") as info:
        train(model, bad, config=TrainConfig.from_spec(spec), hooks=[Count()])
    assert info.value.epoch == 0 and info.value.history == [] and epochs_run == []


def test_hook_can_stop_early(spec: ExperimentSpec) -> None:
    class StopAfterOne(TrainHooks):
        def on_epoch_end(self, epoch: int, metrics: object) -> bool:
            return epoch < 1

    result = run_experiment(spec, hooks=[StopAfterOne()])
    assert result.status == "stopped"
    assert len(result.history) == 2 and result.metrics["epochs"] == 2
    assert result.schedule is not None and result.schedule.epochs == 2


def test_dense_baseline_has_ratio_one(spec: ExperimentSpec) -> None:
    for variant in ("dense", "dropout"):
        result = run_experiment(spec.override(**{"model.variant": variant}))
        assert result.schedule is None
        assert result.metrics[M.INFERENCE_FLOPS_RATIO] == 1.0
        assert result.metrics[M.ACTIVE_FRACTION] == 1.0
        # 32*32 + 32*24 + 24*4 multiply-adds, x2
        assert result.metrics[M.INFERENCE_FLOPS] == 2 * (32 * 32 + 32 * 24 + 24 * 4)


def test_lstm_on_tokens_trains() -> None:
    spec = validate_spec(
        {
            "dataset": {"name": "synthetic-tokens", "options": {"n_samples": 300}},
            "model": {"arch": "lstm", "embed_dim": 8, "hidden_size": 16, "hidden": [16]},
            "training": {"epochs": 2, "batch_size": 32},
        }
    )
    result = run_experiment(spec, k_fraction=0.5)
    assert result.metrics[M.k_key("body.0")] == 8
    assert math.isfinite(result.metrics[M.VAL_LOSS])


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
