"""Policy files: :func:`save_policy` writes an SB3 policy with its description as JSON;
:func:`load_policy` reads it back without unpickling anything.

:func:`save_policy` writes SB3's own ``.zip`` (so a trusted owner can still ``PPO.load`` it to
continue training) plus one extra member, ``midl_autok_policy.json``: the algorithm, the
policy's architecture as plain JSON, the spaces, and the environment options (``lam``,
``budget``, ``hard_budget``, ``min_fraction``, ...). :func:`load_policy` never calls SB3's
``load``: that unpickles the ``data`` member with cloudpickle, which runs arbitrary code from
the file. It reads only the JSON member and ``policy.pth`` (a state dict, read with
``torch.load(weights_only=True)``) into a freshly built policy of the recorded, allow-listed
architecture (``ActorCriticPolicy`` for PPO/A2C, ``SACPolicy`` for SAC).

Stable-Baselines3 is the optional ``rl`` extra; it is imported inside the functions that need
it, never at module import.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midl_autok.errors import UserError
from midl_autok.fileio import write_atomic

__all__ = [
    "POLICY_FORMAT",
    "POLICY_META",
    "POLICY_VERSION",
    "LoadedPolicy",
    "PolicyFileError",
    "PolicyFn",
    "load_policy",
    "save_policy",
    "sb3_policy_fn",
]

POLICY_FORMAT = "midl-autok/policy"
POLICY_VERSION = 1
POLICY_META = "midl_autok_policy.json"  # our member of the policy zip
_MAX_MEMBER_BYTES = 256 * 1024 * 1024

# observation (L + ...,) -> action (L,)
PolicyFn = Callable[[np.ndarray], np.ndarray]

_ALGOS = {"ppo": "ActorCriticPolicy", "a2c": "ActorCriticPolicy", "sac": "SACPolicy"}
_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Identity")


class PolicyFileError(UserError):
    """A policy file is not one :func:`save_policy` wrote, or was changed since."""


_MAX_DIM = 1 << 20  # widths and space sizes past this are not a policy this tool wrote
_MAX_LAYERS = 64


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text: torch's advice to retry with
    ``weights_only=False`` (which would execute the file) never reaches the user."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_state(raw: bytes, source: str) -> dict[str, torch.Tensor]:
    """``policy.pth`` as a state dict of tensors (weights only: a pickle asking for any other
    global is refused, and the refusal is one line)."""
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, a damaged zip, EOF, ...
        reason = _first_line(exc)
        if "weights_only" in reason or "Weights only" in reason or "global" in reason.lower():
            reason = "it holds something other than tensors; refused without running it"
        raise PolicyFileError(
            f"{source}: policy.pth is not a plain state dict ({reason})"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PolicyFileError(f"{source}: policy.pth is not a state dict of tensors")
    return state


def _box(meta: Mapping[str, Any], key: str, source: str) -> Any:
    from gymnasium import spaces

    box = meta.get(key)
    bounds = [box.get(b) if isinstance(box, dict) else None for b in ("low", "high")]
    if not all(
        isinstance(b, list)
        and 1 <= len(b) <= _MAX_DIM
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
        for b in bounds
    ) or len(bounds[0]) != len(bounds[1]):  # type: ignore[arg-type]
        raise PolicyFileError(
            f"{source}: {POLICY_META} field '{key}' must be {{'low': [...], 'high': [...]}} "
            f"with 1 to {_MAX_DIM} numbers each, of equal length"
        )
    low, high = (np.asarray(b, dtype=np.float32) for b in bounds)
    if not np.all(low <= high):
        raise PolicyFileError(f"{source}: {POLICY_META} field '{key}' has low > high")
    return spaces.Box(low, high, dtype=np.float32)


def _widths(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= _MAX_LAYERS
        and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_DIM for v in value
        )
    )


def _check_description(meta: Mapping[str, Any], source: str) -> None:
    """The recorded architecture and environment have the types :func:`save_policy` writes."""

    def bad(what: str) -> PolicyFileError:
        return PolicyFileError(f"{source}: invalid policy description in {POLICY_META} ({what})")

    algo = meta.get("algo")
    if meta.get("policy") not in _ALGOS.values() or not isinstance(algo, str) or algo not in _ALGOS:
        raise bad(f"policy {_short(meta.get('policy'))} of algo {_short(meta.get('algo'))}")
    kwargs = meta.get("policy_kwargs")
    if not isinstance(kwargs, dict):
        raise bad("'policy_kwargs' must be an object")
    activation = kwargs.get("activation_fn")
    if activation not in _ACTIVATIONS:
        raise bad(f"unsupported activation {_short(activation)}")
    arch = kwargs.get("net_arch")
    nets = list(arch.values()) if isinstance(arch, dict) else [arch]
    keys = {"pi", "qf"} if meta["policy"] == "SACPolicy" else {"pi", "vf"}
    if not all(_widths(n) for n in nets) or (isinstance(arch, dict) and not set(arch) <= keys):
        raise bad(
            f"'net_arch' must be a list of at most {_MAX_LAYERS} widths in [1, {_MAX_DIM}] or "
            f"an object with {' and '.join(sorted(keys))}, got {_short(arch)}"
        )
    critics = kwargs.get("n_critics", 1)
    if not (isinstance(critics, int) and not isinstance(critics, bool) and 1 <= critics <= 16):
        raise bad(f"'n_critics' must be an integer in [1, 16], got {_short(critics)}")
    for key, value in kwargs.items():
        if key not in ("net_arch", "activation_fn") and not isinstance(value, (bool, int, float)):
            raise bad(f"policy option {_short(key)} must be a number or a boolean")
    layers = meta.get("layers")
    if not (
        isinstance(layers, list)
        and all(
            isinstance(layer, dict)
            and isinstance(layer.get("name"), str)
            and isinstance(layer.get("width"), int)
            and not isinstance(layer.get("width"), bool)
            and layer["width"] >= 1
            for layer in layers
        )
    ):
        raise bad("'layers' must be a list of {'name': str, 'width': int >= 1}")
    env = meta.get("env")
    if not isinstance(env, dict):
        raise bad("'env' must be an object")
    epochs = env.get("epochs", 1)
    if not (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1):
        raise bad(f"env 'epochs' must be an integer >= 1, got {_short(epochs)}")
    names = meta.get("observation_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise bad("'observation_names' must be a list of names")
    if "spec" in meta and not isinstance(meta["spec"], dict):
        raise bad("'spec' must be an object")


def _least_parameters(meta: Mapping[str, Any], n_obs: int, n_act: int) -> int:
    """A lower bound of the parameters the recorded architecture has (its hidden layers):
    checked against ``policy.pth`` before the policy is built, so absurd widths in the
    metadata never reach the allocator."""
    kwargs = meta["policy_kwargs"]
    arch = kwargs["net_arch"]
    nets = list(arch.values()) if isinstance(arch, dict) else [arch]
    total = 0
    for widths in nets:
        sizes = [n_obs, *widths]
        total += sum(a * b + b for a, b in itertools.pairwise(sizes))
    return total + n_act


def _require_sb3() -> Any:
    try:
        import stable_baselines3
    except ImportError:
        raise UserError(
            "this needs Stable-Baselines3, the optional 'rl' extra: pip install 'midl-autok[rl]'"
        ) from None
    return stable_baselines3


def sb3_policy_fn(model: Any, *, deterministic: bool = True) -> PolicyFn:
    """``obs -> action`` from an SB3 algorithm or policy (anything with ``predict``)."""

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=deterministic)
        return np.asarray(action)

    return act


def _activation_name(fn: Any) -> str:
    name = getattr(fn, "__name__", repr(fn))
    if getattr(fn, "__module__", "").startswith("torch.nn") and name in _ACTIVATIONS:
        return name
    raise UserError(
        f"cannot export a policy with activation {name}; supported: {', '.join(_ACTIVATIONS)}"
    )


def _policy_meta(model: Any) -> dict[str, Any]:
    """The architecture of ``model.policy`` as plain JSON (allow-listed options only)."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    algo = type(model).__name__.lower()
    if algo not in _ALGOS:
        raise UserError(f"cannot export a {type(model).__name__} policy; supported: PPO, A2C, SAC")
    policy = model.policy
    params = policy._get_constructor_parameters()
    if params.get("features_extractor_class") is not FlattenExtractor or params.get(
        "features_extractor_kwargs"
    ):
        raise UserError("cannot export a policy with a custom features extractor")
    kwargs: dict[str, Any] = {
        "net_arch": params["net_arch"],
        "activation_fn": _activation_name(params["activation_fn"]),
        "use_sde": bool(params["use_sde"]),
        "log_std_init": float(params["log_std_init"]),
        "share_features_extractor": bool(policy.share_features_extractor),
    }
    if algo == "sac":
        kwargs.update(
            use_expln=bool(params["use_expln"]),
            clip_mean=float(params["clip_mean"]),
            n_critics=int(params["n_critics"]),
        )
    else:
        kwargs["ortho_init"] = bool(params["ortho_init"])
        for key in ("full_std", "use_expln", "squash_output"):
            if params.get(key) is not None:
                kwargs[key] = bool(params[key])
    return {"algo": algo, "policy": _ALGOS[algo], "policy_kwargs": kwargs}


def _box_json(space: Any) -> dict[str, Any]:
    return {"low": space.low.tolist(), "high": space.high.tolist()}


def save_policy(
    model: Any,
    path: str | os.PathLike[str],
    *,
    env: Any,
    spec: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (an SB3 PPO/A2C/SAC trained on ``env``) to ``path`` (a ``.zip``),
    atomically; :func:`load_policy` reads it back without unpickling. ``spec`` (the full
    experiment spec as JSON) is recorded as ``meta["spec"]``: ``midl-autok train --controller``
    then trains on the experiment the policy was trained on."""
    _require_sb3()
    base = getattr(env, "unwrapped", env)
    meta: dict[str, Any] = {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        **_policy_meta(model),
        "observation_space": _box_json(model.observation_space),
        "action_space": _box_json(model.action_space),
        "observation_names": list(base.observation_names),
        "layers": [{"name": s.name, "width": s.width} for s in base.layers],
        "env": base.config(),
    }
    if spec is not None:
        meta["spec"] = dict(spec)
    buffer = io.BytesIO()
    model.save(buffer)  # SB3's archive: data, policy.pth, ... (for trusted reuse in SB3)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(POLICY_META, json.dumps(meta, indent=2))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, buffer.getvalue())  # devices, FIFOs, symlinks, umask: see fileio
    return target


def _read_member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        hint = " (export it with midl_autok.rl.save_policy)" if name == POLICY_META else ""
        raise UserError(f"{source}: not a midl-autok policy file: no member {name}{hint}") from None
    if info.file_size > _MAX_MEMBER_BYTES:
        raise UserError(f"{source}: member {name} is larger than {_MAX_MEMBER_BYTES} bytes")
    return archive.read(name)


@dataclass
class LoadedPolicy:
    """A policy read by :func:`load_policy`: the SB3 policy module and the file's metadata."""

    policy: Any  # stable_baselines3 BasePolicy, in eval mode, on CPU
    meta: dict[str, Any]

    def policy_fn(self, *, deterministic: bool = True) -> PolicyFn:
        return sb3_policy_fn(self.policy, deterministic=deterministic)

    @property
    def env_config(self) -> dict[str, Any]:
        return dict(self.meta["env"])


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Read a policy written by :func:`save_policy`, without unpickling anything.

    Only ``midl_autok_policy.json`` (JSON) and ``policy.pth`` (``torch.load`` with
    ``weights_only=True``) are read; the policy is rebuilt from the allow-listed architecture
    and loaded strictly. Errors (not a zip, missing members, mismatched weights) are
    :class:`~midl_autok.errors.UserError`.
    """
    _require_sb3()
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.sac.policies import SACPolicy

    source = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            raw_meta = _read_member(archive, POLICY_META, source)
            raw_weights = _read_member(archive, "policy.pth", source)
    except FileNotFoundError:
        raise UserError(f"policy file not found: {source}") from None
    except (zipfile.BadZipFile, IsADirectoryError, OSError) as exc:
        raise UserError(f"{source}: not a readable policy zip ({exc})") from None
    try:
        meta = json.loads(raw_meta)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{source}: {POLICY_META} is not valid JSON ({exc})") from None
    except RecursionError:
        raise PolicyFileError(f"{source}: {POLICY_META} is nested too deeply") from None
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        raise PolicyFileError(f"{source}: {POLICY_META} must have format {POLICY_FORMAT!r}")
    if meta.get("version") != POLICY_VERSION:
        raise PolicyFileError(
            f"{source}: unsupported policy version {_short(meta.get('version'))}; this "
            f"midl-autok reads version {POLICY_VERSION}"
        )
    state = _read_state(raw_weights, source)
    obs_space, act_space = (
        _box(meta, key, source) for key in ("observation_space", "action_space")
    )
    _check_description(meta, source)
    kwargs = dict(meta["policy_kwargs"])
    kwargs["activation_fn"] = getattr(torch.nn, kwargs["activation_fn"])
    stored = sum(t.numel() for t in state.values())
    wanted = _least_parameters(meta, obs_space.shape[0], act_space.shape[0])
    if wanted > stored:
        raise PolicyFileError(
            f"{source}: policy.pth does not fit the recorded policy ({POLICY_META} describes at "
            f"least {wanted} parameters, policy.pth holds {stored})"
        )
    classes = {"ActorCriticPolicy": ActorCriticPolicy, "SACPolicy": SACPolicy}
    try:
        policy = classes[meta["policy"]](obs_space, act_space, lambda _: 0.0, **kwargs)
    except (KeyError, TypeError, ValueError, AssertionError, RuntimeError, OverflowError) as exc:
        raise PolicyFileError(
            f"{source}: invalid policy description in {POLICY_META} ({_first_line(exc)})"
        ) from None
    try:
        policy.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, AttributeError, EOFError) as exc:
        raise PolicyFileError(
            f"{source}: policy.pth does not fit the recorded policy ({_first_line(exc)})"
        ) from None
    policy.set_training_mode(False)
    return LoadedPolicy(policy=policy, meta=meta)
