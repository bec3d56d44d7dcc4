"""Atomic file writes, shared by every layer that publishes files (images, reports, checkpoints).

A file is written to a temporary name in the target folder, flushed and ``fsync``-ed, renamed over
the target (atomic on POSIX), and the folder is ``fsync``-ed so the rename itself is durable. A crash
— even SIGKILL or power loss — leaves either the previous complete file or the new one, never a
truncated one; readers never see half a JSON report or checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# mkstemp creates files 0600; published files get the usual permissions (0666 minus the umask).
_FILE_MODE = 0o666 & ~_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via temp file + fsync + rename (+ fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Strict JSON: non-finite floats (the PSNR of an exact match is ``inf``) are written as ``null``,
    since ``Infinity``/``NaN`` are not JSON and strict parsers reject the whole file."""
    return write_text_atomic(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into ``out_dir``, on error delete it.

    Folders created for ``out_dir``'s parents are removed again on error if they are still empty.
    """
    out_dir = Path(out_dir)
    created = []
    for parent in reversed(out_dir.absolute().parents):
        if not parent.exists():
            created.append(parent)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield stage
        out_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted(p for p in stage.rglob("*") if p.is_file()):
            dest = out_dir / src.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)
