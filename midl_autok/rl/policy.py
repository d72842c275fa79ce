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
    from gymnasium import spaces
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
        raise UserError(f"{source}: {POLICY_META} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != POLICY_FORMAT:
        raise UserError(f"{source}: {POLICY_META} must have format {POLICY_FORMAT!r}")
    if meta.get("version") != POLICY_VERSION:
        raise UserError(
            f"{source}: unsupported policy version {meta.get('version')!r}; this midl-autok "
            f"reads version {POLICY_VERSION}"
        )
    classes = {"ActorCriticPolicy": ActorCriticPolicy, "SACPolicy": SACPolicy}
    try:
        cls = classes[meta["policy"]]
        kwargs = dict(meta["policy_kwargs"])
        activation = kwargs.pop("activation_fn")
        if activation not in _ACTIVATIONS:
            raise UserError(f"{source}: unsupported activation {activation!r}")
        kwargs["activation_fn"] = getattr(torch.nn, activation)
        obs_space, act_space = (
            spaces.Box(
                np.asarray(meta[key]["low"], dtype=np.float32),
                np.asarray(meta[key]["high"], dtype=np.float32),
                dtype=np.float32,
            )
            for key in ("observation_space", "action_space")
        )
        policy = cls(obs_space, act_space, lambda _: 0.0, **kwargs)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: invalid policy description in {POLICY_META} ({exc})") from None
    try:
        state = torch.load(io.BytesIO(raw_weights), map_location="cpu", weights_only=True)
        policy.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, AttributeError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"{source}: policy.pth does not fit the recorded policy ({first})"
        ) from None
    policy.set_training_mode(False)
    return LoadedPolicy(policy=policy, meta=meta)
