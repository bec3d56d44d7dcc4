"""BSRN: Blueprint Separable Residual Network (Li et al., CVPRW 2022; NTIRE 2022 efficient-SR
model-complexity winner).

Parameter names follow the authors' release, xiaom233/BSRN ``basicsr/archs/BSRN_arch.py`` with its
default ``conv='BSConvU'`` and ``upsampler='pixelshuffledirect'`` (the configuration of the released
``BSRN_x{2,3,4}.pth``, tensors under ``params``): ``fea_conv.{pw,dw}``, ``B1..B8`` (ESDB) with
``c{1,2,3}_d`` (1x1), ``c{1,2,3}_r.{pw,dw}``, ``c4.{pw,dw}``, ``c5``,
``esa.{conv1,conv_f,conv_max,conv2,conv3,conv3_}.{pw,dw}``/``esa.conv4``, ``cca.conv_du.{0,2}``;
then ``c1`` (1x1 over all blocks), ``c2.{pw,dw}`` and ``upsampler.upsampleOneStep.0``.
A blueprint separable convolution (BSConvU) is a bias-free 1x1 pointwise conv followed by a
depthwise kxk conv with bias. The input is repeated 4 times along channels before ``fea_conv`` (as
released). 352,400 parameters at x4 (the paper's 352K). RGB in [0,1] (BasicSR), no wrapper needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models.detection import Fit, missing, shape, shuffle_factor
from attrsr.models.registry import register


class BSConvU(nn.Module):
    """Pointwise (1x1, no bias) then depthwise (kxk, bias) convolution. (B,cin,H,W) -> (B,cout,H',W')."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(cout, cout, kernel_size, stride=stride, padding=padding, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class ContrastChannelAttention(nn.Module):
    """CCA: channel gate from per-channel (population) std + mean. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class BlueprintESA(nn.Module):
    """ESA with blueprint convolutions and GELU. (B,C,H,W) -> (B,C,H,W); H, W >= 15."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = BSConvU(f, f)
        self.conv2 = BSConvU(f, f, 3, stride=2, padding=0)
        self.conv3 = BSConvU(f, f)
        self.conv3_ = BSConvU(f, f)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        v = F.gelu(self.conv_max(F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)))
        c3 = self.conv3_(F.gelu(self.conv3(v)))
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class ESDB(nn.Module):
    """Efficient separable distillation block: three distill/refine stages (GELU), a 1x1 fusion, ESA,
    CCA and an identity skip. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        dc = channels // 2
        self.c1_d = nn.Conv2d(channels, dc, 1)
        self.c1_r = BSConvU(channels, channels)
        self.c2_d = nn.Conv2d(channels, dc, 1)
        self.c2_r = BSConvU(channels, channels)
        self.c3_d = nn.Conv2d(channels, dc, 1)
        self.c3_r = BSConvU(channels, channels)
        self.c4 = BSConvU(channels, dc)
        self.c5 = nn.Conv2d(dc * 4, channels, 1)
        self.esa = BlueprintESA(channels)
        self.cca = ContrastChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = F.gelu(self.c1_d(x))
        r1 = F.gelu(self.c1_r(x) + x)
        d2 = F.gelu(self.c2_d(r1))
        r2 = F.gelu(self.c2_r(r1) + r1)
        d3 = F.gelu(self.c3_d(r2))
        r3 = F.gelu(self.c3_r(r2) + r2)
        r4 = F.gelu(self.c4(r3))
        return self.cca(self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))) + x


class _OneStep(nn.Module):
    """Holds ``upsampleOneStep`` (conv + PixelShuffle), the release's key path."""

    def __init__(self, scale: int, num_feat: int, out_ch: int) -> None:
        super().__init__()
        self.upsampleOneStep = nn.Sequential(nn.Conv2d(num_feat, out_ch * scale**2, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


class BSRN(nn.Module):
    """BSRN: RGB (B,3,h,w) in [0,1] -> (B,3,s*h,s*w); h, w >= 15 (ESA)."""

    def __init__(self, scale: int, num_feat: int = 64, num_block: int = 8, num_in_ch: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.num_block = num_block
        self.fea_conv = BSConvU(num_in_ch * 4, num_feat)
        for i in range(1, num_block + 1):  # named attributes B1..Bn: the release's keys
            self.add_module(f"B{i}", ESDB(num_feat))
        self.c1 = nn.Conv2d(num_feat * num_block, num_feat, 1)
        self.c2 = BSConvU(num_feat, num_feat)
        self.upsampler = _OneStep(scale, num_feat, num_in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): all but the upsampler."""
        fea = self.fea_conv(torch.cat([x, x, x, x], dim=1))
        outs, out = [], fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        trunk = F.gelu(self.c1(torch.cat(outs, dim=1)))
        return (self.c2(trunk) + fea,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.upsampler(body[0])


def detect_bsrn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "fea_conv.pw.weight", "B1.c1_r.pw.weight", "B1.cca.conv_du.0.weight", "c1.weight",
                         "upsampler.upsampleOneStep.0.weight"):
        return reason
    import re

    num_feat, cin = shape(state, "fea_conv.pw.weight")[:2]
    if cin % 4:
        return f"fea_conv takes {cin} channels, not 4 copies of the input"
    up = shape(state, "upsampler.upsampleOneStep.0.weight")[0]
    scale = shuffle_factor(up, cin // 4)
    if scale is None:
        return f"upsampler.upsampleOneStep.0 has {up} output channels, not {cin // 4}·s²"
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"B(\d+)\.", k))}
    return Fit(dict(num_feat=num_feat, num_block=len(blocks)), scale=scale,
               evidence=f"upsampler.upsampleOneStep.0: {up} = {cin // 4}·{scale}² channels")


@register("bsrn", scales=(2, 3, 4), detect=detect_bsrn,
          description="BSRN (Li et al. 2022), 64 features x 8 ESDBs with blueprint convolutions, 0.35M params at x4, RGB [0,1]")
def build_bsrn(scale: int, *, num_feat: int = 64, num_block: int = 8) -> nn.Module:
    return BSRN(scale, num_feat=num_feat, num_block=num_block)
