"""Two studies side by side: hypervolume at equal trial counts, and which front dominates where.

``midl-autok studies --compare A B`` prints it. The trial counts are the studies' first N
trials in the order they ran (any state: a failed trial used its share of the budget too),
and each hypervolume is the study's own normalized one (its fixed reference point, the
:data:`~midl_autok.results.hypervolume.IDEAL` corner), so two searches of one experiment
compare at equal cost. Dominance is judged on the two quantities every study records,
validation accuracy (higher is better) and the inference-FLOPs ratio to dense (lower is
better), so studies of different models or objectives compare too; the "where" is a split of
the FLOPs-ratio axis into bands, each won by the study with the better accuracy there.

A study searched with ``--confirm N`` is compared by its search trials only (its confirmation
retrainings are not search budget), and its front by the confirmed means (a front schedule's
validation accuracy averaged over its seeds, as ``pareto`` and ``export`` pick): a lucky
single run does not win a band. ``values`` says which each study's front used.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from midl_autok.metrics import INFERENCE_FLOPS_RATIO, VAL_ACCURACY
from midl_autok.results.confirmed import is_confirmation

if TYPE_CHECKING:
    from midl_autok.results.record import StudyRecord

__all__ = ["BANDS", "compare_studies", "trial_counts"]

#: Edges of the FLOPs-ratio bands of the "where" table (the last band is open).
BANDS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def trial_counts(longest: int) -> list[int]:
    """5, 10, 20, 30, ... up to ``longest`` (and ``longest`` itself)."""
    steps = [n for n in (5, 10) if n < longest]
    steps += list(range(20, longest, 10))
    return [*steps, longest] if longest > 0 else []


def _point(record: StudyRecord, trial: Any) -> tuple[float, float] | None:
    """(validation accuracy, FLOPs ratio): the accuracy's mean over the seeds when confirmed
    (the ratio is the schedule's, the same on every seed)."""
    acc, ratio = trial.user_attrs.get(VAL_ACCURACY), trial.user_attrs.get(INFERENCE_FLOPS_RATIO)
    confirmed = record.confirmed(trial)
    if confirmed is not None:
        acc = confirmed.mean.get(VAL_ACCURACY, acc)
    if isinstance(acc, int | float) and isinstance(ratio, int | float):
        return float(acc), float(ratio)
    return None


def _front(record: StudyRecord) -> list[tuple[float, float]]:
    confirmed = bool(record.confirmed())
    points = (_point(record, t) for t in record.front(means=confirmed))
    return [p for p in points if p is not None]


def _dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
    return p[0] >= q[0] and p[1] <= q[1] and p != q


def _band(ratio: float) -> int:
    """Index of the FLOPs-ratio band of :data:`BANDS` holding ``ratio`` (the last is open)."""
    return max(0, bisect.bisect_right(BANDS, ratio) - 1)


def _band_label(index: int) -> str:
    lo = BANDS[index]
    return f"{lo:g}-{BANDS[index + 1]:g}" if index + 1 < len(BANDS) else f">= {lo:g}"


def compare_studies(a: StudyRecord, b: StudyRecord) -> dict[str, Any]:
    """The comparison as JSON data (see the module's docstring)."""
    fronts = {r.name: _front(r) for r in (a, b)}
    feasible = {r.name: r.feasible() for r in (a, b)}
    searched = {r.name: [t for t in r.trials if not is_confirmation(t)] for r in (a, b)}
    hv_rows = []
    for n in trial_counts(max(len(searched[a.name]), len(searched[b.name]))):
        row: dict[str, Any] = {"trials": n}
        for r in (a, b):
            first = {t.number for t in searched[r.name][:n]}
            pool = [t for t in feasible[r.name] if t.number in first]
            enough = len(searched[r.name]) >= n
            row[r.name] = r.normalized_hypervolume(pool) if enough else None
        hv_rows.append(row)
    dominated = {}
    for mine, other in ((a.name, b.name), (b.name, a.name)):
        points = fronts[mine]
        beaten = [p for p in points if any(_dominates(q, p) for q in fronts[other])]
        dominated[mine] = {"front": len(points), "dominated_by_other": len(beaten)}
    bands: dict[int, dict[str, float | None]] = {}
    for r in (a, b):
        for acc, ratio in fronts[r.name]:
            best = bands.setdefault(_band(ratio), {a.name: None, b.name: None})
            held = best[r.name]
            best[r.name] = acc if held is None else max(acc, held)
    where = [
        {"flops_ratio": _band_label(i), **bands[i], "better": _better(bands[i])}
        for i in sorted(bands)
    ]
    return {
        "studies": [a.name, b.name],
        "values": {r.name: "confirmed means" if r.confirmed() else "single runs" for r in (a, b)},
        "hypervolume_normalized": hv_rows,
        "front_dominance": dominated,
        "by_flops_ratio": where,
    }


def _better(accs: dict[str, float | None]) -> str:
    """The study with the higher accuracy in a band ("tie" when equal)."""
    got = sorted((v, name) for name, v in accs.items() if v is not None)
    if len(got) == 1:
        return got[0][1]
    return "tie" if got[0][0] == got[1][0] else got[-1][1]
