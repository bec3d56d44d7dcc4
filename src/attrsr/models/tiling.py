"""Tiled inference, so memory stays bounded on large images, and the bicubic baseline model."""

from __future__ import annotations

import torch
from torch import nn

from attrsr.errors import AttrsrError
from attrsr.resize import imresize


class Bicubic(nn.Module):
    """The baseline 'network': MATLAB bicubic upscaling by ``scale`` (satisfies the SR contract)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.zoo_name = "bicubic"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


# Context that matters: input pixels whose gradient on the centre output pixel exceeds this fraction
# of the largest. Measured on Set5 bird x4 with tiles of twice the resulting overlap: PAN -0.008 dB,
# IMDN (global channel statistics) +0.05 dB vs the whole image, where 8-px tiles lost 0.36 / 0.94 dB.
CONTEXT_TOLERANCE = 1e-2
_PROBE = 64  # LR side of the probe crop; radii up to _PROBE // 2 can be measured


def context_radius(model: nn.Module, lr: torch.Tensor) -> int:
    """LR pixels of context on each side that the model's output at a pixel depends on (its
    effective receptive field), measured once per model on a centre crop of ``lr`` and cached."""
    cached = getattr(model, "_attrsr_context_radius", None)
    if cached is not None:
        return cached
    h, w = lr.shape[-2:]
    size_h, size_w = min(h, _PROBE), min(w, _PROBE)
    top, left = (h - size_h) // 2, (w - size_w) // 2
    s = int(model.scale)
    # Callers run under no_grad/inference_mode; autograd.grad leaves the parameters' .grad untouched.
    with torch.inference_mode(False), torch.enable_grad():
        x = lr[:1, :, top : top + size_h, left : left + size_w].clone().requires_grad_(True)
        out = model(x)
        (grad,) = torch.autograd.grad(out[..., (size_h // 2) * s, (size_w // 2) * s].sum(), x)
    grad = grad.abs().sum(dim=(0, 1))
    ys, xs = (grad > CONTEXT_TOLERANCE * grad.max()).nonzero(as_tuple=True)
    radius = int(max((ys - size_h // 2).abs().max(), (xs - size_w // 2).abs().max())) if len(ys) else 0
    model._attrsr_context_radius = radius
    return radius


def smallest_sound_tile(model: nn.Module, lr: torch.Tensor) -> tuple[int, int]:
    """(smallest tile, the overlap it needs): each tile's trimmed margin (overlap/2) covers the
    model's context radius, and a tile is at least twice its overlap."""
    overlap = 2 * context_radius(model, lr)
    return max(2 * overlap, 2), overlap


@torch.no_grad()
def tiled_forward(model: nn.Module, lr: torch.Tensor, tile: int, overlap: int | None = None) -> torch.Tensor:
    """Run ``model`` on (B,3,h,w) ``lr`` in ``tile``×``tile`` LR tiles overlapping by ``overlap`` px.

    Each tile's output loses ``overlap // 2`` LR pixels (times the scale) on every side that borders
    another tile, so every output pixel comes from the interior of some tile, where the network saw
    context on all sides; interiors that still overlap are averaged. With a receptive field within
    ``overlap // 2`` the result equals the untiled output exactly. Default overlap: min(32, tile/2),
    grown to cover the model's measured context (:func:`context_radius`); a tile too small for that
    context is refused with the smallest sound one.
    """
    if tile <= 0:
        raise AttrsrError(f"tile must be positive, got {tile}")
    b, c, h, w = lr.shape
    if h <= tile and w <= tile:
        return model(lr)
    min_tile, min_overlap = smallest_sound_tile(model, lr)
    if tile < min_tile:
        name = getattr(model, "zoo_name", type(model).__name__)
        raise AttrsrError(
            f"tile {tile} is too small for {name}: its output depends on ±{min_overlap // 2} LR pixels of context, "
            f"so tiles must overlap by {min_overlap}; the smallest sound tile is {min_tile} (CLI: --tile {min_tile}, "
            "or --tile 0 for whole images)"
        )
    overlap = max(min(32, tile // 2) if overlap is None else overlap, min_overlap)
    if overlap < 0 or overlap >= tile:
        raise AttrsrError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    s = int(model.scale)
    margin = overlap // 2
    ys, xs = _starts(h, tile, tile - overlap), _starts(w, tile, tile - overlap)
    out = None
    weight = torch.zeros(1, 1, h * s, w * s, dtype=lr.dtype, device=lr.device)
    for y in ys:
        for x in xs:
            sr = model(lr[..., y : y + tile, x : x + tile])
            if out is None:
                out = torch.zeros(b, sr.shape[1], h * s, w * s, dtype=sr.dtype, device=sr.device)
            th, tw = sr.shape[-2] // s, sr.shape[-1] // s
            top = 0 if y == ys[0] else margin
            left = 0 if x == xs[0] else margin
            bottom = th if y == ys[-1] else th - margin
            right = tw if x == xs[-1] else tw - margin
            region = (..., slice((y + top) * s, (y + bottom) * s), slice((x + left) * s, (x + right) * s))
            out[region] += sr[..., top * s : bottom * s, left * s : right * s]
            weight[region] += 1
    return out / weight
