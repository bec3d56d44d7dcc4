"""FSRCNN: Fast Super-Resolution CNN (Dong, Loy, Tang — ECCV 2016), on the Y channel.

Parameter names follow yjn870/FSRCNN-pytorch ``models.py`` (d=56, s=12, m=4), whose
``weights/fsrcnn_x{2,3,4}.pth`` load unchanged: ``first_part.{0,1}`` (5x5 conv, PReLU),
``mid_part.0..11`` (shrink 1x1, m x 3x3, expand 1x1, each followed by a PReLU), ``last_part``
(9x9 transposed conv with stride = scale).

Those weights were trained on Y from *PIL*-bicubic LR images (and with a mistyped Y coefficient,
64.738 for 65.738, in that repo's ``convert_rgb_to_y``); here Y comes from MATLAB's BT.601
coefficients and benchmark LR from MATLAB bicubic, so PSNRs differ slightly from its README.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.detection import Fit, count_children, missing, shape
from attrsr.models.registry import register


class FSRCNN(nn.Module):
    """FSRCNN core: Y (B,1,h,w) in [0,1] → (B,1,s·h,s·w)."""

    def __init__(self, scale: int = 4, num_channels: int = 1, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.first_part = nn.Sequential(nn.Conv2d(num_channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        # padding 4 and output_padding s-1 make the output exactly s times the input size.
        self.last_part = nn.ConvTranspose2d(d, num_channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_part(self.mid_part(self.first_part(x)))


def detect_fsrcnn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "first_part.0.weight", "mid_part.0.weight", "last_part.weight"):
        return reason
    d, channels = shape(state, "first_part.0.weight")[:2]
    s = shape(state, "mid_part.0.weight")[0]
    m = count_children(state, "mid_part.") // 2 - 2  # (conv, PReLU) pairs: shrink, m maps, expand
    config = dict(d=d, s=s, m=m, num_channels=channels)
    # The deconvolution's stride (= scale) is an argument of the layer, not a weight.
    return Fit(config, evidence="the deconvolution's stride is not stored in the weights")


@register("fsrcnn", scales=(2, 3, 4), detect=detect_fsrcnn, description="FSRCNN (Dong et al. 2016), 12.8K params, Y channel")
def build_fsrcnn(scale: int, *, d: int = 56, s: int = 12, m: int = 4, num_channels: int = 1) -> nn.Module:
    return LumaWrapper(FSRCNN(scale=scale, num_channels=num_channels, d=d, s=s, m=m), scale, pre_upsample=False)
