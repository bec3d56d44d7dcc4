"""IMDN: Information Multi-Distillation Network (Hui, Gao, Yang, Wang — ACM MM 2019).

Parameter names follow the authors' release, Zheng222/IMDN ``model/architecture.py`` (class ``IMDN``)
and ``model/block.py``: ``fea_conv``, ``IMDB1..IMDB6.{c1,c2,c3,c4,c5,cca.conv_du.{0,2}}``, ``c.0``,
``LR_conv``, ``upsampler.0``. The released ``checkpoints/IMDN_x{2,3,4}.pth`` were saved from a
DataParallel model (``module.`` prefix); :func:`attrsr.models.registry.unwrap_state_dict` strips it.

The release feeds RGB in [0,1] (``test_IMDN.py`` divides by 255), so no contract wrapper is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models.detection import Fit, missing, shape, shuffle_factor
from attrsr.models.registry import register


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)


class ContrastChannelAttention(nn.Module):
    """CCA: channel gate from (per-channel std + mean). (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        # Population std (divide by H·W), as the release computes it; ``Tensor.std`` would be unbiased.
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDB(nn.Module):
    """Information multi-distillation block. (B,C,H,W) → (B,C,H,W), with identity skip.

    Each of three 3x3 convs keeps a quarter of its channels ("distilled") and passes the rest on;
    the four distilled parts are concatenated, gated by CCA and fused by a 1x1 conv.
    """

    def __init__(self, channels: int, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.remaining, channels, 3)
        self.c3 = _conv(self.remaining, channels, 3)
        self.c4 = _conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(0.05)
        self.c5 = _conv(self.distilled * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)
        return self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1))) + x


class DistillationNet(nn.Module):
    """The IMDN/RFDN outer network: (B,3,h,w) → (B,3,s·h,s·w) through ``num_modules`` blocks.

    Block outputs are concatenated, fused by a 1×1 conv (``c``) and ``LR_conv``, added to the first
    features, and upsampled by one conv + PixelShuffle. Blocks are named attributes
    ``<prefix>1..<prefix>n`` (not a ModuleList) to keep the releases' key names.
    """

    def __init__(self, block: type[nn.Module], prefix: str, scale: int, in_nc: int, nf: int, num_modules: int, out_nc: int) -> None:
        super().__init__()
        self.scale = scale
        self.block_names = [f"{prefix}{i}" for i in range(1, num_modules + 1)]
        self.fea_conv = _conv(in_nc, nf, 3)
        for name in self.block_names:
            self.add_module(name, block(nf))
        self.c = nn.Sequential(nn.Conv2d(nf * num_modules, nf, 1), nn.LeakyReLU(0.05))
        self.LR_conv = _conv(nf, nf, 3)
        self.upsampler = nn.Sequential(_conv(nf, out_nc * scale**2, 3), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): all but the upsampler."""
        fea = self.fea_conv(x)
        outs = []
        h = fea
        for name in self.block_names:
            h = getattr(self, name)(h)
            outs.append(h)
        return (self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.upsampler(body[0])


class IMDN(DistillationNet):
    """IMDN: RGB (B,3,h,w) in [0,1] → (B,3,s·h,s·w)."""

    def __init__(self, scale: int = 4, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3) -> None:
        super().__init__(IMDB, "IMDB", scale, in_nc, nf, num_modules, out_nc)


def detect_distillation_net(state: dict[str, torch.Tensor], block_key: str) -> Fit | str:
    """IMDN/RFDN: width and block count from the shapes; scale from the one upsampler conv."""
    import re

    if reason := missing(state, "fea_conv.weight", f"{block_key}1.c5.weight", "LR_conv.weight", "upsampler.0.weight"):
        return reason
    nf, in_nc = shape(state, "fea_conv.weight")[:2]
    prefix = block_key.rstrip("0123456789")
    blocks = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    up = shape(state, "upsampler.0.weight")[0]
    scale = shuffle_factor(up, in_nc)
    if scale is None:
        return f"upsampler.0 has {up} output channels, not {in_nc}·s²"
    config = dict(nf=nf, num_modules=len(blocks), in_nc=in_nc, out_nc=in_nc)
    return Fit(config, scale=scale, evidence=f"upsampler.0: {up} = {in_nc}·{scale}² channels")


def detect_imdn(state: dict[str, torch.Tensor]) -> Fit | str:
    return detect_distillation_net(state, "IMDB")


@register("imdn", scales=(2, 3, 4), detect=detect_imdn, description="IMDN (Hui et al. 2019), ~0.7M params, RGB [0,1]")
def build_imdn(scale: int, *, nf: int = 64, num_modules: int = 6, in_nc: int = 3, out_nc: int = 3) -> nn.Module:
    return IMDN(scale=scale, in_nc=in_nc, nf=nf, num_modules=num_modules, out_nc=out_nc)
