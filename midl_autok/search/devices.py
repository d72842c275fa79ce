"""Which device a trial trains on: the one function that decides it, for both backends."""

from __future__ import annotations

from midl_autok.errors import SpecError

__all__ = ["trial_device"]


def trial_device(device: str, *, gpus_per_trial: float | None = None) -> str:
    """The device trials train on, checked before any trial runs.

    Local backend (``gpus_per_trial`` None): ``device`` as given (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``); asking for CUDA on a machine without it is a
    :class:`~midl_autok.errors.UserError`. Ray backend: a trial sees only the GPUs it reserved,
    numbered from 0, so ``auto`` is ``cuda`` when the trial reserves GPUs and ``cpu`` otherwise;
    ``cuda`` needs ``gpus_per_trial > 0``; ``cuda:N`` is an error.
    """
    name = str(device).strip().lower()
    if gpus_per_trial is None:
        from midl_autok.trainer import resolve_device

        resolve_device(name)  # CUDA asked for but missing: fail before any trial
        return device
    if name == "auto":
        return "cuda" if gpus_per_trial > 0 else "cpu"
    if name.startswith("cuda") and gpus_per_trial <= 0:
        raise SpecError(
            f"--device {name} with --backend ray needs --gpus-per-trial G > 0: Ray gives a "
            "trial only the GPUs it reserved"
        )
    if name not in ("cpu", "cuda"):
        raise SpecError(
            f"--device {name} cannot be used with --backend ray (a trial sees only its own "
            "GPUs, numbered from 0); valid: auto, cpu, cuda"
        )
    return name
