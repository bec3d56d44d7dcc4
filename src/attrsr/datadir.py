"""The shared data folder, and bare names resolved inside it.

Every command and the Python API find benchmark folders, images and pretrained weights the same
way: a path that exists is used as given; a relative path that does not exist is looked up in the
data folder — ``$ATTRSR_DATA``, or ``../shared/data`` relative to the working directory when the
variable is unset or empty:

* datasets and images under ``benchmarks/`` (``Set5``, ``LAM_test_images/1.png``);
* checkpoints under ``weights/`` and one folder below it (``PANx4_DF2K.pth`` →
  ``weights/pan/PANx4_DF2K.pth``).
"""

from __future__ import annotations

import os
from pathlib import Path

from attrsr.errors import AttrsrError

ENV = "ATTRSR_DATA"
DEFAULT = Path("..") / "shared" / "data"
KINDS = ("benchmarks", "weights")


def data_root() -> Path:
    """``$ATTRSR_DATA``, or ``../shared/data`` (relative to the working directory) when unset or empty."""
    return Path(os.environ.get(ENV) or DEFAULT)


def resolve(path: str | Path, kind: str) -> Path:
    """``path`` itself when it exists (or is absolute); else its match under ``data_root()/kind``.

    ``kind`` is ``"benchmarks"`` or ``"weights"``; for weights, the folders one level below
    ``weights/`` are searched too (the shared folder keeps one folder per family). When nothing
    matches, ``path`` is returned unchanged so that the caller reports it as not found, adding
    :func:`looked_in` to its message. Several matches are an error naming them.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute() or str(path) == "":
        return given
    base = data_root() / kind
    direct = base / given
    if direct.exists():
        return direct
    if kind == "weights" and base.is_dir():
        found = sorted(base.glob(f"*/{given}"))
        if len(found) > 1:
            raise AttrsrError(
                f"{path}: several files of that name under {base} ({', '.join(str(p) for p in found)}); "
                "pass the path of the one you mean"
            )
        if found:
            return found[0]
    return given


def looked_in(path: str | Path, kind: str) -> str:
    """A hint for a not-found message: where a relative ``path`` was also looked for."""
    given = Path(path).expanduser()
    if given.is_absolute():
        return ""
    where = data_root() / kind
    extra = " and the folders in it" if kind == "weights" else ""
    if os.environ.get(ENV):
        return f" (also looked in {where}{extra}, from ${ENV})"
    return f" (also looked in {where}{extra}: ${ENV} is not set; set it to the shared data folder)"
