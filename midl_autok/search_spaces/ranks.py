"""Co-search of MID-L ranks: each layer's ``gate_rank`` and ``light_rank`` as search parameters.

Every space takes the option ``ranks=True`` (``search.ranks``, ``--search-ranks``). It adds two
parameters per MID-L layer, ``<layer>.gate_rank`` and ``<layer>.light_rank``, each in
``[0, 1]`` and mapped to one of the layer's rank choices ``c_0 < ... < c_{n-1}`` by

    ``i = min(n - 1, floor(u * n))``   (each choice owns an equal part of ``[0, 1]``)

The choices are the powers of two up to the layer's limit, ``min(max_rank, width)`` (and the
layer's input size when a cost model gives it), plus the model's own rank (``rank_base``, so a
schedule without ranks encodes at the experiment's ranks); ``light_rank`` also has 0 (no light
path). The decoded schedule carries the ranks (:attr:`~midl_autok.schedule.KSchedule.ranks`)
and the trainer builds the model with them.

The ``budget`` space counts the ranks in its inference-FLOPs target: see
:meth:`~midl_autok.search_spaces.budget.BudgetSpace.fit_ranks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from midl_autok.errors import SpecError
from midl_autok.schedule import LayerSpec

if TYPE_CHECKING:
    from midl_autok.agents.base import Agent
    from midl_autok.models import MIDLNet

__all__ = [
    "DEFAULT_MAX_RANK",
    "RANK_KINDS",
    "RankChoices",
    "rank_choices",
    "rank_params",
    "rank_search_options",
]

RANK_KINDS = ("gate_rank", "light_rank")
#: Highest rank searched by default (a layer's width or input size may lower it).
DEFAULT_MAX_RANK = 64
#: The rank a layer is encoded at when neither the schedule nor ``rank_base`` gives one.
_SPEC_DEFAULT_RANK = 16

Ranks = dict[str, tuple[int, int]]


def rank_choices(kind: str, limit: int, *, base: int | None = None) -> tuple[int, ...]:
    """The ranks searched for one layer: ``1, 2, 4, ...`` up to ``limit`` (``>= 1``), ``0``
    first for ``light_rank``, and ``base`` (the model's own rank) when it is within them."""
    values = {0} if kind == "light_rank" else set()
    r = 1
    while r <= max(1, limit):
        values.add(r)
        r *= 2
    if base is not None and (1 if kind == "gate_rank" else 0) <= base <= max(1, limit):
        values.add(base)
    return tuple(sorted(values))


def check_rank_options(ranks: object, max_rank: object, base: object) -> None:
    """Raise a :class:`SpecError` for a malformed ``ranks``, ``max_rank`` or ``rank_base``."""
    if not isinstance(ranks, bool):
        raise SpecError(f"search-space option ranks must be true or false, but got {ranks!r}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 1:
        raise SpecError(
            f"search-space option max_rank must be an integer >= 1, but got {max_rank!r}"
        )
    if base is None:
        return
    if not isinstance(base, Mapping) or not all(
        isinstance(pair, Sequence)
        and len(pair) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
        for pair in base.values()
    ):
        raise SpecError(
            "search-space option rank_base must map layer names to (gate_rank, light_rank), "
            f"but got {base!r:.80}"
        )


class RankChoices:
    """The rank parameters of a space: names, decoding, encoding (see the module docs).

    Args:
        layers: The space's MID-L layers.
        choices: ``{layer: (gate choices, light choices)}``, each sorted and non-empty.
        base: ``{layer: (gate_rank, light_rank)}``, the model's own ranks (or None).
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        choices: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]],
        base: Mapping[str, Sequence[int]] | None,
    ) -> None:
        self.layers = tuple(layers)
        self.choices = {s.name: choices[s.name] for s in self.layers}
        self.base = {n: (int(p[0]), int(p[1])) for n, p in (base or {}).items()}

    def names(self) -> list[str]:
        """``<layer>.gate_rank``, ``<layer>.light_rank`` per layer, in layer order."""
        return [f"{s.name}.{kind}" for s in self.layers for kind in RANK_KINDS]

    def decode(self, values: Mapping[str, float]) -> Ranks:
        """``{layer: (gate_rank, light_rank)}`` for parameter values in ``[0, 1]``."""
        out: Ranks = {}
        for s in self.layers:
            gate, light = (
                options[
                    min(len(options) - 1, math.floor(values[f"{s.name}.{kind}"] * len(options)))
                ]
                for kind, options in zip(RANK_KINDS, self.choices[s.name], strict=True)
            )
            out[s.name] = (gate, light)
        return out

    def default(self) -> Ranks:
        """The ranks a schedule without ranks encodes at: ``rank_base`` (else 16), each snapped
        to the nearest choice."""
        out: Ranks = {}
        for s in self.layers:
            want = self.base.get(s.name, (_SPEC_DEFAULT_RANK, _SPEC_DEFAULT_RANK))
            gate, light = (
                _nearest(options, w) for w, options in zip(want, self.choices[s.name], strict=True)
            )
            out[s.name] = (gate, light)
        return out

    def encode(self, ranks: Mapping[str, tuple[int, int]] | None) -> dict[str, float] | None:
        """Parameter values (the middle of each choice's part) for ``ranks`` (None or empty:
        :meth:`default`); None when a rank is not one of the layer's choices."""
        ranks = ranks or self.default()
        out: dict[str, float] = {}
        for s in self.layers:
            for kind, value, options in zip(
                RANK_KINDS, ranks[s.name], self.choices[s.name], strict=True
            ):
                if value not in options:
                    return None
                out[f"{s.name}.{kind}"] = (options.index(value) + 0.5) / len(options)
        return out

    def describe(self) -> str:
        first = self.layers[0].name
        gate, light = self.choices[first]
        return f"e.g. {first}: gate_rank in {list(gate)}, light_rank in {list(light)}"


def _nearest(options: Sequence[int], want: int) -> int:
    """The choice closest to ``want`` (the lower one on a tie)."""
    return min(options, key=lambda c: (abs(c - want), c))


def rank_search_options(agent: Agent, model: MIDLNet) -> dict[str, Any]:
    """The space options of a rank co-search (``search.ranks``) for ``model``'s layers;
    a :class:`SpecError` for an agent that samples no search space (fixed-k, RL)."""
    if not agent.uses_space:
        raise SpecError(
            f"--search-ranks (search.ranks) needs an agent that samples a search space, but "
            f"agent '{agent.name}' does not; use e.g. --agent tpe"
        )
    base = {name: (m.gate_rank, m.light_rank) for name, m in model.midl_layers()}
    return {"ranks": True, "rank_base": base}


def rank_params(ranks: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """``{"ranks.<layer>.gate_rank": r_g, "ranks.<layer>.light_rank": r}``: the ranks as
    tracking parameters (the MLflow child run of a rank co-search logs them)."""
    return {
        f"ranks.{name}.{kind}": value
        for name, pair in ranks.items()
        for kind, value in zip(RANK_KINDS, pair, strict=True)
    }
