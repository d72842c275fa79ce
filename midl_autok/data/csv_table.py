"""A CSV table with a target column (e.g. UCI Adult)."""

from __future__ import annotations

import csv
import difflib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midl_autok.data._pipeline import safe_std
from midl_autok.data._source import Request, Source
from midl_autok.errors import DataError
from midl_autok.fileio import open_regular

#: Largest CSV table read (parsed rows take several times the file's size in memory).
MAX_CSV_BYTES = 256 << 20

_MISSING = "<missing>"


def _read_csv_rows(path: Path, delimiter: str, columns: list[str] | None) -> list[list[str]]:
    """Header plus data rows, every field stripped; blank lines skipped; field counts checked."""
    if len(delimiter) != 1:
        raise DataError(f"option 'delimiter' must be one character, but got {delimiter!r}")
    rows: list[list[str]] = []
    try:
        raw = open_regular(path, limit=MAX_CSV_BYTES, what="CSV file", error=DataError)
        with io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                fields = [value.strip() for value in row]
                if not any(fields):
                    continue
                width = len(columns) if columns is not None else len(rows[0]) if rows else None
                if width is not None and len(fields) != width:
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(fields)} fields but the header "
                        f"has {width}; check the delimiter (option 'delimiter') and quoting"
                    )
                rows.append(fields)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV file {path}: {exc}") from exc
    if columns is not None:
        rows.insert(0, [c.strip() for c in columns])
    if len(rows) < 2:
        raise DataError(f"{path}: the CSV table has no data rows")
    duplicates = sorted({c for c in rows[0] if rows[0].count(c) > 1})
    if duplicates:
        raise DataError(f"{path}: duplicate column names {duplicates}; rename them")
    return rows


def _as_float(values: list[str]) -> np.ndarray | None:
    """The column as float64 (missing -> nan) if every present value is a number, else None."""
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value != _MISSING:
            try:
                out[i] = float(value)
            except ValueError:
                return None
    out[~np.isfinite(out)] = np.nan
    return out


def load(req: Request) -> Source:
    assert req.path is not None
    o = req.options
    rows = _read_csv_rows(req.path, o["delimiter"], o["columns"])
    header, body = rows[0], rows[1:]
    hint = "; if the file has no header row, name the columns with options={'columns': [...]}"
    if req.target is None or req.target not in header:
        problem = "needs target=<column>" if req.target is None else f"has no column {req.target!r}"
        close = difflib.get_close_matches(req.target or "", header, n=1)
        suggestion = f"; did you mean '{close[0]}'?" if close else ""
        raise DataError(
            f"CSV table {req.path} {problem}{suggestion}; columns: {', '.join(header)}{hint}"
        )
    missing = set(o["missing_values"])
    t = header.index(req.target)
    labeled = [row for row in body if row[t] not in missing]
    dropped = len(body) - len(labeled)
    if dropped:
        warnings.warn(f"{req.path}: dropped {dropped} row(s) without a target", stacklevel=3)
    names = [c for i, c in enumerate(header) if i != t]
    if not names:
        raise DataError(f"{req.path}: the table has only the target column, no features")
    targets = [row[t] for row in labeled]
    numeric_targets = _as_float(targets)
    uniques = sorted(set(targets))
    if numeric_targets is not None:
        uniques.sort(key=float)
    if len(uniques) < 2:
        raise DataError(f"{req.path}: target column {req.target!r} has {len(uniques)} class(es)")
    index = {label: i for i, label in enumerate(uniques)}
    y = np.array([index[label] for label in targets], dtype=np.int64)

    numeric: dict[str, np.ndarray] = {}
    categorical: dict[str, np.ndarray] = {}
    for name in names:
        col = header.index(name)
        values = [_MISSING if row[col] in missing else row[col] for row in labeled]
        as_float = _as_float(values)
        if as_float is not None:
            numeric[name] = as_float
        else:
            categorical[name] = np.array(values, dtype=object)

    def featurize(
        tr: np.ndarray, va: np.ndarray, te: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        blocks: list[list[np.ndarray]] = [[], [], []]
        feature_names: list[str] = []
        means, stds, categories = {}, {}, {}
        for name, values in numeric.items():
            present = values[tr][~np.isnan(values[tr])]
            mean = float(present.mean()) if present.size else 0.0
            filled = np.where(np.isnan(values), mean, values)
            std = float(safe_std(np.array([filled[tr].std()]), np.array([mean]))[0])
            means[name], stds[name] = mean, std
            for part, rows_ in zip(blocks, (tr, va, te), strict=True):
                part.append(((filled[rows_] - mean) / std)[:, None])
            feature_names.append(name)
        for name, values in categorical.items():
            cats = sorted(set(values[tr].tolist()))
            lookup = {cat: i for i, cat in enumerate(cats)}
            for part, rows_ in zip(blocks, (tr, va, te), strict=True):
                codes = np.array([lookup.get(v, -1) for v in values[rows_]], dtype=np.int64)
                onehot = np.zeros((len(rows_), len(cats)))
                known = np.flatnonzero(codes >= 0)
                onehot[known, codes[known]] = 1.0
                part.append(onehot)
            categories[name] = cats
            feature_names += [f"{name}={cat}" for cat in cats]
        tensors = [torch.from_numpy(np.hstack(b).astype(np.float32)) for b in blocks]
        extra = {
            "feature_names": feature_names,
            "numeric_columns": list(numeric),
            "categorical_columns": categories,
            "standardization": {"mean": means, "std": stds},
        }
        return tensors[0], tensors[1], tensors[2], extra

    return Source(
        kind="vector",
        num_classes=len(uniques),
        x=np.arange(len(labeled)),  # row ids; featurize reads the parsed columns
        y=y,
        featurize=featurize,
        info={
            "source": str(req.path),
            "target": req.target,
            "classes": uniques,
            "rows_dropped_missing_target": dropped,
        },
    )
