"""PAN: Pixel Attention Network (Zhao, Kong, He, Qiao, Dong — ECCV-W 2020).

Parameter names follow the authors' release, zhaohengyuan1/PAN ``codes/models/archs/PAN_arch.py``
(the same names as BasicSR's ``pan_arch``), so ``PANx{2,3,4}_DF2K.pth`` load unchanged:
``conv_first``, ``SCPA_trunk.N.{conv1_a,conv1_b,k1.0,PAConv.{k2,k3,k4},conv3}``, ``trunk_conv``,
``upconv1``/``att1.conv``/``HRconv1`` (x4 adds ``upconv2``/``att2.conv``/``HRconv2``), ``conv_last``.

The network works on RGB in [0,1] directly, so no contract wrapper is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models.detection import Fit, count_children, missing, shape
from attrsr.models.registry import register


class PixelAttention(nn.Module):
    """PA: ``x * sigmoid(conv1x1(x))``, a per-pixel, per-channel gate. (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """Pixel-attention convolution: ``k4(k3(x) * sigmoid(k2(x)))``. (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, nf: int, k_size: int = 3) -> None:
        super().__init__()
        pad = (k_size - 1) // 2
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.k3 = nn.Conv2d(nf, nf, k_size, padding=pad, bias=False)
        self.k4 = nn.Conv2d(nf, nf, k_size, padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention. (B,nf,H,W) → (B,nf,H,W), with identity skip.

    Two half-width branches: a plain 3x3 conv (``k1``) and a PAConv; 1x1 convs split and merge them.
    """

    def __init__(self, nf: int, reduction: int = 2) -> None:
        super().__init__()
        width = nf // reduction
        self.conv1_a = nn.Conv2d(nf, width, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, width, 1, bias=False)
        # ``k1`` is a one-element Sequential in the release, hence the ``k1.0`` key.
        self.k1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False))
        self.PAConv = PAConv(width)
        self.conv3 = nn.Conv2d(width * reduction, nf, 1, bias=False)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return x + self.conv3(torch.cat([a, b], dim=1))


class PAN(nn.Module):
    """PAN for scale 2, 3 or 4: RGB (B,3,h,w) in [0,1] → (B,3,s·h,s·w).

    The reconstruction is nearest-neighbour upsampling + conv + PA (one stage for x2/x3, two
    x2 stages for x4), and the output adds a bilinear (``align_corners=False``) upsampling of the
    input, exactly as the release does; reproducing the authors' PSNR logs depends on both.
    """

    def __init__(self, scale: int = 4, in_nc: int = 3, out_nc: int = 3, nf: int = 40, unf: int = 24, nb: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN supports scales 2, 3, 4, not {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1)
        self.SCPA_trunk = nn.Sequential(*[SCPA(nf) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)

        self.upconv1 = nn.Conv2d(nf, unf, 3, 1, 1)
        self.att1 = PixelAttention(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, 1, 1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, 1, 1)
            self.att2 = PixelAttention(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, 1, 1)
        self.conv_last = nn.Conv2d(unf, out_nc, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def _up_stage(self, fea: torch.Tensor, factor: int, up: nn.Module, att: nn.Module, hr: nn.Module) -> torch.Tensor:
        fea = up(F.interpolate(fea, scale_factor=factor, mode="nearest"))
        fea = self.lrelu(att(fea))
        return self.lrelu(hr(fea))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): features and x."""
        fea = self.conv_first(x)
        return fea + self.trunk_conv(self.SCPA_trunk(fea)), x

    def forward_tail(self, body: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        fea, x = body
        if self.scale == 4:
            fea = self._up_stage(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._up_stage(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._up_stage(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + base


def detect_pan(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "conv_first.weight", "SCPA_trunk.0.conv1_a.weight", "upconv1.weight", "att1.conv.weight", "conv_last.weight"):
        return reason
    config = dict(nf=shape(state, "conv_first.weight")[0], unf=shape(state, "upconv1.weight")[0],
                  nb=count_children(state, "SCPA_trunk."), in_nc=shape(state, "conv_first.weight")[1],
                  out_nc=shape(state, "conv_last.weight")[0])
    if "upconv2.weight" in state:
        return Fit(config, scale=4, evidence="two upsampling stages (upconv2)")
    # Nearest-neighbour upsampling carries no weights: x2 and x3 files have identical shapes.
    return Fit(config, scales=(2, 3), evidence="one upsampling stage: x2 and x3 have identical shapes")


@register("pan", scales=(2, 3, 4), detect=detect_pan, description="PAN (Zhao et al. 2020), 0.26M/0.27M params, RGB [0,1]")
def build_pan(scale: int, *, nf: int = 40, unf: int = 24, nb: int = 16, in_nc: int = 3, out_nc: int = 3) -> nn.Module:
    return PAN(scale=scale, in_nc=in_nc, out_nc=out_nc, nf=nf, unf=unf, nb=nb)
