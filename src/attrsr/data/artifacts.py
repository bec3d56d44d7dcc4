"""Per-image artifacts a method computes once (saliency maps of every training image, sub-image
scores, …), stored memory-mapped next to the decoded-image cache and reused by later runs.

    arrays = cached_per_image(images, "cam", {"weights": weights_hash(model), "steps": 20}, compute)
    arrays[i]          # read-only memory map of image i's array

The folder is ``<decoded cache>/artifacts/<name>-<digest>``: the decoded cache is already keyed by
the training images' content, and the digest covers everything else the arrays depend on (the
``key`` a method passes: model weights hash, parameters, code version). So a changed model or
parameter computes a new set; the same ones reuse the old set, in this run or any later one.

Each image's array is written atomically (temporary file + rename) as soon as it is computed, so a
killed build resumes where it stopped: only missing images are computed again. ``done.json`` marks a
complete set. Inside one run, one process builds and the trainer has its other ranks wait
(:meth:`MethodContext.cached_per_image`). Separate runs that need the same set at the same time (the
parallel jobs of ``attrsr experiment``) share the work: each holds an exclusive ``flock`` on a
``.claim-<i>`` file while computing image ``i``, skips images another process holds, and then waits
for those (a dead builder's locks vanish with it, so its images are taken over).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attrsr.data.cache import DecodedImages
from attrsr.errors import AttrsrError

_VERSION = 1


def weights_hash(model_or_state: Any) -> str:
    """A content hash of a network's weights (names, dtypes, shapes, values) for artifact keys."""
    import torch

    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    h = hashlib.sha1()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def artifact_dir(images: DecodedImages, name: str, key: dict[str, Any]) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"artifact name {name!r}: use a plain folder name")
    try:
        blob = json.dumps({"v": _VERSION, "name": name, "key": key}, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"artifact {name!r}: the key must be JSON data (hash tensors with weights_hash): {exc}") from None
    return images.root / "artifacts" / f"{name}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


class PerImageArrays(Sequence[np.ndarray]):
    """The arrays of a complete artifact set, opened lazily as read-only memory maps (picklable into
    DataLoader workers like :class:`DecodedImages`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "done.json").read_text())
        self.n: int = meta["n"]
        self.key: dict[str, Any] = meta["key"]
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        arr = self._maps.get(i)
        if arr is None:
            arr = self._maps[i] = np.load(self.folder / f"{i:05d}.npy", mmap_mode="r")
        return arr


def cached_per_image(
    images: DecodedImages,
    name: str,
    key: dict[str, Any],
    compute: Callable[[int], np.ndarray],
    *,
    build: bool = True,
    progress: bool = True,
) -> PerImageArrays:
    """``compute(i)`` for every training image ``i``, computed once and then read from disk.

    ``key``: JSON data naming everything the arrays depend on besides the images. ``build=False``
    only opens a complete set (for processes that waited while another built it).
    """
    from attrsr.progress import progress_bar

    folder = artifact_dir(images, name, key)
    if (folder / "done.json").is_file():
        return PerImageArrays(folder)
    if not build:
        raise AttrsrError(f"{folder}: artifact {name!r} missing (it should have been built by local rank 0)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AttrsrError(f"{folder}: cannot create the artifact cache ({exc}); set data.cache_dir") from None
    n = len(images)
    todo = [i for i in range(n) if not (folder / f"{i:05d}.npy").is_file()]
    bar = progress_bar(total=n, initial=n - len(todo), desc=f"{name} (once per image)", unit="img", enabled=progress, leave=False)
    with bar:
        while todo:
            held_elsewhere = []
            for i in todo:
                out = folder / f"{i:05d}.npy"
                if out.is_file():
                    bar.update(1)
                    continue
                claim = _claim(folder, i)
                if claim is None:
                    held_elsewhere.append(i)
                    continue
                try:
                    if not out.is_file():  # finished by another process between our check and our claim
                        _save_atomic(out, np.asarray(compute(i)))
                finally:
                    _release(folder, i, claim)
                bar.update(1)
            if held_elsewhere:
                time.sleep(_CLAIM_POLL_S)
            todo = held_elsewhere
    (folder / ".done.tmp").write_text(json.dumps({"version": _VERSION, "name": name, "n": n, "key": key, "images": images.names}))
    os.replace(folder / ".done.tmp", folder / "done.json")
    return PerImageArrays(folder)


_CLAIM_POLL_S = 0.5


def _claim(folder: Path, i: int) -> int | None:
    """Claim image ``i``: a file descriptor holding an exclusive ``flock`` on ``.claim-<i>``, or None
    while another process holds it. The kernel drops the lock when its holder dies, so a killed
    builder's images are taken over without any staleness guess."""
    fd = os.open(folder / f".claim-{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(folder: Path, i: int, fd: int) -> None:
    (folder / f".claim-{i:05d}").unlink(missing_ok=True)
    os.close(fd)


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npy", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
