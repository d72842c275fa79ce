"""Search agents by name: ``--agent tpe|nsga2|gp|qmc|random|fixed-k|ppo|sac|a2c`` (+ plug-ins).

Agents are looked up lazily: naming one imports only its module (``--agent ppo`` is the only
thing that imports Stable-Baselines3). An unknown name raises a
:class:`~midl_autok.errors.SpecError` with a "did you mean"::

    agent = make_agent("tpe", seed=0)                  # a SamplerAgent
    register_agent("my-agent", "my_package.agents:MyAgent")

Adding an agent = one module with an :class:`Agent` subclass + one entry in :data:`AGENTS`;
the shared agent contract tests then cover it.
"""

from __future__ import annotations

from typing import Any

from midl_autok._import_path import load_registered
from midl_autok.agents.base import Agent, ExternalAgent, SamplerAgent, derive_seed

__all__ = [
    "AGENTS",
    "Agent",
    "ExternalAgent",
    "SamplerAgent",
    "agent_names",
    "derive_seed",
    "get_agent",
    "make_agent",
    "register_agent",
]

#: name -> "module:Class", imported on first use.
AGENTS: dict[str, str] = {
    "tpe": "midl_autok.agents.optuna_agent:TPEAgent",
    "nsga2": "midl_autok.agents.optuna_agent:NSGA2Agent",
    "gp": "midl_autok.agents.optuna_agent:GPAgent",
    "qmc": "midl_autok.agents.optuna_agent:QMCAgent",
    "random": "midl_autok.agents.baselines:RandomAgent",
    "fixed-k": "midl_autok.agents.baselines:FixedKAgent",
    "ppo": "midl_autok.agents.sb3:PPOAgent",
    "sac": "midl_autok.agents.sb3:SACAgent",
    "a2c": "midl_autok.agents.sb3:A2CAgent",
}


def agent_names() -> list[str]:
    """Registered agent names, in registry order."""
    return list(AGENTS)


def register_agent(name: str, target: str) -> None:
    """Register ``"module:Class"`` under ``name`` (replacing an existing entry)."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:Class', but got {target!r}")
    AGENTS[name] = target


def get_agent(name: str) -> type[Agent]:
    """The agent class registered as ``name``."""
    install = "install the matching extra, e.g. pip install 'midl-autok[rl]'"
    cls = load_registered(AGENTS, name, kind="agent", install=install)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{AGENTS[name]} is not an Agent subclass")
    return cls


def make_agent(name: str, *, seed: int = 0, **options: Any) -> Agent:
    """Build the agent registered as ``name`` with its options."""
    return get_agent(name)(seed=seed, **options)
