"""Tables as lists of dict rows: CSV, markdown, pivots. Generic (no attrsr types).

A *row* is a flat ``dict`` of column → value (str, int, float, None). Columns default to the keys
in first-seen order across all rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from attrsr.fileio import write_text_atomic


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Keys of all rows, in first-seen order."""
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def format_value(v: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` significant decimals, None/NaN as empty, the rest with ``str``."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.{digits}g}"
    return str(v)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text (full precision numbers; None → empty cell)."""
    cols = list(columns or columns_of(rows))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write rows as CSV, atomically."""
    return write_text_atomic(path, to_csv(rows, columns))


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table; numeric columns right-aligned."""
    cols = list(columns or columns_of(rows))
    numeric = {c: all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in cols}
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" if numeric[c] else ":---" for c in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c), digits).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def pivot(rows: Sequence[dict[str, Any]], index: str, column: str, value: str) -> list[dict[str, Any]]:
    """Long → wide: one row per distinct ``index`` value, one column per distinct ``column`` value.

    Cells hold ``value`` (the last one seen when a pair repeats). Order is first-seen.
    """
    out: dict[Any, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r[index], {index: r[index]})[str(r[column])] = r.get(value)
    return list(out.values())


def mean_by(rows: Sequence[dict[str, Any]], key: str | Sequence[str], value: str) -> list[dict[str, Any]]:
    """Mean (and count) of ``value`` per distinct ``key`` (one column or several); NaN/None skipped."""
    keys = [key] if isinstance(key, str) else list(key)
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        v = r.get(value)
        k = tuple(r[c] for c in keys)
        acc.setdefault(k, [])
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            acc[k].append(float(v))
    return [
        {**dict(zip(keys, k)), value: (sum(vs) / len(vs) if vs else None), "n": len(vs)} for k, vs in acc.items()
    ]
