"""The metrics log of a run: ``metrics.jsonl`` (everything), ``train.csv`` and ``val.csv``, and
TensorBoard event files when ``tensorboard`` is installed. Written by rank 0 only.

On resume, rows logged after the checkpoint's step (by the run that crashed) are dropped, so the
log reads as one uninterrupted run; a fresh run starts new files (an earlier attempt in the same
folder that stopped before its first checkpoint leaves no rows behind).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from attrsr.fileio import write_bytes_atomic


class RunLog:
    def __init__(self, folder: Path, *, resume_step: int | None = None, enabled: bool = True) -> None:
        self.folder = folder
        self.enabled = enabled
        self.jsonl = folder / "metrics.jsonl"
        self.csv = {"train": folder / "train.csv", "val": folder / "val.csv"}
        self._columns: dict[str, list[str]] = {}
        self._tb = None
        if not enabled:
            return
        if resume_step is not None:
            self._truncate(resume_step)
        else:  # a fresh run: rows of an earlier attempt here (stopped before its first checkpoint) go
            for path in (self.jsonl, *self.csv.values()):
                path.unlink(missing_ok=True)
        try:  # optional: torch.utils.tensorboard needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(folder / "tb"), purge_step=resume_step)
        except Exception:
            self._tb = None

    def write(self, kind: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps({"kind": kind, **row}) + "\n")
        path = self.csv.get(kind)
        if path is not None:
            new = not path.exists() or path.stat().st_size == 0
            if kind not in self._columns:
                self._columns[kind] = _header(path) if not new else list(row)
            extra = [k for k in row if k not in self._columns[kind]]
            if extra and not new:  # a method's validation row with its own metrics: widen the table
                self._columns[kind] += extra
                _rewrite_with_columns(path, self._columns[kind])
            elif extra:
                self._columns[kind] += extra
            with path.open("a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self._columns[kind], extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
        if self._tb is not None:
            step = row.get("step", 0)
            prefix = f"{kind}/{row['dataset']}/" if "dataset" in row else f"{kind}/"
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    def _truncate(self, step: int) -> None:
        if self.jsonl.exists():
            keep = [ln for ln in _complete_lines(self.jsonl) if _step_ok(lambda: json.loads(ln)["step"], step)]
            write_bytes_atomic(self.jsonl, "".join(ln + "\n" for ln in keep).encode())
        for path in self.csv.values():
            rows = list(csv.reader(_complete_lines(path))) if path.exists() else []
            if rows:
                head, body = rows[0], rows[1:]
                i = head.index("step")
                buf = io.StringIO()
                csv.writer(buf).writerows([head] + [r for r in body if len(r) == len(head) and _step_ok(lambda: r[i], step)])
                write_bytes_atomic(path, buf.getvalue().encode())


def _rewrite_with_columns(path: Path, columns: list[str]) -> None:
    """Rewrite a CSV log under a wider header (earlier rows get empty cells in the new columns)."""
    rows = list(csv.DictReader(_complete_lines(path)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    write_bytes_atomic(path, buf.getvalue().encode())


def _complete_lines(path: Path) -> list[str]:
    """Lines of a log file, without a last line that a crash cut short (no newline yet)."""
    text = path.read_text()
    lines = text.splitlines()
    return lines if text.endswith("\n") else lines[:-1]


def _header(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        return next(csv.reader(fh), [])


def _step_ok(get_step, limit: int) -> bool:
    """Whether a logged row belongs to steps <= limit; a row cut short by a crash does not."""
    try:
        return int(get_step()) <= limit
    except (ValueError, KeyError, IndexError, TypeError):
        return False
