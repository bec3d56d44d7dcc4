"""Decode a training set once into memory-mapped arrays, reused across epochs, workers and runs.

Decoding a 2K PNG costs ~50-100 ms; a training step on a patch batch can be shorter than that, so
PNG decoding must not sit in the hot loop (the thesis trained "directly from .png files" and the EDSR
code base converts to ``.npy`` for the same reason). :func:`prepare_cache` writes, for every image
of an :class:`~attrsr.data.SRDataset`, ``hr_NNNNN.npy`` and ``lr_NNNNN.npy`` (H×W×3 ``uint8``; LR from
the dataset's LR files, or made once with MATLAB bicubic from the whole ``modcrop``-ped HR image,
exactly as the benchmark LR files are made). :class:`DecodedImages` opens them with
``np.load(mmap_mode="r")``: a crop touches only the pages it needs, the OS page cache shares them
between DataLoader workers, and nothing is decoded again.

The cache folder is named by a hash of the sources (paths, sizes, mtimes), the scale and the LR
mode, so a changed file or setting makes a new cache rather than silently reusing a stale one. It is
built in a temporary folder and renamed into place, so an interrupted build leaves nothing that a
later run would trust. Images are stored as 8-bit (16-bit HR files are rounded to 8 bits).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from attrsr.data.datasets import SRDataset
from attrsr.errors import AttrsrError
from attrsr.images import to_uint8

_VERSION = 1


def default_cache_root() -> Path:
    return Path(os.environ.get("ATTRSR_CACHE") or Path.home() / ".cache" / "attrsr") / "decoded"


def cache_key(ds: SRDataset) -> str:
    """Hash of what the decoded arrays depend on: sources, their sizes/mtimes, scale, LR source.
    Paths enter resolved, so one folder spelled two ways (``../shared/data`` or its absolute path)
    shares one cache."""
    items = []
    for e in ds.entries:
        row = [e.name]
        for p in (e.hr, e.lr):
            if isinstance(p, Path):
                st = p.stat()
                row += [str(p.resolve()), st.st_size, st.st_mtime_ns]
            else:
                row.append(str(p))
        items.append(row)
    blob = json.dumps({"v": _VERSION, "scale": ds.scale, "layout": ds.layout, "items": items})
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class DecodedImages:
    """The decoded HR/LR arrays of one training set (read-only memory maps, opened lazily).

    ``hr(i)``: H×W×3 uint8, ``lr(i)``: (H/s)×(W/s)×3 uint8. Safe to pickle into DataLoader workers:
    the maps are reopened in each process on first use.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        meta = json.loads((self.root / "meta.json").read_text())
        self.names: list[str] = meta["names"]
        self.scale: int = meta["scale"]
        self.lr_sizes: list[tuple[int, int]] = [tuple(s) for s in meta["lr_sizes"]]
        self._maps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def _open(self, kind: str, i: int) -> np.ndarray:
        key = f"{kind}_{i:05d}"
        arr = self._maps.get(key)
        if arr is None:
            arr = self._maps[key] = np.load(self.root / f"{key}.npy", mmap_mode="r")
        return arr

    def hr(self, i: int) -> np.ndarray:
        return self._open("hr", i)

    def lr(self, i: int) -> np.ndarray:
        return self._open("lr", i)


def cache_dir_for(ds: SRDataset, cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / f"{ds.name}-x{ds.scale}-{cache_key(ds)}"


def prepare_cache(ds: SRDataset, cache_root: str | Path | None = None, *, build: bool = True, progress: bool = True) -> DecodedImages:
    """Open the decoded cache of ``ds``, building it first when missing (and ``build``)."""
    target = cache_dir_for(ds, cache_root)
    if (target / "meta.json").is_file():
        return DecodedImages(target)
    if not build:
        raise AttrsrError(f"{target}: decoded-image cache missing (it should have been built by local rank 0)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttrsrError(f"{target.parent}: cannot create the image cache ({exc}); set data.cache_dir") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _decode_all(ds, staging, progress)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "meta.json").is_file():  # not a concurrent build finishing first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return DecodedImages(target)


def _decode_all(ds: SRDataset, folder: Path, progress: bool) -> None:
    from attrsr.progress import progress_bar

    lr_sizes = []
    for i in progress_bar(range(len(ds)), enabled=progress, desc=f"decoding {ds.name} (once)", unit="img", leave=False):
        pair = ds[i]  # validates sizes; makes LR with MATLAB bicubic when the dataset has no LR files
        lr = to_uint8(pair.lr)
        np.save(folder / f"hr_{i:05d}.npy", to_uint8(pair.hr))
        np.save(folder / f"lr_{i:05d}.npy", lr)
        lr_sizes.append(lr.shape[:2])
    meta = {"version": _VERSION, "dataset": ds.name, "layout": ds.layout, "scale": ds.scale, "names": ds.names, "lr_sizes": lr_sizes}
    (folder / "meta.json").write_text(json.dumps(meta))
