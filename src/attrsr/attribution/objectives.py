"""Window objectives: scalar functions of the SR output that an attribution method explains.

A *window* (LAM's "patch of interest") is given in SR pixels by its top-left corner — ``x`` is the
column, ``y`` the row — and its side ``size``. An *objective* maps an SR batch (B,3,H,W) to one
number per sample (B,); attribution methods differentiate it w.r.t. the LR input.

* :func:`gradient_detector` — LAM's detector (METHODS.md §1.3): the summed gradient magnitude of the
  SR output inside the window.
* :func:`image_detector` — the same detector over the whole output (no window; CAM's saliency for ADD).
* :func:`window_sum` — the thesis's objective (METHODS.md §4): the plain pixel sum over the window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch

from attrsr.errors import AttrsrError

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Window:
    """A square window on the SR image: top-left column ``x``, row ``y`` and side ``size`` (SR pixels)."""

    x: int
    y: int
    size: int = 16

    @classmethod
    def coerce(cls, obj: Any) -> Window:
        """Accept a Window, ``(x, y)``, ``(x, y, size)``, a mapping with x/y[/size], or an object with
        ``.x``/``.y`` (and optionally ``.size``)."""
        if isinstance(obj, Window):
            return obj
        try:
            if isinstance(obj, Mapping):
                vals = (obj["x"], obj["y"], obj.get("size", 16))
            elif isinstance(obj, (tuple, list)):
                if len(obj) not in (2, 3):
                    raise ValueError
                vals = (obj[0], obj[1], 16) if len(obj) == 2 else tuple(obj)
            elif hasattr(obj, "x") and hasattr(obj, "y"):
                vals = (obj.x, obj.y, getattr(obj, "size", 16))
            else:
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise AttrsrError(
                f"window {obj!r} not understood; give (x, y) or (x, y, size) in SR pixels, x = column, y = row"
            ) from None
        ints = []
        for name, v in zip(("x", "y", "size"), vals):
            try:
                whole = not isinstance(v, bool) and float(v).is_integer()
            except (TypeError, ValueError):
                whole = False
            if not whole:
                raise AttrsrError(f"window {name}={v!r} must be a whole number of SR pixels")
            ints.append(int(v))
        return cls(*ints)

    def check(self, sr_hw: tuple[int, int], *, margin: int = 0, what: str = "window") -> Window:
        """Raise :class:`AttrsrError` unless the window lies inside an SR image of size ``sr_hw``.

        ``margin`` extra pixels are needed below and to the right (1 for the gradient detector, whose
        differences reach one pixel past the window).
        """
        h, w = sr_hw
        if self.size < 2:
            raise AttrsrError(f"{what} size {self.size} is too small; use a size of at least 2 SR pixels (default 16)")
        if self.x < 0 or self.y < 0:
            raise AttrsrError(f"{what} corner (x={self.x}, y={self.y}) is negative; x (column) and y (row) start at 0")
        right, bottom = self.x + self.size + margin, self.y + self.size + margin
        if right > w or bottom > h:
            extra = f" plus {margin} pixel for the gradient detector" if margin else ""
            raise AttrsrError(
                f"{what} (x={self.x}, y={self.y}, size={self.size}){extra} reaches column {right - 1}, row "
                f"{bottom - 1}, outside the {w}×{h} (width×height) SR image; use x ≤ {w - self.size - margin} "
                f"and y ≤ {h - self.size - margin}"
            )
        return self

    def lr_box(self, scale: int) -> tuple[int, int, int, int]:
        """The window in LR pixels as (x0, y0, x1, y1), x1/y1 exclusive, rounded outwards."""
        return (self.x // scale, self.y // scale, -(-(self.x + self.size) // scale), -(-(self.y + self.size) // scale))

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "size": self.size}


def gradient_detector(sr: torch.Tensor, window: Window) -> torch.Tensor:
    """LAM's detector D: (B,C,H,W) → (B,).

    Squared forward differences V (rows) and Hd (columns) are combined on the common (H−1)×(W−1)
    grid as sqrt(V + Hd) per channel and summed over channels and the window's rows y..y+s−1 and
    columns x..x+s−1. Only the (s+1)×(s+1) crop the window depends on is touched, which gives the
    same numbers as differencing the whole image and is much cheaper to backpropagate.
    """
    s = window.size
    crop = sr[..., window.y : window.y + s + 1, window.x : window.x + s + 1]
    if crop.shape[-2] != s + 1 or crop.shape[-1] != s + 1:
        raise AttrsrError(
            f"window {window.as_dict()} needs SR pixels up to ({window.x + s}, {window.y + s}), "
            f"but the SR image is {sr.shape[-1]}×{sr.shape[-2]}"
        )
    v = (crop[..., :-1, :-1] - crop[..., 1:, :-1]) ** 2
    hd = (crop[..., :-1, :-1] - crop[..., :-1, 1:]) ** 2
    return torch.sqrt(v + hd).flatten(1).sum(1)


def image_detector(sr: torch.Tensor) -> torch.Tensor:
    """LAM's detector over the whole SR output (B,C,H,W) → (B,): Σ sqrt(V + Hd) on the (H−1)×(W−1)
    grid. The reconstruction objective of CAM's saliency for ADD (no window)."""
    v = (sr[..., :-1, :-1] - sr[..., 1:, :-1]) ** 2
    hd = (sr[..., :-1, :-1] - sr[..., :-1, 1:]) ** 2
    return torch.sqrt(v + hd).flatten(1).sum(1)


def window_sum(sr: torch.Tensor, window: Window) -> torch.Tensor:
    """Σ of the SR pixels (all channels) inside the window: (B,C,H,W) → (B,). The thesis's objective."""
    s = window.size
    return sr[..., window.y : window.y + s, window.x : window.x + s].flatten(1).sum(1)


OBJECTIVES: dict[str, Callable[[torch.Tensor, Window], torch.Tensor]] = {
    "detector": gradient_detector,
    "sum": window_sum,
}
# How many pixels past the window each objective reads (for bounds checks).
OBJECTIVE_MARGIN = {"detector": 1, "sum": 0}


def make_objective(name: str, window: Window) -> Objective:
    """Bind a named objective (``detector`` or ``sum``) to a window: returns sr (B,C,H,W) → (B,)."""
    try:
        fn = OBJECTIVES[name]
    except KeyError:
        raise AttrsrError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}") from None
    return lambda sr: fn(sr, window)
