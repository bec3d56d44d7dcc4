"""SIGTERM handled like Ctrl-C (SIGINT) while outputs are being staged.

Python turns SIGINT into ``KeyboardInterrupt``, so ``try/except BaseException`` clean-ups run; SIGTERM
(``kill``, a batch scheduler, ``timeout``) kills the process outright and leaves staging folders and
temporary files behind. :func:`sigterm_raises` makes SIGTERM raise :class:`Terminated` for the
duration of a block, so the same clean-ups run; the CLI turns it into ``terminated`` and exit 143.

The handler is installed only around staging and atomic writes, not for a whole command: a process
blocked in a C call (a DDP collective waiting for a dead peer) acts on a Python handler only when it
returns, and would then outlive the launcher's SIGTERM instead of stopping at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(BaseException):
    """SIGTERM arrived while outputs were staged (a BaseException, like KeyboardInterrupt)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread, default handler only;
    a handler someone else installed — or an outer block's — is left alone)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
