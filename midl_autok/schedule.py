"""KSchedule: the one currency between agents, the trainer, tracking and export.

A KSchedule names the MID-L layers of a model with their widths, a number of epochs, and an
integer matrix ``k[layer][epoch]`` (neurons on the full path per sample). It is immutable,
validates itself on construction, and round-trips exactly through JSON and YAML::

    {"format": "midl-autok/kschedule", "version": 1,
     "model": {"arch": "mlp", "signature": "..."},
     "layers": [{"name": "body.0", "width": 256}, ...],
     "epochs": 12,
     "k": [[256, 240, ...], ...],
     "metrics": {...}, "provenance": {...}}

A schedule found by a rank co-search (``--search-ranks``) also carries each layer's MID-L
ranks, ``"ranks": {"body.0": {"gate_rank": 8, "light_rank": 0}, ...}``; the trainer builds the
model with them (:func:`midl_autok.experiment.build_for_spec`), so the schedule replays exactly.
Files without ``ranks`` (every older file) load as before and use the experiment's ranks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from midl_autok.errors import ScheduleError
from midl_autok.fileio import read_text, write_atomic

__all__ = ["FORMAT", "VERSION", "KSchedule", "LayerSpec", "k_from_fraction", "write_atomic"]

FORMAT = "midl-autok/kschedule"
VERSION = 1
#: Largest schedule file read (JSON); a YAML file may be smaller: YAML parses much slower.
_MAX_FILE_BYTES = 16 * 1024 * 1024
_MAX_YAML_BYTES = 2 * 1024 * 1024
#: Deepest nesting of lists and objects in ``metrics`` and ``provenance`` (a spec inside
#: provenance nests a few levels; pydantic and MLflow serializers fail at a few hundred).
MAX_DEPTH = 64


def k_from_fraction(fraction: float, width: int) -> int:
    """The integer k for a fraction of ``width`` neurons.

    ``k = clip(round(fraction * width), 1, width)``.
    """
    if not math.isfinite(fraction):
        raise ScheduleError(f"a k fraction must be a finite number, but got {fraction}")
    return min(width, max(1, round(fraction * width)))


@dataclass(frozen=True)
class LayerSpec:
    """A MID-L layer as a schedule sees it: its module name and its width ``d``."""

    name: str
    width: int


@dataclass(frozen=True)
class KSchedule:
    """Per-layer, per-epoch integer k for the MID-L layers of one model.

    Construct directly, with :meth:`constant`, :meth:`from_fractions`, or :meth:`from_dict` /
    :meth:`load`. Every constructor validates: ``1 <= k <= width`` for every entry, one row
    per layer, ``epochs`` entries per row, unique non-empty names.
    """

    layers: tuple[LayerSpec, ...]
    epochs: int
    k: tuple[tuple[int, ...], ...]
    arch: str = ""
    signature: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: ``{layer: (gate_rank, light_rank)}`` for every layer, or empty: the model's own ranks.
    ranks: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = tuple(
            spec if isinstance(spec, LayerSpec) else LayerSpec(*spec) for spec in self.layers
        )
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "k", tuple(tuple(row) for row in self.k))
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "provenance", dict(self.provenance))
        object.__setattr__(
            self, "ranks", {name: tuple(pair) for name, pair in dict(self.ranks).items()}
        )
        self._validate()
        self._validate_ranks()

    def _validate(self) -> None:
        if not self.layers:
            raise ScheduleError("a schedule needs at least one layer, but 'layers' is empty")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ScheduleError(f"epochs must be an integer >= 1, but got {self.epochs!r}")
        seen: set[str] = set()
        for i, spec in enumerate(self.layers):
            if not isinstance(spec.name, str) or not spec.name:
                raise ScheduleError(
                    f"layer {i} needs a non-empty string name, but got {spec.name!r}"
                )
            if spec.name in seen:
                raise ScheduleError(f"layer name {spec.name!r} appears twice")
            seen.add(spec.name)
            if isinstance(spec.width, bool) or not isinstance(spec.width, int) or spec.width < 1:
                raise ScheduleError(
                    f"width of layer {spec.name} must be an integer >= 1, but got {spec.width!r}"
                )
        if len(self.k) != len(self.layers):
            raise ScheduleError(
                f"k must have one row per layer ({len(self.layers)}), but got {len(self.k)} rows"
            )
        for spec, row in zip(self.layers, self.k, strict=True):
            if len(row) != self.epochs:
                raise ScheduleError(
                    f"k for layer {spec.name} must have {self.epochs} entries (one per epoch), "
                    f"but got {len(row)}"
                )
            for epoch, value in enumerate(row):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ScheduleError(
                        f"k must be an integer for layer {spec.name} at epoch {epoch}, "
                        f"but got {value!r}"
                    )
                if not 1 <= value <= spec.width:
                    raise ScheduleError(
                        f"k must satisfy 1 <= k <= {spec.width} for layer {spec.name} at epoch "
                        f"{epoch}, but got {value}"
                    )

    def _validate_ranks(self) -> None:
        if not self.ranks:
            return
        names = set(self.names)
        for name, pair in self.ranks.items():
            if name not in names:
                raise ScheduleError(
                    f"ranks name layer {name!r}, which the schedule does not have; "
                    f"its layers: {', '.join(self.names)}"
                )
            if len(pair) != 2 or not all(_is_int(v) for v in pair):
                raise ScheduleError(
                    f"ranks of layer {name} must be two integers (gate_rank, light_rank), "
                    f"but got {pair!r}"
                )
            if not (pair[0] >= 1 and pair[1] >= 0):
                raise ScheduleError(
                    f"ranks of layer {name} must satisfy gate_rank >= 1 and light_rank >= 0 "
                    f"(0 = no light path), but got gate_rank={pair[0]}, light_rank={pair[1]}"
                )
        missing = [n for n in self.names if n not in self.ranks]
        if missing:
            raise ScheduleError(f"ranks must name every layer, but layer {missing[0]} is missing")

    def rank_options(self) -> dict[str, dict[str, int]]:
        """``{"gate_rank": {layer: r_g}, "light_rank": {layer: r}}`` for
        :func:`~midl_autok.models.build_model` (empty when the schedule carries no ranks)."""
        if not self.ranks:
            return {}
        return {
            "gate_rank": {name: pair[0] for name, pair in self.ranks.items()},
            "light_rank": {name: pair[1] for name, pair in self.ranks.items()},
        }

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def constant(
        cls,
        layers: Iterable[LayerSpec | tuple[str, int]],
        epochs: int,
        fraction: float,
        **kwargs: Any,
    ) -> KSchedule:
        """One k fraction for every layer and epoch (the paper's fixed-k setting)."""
        specs = tuple(s if isinstance(s, LayerSpec) else LayerSpec(*s) for s in layers)
        if not 0.0 < fraction <= 1.0:
            raise ScheduleError(f"a k fraction must satisfy 0 < fraction <= 1, but got {fraction}")
        rows = [[k_from_fraction(fraction, s.width)] * epochs for s in specs]
        return cls(layers=specs, epochs=epochs, k=tuple(tuple(r) for r in rows), **kwargs)

    @classmethod
    def from_fractions(
        cls,
        layers: Iterable[LayerSpec | tuple[str, int]],
        fractions: Sequence[Sequence[float]],
        **kwargs: Any,
    ) -> KSchedule:
        """From a fraction matrix ``[layer][epoch]``, each rounded with :func:`k_from_fraction`."""
        specs = tuple(s if isinstance(s, LayerSpec) else LayerSpec(*s) for s in layers)
        if len(fractions) != len(specs):
            raise ScheduleError(
                f"fractions must have one row per layer ({len(specs)}), but got {len(fractions)}"
            )
        rows = tuple(
            tuple(k_from_fraction(float(f), s.width) for f in row)
            for s, row in zip(specs, fractions, strict=True)
        )
        epochs = len(rows[0]) if rows else 0
        return cls(layers=specs, epochs=epochs, k=rows, **kwargs)

    # -- views ------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.layers)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.layers)

    def at(self, epoch: int) -> dict[str, int]:
        """``{layer name: k}`` for one epoch (0-based)."""
        if not 0 <= epoch < self.epochs:
            raise ScheduleError(f"epoch must satisfy 0 <= epoch < {self.epochs}, but got {epoch}")
        return {s.name: row[epoch] for s, row in zip(self.layers, self.k, strict=True)}

    def final(self) -> dict[str, int]:
        """k at the last epoch: the model that is deployed (inference FLOPs use it)."""
        return self.at(self.epochs - 1)

    def fractions(self) -> list[list[float]]:
        """``k / width`` as a ``[layer][epoch]`` matrix."""
        return [[v / s.width for v in row] for s, row in zip(self.layers, self.k, strict=True)]

    def active_fraction(self, epoch: int | None = None) -> float:
        """Mean ``k / width`` over layers at ``epoch`` (default: the final epoch)."""
        e = self.epochs - 1 if epoch is None else epoch
        pairs = zip(self.layers, self.k, strict=True)
        return sum(row[e] / s.width for s, row in pairs) / len(self.layers)

    def with_info(
        self,
        *,
        metrics: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> KSchedule:
        """A copy with metrics and/or provenance merged in."""
        return replace(
            self,
            metrics={**self.metrics, **(metrics or {})},
            provenance={**self.provenance, **(provenance or {})},
        )

    def check_layers(self, layers: Sequence[tuple[str, int]], *, what: str = "the model") -> None:
        """Raise a :class:`ScheduleError` naming the first layer that differs from ``layers``."""
        theirs = dict(layers)
        for spec in self.layers:
            if spec.name not in theirs:
                raise ScheduleError(
                    f"the schedule's layer {spec.name} does not exist in {what}; its MID-L layers "
                    f"are: {', '.join(theirs) or '(none)'}"
                )
            if theirs[spec.name] != spec.width:
                raise ScheduleError(
                    f"layer {spec.name} has width {spec.width} in the schedule but "
                    f"{theirs[spec.name]} in {what}"
                )
        missing = [name for name in theirs if name not in self.names]
        if missing:
            raise ScheduleError(f"the schedule has no k for layer {missing[0]} of {what}")

    # -- (de)serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "model": {"arch": self.arch, "signature": self.signature},
            "layers": [{"name": s.name, "width": s.width} for s in self.layers],
            "epochs": self.epochs,
            "k": [list(row) for row in self.k],
            "metrics": dict(self.metrics),
            "provenance": dict(self.provenance),
        }
        if self.ranks:
            out["ranks"] = {
                s.name: {"gate_rank": self.ranks[s.name][0], "light_rank": self.ranks[s.name][1]}
                for s in self.layers
            }
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "schedule") -> KSchedule:
        """Parse and validate the JSON/YAML document form; errors name the bad field."""
        if not isinstance(data, dict):
            raise ScheduleError(
                f"{source}: expected a JSON object at the top level, got {_kind(data)}"
            )
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ScheduleError(f"{source}: 'format' must be {FORMAT!r}, but got {fmt!r}")
        version = data.get("version")
        if version != VERSION:
            raise ScheduleError(
                f"{source}: unsupported schedule version {version!r}; this midl-autok reads "
                f"version {VERSION}"
            )
        known = {"format", "version", "model", "layers", "epochs", "k", "metrics", "provenance"}
        known.add("ranks")
        unknown = sorted(str(key) for key in set(data) - known)
        if unknown:
            raise ScheduleError(
                f"{source}: unknown field {unknown[0]!r}; valid: {', '.join(sorted(known))}"
            )
        model = data.get("model", {})
        if not isinstance(model, dict):
            raise ScheduleError(f"{source}: 'model' must be an object, got {_kind(model)}")
        unknown = sorted(str(key) for key in set(model) - {"arch", "signature"})
        if unknown:
            raise ScheduleError(
                f"{source}: unknown field 'model.{unknown[0]}'; valid: arch, signature"
            )
        for key in ("arch", "signature"):
            if not isinstance(model.get(key, ""), str):
                raise ScheduleError(
                    f"{source}: 'model.{key}' must be a string, got {_kind(model[key])}"
                )
        raw_layers = data.get("layers")
        if not isinstance(raw_layers, list):
            raise ScheduleError(f"{source}: 'layers' must be a list, got {_kind(raw_layers)}")
        layers = []
        for i, item in enumerate(raw_layers):
            if not isinstance(item, dict) or set(item) != {"name", "width"}:
                raise ScheduleError(
                    f"{source}: layers[{i}] must be an object with exactly 'name' and 'width'"
                )
            layers.append(LayerSpec(item["name"], item["width"]))
        raw_k = data.get("k")
        if not isinstance(raw_k, list) or not all(isinstance(r, list) for r in raw_k):
            raise ScheduleError(f"{source}: 'k' must be a list of lists of integers")
        for key in ("metrics", "provenance"):
            if not isinstance(data.get(key, {}), dict):
                raise ScheduleError(f"{source}: '{key}' must be an object")
            problem = _json_problem(data.get(key, {}), key)
            if problem is not None:
                raise ScheduleError(f"{source}: {problem}")
        ranks = _parse_ranks(data.get("ranks", {}), source)
        try:
            return cls(
                layers=tuple(layers),
                epochs=data.get("epochs"),  # type: ignore[arg-type]
                k=tuple(tuple(r) for r in raw_k),
                arch=model.get("arch", ""),
                signature=model.get("signature", ""),
                metrics=data.get("metrics", {}),
                provenance=data.get("provenance", {}),
                ranks=ranks,
            )
        except ScheduleError as exc:
            raise ScheduleError(f"{source}: {exc}") from None

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "schedule") -> KSchedule:
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise ScheduleError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=source)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "schedule") -> KSchedule:
        """Parse YAML with the safe loader (plain data only; bounded alias expansion)."""
        from midl_autok._yaml import load_yaml

        return cls.from_dict(load_yaml(text, source=source, error=ScheduleError), source=source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write JSON, or YAML when the name ends in ``.yaml``/``.yml``; atomically."""
        target = Path(path)
        text = self.to_yaml() if target.suffix.lower() in (".yaml", ".yml") else self.to_json()
        write_atomic(target, text)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KSchedule:
        """Read a schedule file (JSON, or YAML by extension); errors name the file."""
        source = str(path)
        yaml_file = Path(path).suffix.lower() in (".yaml", ".yml")
        limit = _MAX_YAML_BYTES if yaml_file else _MAX_FILE_BYTES
        text = read_text(path, limit=limit, what="schedule file", error=ScheduleError)
        if yaml_file:
            return cls.from_yaml(text, source=source)
        return cls.from_json(text, source=source)


def _parse_ranks(raw: Any, source: str) -> dict[str, tuple[int, int]]:
    """The ``ranks`` object of a schedule document as ``{layer: (gate_rank, light_rank)}``."""
    if not isinstance(raw, dict):
        raise ScheduleError(f"{source}: 'ranks' must be an object, got {_kind(raw)}")
    out: dict[str, tuple[int, int]] = {}
    for name, item in raw.items():
        if not isinstance(item, dict) or set(item) != {"gate_rank", "light_rank"}:
            raise ScheduleError(
                f"{source}: ranks.{name} must be an object with exactly 'gate_rank' and "
                "'light_rank'"
            )
        for key in ("gate_rank", "light_rank"):
            if not _is_int(item[key]):
                raise ScheduleError(
                    f"{source}: ranks.{name}.{key} must be an integer, got {item[key]!r:.40}"
                )
        out[str(name)] = (item["gate_rank"], item["light_rank"])
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_problem(value: Any, where: str) -> str | None:
    """Why ``value`` would not survive the JSON round trip exactly, or None.

    YAML gives more than JSON can hold (dates, bytes, NaN, non-string keys); a schedule that
    loads must also save, so they are refused on reading, naming the place. So is nesting
    deeper than :data:`MAX_DEPTH` (serializers downstream stop at a few hundred levels).
    """
    stack = [(value, where, 0)]
    budget = 2_000_000  # values visited (a structure that contains itself never ends)
    while stack:
        budget -= 1
        if budget < 0:
            return f"{where} holds too many values"
        item, path, depth = stack.pop()
        if item is None or isinstance(item, (str, bool, int)):
            continue
        if isinstance(item, (list, dict)) and depth >= MAX_DEPTH:
            return f"{where} is nested more than {MAX_DEPTH} levels deep; flatten it"
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{path} is {item}; only finite numbers are allowed"
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str):
                    return f"{path} has the key {key!r}; keys must be strings"
                stack.append((v, f"{path}.{key}", depth + 1))
        else:
            return (
                f"{path} must be a JSON value (a finite number, string, boolean, null, list "
                f"or object), but got {type(item).__name__}"
            )
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
