"""The search-space contract and the pure ramp functions the spaces are built from.

A search space maps a few named real parameters to a :class:`~midl_autok.schedule.KSchedule`.
Every parameter ``p`` has a fixed interval ``[low, high]``; the same schedule can be reached
three ways, and they agree:

* ``decode_params({name: value})``: the named form, as sampled by Optuna or Ray Tune;
* ``suggest(trial)``: Optuna define-by-run (``trial.suggest_float`` per name, then decode);
* ``decode(u)``: a vector ``u`` in ``[0, 1]^D`` (for RL agents and tests), mapped
  coordinate-wise by ``value = low + u * (high - low)`` in :meth:`SearchSpace.param_names`
  order.

Time inside a run is normalized: epoch ``e`` of ``E`` sits at ``t_e = e / (E - 1)`` (``t = 1``
when ``E = 1``), so epoch 0 is ``t = 0`` and the last (deployed) epoch is ``t = 1``.
Fractions become integer k with :func:`~midl_autok.schedule.k_from_fraction`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from midl_autok.errors import ScheduleError, SpecError, unknown_name
from midl_autok.schedule import KSchedule, LayerSpec
from midl_autok.search_spaces import curves
from midl_autok.search_spaces.curves import *  # noqa: F403  (the ramps' former home)
from midl_autok.search_spaces.curves import epoch_times
from midl_autok.search_spaces.ranks import (
    DEFAULT_MAX_RANK,
    RankChoices,
    check_rank_options,
    rank_choices,
)

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import FloatDistribution

__all__ = ["Param", "SearchSpace", *curves.__all__, "time_param"]

# Values this far outside [low, high] (relative to the width) are rounding, not mistakes.
_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- the contract


@dataclass(frozen=True)
class Param:
    """One named real parameter of a search space, sampled uniformly from ``[low, high]``."""

    name: str
    low: float
    high: float


class SearchSpace:
    """Maps named parameters (or a vector in ``[0, 1]^D``) to a :class:`KSchedule`.

    Subclasses set :attr:`name`, take their options as keyword-only ``__init__`` arguments
    (forwarding the rest to this class, which rejects unknown ones), and implement
    :meth:`_build_params` (the parameters, fixed once constructed) and :meth:`_fractions`
    (``[layer][epoch]`` k fractions from parameter values). Optionally :meth:`_encode_guess`
    proposes parameters for a given schedule, which :meth:`encode_params` then verifies.

    Args:
        layers: The MID-L layers (``LayerSpec`` or ``(name, width)`` pairs).
        epochs: Number of training epochs.
        min_fraction: Lowest k fraction any parameter can ask for (``0 < min <= max``).
        max_fraction: Highest k fraction (``<= 1``).
        ranks: Also search every layer's ``gate_rank`` and ``light_rank``
            (:mod:`~midl_autok.search_spaces.ranks`); the schedule then carries them.
        max_rank: Highest rank searched (a layer's width lowers it).
        rank_base: ``{layer: (gate_rank, light_rank)}``, the model's own ranks: always a
            choice, and the ranks a schedule without ranks encodes at.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        layers: Sequence[LayerSpec | tuple[str, int]],
        epochs: int,
        *,
        min_fraction: float = 0.05,
        max_fraction: float = 1.0,
        ranks: bool = False,
        max_rank: int = DEFAULT_MAX_RANK,
        rank_base: Mapping[str, Sequence[int]] | None = None,
        **options: Any,
    ) -> None:
        if options:
            bad = sorted(options)[0]
            raise unknown_name(
                f"{self.name} search-space option",
                bad,
                self.option_names(),
                error=SpecError,
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ScheduleError(f"epochs must be an integer >= 1, but got {epochs!r}")
        specs = tuple(s if isinstance(s, LayerSpec) else LayerSpec(*s) for s in layers)
        # KSchedule validates names and widths (non-empty, unique, width >= 1).
        KSchedule(layers=specs, epochs=epochs, k=tuple((1,) * epochs for _ in specs))
        for label, value in (("min_fraction", min_fraction), ("max_fraction", max_fraction)):
            if not _is_real(value) or not math.isfinite(value):
                raise SpecError(f"{label} must be a finite number, but got {value!r}")
        if not 0.0 < min_fraction <= max_fraction <= 1.0:
            raise SpecError(
                "search space fractions must satisfy 0 < min_fraction <= max_fraction <= 1, "
                f"but got min_fraction={min_fraction}, max_fraction={max_fraction}"
            )
        self.layers: tuple[LayerSpec, ...] = specs
        self.epochs: int = epochs
        self.min_fraction: float = float(min_fraction)
        self.max_fraction: float = float(max_fraction)
        self._times = epoch_times(epochs)
        check_rank_options(ranks, max_rank, rank_base)
        self.max_rank: int = max_rank
        self._prepare()
        base = dict(rank_base) if rank_base is not None else self._model_ranks()
        self.rank_search: RankChoices | None = (
            RankChoices(specs, self._rank_choices(base), base) if ranks else None
        )
        self._encode_ranks: dict[str, tuple[int, int]] = {}  # set while encoding
        params = list(self._build_params())
        if self.rank_search is not None:
            params += [Param(n, 0.0, 1.0) for n in self.rank_search.names()]
        self._params: tuple[Param, ...] = tuple(params)
        names = [p.name for p in self._params]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise SpecError(
                f"search space '{self.name}' would have the parameter {dup!r} twice; "
                "rename the layers so that no layer name plus a parameter suffix repeats"
            )
        self._index = {p.name: i for i, p in enumerate(self._params)}

    # -- to implement ------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Work that :meth:`_rank_choices` and :meth:`_build_params` need (optional)."""

    def _model_ranks(self) -> dict[str, tuple[int, int]]:
        """The model's own ranks when the space knows them (the budget space's cost model)."""
        return {}

    def _rank_choices(
        self, base: Mapping[str, Sequence[int]]
    ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """``{layer: (gate_rank choices, light_rank choices)}`` (with ``ranks=True``)."""
        out = {}
        for s in self.layers:
            limit = min(self.max_rank, s.width)
            g, r = base.get(s.name, (None, None))
            out[s.name] = (
                rank_choices("gate_rank", limit, base=g),
                rank_choices("light_rank", limit, base=r),
            )
        return out

    def _ranks(self, values: Mapping[str, float]) -> dict[str, tuple[int, int]]:
        """The decoded ranks (with ``ranks=True``); the budget space fits them to its target."""
        assert self.rank_search is not None
        return self.rank_search.decode(values)

    def _build_params(self) -> list[Param]:
        raise NotImplementedError

    def _fractions(self, values: Mapping[str, float]) -> np.ndarray:
        """``(n_layers, epochs)`` k fractions for in-bounds parameter ``values``."""
        raise NotImplementedError

    def _encode_guess(self, fractions: np.ndarray) -> dict[str, float] | None:
        """Parameters that should reproduce ``fractions`` (verified by the caller), or None."""
        return None

    # -- description ---------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        """All keyword options this space accepts (``min_fraction``, ``max_fraction``, ...)."""
        names: list[str] = []
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return sorted(names)

    @property
    def options(self) -> dict[str, Any]:
        """The options this space was built with (for provenance and reproducing it)."""
        out: dict[str, Any] = {"min_fraction": self.min_fraction, "max_fraction": self.max_fraction}
        if self.rank_search is not None:
            out.update(ranks=True, max_rank=self.max_rank)
        return out

    def dim(self) -> int:
        """Number of parameters ``D``."""
        return len(self._params)

    @property
    def params(self) -> tuple[Param, ...]:
        """The parameters, in vector order."""
        return self._params

    def param_names(self) -> list[str]:
        """Parameter names in vector order (stable for a given space, layers, epochs, options)."""
        return [p.name for p in self._params]

    def param_bounds(self) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}``."""
        return {p.name: (p.low, p.high) for p in self._params}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return (
            f"{type(self).__name__}(layers={[s.name for s in self.layers]}, "
            f"epochs={self.epochs}, {opts}; D={self.dim()})"
        )

    # -- decoding ------------------------------------------------------------------------------

    def params_from_vector(self, u: ArrayLike) -> dict[str, float]:
        """``{name: low + u_i * (high - low)}``; ``u`` is clipped to ``[0, 1]`` first.

        Raises :class:`ScheduleError` when ``u`` is not a length-``D`` vector of finite numbers.
        """
        try:
            arr = np.asarray(u, dtype=float)
        except (TypeError, ValueError):
            raise ScheduleError(
                f"search space '{self.name}' decodes a vector of {self.dim()} numbers in [0, 1], "
                f"but got {u!r}"
            ) from None
        if arr.shape != (self.dim(),):
            raise ScheduleError(
                f"search space '{self.name}' decodes a vector of length {self.dim()}, "
                f"but got shape {arr.shape}"
            )
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ScheduleError(
                f"search space '{self.name}': u[{i}] ({self._params[i].name}) must be a finite "
                f"number in [0, 1], but got {arr[i]}"
            )
        arr = np.clip(arr, 0.0, 1.0)
        return {
            p.name: p.low + float(x) * (p.high - p.low)
            for p, x in zip(self._params, arr, strict=True)
        }

    def vector_from_params(self, params: Mapping[str, float]) -> np.ndarray:
        """The inverse of :meth:`params_from_vector` (``0`` for a parameter with low == high)."""
        values = self._check_params(params)
        out = np.zeros(self.dim())
        for i, p in enumerate(self._params):
            if p.high > p.low:
                out[i] = (values[p.name] - p.low) / (p.high - p.low)
        return out

    def decode(self, u: ArrayLike) -> KSchedule:
        """The schedule for a vector ``u`` in ``[0, 1]^D`` (clipped; NaN/inf/wrong length raise)."""
        return self.decode_params(self.params_from_vector(u))

    def decode_params(self, params: Mapping[str, float]) -> KSchedule:
        """The schedule for named parameter values (exactly :meth:`param_names`, in bounds)."""
        values = self._check_params(params)
        fractions = np.clip(self._fractions(values), self.min_fraction, self.max_fraction)
        ranks = self._ranks(values) if self.rank_search is not None else {}
        return KSchedule.from_fractions(self.layers, fractions.tolist(), ranks=ranks)

    def _check_params(self, params: Mapping[str, float]) -> dict[str, float]:
        if not isinstance(params, Mapping):
            raise ScheduleError(
                f"search space '{self.name}' needs a mapping of parameter values, "
                f"but got {type(params).__name__}"
            )
        for key in params:
            if key not in self._index:
                raise unknown_name(
                    f"{self.name} search-space parameter",
                    str(key),
                    self.param_names(),
                    error=ScheduleError,
                )
        values: dict[str, float] = {}
        for p in self._params:
            if p.name not in params:
                raise ScheduleError(
                    f"search space '{self.name}' needs parameter {p.name!r}, but it is missing"
                )
            v = params[p.name]
            if not _is_real(v) or not math.isfinite(v):
                raise ScheduleError(f"parameter {p.name} must be a finite number, but got {v!r}")
            slack = _TOLERANCE * max(1.0, p.high - p.low)
            if not p.low - slack <= v <= p.high + slack:
                raise ScheduleError(
                    f"parameter {p.name} must satisfy {p.low} <= value <= {p.high}, but got {v}"
                )
            values[p.name] = min(p.high, max(p.low, float(v)))
        return values

    # -- encoding ------------------------------------------------------------------------------

    def encode_params(self, schedule: KSchedule) -> dict[str, float]:
        """Parameters that decode to exactly ``schedule`` (e.g. to enqueue a fixed-k baseline).

        Every space encodes a schedule with one k per layer for all epochs; ``free`` encodes
        any schedule. Raises :class:`ScheduleError` when the schedule's layers or epochs differ
        from the space's, or when this space cannot express it.
        """
        schedule.check_layers([(s.name, s.width) for s in self.layers], what="the search space")
        if schedule.epochs != self.epochs:
            raise ScheduleError(
                f"the schedule has {schedule.epochs} epochs but the search space "
                f"'{self.name}' has {self.epochs}"
            )
        by_name = dict(zip(schedule.names, schedule.fractions(), strict=True))
        fractions = np.array([by_name[s.name] for s in self.layers], dtype=float)
        rank_params: dict[str, float] | None = {}
        if self.rank_search is not None:
            self._encode_ranks = dict(schedule.ranks) or self.rank_search.default()
            rank_params = self.rank_search.encode(self._encode_ranks)
        try:
            guess = self._encode_guess(fractions) if rank_params is not None else None
        finally:
            self._encode_ranks = {}
        if guess is not None and rank_params is not None:
            bounds = self.param_bounds()
            guess = {**guess, **rank_params}
            clipped = {n: min(bounds[n][1], max(bounds[n][0], v)) for n, v in guess.items()}
            decoded = self.decode_params(clipped)
            same_ranks = not schedule.ranks or decoded.ranks == schedule.ranks
            if list(decoded.k) == _rows_in_order(schedule, self.layers) and same_ranks:
                return clipped
        raise ScheduleError(
            f"search space '{self.name}' cannot express this schedule exactly "
            f"({self._encodable()}; k fractions in [{self.min_fraction}, {self.max_fraction}]"
            f"{self._encodable_ranks()}); "
            "use the 'free' space to encode any schedule"
        )

    def _encodable(self) -> str:
        return "it encodes schedules with one k per layer for all epochs"

    def _encodable_ranks(self) -> str:
        if self.rank_search is None:
            return ""
        return f"; ranks from its choices, {self.rank_search.describe()}"

    def encode(self, schedule: KSchedule) -> np.ndarray:
        """The ``u`` in ``[0, 1]^D`` that decodes to ``schedule`` (see :meth:`encode_params`)."""
        return self.vector_from_params(self.encode_params(schedule))

    # -- samplers ------------------------------------------------------------------------------

    def suggest(self, trial: optuna.Trial) -> KSchedule:
        """Optuna define-by-run: ``trial.suggest_float(name, low, high)`` per parameter, decoded.

        The distributions depend only on the space's construction arguments, so every trial of
        a study sees the same ones (Optuna requires that per parameter name).
        """
        values = {p.name: trial.suggest_float(p.name, p.low, p.high) for p in self._params}
        return self.decode_params(values)

    def optuna_distributions(self) -> dict[str, FloatDistribution]:
        """``{name: optuna.distributions.FloatDistribution(low, high)}`` (e.g. for ``ask``)."""
        from optuna.distributions import FloatDistribution

        return {p.name: FloatDistribution(p.low, p.high) for p in self._params}

    def ray_param_space(self) -> dict[str, Any]:
        """``{name: ray.tune.uniform(low, high)}``: a flat Ray Tune ``param_space``.

        Parameter names never contain ``/`` (Ray Tune flattens nested configs with it and its
        ``OptunaSearch`` rejects it in keys); a layer name containing ``/`` is refused here.
        """
        slashed = [s.name for s in self.layers if "/" in s.name]
        if slashed:
            raise SpecError(
                f"Ray Tune cannot use parameter names containing '/', but layer {slashed[0]!r} "
                "has one; rename the layer"
            )
        try:
            from ray import tune
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise SpecError(
                "the Ray backend needs Ray Tune; install it with: pip install 'midl-autok[ray]'"
            ) from None
        return {p.name: tune.uniform(p.low, p.high) for p in self._params}

    # -- helpers for subclasses ----------------------------------------------------------------

    def _fraction_param(self, name: str) -> Param:
        return Param(name, self.min_fraction, self.max_fraction)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _rows_in_order(schedule: KSchedule, layers: Sequence[LayerSpec]) -> list[tuple[int, ...]]:
    by_name = dict(zip(schedule.names, schedule.k, strict=True))
    return [by_name[s.name] for s in layers]


def time_param(name: str) -> Param:
    """A parameter on normalized time ``[0, 1]``."""
    return Param(name, 0.0, 1.0)
