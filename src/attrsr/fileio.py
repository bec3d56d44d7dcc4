"""Atomic file writes, shared by every layer that publishes files (images, reports, checkpoints).

A file is written to a temporary name in the target folder, flushed and ``fsync``-ed, renamed over
the target (atomic on POSIX), and the folder is ``fsync``-ed so the rename itself is durable. A crash
— even SIGKILL or power loss — leaves either the previous complete file or the new one, never a
truncated one; readers never see half a JSON report or checkpoint.

:func:`check_output` is the one check every command runs on its output paths before any work, so an
unwritable destination fails in a second with one line instead of after the computation.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import weakref
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from attrsr.errors import AttrsrError
from attrsr.interrupts import sigterm_raises


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
    with sigterm_raises():  # so that SIGTERM, like Ctrl-C, removes the temporary file
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


# --------------------------------------------------------------------------------------------
# Output paths, checked before any work

OutputKind = Literal["file", "folder", "staged"]


def check_output(path: str | Path, what: str, kind: OutputKind = "file") -> Path:
    """Refuse an output path that cannot be written, with one line naming it; creates nothing.

    ``kind``: ``"file"`` — one file, written atomically (needs a writable folder to hold it);
    ``"folder"`` — a folder whose files are written in place (a run folder);
    ``"staged"`` — a folder published by :func:`staged_dir` (the staging folder is made beside it,
    so its parent must be writable too). ``what`` names the option in the message (``--json``).

    Writability is probed by creating and removing a temporary file, not judged from permission
    bits: root ignores those, while read-only mounts and immutable folders refuse even root.
    """
    shown = Path(path)
    target = shown.absolute()
    if target.exists():
        if kind == "file" and target.is_dir():
            raise AttrsrError(f"{shown}: {what} names a folder; give a file path such as {shown / 'results.json'}")
        if kind != "file" and not target.is_dir():
            raise AttrsrError(f"{shown}: {what} must be a folder, but this is a file; choose another path")
    probes = []
    if kind != "file" and target.is_dir():
        probes.append(target)
    if kind != "folder" or not target.exists():
        probes.append(next(p for p in target.parents if p.exists()))
    for folder in probes:
        if not folder.is_dir():
            raise AttrsrError(f"{shown}: cannot create {what} there, {folder} is a file; choose another path")
        try:
            fd, probe = tempfile.mkstemp(prefix=".attrsr-write-test-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise AttrsrError(
                f"{shown}: cannot write {what} there, {folder} is not writable ({exc.strerror}); "
                "choose another path or make the folder writable"
            ) from None
    return shown


# --------------------------------------------------------------------------------------------
# Staged folders

_STAGE_OWNER = re.compile(r"\.partial-(?P<host>.+)-(?P<pid>\d+)-[^-]+$")


def _stage_prefix(out_dir: Path) -> str:
    # Host and PID in the name let a later run tell a dead process's leftovers from a live one's.
    return f".{out_dir.name}.partial-{platform.node() or 'host'}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_stages(out_dir: str | Path) -> list[Path]:
    """Remove staging folders of ``out_dir`` left by processes of this host that are gone (SIGKILL,
    power loss); returns what was removed. A live process's staging folder, another host's (on a
    shared file system) and names without an owner are left alone."""
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    host = platform.node() or "host"
    for stage in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.partial-*"):
        m = _STAGE_OWNER.search(stage.name)
        if m is None or m["host"] != host or not stage.is_dir() or _pid_alive(int(m["pid"])):
            continue
        shutil.rmtree(stage, ignore_errors=True)
        removed.append(stage)
    return removed


@contextlib.contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success move its files into ``out_dir``, on error delete it.

    Folders created for ``out_dir``'s parents are removed again on error if they are still empty.
    SIGTERM inside the block is handled like Ctrl-C (the staging folder is removed); staging folders
    that killed processes left behind are swept first.
    """
    out_dir = Path(out_dir)
    created = []
    for parent in reversed(out_dir.absolute().parents):
        if not parent.exists():
            created.append(parent)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_stages(out_dir)
    with sigterm_raises():
        stage = Path(tempfile.mkdtemp(prefix=_stage_prefix(out_dir), dir=out_dir.parent))
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


# --------------------------------------------------------------------------------------------
# Folder locks


def _close_inherited_locks() -> None:
    # In a forked child (a DataLoader worker): close the inherited descriptors of the parent's locks.
    # flock belongs to the open file description, so a child still holding a copy would keep the
    # folder locked after the parent died (SIGKILL) until the child noticed and exited — a resume
    # started at once was refused. Closing (never LOCK_UN, which would unlock the parent) is safe.
    for lock in list(_HELD):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None


_HELD: "weakref.WeakSet[FolderLock]" = weakref.WeakSet()
os.register_at_fork(after_in_child=_close_inherited_locks)


class FolderLock:
    """An exclusive OS lock (``flock``) on ``<folder>/.lock`` that records the holder's PID.

    The kernel drops the lock when the holder exits or crashes (even SIGKILL), so a stale lock file
    never blocks anyone; the next holder takes it over. Creating the folder is part of acquiring:
    :meth:`release` with ``remove_created=True`` removes the folders created here again (if empty),
    so a run that fails while starting leaves nothing behind.
    """

    NAME = ".lock"

    def __init__(self, folder: Path, fd: int, created: list[Path]) -> None:
        self.folder = folder
        self.path = folder / self.NAME
        self._fd: int | None = fd
        self._created = created
        self._owner = os.getpid()  # a forked child (a DataLoader worker) shares the lock, never removes it
        _HELD.add(self)

    @classmethod
    def acquire(cls, folder: str | Path, what: str = "this folder") -> "FolderLock":
        """Lock ``folder`` (created if missing) or raise :class:`AttrsrError` naming the holder's PID."""
        import fcntl

        folder = Path(folder)
        created = [p for p in (folder.absolute(), *folder.absolute().parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / cls.NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise AttrsrError(
                    f"{folder}: {what} is in use by another process (PID {holder}); "
                    "wait for it to finish or stop it, or choose another folder"
                ) from None
            # A holder removes the file on release: if that happened between our open and flock,
            # we hold a lock on a deleted file and must start again on the new one.
            try:
                st, now = os.fstat(fd), os.stat(path)
                current = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(folder, fd, sorted(created, key=lambda p: len(p.parts), reverse=True))

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def created_folder(self) -> bool:
        """Whether acquiring created the locked folder itself (so everything in it is the holder's)."""
        return self.folder.absolute() in self._created

    def release(self, *, remove_created: bool = False) -> None:
        """Unlock (idempotent). The lock file is removed while still locked, so no other process can
        be left holding a lock on a file that is gone."""
        if self._fd is None:
            return
        if os.getpid() != self._owner:
            os.close(self._fd)
            self._fd = None
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        if remove_created:
            for d in self._created:  # deepest first; a folder that holds anything stays
                with contextlib.suppress(OSError):
                    d.rmdir()

    def __del__(self) -> None:  # a lock object that is dropped unreleased (a Trainer never fitted)
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
