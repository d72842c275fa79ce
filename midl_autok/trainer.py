"""Train one model under one KSchedule, or under a live k-controller.

The loop reads top to bottom (:func:`train`): for every epoch, pick k (from the schedule or
the controller), set it on every MID-L layer, train one pass over the shuffled in-memory
training tensors, evaluate on the validation split, record the epoch's metrics. Three hook
points exist: run start, epoch end (return ``False`` to stop early), run end.

:class:`TrainSession` holds the state between epochs; the Gymnasium environment drives it one
epoch per step. Everything is seeded from ``TrainConfig.seed``: same seed, same metrics on CPU.

Per-epoch metrics (names from :mod:`midl_autok.metrics`): ``epoch``, ``train_loss``,
``val_loss``, ``val_accuracy``, ``inference_flops`` / ``inference_flops_ratio`` (at that
epoch's k), ``training_flops`` (cumulative), ``active_fraction``,
``active_fraction/<layer>``, ``k/<layer>``, ``epoch_time_s`` (wall time of the training
pass, evaluation excluded). Final metrics add ``test_accuracy``, ``train_time_s`` and
``dense_inference_flops``; ``inference_flops`` there is at the final epoch's k.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from midl_autok import metrics as M
from midl_autok.data import Dataset
from midl_autok.errors import ScheduleError, SpecError, UserError
from midl_autok.experiment import build_for_spec, dataset_for_spec, seed_everything
from midl_autok.flops import CostModel, cost_model, training_flops
from midl_autok.kernels import cpu_kernels, no_build
from midl_autok.layers import _CPP_TOPK_MIN
from midl_autok.models import MIDLNet
from midl_autok.schedule import KSchedule, LayerSpec

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

__all__ = [
    "Controller",
    "DivergedError",
    "TrainConfig",
    "TrainHooks",
    "TrainResult",
    "TrainSession",
    "build_for_spec",
    "dataset_for_spec",
    "resolve_device",
    "run_experiment",
    "seed_everything",
    "train",
]

# A live k-controller: given the epoch about to run and the metrics of the epochs so far,
# return k for every MID-L layer (e.g. an RL policy).
Controller = Callable[[int, Sequence[Mapping[str, float]]], Mapping[str, int]]

#: Metric keys whose values depend on wall-clock time (excluded from determinism checks).
TIMING_KEYS = (M.EPOCH_TIME_S, "train_time_s")


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; ``history`` holds the completed epochs."""

    def __init__(self, message: str, *, epoch: int, history: list[dict[str, float]]):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


#: The :class:`TrainConfig` fields a spec's ``training`` section sets (``seed`` is the spec's).
_FROM_TRAINING = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "momentum",
    "grad_clip",
    "eval_batch_size",
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Field comments are the documentation."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # samples per optimizer step
    lr: float = 1e-3  # learning rate
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    eval_batch_size: int = 4096  # samples per evaluation forward pass
    seed: int = 0  # seeds init, shuffling and dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be an integer >= 1, but got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise SpecError(f"lr must be a finite number > 0, but got {self.lr!r}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise SpecError(f"optimizer must be adam, adamw or sgd, but got {self.optimizer!r}")

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, **overrides: Any) -> TrainConfig:
        values: dict[str, Any] = {name: getattr(spec.training, name) for name in _FROM_TRAINING}
        values["seed"] = spec.seed
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class TrainHooks:
    """Extension points of :func:`train`; subclass and override what you need."""

    def on_run_start(self, session: TrainSession) -> None:
        """Called once, after the model and data are on the device."""

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> bool | None:
        """Called after each epoch's evaluation; return ``False`` to stop the run."""
        return None

    def on_run_end(self, result: TrainResult) -> None:
        """Called once with the final result (also after an early stop)."""


@dataclass
class TrainResult:
    """What one training run produced."""

    metrics: dict[str, float]  # final metrics
    history: list[dict[str, float]]  # one dict per completed epoch
    schedule: KSchedule | None  # the k actually used per layer and epoch (None: no MID-L)
    model: nn.Module
    status: Literal["completed", "stopped"] = "completed"
    config: TrainConfig = field(default_factory=TrainConfig)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU. Asking for CUDA without one is an error."""
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"device {name!r} was requested but CUDA is not available "
                "(torch.cuda.is_available() is False); use --device cpu or auto"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    raise UserError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer, fused (one kernel per parameter instead of ~8 passes each) where this
    torch supports it for the parameters' device and dtype; else the default implementation.
    A MID-L layer has 7 parameters where ``nn.Linear`` has 2, so this matters for trials."""
    params = [p for p in model.parameters() if p.requires_grad]
    options: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    cls: type[torch.optim.Optimizer]
    if config.optimizer == "sgd":
        cls, options["momentum"] = torch.optim.SGD, config.momentum
    else:
        cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    if params and all(p.dtype in _FUSED_DTYPES for p in params):
        try:
            return cls(params, fused=True, **options)
        except (RuntimeError, TypeError, ValueError):  # older torch, unsupported device
            pass
    return cls(params, **options)


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _layer_specs(model: nn.Module) -> tuple[LayerSpec, ...]:
    return model.layer_specs() if isinstance(model, MIDLNet) else ()


class TrainSession:
    """A training run advanced one epoch at a time: :meth:`run_epoch`, then :meth:`finish`."""

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)  # shuffling
        torch.manual_seed(config.seed)  # dropout and anything else drawing from torch
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        self.layers = _layer_specs(model)
        self.costs: CostModel = _trace_costs(self.model, self.data.x_train[:1])
        _prepare_kernels(self.model, self.device, config.batch_size)
        self.optimizer = _make_optimizer(self.model, config)
        self.amp_dtype: torch.dtype | None = None
        if self.device.type == "cuda" and config.amp:
            bf16 = torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.history: list[dict[str, float]] = []
        self.k_used: list[dict[str, int]] = []
        self.training_flops = 0
        self.train_time_s = 0.0

    @property
    def epoch(self) -> int:
        """Number of completed epochs (= index of the next one)."""
        return len(self.history)

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def set_k(self, k: Mapping[str, int] | None) -> dict[str, int]:
        """Set k on every MID-L layer (missing layers: all neurons); return what was set."""
        k = dict(k or {})
        if isinstance(self.model, MIDLNet):
            unknown = sorted(set(k) - {s.name for s in self.layers})
            if unknown:
                raise ScheduleError(
                    f"k given for unknown layer {unknown[0]}; MID-L layers: "
                    f"{', '.join(s.name for s in self.layers) or '(none)'}"
                )
            full = {s.name: k.get(s.name, s.width) for s in self.layers}
            for name, value in full.items():
                try:
                    self.model.set_k({name: value})
                except (TypeError, ValueError) as exc:
                    raise ScheduleError(f"layer {name} at epoch {self.epoch}: {exc}") from None
            return full
        return {}

    def run_epoch(self, k: Mapping[str, int] | None = None) -> dict[str, float]:
        """Set k, train one pass, evaluate on validation, record; return the epoch's metrics."""
        epoch = self.epoch
        used = self.set_k(k)
        model, data, cfg = self.model, self.data, self.config
        model.train()
        start = time.perf_counter()
        n = data.x_train.shape[0]
        order = torch.randperm(n, generator=self.generator).to(self.device)
        # One gather per epoch; every step then reads a contiguous slice (a view).
        x_epoch, y_epoch = data.x_train[order], data.y_train[order]  # (N, ...), (N,)
        on_cpu = self.device.type == "cpu"  # .item() is free on CPU, a sync on GPU
        total_cpu = 0.0  # CPU: summed from the per-step check's value
        total = torch.zeros((), device=self.device)  # GPU: summed on the device, read once
        for i in range(0, n, cfg.batch_size):
            xb, yb = x_epoch[i : i + cfg.batch_size], y_epoch[i : i + cfg.batch_size]
            with self._autocast():
                loss = F.cross_entropy(model(xb), yb)
            if on_cpu:
                value = loss.item()
                if not math.isfinite(value):
                    self._diverged(epoch, value)  # stops at the first NaN/inf step
                total_cpu += value * yb.shape[0]
            else:
                total += loss.detach() * yb.shape[0]
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        seen = n
        train_loss = (total_cpu if on_cpu else float(total.item())) / seen
        if not math.isfinite(train_loss):
            self._diverged(epoch, train_loss)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        epoch_time = time.perf_counter() - start
        self.train_time_s += epoch_time

        val_loss, val_acc = self.evaluate(data.x_val, data.y_val)
        flops = self.costs.inference_flops(used)
        self.training_flops += int(training_flops(flops, seen))
        row: dict[str, float] = {
            "epoch": epoch,
            M.TRAIN_LOSS: train_loss,
            M.VAL_LOSS: val_loss,
            M.VAL_ACCURACY: val_acc,
            M.INFERENCE_FLOPS: flops,
            M.INFERENCE_FLOPS_RATIO: flops / self.costs.dense_flops(),
            M.TRAINING_FLOPS: self.training_flops,
            M.ACTIVE_FRACTION: _active_fraction(used, self.layers),
            M.EPOCH_TIME_S: epoch_time,
        }
        for spec in self.layers:
            row[M.active_fraction_key(spec.name)] = used[spec.name] / spec.width
            row[M.k_key(spec.name)] = used[spec.name]
        self.history.append(row)
        self.k_used.append(used)
        return row

    def _diverged(self, epoch: int, value: float) -> None:
        raise DivergedError(
            f"training diverged: the loss became {value} in epoch {epoch}",
            epoch=epoch,
            history=list(self.history),
        )

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model (eval mode) on ``x``, ``y``."""
        with no_build():  # a small last batch must not stall the trial on a kernel build
            return self._evaluate(x, y)

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model = self.model
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, x.shape[0], self.config.eval_batch_size):
            xb, yb = x[i : i + self.config.eval_batch_size], y[i : i + self.config.eval_batch_size]
            with self._autocast():
                logits = model(xb)
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
            correct += (logits.argmax(dim=-1) == yb).sum()
        model.train(was_training)
        n = max(1, x.shape[0])
        return float(loss_sum.item()) / n, float(correct.item()) / n

    def realized_schedule(self) -> KSchedule | None:
        """The k used per layer and epoch so far, as a KSchedule (None without MID-L layers)."""
        if not self.layers or not self.k_used:
            return None
        rows = tuple(tuple(used[s.name] for used in self.k_used) for s in self.layers)
        model = self.model
        return KSchedule(
            layers=self.layers,
            epochs=len(self.k_used),
            k=rows,
            arch=getattr(model, "arch", ""),
            signature=model.signature() if isinstance(model, MIDLNet) else "",
            ranks=model.layer_ranks() if isinstance(model, MIDLNet) else {},
        )

    def finish(self, status: Literal["completed", "stopped"] = "completed") -> TrainResult:
        """Test-set accuracy and the final metrics (inference FLOPs at the last epoch's k)."""
        if not self.history:
            raise RuntimeError("finish() called before any epoch ran")
        test_loss, test_acc = self.evaluate(self.data.x_test, self.data.y_test)
        last = self.history[-1]
        metrics = {k: v for k, v in last.items() if k != M.EPOCH_TIME_S}
        metrics.update(
            {
                M.TEST_ACCURACY: test_acc,
                "test_loss": test_loss,
                "dense_inference_flops": self.costs.dense_flops(),
                "train_time_s": self.train_time_s,
                "epochs": len(self.history),
            }
        )
        metrics.pop("epoch", None)
        schedule = self.realized_schedule()
        if schedule is not None:
            schedule = schedule.with_info(metrics=_public_metrics(metrics))
        return TrainResult(
            metrics=metrics,
            history=list(self.history),
            schedule=schedule,
            model=self.model,
            status=status,
            config=self.config,
        )


def _public_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return M.public_metrics(metrics)


def _active_fraction(used: Mapping[str, int], layers: Sequence[LayerSpec]) -> float:
    if not layers:
        return 1.0
    return sum(used[s.name] / s.width for s in layers) / len(layers)


def _trace_costs(model: nn.Module, example: torch.Tensor) -> CostModel:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), no_build():
            return cost_model(model, example)
    finally:
        model.train(was_training)


def _prepare_kernels(model: nn.Module, device: torch.device, batch_size: int) -> None:
    """Build (or load) the compiled CPU kernels before the first timed epoch when training will
    use them (the top-k of a MID-L layer with ``batch * width`` large enough), so a first
    build never lands inside ``epoch_time_s``. Without a compiler this logs once and the
    layers use PyTorch ops."""
    if device.type != "cpu" or not isinstance(model, MIDLNet):
        return
    if any(batch_size * layer.out_features >= _CPP_TOPK_MIN for _, layer in model.midl_layers()):
        cpu_kernels()


def train(
    model: nn.Module,
    data: Dataset,
    *,
    config: TrainConfig | None = None,
    schedule: KSchedule | None = None,
    controller: Controller | None = None,
    hooks: Sequence[TrainHooks] = (),
) -> TrainResult:
    """Train ``model`` on ``data`` for ``config.epochs`` epochs.

    k per layer comes from ``schedule`` (its epoch count must equal ``config.epochs``), or
    from ``controller`` called before each epoch, or stays as set on the model. Raises
    :class:`DivergedError` when the loss becomes NaN/inf.
    """
    config = config or TrainConfig()
    if schedule is not None and controller is not None:
        raise ValueError("give either a schedule or a controller, not both")
    if schedule is not None:
        if not isinstance(model, MIDLNet):
            raise ScheduleError("a schedule needs a model built with MID-L layers")
        model.check_schedule(schedule)
        if schedule.epochs != config.epochs:
            raise ScheduleError(
                f"the schedule has {schedule.epochs} epochs but training runs {config.epochs}; "
                "give a matching number of epochs"
            )
    session = TrainSession(model, data, config)
    for hook in hooks:
        hook.on_run_start(session)
    status: Literal["completed", "stopped"] = "completed"
    for epoch in range(config.epochs):
        if schedule is not None:
            k: Mapping[str, int] | None = schedule.at(epoch)
        elif controller is not None:
            k = controller(epoch, session.history)
        else:
            k = model.current_k() if isinstance(model, MIDLNet) else None
        metrics = session.run_epoch(k)  # set k, train, evaluate, record
        if any([hook.on_epoch_end(epoch, metrics) is False for hook in hooks]):
            status = "stopped"
            break
    result = session.finish(status)
    for hook in hooks:
        hook.on_run_end(result)
    return result


# --------------------------------------------------------------------------- experiments
# (the spec's dataset and model: midl_autok.experiment, re-exported here)


def run_experiment(
    spec: ExperimentSpec,
    *,
    schedule: KSchedule | None = None,
    controller: Controller | None = None,
    k_fraction: float | None = None,
    device: str = "auto",
    hooks: Sequence[TrainHooks] = (),
    data: Dataset | None = None,
) -> TrainResult:
    """Train the spec's model under ``schedule`` / ``controller`` / a constant ``k_fraction``
    (default: the spec's ``training.k_fraction``); dataset and model come from the spec (with
    the schedule's per-layer ranks when it carries them)."""
    data = data if data is not None else dataset_for_spec(spec)
    model = build_for_spec(spec, data, ranks=schedule)
    config = TrainConfig.from_spec(spec, device=device)
    if schedule is None and controller is None and model.layer_specs():
        fraction = spec.training.k_fraction if k_fraction is None else k_fraction
        schedule = model.schedule_template(config.epochs, fraction)
    return train(model, data, config=config, schedule=schedule, controller=controller, hooks=hooks)
