"""Reading a dense checkpoint for ``model.init_from`` (:func:`load_dense_state`): a
``torch.save``'d state dict, or the plain weights inside a ``midl-autok export`` file, read
with ``torch.load(weights_only=True)`` only. :mod:`midl_autok._midlify` converts a model from
it."""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from midl_autok.errors import UserError

__all__ = ["CheckpointError", "load_dense_state"]


class CheckpointError(UserError):
    """A dense checkpoint (``model.init_from``) cannot be read or does not fit the model."""


def load_dense_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: a ``torch.save``'d state dict, or the plain copy of the
    weights inside a file written by ``midl-autok export`` (``midl_autok_weights.b64``). Both
    are read with ``torch.load(weights_only=True)``: nothing else is unpickled, nothing in
    the file runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model.init_from: {path} does not exist or is not a file")
    raw = _exported_weights(path)
    try:
        data = io.BytesIO(path.read_bytes() if raw is None else raw)
        state = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with other globals, a damaged file, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"model.init_from: {path} is not a weights_only state dict (torch.load with "
            f"weights_only=True refused it: {first}); save one with "
            "torch.save(model.state_dict(), PATH)"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"model.init_from: {path} does not hold a state dict (a mapping of names to "
            "tensors); save one with torch.save(model.state_dict(), PATH)"
        )
    return dict(state)


_EXPORT_META, _EXPORT_WEIGHTS = "midl_autok.json", "midl_autok_weights.b64"  # see deploy.py
_MAX_WEIGHTS_BYTES = 4 * 1024**3


def _exported_weights(path: Path) -> bytes | None:
    """The ``torch.save`` bytes of the weights in an export file, or None (not an export)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n.rsplit("/", 1)[-1]: n for n in archive.namelist()}
            if _EXPORT_META not in names or _EXPORT_WEIGHTS not in names:
                return None
            if archive.getinfo(names[_EXPORT_WEIGHTS]).file_size > _MAX_WEIGHTS_BYTES:
                raise CheckpointError(f"model.init_from: {path}: the weights are too large")
            return base64.b64decode(archive.read(names[_EXPORT_WEIGHTS]), validate=True)
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"model.init_from: {path}: cannot read the export ({exc})") from None
