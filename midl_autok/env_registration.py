"""Register midl-autok's Gymnasium environments by id, without importing them.

The registry entry names the class by an entry-point string, so registering costs only the
``gymnasium`` import (torch, the trainer and the env package load on ``gymnasium.make``)::

    import gymnasium as gym
    env = gym.make("midl_autok/TopKSchedule-v0", spec="digits-mlp", epochs=10, lam=0.1)

``gym.make("midl_autok:midl_autok/TopKSchedule-v0")`` also works in a fresh process: Gymnasium
imports ``midl_autok`` first, whose ``__init__`` calls :func:`register_envs`.
"""

from __future__ import annotations

__all__ = ["TOPK_POOL_ID", "TOPK_SCHEDULE_ID", "register_envs"]

TOPK_SCHEDULE_ID = "midl_autok/TopKSchedule-v0"
TOPK_POOL_ID = "midl_autok/TopKSchedulePool-v0"


def register_envs() -> None:
    """Register ``midl_autok/TopKSchedule-v0`` and ``midl_autok/TopKSchedulePool-v0``
    (idempotent; a no-op without gymnasium)."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a core dependency
        return
    entries = {TOPK_SCHEDULE_ID: "TopKScheduleEnv", TOPK_POOL_ID: "TaskPoolEnv"}
    for env_id, cls in entries.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=f"midl_autok.env:{cls}")
