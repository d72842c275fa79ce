"""Deploy: an exported model (torch.export or TorchScript) gives the trained model's outputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from midl_autok.deploy import (
    FORMATS,
    export_model,
    latency_report,
    load_model,
    load_program,
    read_metadata,
)
from midl_autok.errors import UserError
from midl_autok.kernels import cpu_kernels
from midl_autok.models import build_model
from midl_autok.spec import validate_spec
from midl_autok.trainer import dataset_for_spec, run_experiment

SUFFIX = {"export": ".pt2", "torchscript": ".pt"}


@pytest.fixture(scope="module")
def trained():
    spec = validate_spec(
        {
            "seed": 1,
            "dataset": {"name": "digits"},
            "model": {"arch": "mlp", "hidden": [96, 64], "gate_rank": 8, "light_rank": 8},
            "training": {"epochs": 2, "batch_size": 64, "lr": 0.005, "k_fraction": 0.3},
        }
    )
    result = run_experiment(spec, device="cpu")
    return result, dataset_for_spec(spec)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_gives_the_trained_outputs(trained, fmt: str, tmp_path: Path) -> None:
    result, data = trained
    model = result.model
    final_k = result.schedule.final()
    assert model.current_k() == final_k
    assert all(k < width for k, width in zip(final_k.values(), (96, 64), strict=True))
    path = export_model(model, tmp_path / f"m{SUFFIX[fmt]}", example=data.x_test[:4], format=fmt)
    rebuilt = load_model(path)  # safe: metadata + state dict, nothing executed
    program = load_program(path, trusted=True)  # the exported graph itself
    assert rebuilt.current_k() == final_k
    assert not rebuilt.training
    model.eval()
    with torch.no_grad():
        for batch in (1, 2, 7, 300):  # every path of the live model: kernel, gather, dense
            x = data.x_test[:batch]
            want = model(x)
            torch.testing.assert_close(rebuilt(x), want, msg=f"rebuilt, batch {batch}")
            torch.testing.assert_close(program(x), want, msg=f"program, batch {batch}")
    meta = read_metadata(path)
    assert meta["export_format"] == fmt
    assert meta["program"] == (
        "portable" if fmt == "torchscript" or cpu_kernels() is None else "sparse"
    )
    assert meta["k"] == final_k
    assert meta["arch"] == "mlp"
    assert meta["signature"] == model.signature()
    assert meta["input_shape"] == list(data.x_test.shape[1:])


def test_export_at_a_given_k_restores_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(10,), num_classes=3, hidden=[40, 20])
    model.set_k({"body.0": 30, "body.1": 15})
    layers = dict(model.midl_layers())
    layers["body.1"].sparse_eval = "gather"
    model.train()
    x = torch.randn(5, 10)
    path = export_model(model, tmp_path / "m.pt2", example=x, k={"body.0": 4, "body.1": 3})
    assert model.current_k() == {"body.0": 30, "body.1": 15}
    assert model.training
    assert layers["body.1"].sparse_eval == "gather"
    assert read_metadata(path)["k"] == {"body.0": 4, "body.1": 3}
    model.eval()
    model.set_k({"body.0": 4, "body.1": 3})
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model(x))


def test_cnn_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=(1, 12, 12), num_classes=4, hidden=[48]).eval()
    model.set_k({"body.0": 9})
    x = torch.randn(3, 1, 12, 12)
    path = export_model(model, tmp_path / "cnn.pt2", example=x)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), model(x))


def test_export_file_is_written_atomically(tmp_path: Path) -> None:
    model = build_model("mlp", input_shape=(6,), num_classes=2, hidden=[8])
    export_model(model, tmp_path / "out" / "m.pt2", example=torch.randn(2, 6))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.pt2"]


def test_bad_inputs_are_user_errors(tmp_path: Path) -> None:
    model = build_model("mlp", input_shape=(6,), num_classes=2, hidden=[8])
    with pytest.raises(UserError, match="unknown export format 'onnx'; valid: export"):
        export_model(model, tmp_path / "m.onnx", example=torch.randn(2, 6), format="onnx")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.pt2")
    good = export_model(model, tmp_path / "m.pt2", example=torch.randn(2, 6))
    with pytest.raises(UserError, match="pass trusted=True for a file you wrote"):
        load_program(good)
    (tmp_path / "junk.pt2").write_text("not a zip")
    with pytest.raises(UserError, match="not a model written by midl-autok export"):
        read_metadata(tmp_path / "junk.pt2")
    with zipfile.ZipFile(tmp_path / "other.pt2", "w") as archive:
        archive.writestr("other/midl_autok.json", json.dumps({"format": "something/else"}))
    with pytest.raises(UserError, match="not a model written by midl-autok export"):
        read_metadata(tmp_path / "other.pt2")


def test_latency_report_compares_dense_midl_and_exported(trained, tmp_path: Path) -> None:
    result, data = trained
    path = export_model(result.model, tmp_path / "m.pt2", example=data.x_test[:2])
    program = load_program(path, trusted=True)
    report = latency_report(
        result.model, example=data.x_test[:2], exported=program, batches=(1, 8), rounds=2
    )
    assert [r["batch"] for r in report["rows"]] == [1, 8]
    for row in report["rows"]:
        for key in ("dense_ms", "midl_ms", "exported_ms", "midl_vs_dense", "exported_vs_dense"):
            assert row[key] > 0, key
    assert report["k"] == result.schedule.final()
    assert report["markdown"].startswith("| batch | dense ms | MID-L ms |")


def test_a_searched_schedule_replays_into_an_exported_model(tmp_path: Path) -> None:
    from midl_autok.deploy import export_schedule_model

    spec = validate_spec(
        {
            "seed": 4,
            "dataset": {"name": "synthetic", "options": {"n_samples": 300}},
            "model": {"arch": "mlp", "hidden": [24, 16], "gate_rank": 4, "light_rank": 4},
            "training": {"epochs": 5, "batch_size": 32, "lr": 0.01},
        }
    )
    first = run_experiment(spec, k_fraction=0.5)
    schedule = first.schedule.with_info(
        provenance={"spec": spec.model_dump(mode="json"), "seed": 4, "trial": 7}
    )
    path, replay = export_schedule_model(schedule, tmp_path / "model.pt2")
    assert replay.metrics["val_accuracy"] == first.metrics["val_accuracy"]  # exact replay
    meta = read_metadata(path)
    assert meta["k"] == schedule.final()
    assert meta["provenance"] == {"seed": 4, "trial": 7}
    assert meta["metrics"]["test_accuracy"] == replay.metrics["test_accuracy"]
    x = dataset_for_spec(spec).x_test
    replay.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(x), replay.model(x))
    portable, _ = export_schedule_model(schedule, tmp_path / "portable.pt2", portable=True)
    assert read_metadata(portable)["program"] == "portable"  # export --model ... --portable
    with torch.no_grad():
        torch.testing.assert_close(load_program(portable, trusted=True)(x), replay.model(x))
    with pytest.raises(UserError, match="does not record its experiment"):
        export_schedule_model(first.schedule, tmp_path / "other.pt2")


def test_load_model_executes_nothing_from_the_file(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, data = trained
    path = export_model(result.model, tmp_path / "m.pt2", example=data.x_test[:2])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an unsafe loader was called")

    monkeypatch.setattr(torch.export, "load", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)
    real_load = torch.load

    def weights_only_load(*args: object, **kwargs: object):
        assert kwargs.get("weights_only") is True
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    model = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(model(data.x_test[:5]), result.model.eval()(data.x_test[:5]))


def test_load_model_refuses_damaged_weights(tmp_path: Path) -> None:
    model = build_model("mlp", input_shape=(6,), num_classes=2, hidden=[8])
    path = export_model(model, tmp_path / "m.pt", example=torch.randn(2, 6), format="torchscript")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "bad.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("midl_autok_weights.b64"):
                data = b"!!not base64!!"
            dst.writestr(item, data)
    with pytest.raises(UserError, match="cannot read the weights"):
        load_model(tmp_path / "bad.pt")
