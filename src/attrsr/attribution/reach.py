"""How far a network looks: the receptive field measured from gradients, and the LAM crop it allows.

A window of the SR output depends only on the LR pixels within the network's *reach* (receptive
field radius, in LR pixels) of the window's LR footprint; every gradient outside is exactly zero for a
network of local operations. Path attribution then needs the network evaluated only on that crop:
the path points are made on the whole image (the blur's borders stay the whole image's) and cut, the
crop's attribution is put back into a map of zeros. Same numbers, a fraction of the pixels.

Nothing is assumed from the architecture. :func:`reach_of` measures it once per model: the input
gradient of one SR pixel block on a probe image; the reach is how far the non-zero gradient extends.
Where it extends to the probe's edges at every probe size the network has a global operation (the
channel attention of RCAN/SAN/IMDN, a global pooling) or looks further than the largest probe: no
crop. A measured reach is trusted only after a short LAM on a probe image with the crop equals the
whole image's (Pearson r ≥ ``TRUST_R`` and no value further than ``TRUST_DIFF`` of the map's peak;
local convolutional networks agree to rounding, 0–1e-7); a network that is not shift-equivariant (strides, padding to
a multiple of a window size, as SwinIR does) fails that check and falls back to the whole image.

The *tail crop* is the same idea on the output side. The LR crop cannot help where the body looks
far (PAN's 16 blocks reach 36 LR px: a 64×64 image is all reach) or everywhere (channel attention),
yet half or more of a ×4 network's work is its upsampling tail at 2× and 4× resolution, of which a
16-px window needs a few dozen pixels. Networks that offer the body/tail split
(:func:`attrsr.models.registry.body_and_tail`) get their tail's reach measured the same way — the
gradient of one output block with respect to the body's tensors — and checked by a short LAM with and
without the tail crop (:func:`tail_reach_of`); path attribution then runs the body on the whole
(possibly LR-cropped) input and the tail only on each window's box.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any

import torch
from torch import nn

PROBE_SIZES = (48, 96)  # LR sides of the probe images for the measurement
MARGIN = 4  # LR pixels added to the measured reach (a ReLU dead on the probe could hide a pixel)
TRUST_R = 0.9999  # the crop's probe map must correlate this well with the whole image's …
TRUST_DIFF = 1e-4  # … and differ by at most this fraction of its largest value (conv nets: 0 to 1e-7)
AUTO_MIN_PIXELS = 96 * 96  # crop=None measures only above this LR size (see lam's ``crop``)


@dataclasses.dataclass(frozen=True)
class Reach:
    """``radius``: LR pixels beyond its own footprint that an output depends on (None: no crop);
    ``trusted``: the crop passed the check against the whole image; ``reason``: what was found."""

    radius: int | None
    trusted: bool
    reason: str
    check_r: float | None = None
    check_diff: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REACH: weakref.WeakKeyDictionary[nn.Module, Reach] = weakref.WeakKeyDictionary()


def _probe(size: int, seed: int = 0) -> torch.Tensor:
    """A deterministic textured image (1,3,size,size) in [0,1]: smoothed noise, so that no ReLU of
    the network is dead on all of it and the detector's square roots stay away from 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size + 4, size + 4, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1)  # mild smoothing: natural-image-like
    return x[..., 1 : size + 1, 1 : size + 1].contiguous()


def measure_radius(model: nn.Module, scale: int, sizes: tuple[int, ...] = PROBE_SIZES) -> tuple[int | None, str]:
    """The reach of a *prepared* model (eval, frozen parameters), from the input gradient of the
    SR block above the probe's centre LR pixel. (radius or None, what was found)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for size in sizes:
        x = _probe(size).to(device).requires_grad_(True)
        out = model(x)
        c = size // 2
        block = out[..., c * scale : (c + 1) * scale, c * scale : (c + 1) * scale]
        w = torch.rand(block.shape, generator=torch.Generator().manual_seed(1)).to(block)  # no cancellations
        (g,) = torch.autograd.grad((block * w).sum(), x)
        nz = (g[0].abs().sum(0) != 0).nonzero()
        if nz.numel() == 0:
            return None, "the output does not depend on the input (zero gradient)"
        (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
        if y0 > 0 and x0 > 0 and y1 < size - 1 and x1 < size - 1:
            return max(c - x0, c - y0, x1 - c, y1 - c), f"gradient of one output block reaches {max(c - x0, c - y0, x1 - c, y1 - c)} LR px (probe {size}×{size})"
    return None, (f"the gradient of one output block reaches the edges of a {sizes[-1]}×{sizes[-1]} probe: a global "
                  f"operation (channel attention, pooling) or a receptive field over {sizes[-1] // 2} LR px")


def crop_box(window: Any, scale: int, radius: int, hw: tuple[int, int], margin: int = 1) -> tuple[int, int, int, int]:
    """LR box (x0, y0, x1, y1; x1/y1 exclusive) of the pixels a window (plus ``margin`` SR pixels
    below/right that the objective reads) depends on, for a network of reach ``radius`` + MARGIN."""
    h, w = hw
    r = radius + MARGIN
    x0, y0 = window.x // scale, window.y // scale
    x1, y1 = -(-(window.x + window.size + margin) // scale), -(-(window.y + window.size + margin) // scale)
    return max(0, x0 - r), max(0, y0 - r), min(w, x1 + r), min(h, y1 + r)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def _checked(model: nn.Module, scale: int, radius: int | None, reason: str, what: str, *, seed: int, refusal: str,
             **cut: Any) -> Reach:
    """Trust a measured reach only if a 4-step LAM on a probe with the crop (``cut``: lam's crop
    options) equals the whole network's: the probe leaves out 8 LR px on every side of the window.
    No reach measured (None): no crop, for ``reason``."""
    if radius is None:
        return Reach(None, False, reason)
    from attrsr.attribution._common import model_device
    from attrsr.attribution.integrate import lam
    from attrsr.attribution.objectives import Window

    side = 2 * (radius + MARGIN) + 2 + 16
    win = Window((side // 2) * scale, (side // 2) * scale, 2 * scale)
    x = _probe(side, seed=seed)[0].to(model_device(model))
    whole = lam(model, x, win, steps=4, crop=False, tail_crop=False)
    part = lam(model, x, win, steps=4, **{"crop": False, "tail_crop": False, **cut})
    r = _pearson(whole.attribution, part.attribution)
    peak = float(whole.attribution.abs().max())
    diff = float((whole.attribution - part.attribution).abs().max()) / peak if peak > 0 else math.inf
    ok = math.isfinite(r) and r >= TRUST_R and diff <= TRUST_DIFF
    return Reach(radius if ok else None, ok, reason + f"; {what} checked on a {side}×{side} probe: r = {r:.7f}, "
                 f"largest difference {diff:.1e} of the peak" + ("" if ok else "; " + refusal), r, diff)


def reach_of(model: nn.Module, scale: int) -> Reach:
    """The model's :class:`Reach`: measured and checked on the first call, cached on the model."""
    known = _REACH.get(model)
    if known is not None:
        return known
    from attrsr.attribution._common import prepared

    with prepared(model):
        radius, reason = measure_radius(model, scale)
    reach = _checked(model, scale, radius, reason, "crop", seed=2, crop=radius,
                     refusal="not the whole image's map, so no crop (the network is not shift-equivariant)")
    _REACH[model] = reach
    return reach


# --------------------------------------------------------------------------------------------
# The tail's reach

TAIL_PROBE_SIZES = (24, 40)
_TAIL_REACH: weakref.WeakKeyDictionary[nn.Module, Reach] = weakref.WeakKeyDictionary()


def measure_tail_radius(body_fn, tail_fn, scale: int, device: torch.device,
                        sizes: tuple[int, ...] = TAIL_PROBE_SIZES) -> tuple[int | None, str]:
    """The reach of a split network's tail, in LR pixels of the body's grid: how far the gradient of
    the SR block above the probe's centre pixel extends in the body's tensors. (radius or None, why)."""
    for size in sizes:
        with torch.no_grad():
            body = body_fn(_probe(size).to(device))
        if not isinstance(body, tuple) or not body or any(not isinstance(b, torch.Tensor) or b.dim() != 4 for b in body):
            return None, "forward_body did not return a tuple of (B,C,h,w) tensors"
        grid = tuple(body[0].shape[-2:])
        if any(tuple(b.shape[-2:]) != grid for b in body) or grid[0] < size or grid[1] < size:
            return None, f"the body's tensors are not on the LR pixel grid ({[tuple(b.shape[-2:]) for b in body]} for {size}×{size})"
        body = tuple(b.detach().requires_grad_(True) for b in body)
        out = tail_fn(body)
        if tuple(out.shape[-2:]) != (grid[0] * scale, grid[1] * scale):
            return None, f"the tail maps the body's {grid[1]}×{grid[0]} to {out.shape[-1]}×{out.shape[-2]}, not ×{scale}"
        c = size // 2
        block = out[..., c * scale : (c + 1) * scale, c * scale : (c + 1) * scale]
        w = torch.rand(block.shape, generator=torch.Generator().manual_seed(1)).to(block)
        grads = torch.autograd.grad((block * w).sum(), body, allow_unused=True)
        support = sum((g[0].abs().sum(0) != 0).to(torch.int32) for g in grads if g is not None)
        if not isinstance(support, torch.Tensor) or not support.any():
            return None, "the tail's output does not depend on the body (zero gradient)"
        nz = support.nonzero()
        (y0, x0), (y1, x1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
        if y0 > 0 and x0 > 0 and y1 < grid[0] - 1 and x1 < grid[1] - 1:
            radius = max(c - x0, c - y0, x1 - c, y1 - c)
            return radius, f"the tail's gradient of one output block reaches {radius} LR px (probe {size}×{size})"
    return None, f"the tail's gradient of one output block reaches the edges of a {sizes[-1]}×{sizes[-1]} probe: no tail crop"


def tail_reach_of(model: nn.Module, scale: int) -> Reach:
    """The :class:`Reach` of the model's upsampling tail: measured and checked on the first call,
    cached on the model. ``radius`` None: no tail crop (no split offered, a non-local tail, or a
    cropped tail whose probe map differs from the whole network's)."""
    known = _TAIL_REACH.get(model)
    if known is not None:
        return known
    from attrsr.attribution._common import model_device, prepared
    from attrsr.models.registry import body_and_tail

    split = body_and_tail(model)
    if split is None:
        reach = Reach(None, False, "the network offers no body/tail split")
    else:
        device = model_device(model)
        with prepared(model):
            radius, reason = measure_tail_radius(*split, scale, device)
        reach = _checked(model, scale, radius, reason, "tail crop", seed=3, tail_crop=radius,
                         refusal="not the whole network's map, so no tail crop")
    _TAIL_REACH[model] = reach
    return reach
