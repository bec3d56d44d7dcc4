"""ESPCN: efficient sub-pixel CNN (Shi et al. — CVPR 2016), on the Y channel.

Parameter names follow yjn870/ESPCN-pytorch ``models.py``: ``first_part.0`` (5x5, 64, tanh),
``first_part.2`` (3x3, 32, tanh), ``last_part.0`` (3x3 to s² channels, then PixelShuffle).
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.detection import Fit, missing, shape, shuffle_factor
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


def detect_espcn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "first_part.0.weight", "first_part.2.weight", "last_part.0.weight"):
        return reason
    channels = shape(state, "first_part.0.weight")[1]
    out = shape(state, "last_part.0.weight")[0]
    scale = shuffle_factor(out, channels)
    if scale is None:
        return f"last_part.0 has {out} output channels, not {channels}·s²"
    return Fit(dict(num_channels=channels), scale=scale, evidence=f"last_part.0: {out} = {channels}·{scale}² channels")


@register("espcn", scales=(2, 3, 4), detect=detect_espcn, description="ESPCN (Shi et al. 2016), ~25K params, Y channel")
def build_espcn(scale: int, *, num_channels: int = 1) -> nn.Module:
    return LumaWrapper(ESPCN(scale=scale, num_channels=num_channels), scale, pre_upsample=False)
