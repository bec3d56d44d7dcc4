"""ESPCN: efficient sub-pixel CNN (Shi et al. — CVPR 2016), on the Y channel.

Parameter names follow yjn870/ESPCN-pytorch ``models.py``: ``first_part.0`` (5x5, 64, tanh),
``first_part.2`` (3x3, 32, tanh), ``last_part.0`` (3x3 to s² channels, then PixelShuffle).
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.registry import register


class ESPCN(nn.Module):
    """ESPCN core: Y (B,1,h,w) in [0,1] → (B,1,s·h,s·w)."""

    def __init__(self, scale: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(
            nn.Conv2d(num_channels, 64, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(64, 32, 3, padding=1),
            nn.Tanh(),
        )
        self.last_part = nn.Sequential(nn.Conv2d(32, num_channels * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.first_part(x))


@register("espcn", scales=(2, 3, 4), description="ESPCN (Shi et al. 2016), ~25K params, Y channel")
def build_espcn(scale: int = 4, **config) -> nn.Module:
    return LumaWrapper(ESPCN(scale=scale, **config), scale, pre_upsample=False)
