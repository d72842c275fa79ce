"""RL helpers that need no search infrastructure: roll a policy out to a schedule, export a
trained Stable-Baselines3 policy, and drive training with it as a live k-controller.

Stable-Baselines3 is the optional ``rl`` extra; it is imported inside the functions that need
it, never at module import.

**Policy files.** :func:`save_policy` writes SB3's own ``.zip`` (so a trusted owner can still
``PPO.load`` it to continue training) plus one extra member, ``midl_autok_policy.json``: the
algorithm, the policy's architecture as plain JSON, the spaces, and the environment options
(``lam``, ``budget``, ``hard_budget``, ``min_fraction``, ...). :func:`load_policy` never calls
SB3's ``load``: that unpickles the ``data`` member with cloudpickle, which runs arbitrary code
from the file. It reads only the JSON member and ``policy.pth`` (a state dict, read with
``torch.load(weights_only=True)``) into a freshly built policy of the recorded, allow-listed
architecture (``ActorCriticPolicy`` for PPO/A2C, ``SACPolicy`` for SAC).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from midl_autok.data import Dataset
from midl_autok.env import Observer, decide_k
from midl_autok.errors import UserError
from midl_autok.flops import CostModel, cost_model
from midl_autok.models import MIDLNet
from midl_autok.schedule import KSchedule
from midl_autok.trainer import DivergedError

if TYPE_CHECKING:
    import gymnasium as gym

__all__ = [
    "POLICY_FORMAT",
    "POLICY_META",
    "POLICY_VERSION",
    "LoadedPolicy",
    "PolicyController",
    "PolicyFn",
    "load_policy",
    "rollout",
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


# --------------------------------------------------------------------------- rollout


def rollout(
    policy_fn: PolicyFn,
    env: gym.Env[np.ndarray, np.ndarray],
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[KSchedule, dict[str, float]]:
    """Run one episode of ``env`` (a :class:`~midl_autok.env.TopKScheduleEnv`, wrapped or not)
    with ``policy_fn``; return the realized schedule and the final metrics.

    The metrics are the trainer's final metrics (``val_accuracy``, ``test_accuracy``,
    ``inference_flops``, ...) plus ``episode_return``, ``lam``, ``seed`` (the run seed) and
    ``budget`` when the episode had one. A diverging run raises
    :class:`~midl_autok.trainer.DivergedError` (a failed trial for a search).
    """
    obs, start = env.reset(seed=seed, options=options)
    total = 0.0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy_fn(obs))
        total += float(reward)
        if terminated or truncated:
            break
    if info.get("diverged"):
        session = getattr(env.unwrapped, "session", None)
        history = list(session.history) if session is not None else []
        raise DivergedError(
            info.get("reason", "training diverged"), epoch=info["epoch"], history=history
        )
    schedule = info.get("schedule")
    if not isinstance(schedule, KSchedule):
        raise RuntimeError(
            f"the episode was truncated after epoch {info.get('epoch')} before training finished; "
            "roll out without a time limit shorter than the run"
        )
    metrics = dict(info["final_metrics"])
    metrics.update(episode_return=total, lam=float(start["lam"]), seed=float(start["seed"]))
    if start.get("budget") is not None:
        metrics["budget"] = float(start["budget"])
    return schedule, metrics


def sb3_policy_fn(model: Any, *, deterministic: bool = True) -> PolicyFn:
    """``obs -> action`` from an SB3 algorithm or policy (anything with ``predict``)."""

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=deterministic)
        return np.asarray(action)

    return act


# --------------------------------------------------------------------------- policy files


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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


# --------------------------------------------------------------------------- controller


def _one_value(name: str, value: Any, configured: Any) -> float | None:
    """The single ``lam``/``budget`` a controller runs with: given, or the env's if fixed."""
    if value is not None:
        return float(value)
    if configured is None:
        return None
    lo, hi = (configured, configured) if isinstance(configured, (int, float)) else configured
    if lo != hi:
        raise UserError(
            f"the policy was trained with {name} in [{lo}, {hi}]; choose one value "
            f"(e.g. {name}={lo})"
        )
    return float(lo)


class PolicyController:
    """A trainer :data:`~midl_autok.trainer.Controller` that asks a policy for each epoch's k.

    It observes the run exactly as :class:`~midl_autok.env.TopKScheduleEnv` does (the same
    :class:`~midl_autok.env.Observer` and decision rule), so under the same run seed
    ``train(model, data, controller=...)`` replays the env's episode. Give it the model that
    ``train`` trains and its data::

        controller = PolicyController.from_file("policy.zip", model=model, data=data, epochs=10)
        result = train(model, data, config=config, controller=controller)
    """

    def __init__(
        self,
        policy_fn: PolicyFn,
        *,
        model: MIDLNet,
        data: Dataset,
        epochs: int,
        lam: float = 0.1,
        budget: float | None = None,
        hard_budget: bool = False,
        min_fraction: float = 0.05,
        probe_size: int = 256,
        eval_batch_size: int = 4096,
        max_budget: float | None = None,
    ) -> None:
        if hard_budget and budget is None:
            raise UserError("hard_budget=True needs a budget (a fraction of dense FLOPs)")
        self.policy_fn = policy_fn
        self.model = model
        self.epochs = epochs
        self.lam = lam
        self.budget = budget
        self.hard_budget = hard_budget
        self.min_fraction = min_fraction
        self.layers = model.layer_specs()
        if not self.layers:
            raise UserError("a policy controller needs a model with MID-L layers")
        self.costs: CostModel = _costs(model, data)
        self.observer = Observer(
            layers=self.layers,
            costs=self.costs,
            data=data,
            epochs=epochs,
            probe_size=probe_size,
            eval_batch_size=eval_batch_size,
            max_budget=max_budget if max_budget is not None else (budget or 1.0),
        )
        self.trace: list[dict[str, Any]] = []  # per epoch: observation, action, k, clipped

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        model: MIDLNet,
        data: Dataset,
        epochs: int,
        lam: float | None = None,
        budget: float | None = None,
        deterministic: bool = True,
    ) -> PolicyController:
        """A controller from a :func:`save_policy` file; ``lam``/``budget`` default to the
        training env's when it used one value (a range needs an explicit choice)."""
        loaded = load_policy(path)
        env = loaded.env_config
        names = [layer["name"] for layer in loaded.meta["layers"]]
        ours = [s.name for s in model.layer_specs()]
        if len(names) != len(ours):
            raise UserError(
                f"{path}: the policy chooses k for {len(names)} MID-L layers "
                f"({', '.join(names)}), but the model has {len(ours)} ({', '.join(ours)})"
            )
        configured_budget = env.get("budget")
        return cls(
            loaded.policy_fn(deterministic=deterministic),
            model=model,
            data=data,
            epochs=epochs,
            lam=_one_value("lam", lam, env.get("lam")) or 0.0,
            budget=_one_value("budget", budget, configured_budget),
            hard_budget=bool(env.get("hard_budget", False)),
            min_fraction=float(env.get("min_fraction", 0.05)),
            probe_size=int(env.get("probe_size", 256)),
            eval_batch_size=int(env.get("eval_batch_size", 4096)),
            max_budget=None if configured_budget is None else max(_as_pair(configured_budget)),
        )

    def __call__(self, epoch: int, history: Sequence[Mapping[str, float]]) -> dict[str, int]:
        if len(history) != epoch:
            raise RuntimeError(
                f"PolicyController must be called once per epoch, in order; got epoch {epoch} "
                f"after {len(history)} recorded epochs"
            )
        if epoch == 0:
            obs, _ = self.observer.reset(self.model, lam=self.lam, budget=self.budget)
            self.trace = []
        else:
            obs = self.observer.step(self.model, history[-1])
        action = np.asarray(self.policy_fn(obs), dtype=np.float32)
        k, clipped = decide_k(
            action,
            layers=self.layers,
            costs=self.costs,
            min_fraction=self.min_fraction,
            budget=self.budget,
            hard_budget=self.hard_budget,
            final=epoch == self.epochs - 1,
        )
        self.trace.append({"observation": obs, "action": action, "k": k, "clipped": clipped})
        return k


def _as_pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    return float(lo), float(hi)


def _costs(model: MIDLNet, data: Dataset) -> CostModel:
    device = next(model.parameters()).device
    return cost_model(model, data.x_train[:1].to(device))
