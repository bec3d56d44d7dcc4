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


@torch.no_grad()
def tiled_forward(model: nn.Module, lr: torch.Tensor, tile: int, overlap: int | None = None) -> torch.Tensor:
    """Run ``model`` on (B,3,h,w) ``lr`` in ``tile``×``tile`` LR tiles overlapping by ``overlap`` px.

    Each tile's output loses ``overlap // 2`` LR pixels (times the scale) on every side that borders
    another tile, so every output pixel comes from the interior of some tile, where the network saw
    context on all sides; interiors that still overlap are averaged. With a receptive field within
    ``overlap // 2`` the result equals the untiled output exactly. Default overlap: min(32, tile/2).
    """
    if tile <= 0:
        raise AttrsrError(f"tile must be positive, got {tile}")
    if overlap is None:
        overlap = min(32, tile // 2)
    if overlap < 0 or overlap >= tile:
        raise AttrsrError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    b, c, h, w = lr.shape
    if h <= tile and w <= tile:
        return model(lr)
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
