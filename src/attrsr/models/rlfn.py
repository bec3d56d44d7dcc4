"""RLFN: Residual Local Feature Network (Kong et al., CVPRW 2022; NTIRE 2022 efficient-SR runtime winner).

Parameter names follow the authors' release, bytedance/RLFN ``model/block.py`` and
``model/rlfn_ntire.py`` (the released ``model_zoo/rlfn_ntire_x4.pth``): ``conv_1``,
``block_N.{c1_r,c2_r,c3_r,c5}``, ``block_N.esa.{conv1,conv_f,conv2,conv3,conv4}`` (ESA without the
``conv_max``/``conv3_`` of RFDN's), ``conv_2``, ``upsampler.0`` (one conv + PixelShuffle).

The default configuration is the released challenge model (``RLFN_Prune``: 46 features, 48 inside
each block, 4 blocks; 317,218 parameters at x4 = the 0.317M of the release's README). The paper's
RLFN (52 features, 6 blocks) and RLFN-S (48 features, 6 blocks) are ``feature_channels``/
``mid_channels``/``n_blocks`` options. The release feeds RGB in [0,255] (its ``test_demo.py``
multiplies by 255), so the network is wrapped in :class:`ContractWrapper` with ``value_range=255``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models.detection import Fit, missing, shape, shuffle_factor
from attrsr.models.registry import ContractWrapper, register


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class LightESA(nn.Module):
    """RLFN's enhanced spatial attention (RFDN's ESA minus ``conv_max``/``conv3_``).
    (B,C,H,W) -> (B,C,H,W), gated by a sigmoid mask from a strided, max-pooled copy; H, W >= 15."""

    def __init__(self, esa_channels: int, n_feats: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c3 = self.conv3(F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 convs (LeakyReLU 0.05) with a skip, then a 1x1 conv
    and ESA. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int, mid_channels: int, esa_channels: int) -> None:
        super().__init__()
        self.c1_r = _conv(channels, mid_channels, 3)
        self.c2_r = _conv(mid_channels, mid_channels, 3)
        self.c3_r = _conv(mid_channels, channels, 3)
        self.c5 = _conv(channels, channels, 1)
        self.esa = LightESA(esa_channels, channels)
        self.act = nn.LeakyReLU(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    """RLFN core: RGB (B,3,h,w) in [0,255] -> (B,3,s*h,s*w); h, w >= 15 (ESA)."""

    def __init__(self, scale: int, feature_channels: int = 46, mid_channels: int = 48, n_blocks: int = 4,
                 esa_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.n_blocks = n_blocks
        self.conv_1 = _conv(in_channels, feature_channels, 3)
        for i in range(1, n_blocks + 1):  # named attributes, not a ModuleList: the release's keys
            self.add_module(f"block_{i}", RLFB(feature_channels, mid_channels, esa_channels))
        self.conv_2 = _conv(feature_channels, feature_channels, 3)
        self.upsampler = nn.Sequential(_conv(feature_channels, in_channels * scale**2, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): all but the upsampler."""
        fea = out = self.conv_1(x)
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return (self.conv_2(out) + fea,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.upsampler(body[0])


def detect_rlfn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "conv_1.weight", "block_1.c1_r.weight", "block_1.esa.conv_f.weight", "conv_2.weight",
                         "upsampler.0.weight"):
        return reason
    import re

    features, colours = shape(state, "conv_1.weight")[:2]
    up = shape(state, "upsampler.0.weight")[0]
    scale = shuffle_factor(up, colours)
    if scale is None:
        return f"upsampler.0 has {up} output channels, not {colours}·s²"
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"block_(\d+)\.", k))}
    config = dict(feature_channels=features, mid_channels=shape(state, "block_1.c1_r.weight")[0],
                  n_blocks=len(blocks), esa_channels=shape(state, "block_1.esa.conv1.weight")[0])
    return Fit(config, scale=scale, evidence=f"upsampler.0: {up} = {colours}·{scale}² channels")


@register("rlfn", scales=(2, 3, 4), detect=detect_rlfn,
          description="RLFN (Kong et al. 2022), the NTIRE 2022 release: 46/48 features, 4 blocks, 0.317M params at x4, [0,255] inside")
def build_rlfn(scale: int, *, feature_channels: int = 46, mid_channels: int = 48, n_blocks: int = 4,
               esa_channels: int = 16, rgb_range: float = 255.0) -> nn.Module:
    net = RLFN(scale, feature_channels=feature_channels, mid_channels=mid_channels, n_blocks=n_blocks,
               esa_channels=esa_channels)
    return ContractWrapper(net, scale, value_range=rgb_range)
