"""Export a trained MID-L model with its final k for inference, and time it against dense.

:func:`export_model` writes one file that runs without midl-autok:

- ``format="export"`` (default): a ``torch.export`` program (``.pt2``), loaded with
  ``torch.export.load(path).module()`` (or :func:`load_model`), with a dynamic batch size.
- ``format="torchscript"``: a traced TorchScript module (``.pt``) for libtorch (C++)
  consumers; upstream has deprecated TorchScript, so it is the second choice.

**Two programs.** By default the exported graph calls the custom op
``midl_autok::midl_eval`` (:mod:`midl_autok.ops`) once per MID-L layer: at run time that is
the compiled CPU kernel, which computes only the selected rows of W (the sparse program, as
fast as the model in Python). It needs midl-autok installed where it runs (``import
midl_autok.ops`` registers the op; on a machine without a compiler, or with
``MIDL_AUTOK_NO_EXTENSIONS=1``, the op runs its PyTorch implementation: same outputs, masked
dense cost). ``portable=True`` (``export --model ... --portable``) writes the masked dense
computation in plain ATen ops instead: it runs with torch alone (any machine, any
torch.export consumer) at dense cost. Both capture the selection exactly: with k fixed,
top-k and the masked products have static shapes, and the batch size stays symbolic. Without
the compiled kernels (no compiler, or ``MIDL_AUTOK_NO_EXTENSIONS=1``) export writes the
portable program and logs one line saying that the fast path is off. TorchScript files are
always masked dense (libtorch has no ``midl_autok`` op). :func:`latency_report` measures the
model and the program against the dense model.

The file records its provenance (k per layer, architecture, signature, midl-autok version)
as an extra file ``midl_autok.json``, and the weights once more as a plain state dict.

**Loading safely.** :func:`load_model` never runs the program in the file: it reads the
metadata and the state dict from the zip archive (``torch.load(weights_only=True)``),
rebuilds the architecture with :func:`~midl_autok.models.build_model` and sets the recorded k
(DESIGN §8: no unpickling of user files). A model built by a ``model.factory`` is rebuilt by
importing and calling the recorded factory path, which runs code named in the file: only
with ``load_model(path, allow_factory=True)``. The result is a live MID-L model, so in Python it
also gets the fast CPU paths. ``torch.export.load`` and ``torch.jit.load`` may unpickle parts
of a file; :func:`load_program` uses them only when called with ``trusted=True`` (a file you
wrote yourself), for running the exported graph as it is.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from midl_autok.errors import UserError
from midl_autok.fileio import write_atomic
from midl_autok.kernels.cpu import cpu_kernels, cpu_kernels_status
from midl_autok.latency import example_input, latency_report  # re-exported
from midl_autok.layers import MIDL
from midl_autok.models import MIDLNet, build_model
from midl_autok.program import ProgramModule  # re-exported

if TYPE_CHECKING:
    from midl_autok.schedule import KSchedule
    from midl_autok.trainer import TrainResult

__all__ = [
    "FORMATS",
    "ModelFileError",
    "example_input",
    "export_model",
    "export_schedule_model",
    "latency_report",
    "load_model",
    "load_program",
    "read_metadata",
]

Format = Literal["export", "torchscript"]
FORMATS: tuple[Format, ...] = ("export", "torchscript")
Program = Literal["sparse", "portable"]  # the custom op midl_autok::midl_eval, or masked dense
META_NAME = "midl_autok.json"
WEIGHTS_NAME = "midl_autok_weights.b64"  # torch.save(state_dict), base64 (extra files are text)
MAX_BATCH = 1 << 20  # upper bound of the exported program's symbolic batch size
_MAX_META_BYTES = 16 * 1024 * 1024
_MAX_WEIGHTS_BYTES = 4 * 1024 * 1024 * 1024  # base64 text of the state dict


class ModelFileError(UserError):
    """A model file is not one :func:`export_model` wrote, or was changed since."""


log = logging.getLogger("midl_autok.kernels")  # the CLI prints its records


@contextmanager
def _masked_dense(model: nn.Module) -> Iterator[None]:
    """Every MID-L layer on its masked dense path (restored afterwards)."""
    layers = [m for m in model.modules() if isinstance(m, MIDL)]
    saved = [m.sparse_eval for m in layers]
    for m in layers:
        m.sparse_eval = "never"
    try:
        yield
    finally:
        for m, mode in zip(layers, saved, strict=True):
            m.sparse_eval = mode


def _metadata(
    model: nn.Module, fmt: Format, example: torch.Tensor, program: Program
) -> dict[str, Any]:
    from midl_autok import __version__

    meta: dict[str, Any] = {
        "format": "midl-autok/model",
        "version": 1,
        "export_format": fmt,
        "program": program,
        "input_shape": list(example.shape[1:]),
        "input_dtype": str(example.dtype).replace("torch.", ""),
        "midl_autok_version": __version__,
        "torch": torch.__version__,
    }
    if isinstance(model, MIDLNet):
        meta.update(
            arch=model.arch,
            signature=model.signature(),
            config=json.loads(json.dumps(model.config, default=str)),
            k=model.current_k(),
            widths={name: layer.out_features for name, layer in model.midl_layers()},
        )
    return meta


def _weights_text(model: nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def export_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example: torch.Tensor,
    k: Mapping[str, int] | None = None,
    format: Format = "export",
    portable: bool = False,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (eval mode, MID-L layers at ``k`` or their current k) to ``path``.

    ``example`` is one input batch (any batch size; its other dimensions are fixed in the
    file); ``portable``: the masked dense program (torch alone runs it) instead of the one
    that calls the sparse kernel (see the module docstring); ``info`` is merged into the
    file's metadata (e.g. metrics, provenance). Returns the path written. The model's
    training mode and k are restored.
    """
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    was_training = model.training
    previous = model.current_k() if isinstance(model, MIDLNet) else {}
    if k is not None:
        if not isinstance(model, MIDLNet):
            raise UserError("k can only be set on a model built with MID-L layers")
        model.set_k(k)
    example = example.detach()
    try:
        model.eval()
        program = _program(format, portable, example)
        meta = {**_metadata(model, format, example, program), **dict(info or {})}
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()  # then one safe write (devices, FIFOs, symlinks, umask: fileio)
        files = {META_NAME: json.dumps(meta), WEIGHTS_NAME: _weights_text(model)}
        layout = _masked_dense(model) if program == "portable" else nullcontext()
        with layout, torch.no_grad():
            if format == "export":
                _save_export(model, example, buffer, files)
            else:
                _save_torchscript(model, example, buffer, files)
        write_atomic(path, buffer.getvalue())
    finally:
        if isinstance(model, MIDLNet) and previous:
            model.set_k(previous)
        model.train(was_training)
    return path


def _program(fmt: Format, portable: bool, example: torch.Tensor) -> Program:
    """Which program to write: sparse (the custom op) unless asked for a portable one, writing
    TorchScript, or on CPU without the compiled kernels (then one log line says so)."""
    if portable or fmt == "torchscript":
        return "portable"
    if example.device.type == "cpu" and fast_path_off():
        return "portable"
    return "sparse"


def fast_path_off() -> bool:
    """Whether the compiled CPU kernels are unavailable (loading or building them now); if
    so, log once per process that MID-L programs run at masked dense cost."""
    global _FAST_PATH_NOTICE
    if cpu_kernels() is not None:
        return False
    if not _FAST_PATH_NOTICE:
        _FAST_PATH_NOTICE = True
        log.warning(
            "MID-L fast path off (CPU kernels %s): export writes the portable masked dense "
            "program, and programs run midl_autok::midl_eval in PyTorch (same outputs, dense "
            "cost)",
            cpu_kernels_status(),
        )
    return True


_FAST_PATH_NOTICE = False


def _save_export(model: nn.Module, example: torch.Tensor, out: io.BytesIO, files: dict) -> None:
    from torch.export import Dim, export

    batch = Dim("batch", min=1, max=MAX_BATCH)
    # Trace with two samples (a batch of 1 would be specialized to a constant 1).
    sample = example[:1].expand(2, *example.shape[1:]).contiguous()
    program = export(model, (sample,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out, extra_files=files)


def _save_torchscript(
    model: nn.Module, example: torch.Tensor, out: io.BytesIO, files: dict
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, out, _extra_files=files)


def export_schedule_model(
    schedule: KSchedule,
    path: str | os.PathLike[str],
    *,
    format: Format = "export",
    portable: bool = False,
    device: str = "cpu",
) -> tuple[Path, TrainResult]:
    """Replay an exported schedule (its recorded experiment spec and seed, as
    ``midl-autok train --schedule`` does) and write the trained model at its final k
    (``portable``: see :func:`export_model`).

    Returns the path written and the training result (its metrics are the replay's).
    """
    from midl_autok.spec import validate_spec
    from midl_autok.trainer import dataset_for_spec, run_experiment

    prov = schedule.provenance
    if not isinstance(prov.get("spec"), Mapping):
        raise UserError(
            "the schedule does not record its experiment (provenance.spec), so the model "
            "cannot be retrained; export it from a search study, or train it with "
            "`midl-autok train --schedule` and use midl_autok.deploy.export_model"
        )
    spec = validate_spec(prov["spec"], source="the schedule's provenance.spec")
    seed = prov.get("seed")
    changes: dict[str, Any] = {"training.epochs": schedule.epochs}
    if isinstance(seed, int) and not isinstance(seed, bool):
        changes["seed"] = seed
    spec = spec.override(**changes)
    data = dataset_for_spec(spec)
    result = run_experiment(spec, schedule=schedule, device=device, data=data)
    model = result.model.cpu() if device != "cpu" else result.model
    info = {
        "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "provenance": {k: v for k, v in prov.items() if k != "spec"},
        "experiment": spec.name,
    }
    written = export_model(
        model, path, example=data.x_test[:2].cpu(), format=format, portable=portable, info=info
    )
    return written, result


def _checked_config(path: Path, meta: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The recorded architecture name and options, with the types ``build_model`` expects."""
    arch, config = meta.get("arch"), meta.get("config")
    if not isinstance(config, dict) or "arch" not in meta:
        raise ModelFileError(
            f"{path} holds no midl-autok architecture (not a MIDLNet); run its graph with "
            "load_program(path, trusted=True) if you wrote it yourself"
        )
    if not isinstance(arch, str):
        raise ModelFileError(f"{path}: {META_NAME} field 'arch' must be a name, got {arch!r:.60}")
    for key in ("input_shape", "num_classes"):
        if key not in config:
            raise ModelFileError(f"{path}: {META_NAME} config lacks '{key}'")
    shape = config["input_shape"]
    if not (
        isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_positive_int(v) for v in shape)
    ):
        raise ModelFileError(
            f"{path}: {META_NAME} config 'input_shape' must be 1 to 4 integers >= 1, "
            f"got {shape!r:.60}"
        )
    for key in ("num_classes", "vocab_size"):
        value = config.get(key)
        if not (_positive_int(value) or (key == "vocab_size" and value is None)):
            raise ModelFileError(
                f"{path}: {META_NAME} config '{key}' must be an integer >= 1, got {value!r:.60}"
            )
    return arch, config


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _build_recorded(
    path: Path, arch: str, config: Mapping[str, Any], *, allow_factory: bool = False
) -> MIDLNet:
    fixed = {"input_shape", "num_classes", "vocab_size"}
    if arch == "factory":
        from midl_autok.factories import rebuild_factory_model

        try:
            return rebuild_factory_model(config, allowed=allow_factory)
        except UserError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
    try:
        return build_model(
            arch,
            input_shape=config["input_shape"],
            num_classes=config["num_classes"],
            vocab_size=config.get("vocab_size"),
            **{str(k): v for k, v in config.items() if k not in fixed},
        )
    except UserError as exc:
        raise ModelFileError(f"{path}: {META_NAME} records an invalid model ({exc})") from None
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(
            f"{path}: {META_NAME} records an invalid model ({type(exc).__name__}: {first:.200})"
        ) from None
    except RuntimeError as exc:  # e.g. a shape torch refuses
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(
            f"{path}: {META_NAME} records an invalid model ({first:.200})"
        ) from None


def _recorded_k(path: Path, meta: Mapping[str, Any], model: MIDLNet) -> dict[str, int]:
    k = meta.get("k", {})
    if k is None:
        k = {}
    if not isinstance(k, dict):
        raise ModelFileError(f"{path}: {META_NAME} field 'k' must map layer names to integers")
    try:
        model.set_k(k)
    except (UserError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: {META_NAME} records an invalid k ({exc})") from None
    return k


def load_model(path: str | os.PathLike[str], *, allow_factory: bool = False) -> MIDLNet:
    """Rebuild the model in a file written by :func:`export_model` (eval mode, recorded k),
    from its metadata and plain state dict only: nothing in the file is executed.

    A tampered file is a :class:`ModelFileError`: the architecture is first built on the
    ``meta`` device (no memory) and its parameter shapes compared with the stored weights, so
    absurd sizes in the metadata are refused before anything is allocated."""
    path = Path(path)
    meta = read_metadata(path)
    arch, config = _checked_config(path, meta)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == WEIGHTS_NAME]
            if not names:
                raise ModelFileError(f"{path} has no {WEIGHTS_NAME}: not written by this version")
            if archive.getinfo(names[0]).file_size > _MAX_WEIGHTS_BYTES:
                raise ModelFileError(
                    f"{path}: {WEIGHTS_NAME} is larger than {_MAX_WEIGHTS_BYTES} bytes"
                )
            raw = base64.b64decode(archive.read(names[0]), validate=True)
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # a damaged archive, bad base64, a refused pickle global, ...
        raise ModelFileError(f"{path}: cannot read the weights ({_one_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: {WEIGHTS_NAME} is not a state dict of tensors")
    with torch.device("meta"):  # shapes only: nothing allocated for what the metadata says
        probe = _build_recorded(path, arch, config, allow_factory=allow_factory)
    expected = {name: tuple(t.shape) for name, t in probe.state_dict().items()}
    stored = {name: tuple(t.shape) for name, t in state.items()}
    if expected != stored:
        diff = sorted(set(expected) ^ set(stored)) or [
            n for n in expected if expected[n] != stored[n]
        ]
        name = diff[0]
        raise ModelFileError(
            f"{path}: the weights do not fit the recorded architecture (at {name}: recorded "
            f"{expected.get(name, 'nothing')}, stored {stored.get(name, 'nothing')})"
        )
    _recorded_k(path, meta, probe)
    model = _build_recorded(path, arch, config, allow_factory=allow_factory)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"{path}: the weights do not fit the recorded architecture ({_one_line(exc)})"
        ) from None
    model.set_k(_recorded_k(path, meta, model))
    return model.eval()


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's text (``weights_only`` advice and tracebacks of the
    libraries stay out of what the user reads)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_program(path: str | os.PathLike[str], *, trusted: bool = False) -> nn.Module:
    """The exported graph itself (a :class:`ProgramModule` running the ``torch.export``
    program, or the TorchScript module), for a file you wrote yourself: these loaders may
    unpickle parts of the file, so ``trusted=True`` is required. :func:`load_model` is the
    safe way to load a file from elsewhere. A sparse program needs the op registered
    (this module imports :mod:`midl_autok.ops`) and loads the compiled kernels here."""
    if not trusted:
        raise UserError(
            "load_program runs torch.export.load / torch.jit.load, which can execute code "
            "from the file; pass trusted=True for a file you wrote, or use load_model"
        )
    path = Path(path)
    meta = read_metadata(path)
    fmt = meta.get("export_format", "export")
    if fmt == "export":
        if meta.get("program") == "sparse":  # its op: registered (midl_autok.ops), kernel loaded
            fast_path_off()
        return ProgramModule(torch.export.load(path), meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path)).eval()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance stored in a file written by :func:`export_model` (read from the zip
    archive directly: nothing is deserialized or executed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == META_NAME]
            if not names:
                raise ModelFileError(
                    f"{path} has no {META_NAME} metadata: not written by midl-autok export"
                )
            if archive.getinfo(names[0]).file_size > _MAX_META_BYTES:
                raise ModelFileError(f"{path}: {META_NAME} is larger than {_MAX_META_BYTES} bytes")
            meta = json.loads(archive.read(names[0]).decode())
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path} is not a model written by midl-autok export ({_one_line(exc)})"
        ) from None
    except RecursionError:
        raise ModelFileError(f"{path}: {META_NAME} is nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != "midl-autok/model":
        raise ModelFileError(f"{path} is not a model written by midl-autok export")
    return meta
