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
def tiled_forward(model: nn.Module, lr: torch.Tensor, tile: int, overlap: int = 16) -> torch.Tensor:
    """Run ``model`` on (B,3,h,w) ``lr`` in ``tile``×``tile`` LR tiles overlapping by ``overlap`` px.

    Overlaps are averaged (uniform weights), as in the SwinIR/BasicSR test scripts; with a receptive
    field smaller than the overlap the result equals the untiled output away from image borders.
    """
    if tile <= 0:
        raise AttrsrError(f"tile must be positive, got {tile}")
    if overlap < 0 or overlap >= tile:
        raise AttrsrError(f"tile overlap must be in [0, tile), got {overlap} for tile {tile}")
    b, c, h, w = lr.shape
    if h <= tile and w <= tile:
        return model(lr)
    s = int(model.scale)
    stride = tile - overlap
    out = None
    weight = torch.zeros(1, 1, h * s, w * s, dtype=lr.dtype, device=lr.device)
    for y in _starts(h, tile, stride):
        for x in _starts(w, tile, stride):
            patch = lr[..., y : y + tile, x : x + tile]
            sr = model(patch)
            if out is None:
                out = torch.zeros(b, sr.shape[1], h * s, w * s, dtype=sr.dtype, device=sr.device)
            out[..., y * s : y * s + sr.shape[-2], x * s : x * s + sr.shape[-1]] += sr
            weight[..., y * s : y * s + sr.shape[-2], x * s : x * s + sr.shape[-1]] += 1
    return out / weight
