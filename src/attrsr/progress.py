"""Progress bars: tqdm when shown, a bar that starts no thread when hidden.

tqdm starts its monitor thread in ``__new__``, also for a bar created with ``disable=True``, and a
disabled bar never tells the monitor that it is gone — so the thread runs until the process ends.
In a DDP rank (progress is rank 0's) that thread would outlive the process group's teardown; the
hidden bar below keeps tqdm's interface with the monitor switched off for its class only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)`` when ``enabled``, else an inert bar with the same methods."""
    from tqdm.auto import tqdm

    if enabled:
        return tqdm(iterable, **kwargs)
    return _hidden_class(tqdm)(iterable, disable=True, **kwargs)


_HIDDEN: dict[type, type] = {}


def _hidden_class(base: type) -> type:
    if base not in _HIDDEN:
        _HIDDEN[base] = type(f"Hidden{base.__name__}", (base,), {"monitor_interval": 0})
    return _HIDDEN[base]
