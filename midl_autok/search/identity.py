"""Study identity: which study a spec belongs to, and whether a resumed study fits it.

* :func:`default_study_name`: ``<experiment>-<agent>-<space>-seed<S>`` (plus a hash of the
  spec when it differs from the shipped experiment), so rerunning a command resumes its study;
* :func:`spec_identity` and :func:`first_difference`: the spec without the fields a resumed
  study may change (trials, timeout, description), compared field by field;
* :func:`split_options`: ``search.options`` split into the space's and the agent's options;
* :func:`check_study_name`: a ``--study`` name every part of the store accepts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from midl_autok.agents import Agent, get_agent
from midl_autok.errors import SpecError, UserError, unknown_name

if TYPE_CHECKING:
    from midl_autok.spec import ExperimentSpec

__all__ = [
    "MAX_STUDY_NAME",
    "check_study_name",
    "default_study_name",
    "first_difference",
    "identity_of",
    "spec_identity",
    "split_options",
]

#: The longest study name, in UTF-8 bytes: the study names the MLflow experiment (at most
#: 500 characters) and its parent runs (MLflow's ``runs.name`` column holds 250), and its
#: report folder ``reports/<study>/`` (255 bytes on most file systems).
MAX_STUDY_NAME = 250

#: Spec fields that may change between invocations of the same study.
_FREE_FIELDS = (
    ("budget", "trials"),
    ("budget", "timeout_s"),
    ("description",),
    ("search", "confirm"),  # confirming a front later changes no trial of the search
)


def spec_identity(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as a dict without the fields a resumed study may change (trials, timeout)."""
    data = spec.model_dump(mode="json")
    for path in _FREE_FIELDS:
        node = data
        for part in path[:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return data


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def default_study_name(spec: ExperimentSpec) -> str:
    """``<experiment>-<agent>-<space>-seed<S>``, plus ``-<hash>`` of the spec when it differs
    from the shipped experiment of that name (e.g. ``--epochs`` or ``--flops-budget`` given),
    so rerunning the same command resumes the same study and a different setup gets its own."""
    from midl_autok.spec import list_experiments, load_spec

    agent, space = spec.search.agent, spec.search.space
    label = get_agent(agent)(seed=0).space_label(space) if agent else space
    parts = [spec.name, agent] + ([label] if label != "-" else []) + [f"seed{spec.seed}"]
    base = "-".join(parts)
    shipped = None
    if spec.name in list_experiments():
        shipped = load_spec(spec.name).override(
            **{"search.agent": agent, "search.space": space, "seed": spec.seed}
        )
    if shipped is not None and spec_identity(shipped) == spec_identity(spec):
        return base
    return f"{base}-{_digest(spec_identity(spec))}"


def check_study_name(name: str) -> str:
    """``name`` if the Optuna storage, MLflow and the report folder all accept it as a study
    name: 1 to :data:`MAX_STUDY_NAME` UTF-8 bytes of printable characters (no newline, tab,
    escape or other control character), not blank at either end. Raises
    :class:`~midl_autok.errors.SpecError` naming the rule; nothing is created before."""
    fix = "choose another --study name (or leave --study out for an automatic one)"
    if not name or name.strip() != name:
        raise SpecError(
            f"a study name must be non-empty without spaces at either end, but got {name!r}; {fix}"
        )
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise SpecError(
            f"a study name must be printable characters only, but {_shown(name)} holds "
            f"{bad!r} at position {name.index(bad)}; {fix}"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_STUDY_NAME:
        raise SpecError(
            f"a study name must be at most {MAX_STUDY_NAME} bytes in UTF-8 (MLflow's limit "
            f"for run names), but {_shown(name)} has {size}; {fix}"
        )
    return name


def _shown(name: str, limit: int = 40) -> str:
    """``name`` quoted on one line (``repr`` shows control characters as escapes), cut to
    ``limit`` characters."""
    return repr(name if len(name) <= limit else name[: limit - 3] + "...")


def first_difference(old: Any, new: Any, path: str = "") -> str | None:
    """The first field where two spec dicts differ, as a sentence; None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if old != new:
        return f"{path or '(spec)'} is {json.dumps(old)} there but {json.dumps(new)} here"
    return None


def split_options(
    options: Mapping[str, Any], space: str, agent: type[Agent]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``search.options`` into (space options, agent options) by the names each takes."""
    from midl_autok.search_spaces import SEARCH_SPACES

    if space not in SEARCH_SPACES:
        raise unknown_name("search space", space, SEARCH_SPACES, error=SpecError)
    space_keys = set(SEARCH_SPACES[space].option_names())
    agent_keys = set(agent.option_names())
    space_opts, agent_opts = {}, {}
    for key, value in options.items():
        if key in space_keys:
            space_opts[key] = value
        elif key in agent_keys:
            agent_opts[key] = value
        else:
            raise unknown_name(
                f"search option (space '{space}', agent '{agent.name}')",
                key,
                sorted(space_keys | agent_keys),
                error=SpecError,
            )
    return space_opts, agent_opts


def identity_of(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """:func:`spec_identity` of a spec recorded on a study (as it is when it no longer
    validates)."""
    from midl_autok.spec import validate_spec

    try:
        return spec_identity(validate_spec(spec_dict, source="the study's spec"))
    except UserError:
        return spec_dict
