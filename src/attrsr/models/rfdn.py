"""RFDN: Residual Feature Distillation Network (Liu, Tang, Wu — ECCV-W 2020, AIM 2020 winner).

This is the network as released: RFDBs with ESA attention in the AIM 2020 configuration (nf=50,
4 blocks), 433,448 parameters at x4, which matches the 0.433M listed for the challenge entry. The
0.550M the paper's table gives for x4 RFDN is another configuration, not released; pass ``nf`` and
``num_modules`` to build variants.

Parameter names follow the authors' release, njulj/RFDN ``RFDN.py`` and ``block.py`` (the names of
``trained_model/RFDN_AIM.pth``): ``fea_conv``, ``B1..B4.{c1_d,c1_r,c2_d,c2_r,c3_d,c3_r,c4,c5}``,
``B*.esa.{conv1,conv_f,conv_max,conv2,conv3,conv3_,conv4}``, ``c.0``, ``LR_conv``, ``upsampler.0``.
The release hard-codes a x4 upsampler; here it follows ``scale``.

The release feeds RGB in [0,255] (its ``uint2tensor4`` divides by 1.0), so the network is wrapped
in :class:`ContractWrapper` with ``value_range=255``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models.imdn import DistillationNet, detect_distillation_net
from attrsr.models.registry import ContractWrapper, register


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class ESA(nn.Module):
    """Enhanced spatial attention. (B,C,H,W) → (B,C,H,W), gated by a sigmoid mask.

    The mask is computed on a strided, max-pooled copy (stride-2 conv, 7x7/3 pooling), so inputs
    need H, W >= 15.
    """

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        f = n_feats // 4
        self.conv1 = nn.Conv2d(n_feats, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, n_feats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v = F.relu(self.conv_max(F.max_pool2d(c1, kernel_size=7, stride=3)))
        c3 = self.conv3_(F.relu(self.conv3(v)))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RFDB(nn.Module):
    """Residual feature distillation block. (B,C,H,W) → (B,C,H,W) (no outer skip, as released).

    Three stages each emit a 1x1 "distilled" half-width feature and refine the full-width stream
    with a residual 3x3 conv; the four distilled parts are fused by a 1x1 conv and ESA.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        dc, rc = channels // 2, channels
        self.c1_d = _conv(channels, dc, 1)
        self.c1_r = _conv(channels, rc, 3)
        self.c2_d = _conv(rc, dc, 1)
        self.c2_r = _conv(rc, rc, 3)
        self.c3_d = _conv(rc, dc, 1)
        self.c3_r = _conv(rc, rc, 3)
        self.c4 = _conv(rc, dc, 3)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = _conv(dc * 4, channels, 1)
        self.esa = ESA(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class RFDN(DistillationNet):
    """RFDN core: RGB (B,3,h,w) in [0,255] → (B,3,s·h,s·w) in [0,255]; h, w >= 15 (ESA)."""

    def __init__(self, scale: int = 4, in_nc: int = 3, nf: int = 50, num_modules: int = 4, out_nc: int = 3) -> None:
        super().__init__(RFDB, "B", scale, in_nc, nf, num_modules, out_nc)


def detect_rfdn(state: dict[str, torch.Tensor]):
    return detect_distillation_net(state, "B")


@register("rfdn", scales=(2, 3, 4), detect=detect_rfdn,
          description="RFDN/E-RFDN as released (Liu et al. 2020), 0.43M params at x4, wrapped from [0,255]")
def build_rfdn(scale: int, *, nf: int = 50, num_modules: int = 4, in_nc: int = 3, out_nc: int = 3) -> nn.Module:
    net = RFDN(scale=scale, in_nc=in_nc, nf=nf, num_modules=num_modules, out_nc=out_nc)
    return ContractWrapper(net, scale, value_range=255)
