"""SRCNN (Dong, Loy, He, Tang — ECCV 2014 / TPAMI 2016), 9-5-5 on the Y channel.

Parameter names follow yjn870/SRCNN-pytorch ``models.py``: ``conv1`` (9x9, 64), ``conv2`` (5x5, 32),
``conv3`` (5x5, 1), zero padding that keeps the size (the original Caffe model used no padding and
a smaller output; this release pads).

SRCNN refines a bicubic-upscaled image, so the wrapper upscales Y with MATLAB bicubic first; one
set of weights serves every scale, but published weights are trained per scale.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.detection import Fit, missing, shape
from attrsr.models.registry import register


class SRCNN(nn.Module):
    """SRCNN core: upscaled Y (B,1,H,W) in [0,1] → refined Y (B,1,H,W)."""

    def __init__(self, num_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_channels, 64, 9, padding=4)
        self.conv2 = nn.Conv2d(64, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, num_channels, 5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.conv3(x)


def detect_srcnn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "conv1.weight", "conv2.weight", "conv3.weight"):
        return reason
    if len(shape(state, "conv1.weight")) != 4 or shape(state, "conv1.weight")[2:] != (9, 9):
        return f"conv1 is {shape(state, 'conv1.weight')}, not SRCNN's 9x9 convolution"
    return Fit(dict(num_channels=shape(state, "conv1.weight")[1]),
               evidence="SRCNN refines a bicubic-upscaled image: the same weights run at any scale")


@register("srcnn", scales=(2, 3, 4), detect=detect_srcnn, description="SRCNN 9-5-5 (Dong et al. 2014), 57K params, Y channel on bicubic")
def build_srcnn(scale: int, *, num_channels: int = 1) -> nn.Module:
    return LumaWrapper(SRCNN(num_channels=num_channels), scale, pre_upsample=True)
