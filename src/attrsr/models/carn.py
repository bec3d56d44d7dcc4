"""CARN and CARN-M: Cascading Residual Network (Ahn, Kang, Sohn — ECCV 2018).

Parameter names follow the authors' release, nmhkahn/CARN-pytorch ``carn/model/{carn,carn_m,ops}.py``
(the PixelShuffle version of ``_UpsampleBlock`` that ``checkpoint/carn_m.pth`` was saved from):
``sub_mean.shifter``, ``entry``, ``b{1,2,3}.{b1[,b2,b3],c1,c2,c3}.body.*``, ``c{1,2,3}.body.0``,
``upsample.up{2,3,4}.body.*``, ``exit``, ``add_mean.shifter``.

The released checkpoints are *multi-scale*: one body with x2, x3 and x4 upsamplers. We build all
three by default (``multi_scale=True``, as the release's ``sample.py`` does) so the file loads
strictly and unchanged; ``forward`` uses the upsampler of ``self.scale``. With
``multi_scale=False`` only ``upsample.up{scale}`` exists (for single-scale training).

The release works on RGB in [0,1] (``ToTensor``) with a fixed DIV2K mean shift (in [0,1] units)
stored in the checkpoint as frozen 1x1 convs, so no contract wrapper is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models.detection import Fit, missing, shape
from attrsr.models.registry import register

_DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Adds (``sign=+1``) or subtracts (``sign=-1``) the RGB mean via a frozen 1x1 conv.

    A conv rather than a buffer because the release stores it as ``shifter.{weight,bias}``.
    """

    def __init__(self, mean_rgb: tuple[float, float, float], sign: int) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(mean_rgb))
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class BasicBlock(nn.Module):
    """conv + ReLU (``body.0`` is the conv). (B,cin,H,W) → (B,cout,H,W)."""

    def __init__(self, cin: int, cout: int, ksize: int = 3, pad: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, ksize, 1, pad), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN's residual block: ``relu(x + conv(relu(conv(x))))``. (B,C,H,W) → (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class EResidualBlock(nn.Module):
    """CARN-M's efficient residual block: two grouped 3x3 convs, then a 1x1 conv mixing the groups.

    (B,C,H,W) → (B,C,H,W).
    """

    def __init__(self, channels: int, group: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, groups=group),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class CascadingBlock(nn.Module):
    """Local cascade: three residual units whose outputs are concatenated and fused by 1x1 convs.

    CARN uses three distinct residual blocks ``b1, b2, b3``; CARN-M (``shared=True``) applies one
    efficient block ``b1`` three times (recursive weight sharing), which is why its checkpoint has
    only ``b1``. (B,C,H,W) → (B,C,H,W).
    """

    def __init__(self, channels: int = 64, group: int = 1, shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        if shared:
            self.b1 = EResidualBlock(channels, group=group)
        else:
            self.b1 = ResidualBlock(channels)
            self.b2 = ResidualBlock(channels)
            self.b3 = ResidualBlock(channels)
        self.c1 = BasicBlock(channels * 2, channels, 1, 0)
        self.c2 = BasicBlock(channels * 3, channels, 1, 0)
        self.c3 = BasicBlock(channels * 4, channels, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = (self.b1, self.b1, self.b1) if self.shared else (self.b1, self.b2, self.b3)
        return _cascade(x, units, (self.c1, self.c2, self.c3))


def _cascade(x: torch.Tensor, units: tuple[nn.Module, ...], fuses: tuple[nn.Module, ...]) -> torch.Tensor:
    """The cascading pattern shared by the global and local levels of CARN."""
    cat = out = x
    for unit, fuse in zip(units, fuses):
        cat = torch.cat([cat, unit(out)], dim=1)
        out = fuse(cat)
    return out


class _Upsampler(nn.Module):
    """(grouped conv → ReLU → PixelShuffle(2)) x log2(s), or one PixelShuffle(3) stage for x3."""

    def __init__(self, channels: int, scale: int, group: int = 1) -> None:
        super().__init__()
        if scale == 3:
            stages = [(3, 9)]
        elif scale in (2, 4, 8):
            stages = [(2, 4)] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"CARN upsampler supports scales 2, 3, 4, 8, not {scale}")
        layers: list[nn.Module] = []
        for factor, mult in stages:
            layers += [nn.Conv2d(channels, mult * channels, 3, 1, 1, groups=group), nn.ReLU(), nn.PixelShuffle(factor)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpsampleBlock(nn.Module):
    """Holds ``up{s}`` for each supported scale; ``forward(x, scale)`` picks one."""

    def __init__(self, channels: int, scales: tuple[int, ...], group: int = 1) -> None:
        super().__init__()
        for s in scales:
            self.add_module(f"up{s}", _Upsampler(channels, s, group=group))

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        up = getattr(self, f"up{scale}", None)
        if up is None:
            raise ValueError(f"this CARN has no x{scale} upsampler")
        return up(x)


class CARN(nn.Module):
    """CARN / CARN-M: RGB (B,3,h,w) in [0,1] → (B,3,s·h,s·w), ``s = self.scale``."""

    def __init__(self, scale: int = 4, *, mobile: bool = False, group: int | None = None, multi_scale: bool = True) -> None:
        super().__init__()
        if group is None:
            group = 4 if mobile else 1
        self.scale = scale
        nf = 64
        self.sub_mean = MeanShift(_DIV2K_MEAN, sign=-1)
        self.add_mean = MeanShift(_DIV2K_MEAN, sign=+1)
        self.entry = nn.Conv2d(3, nf, 3, 1, 1)
        self.b1 = CascadingBlock(nf, group=group, shared=mobile)
        self.b2 = CascadingBlock(nf, group=group, shared=mobile)
        self.b3 = CascadingBlock(nf, group=group, shared=mobile)
        self.c1 = BasicBlock(nf * 2, nf, 1, 0)
        self.c2 = BasicBlock(nf * 3, nf, 1, 0)
        self.c3 = BasicBlock(nf * 4, nf, 1, 0)
        # The release builds its upsamplers with ``group`` too (CARN-M: grouped, CARN: group=1).
        self.upsample = UpsampleBlock(nf, (2, 3, 4) if multi_scale else (scale,), group=group)
        self.exit = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): the cascade's output."""
        fea = self.entry(self.sub_mean(x))
        return (_cascade(fea, (self.b1, self.b2, self.b3), (self.c1, self.c2, self.c3)),)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.add_mean(self.exit(self.upsample(body[0], self.scale)))


def detect_carn(state: dict[str, torch.Tensor]) -> Fit | str:
    """CARN or CARN-M (``b1.b1`` is an efficient block, no ``b1.b2``), grouping from the grouped
    convs' shapes, single- or multi-scale from the ``upsample.up{s}`` present."""
    import re

    if reason := missing(state, "entry.weight", "b1.c1.body.0.weight", "exit.weight", "b1.b1.body.0.weight"):
        return reason
    mobile = "b1.b2.body.0.weight" not in state
    nf = shape(state, "entry.weight")[0]
    if nf != 64:
        return f"entry has {nf} output channels; CARN's width is 64"
    group = nf // shape(state, "b1.b1.body.0.weight")[1]
    ups = sorted({int(m.group(1)) for k in state if (m := re.match(r"upsample\.up(\d+)\.", k))})
    if not ups:
        return "no upsample.up<s>.* keys"
    config: dict = {}
    if group != (4 if mobile else 1):
        config["group"] = group
    name = "carn-m" if mobile else "carn"
    if len(ups) == 1:
        config["multi_scale"] = False
        return Fit(config, scale=ups[0], evidence=f"upsample.up{ups[0]} only (a single-scale file)", name=name)
    if ups != [2, 3, 4]:
        return f"upsamplers for x{ups}; CARN's multi-scale files hold x2, x3 and x4"
    config["multi_scale"] = True
    return Fit(config, scales=(2, 3, 4), evidence="a multi-scale file with x2, x3 and x4 upsamplers", name=name)


@register("carn", scales=(2, 3, 4), detect=detect_carn, description="CARN (Ahn et al. 2018), 1.59M params (multi-scale), RGB [0,1]")
def build_carn(scale: int, *, multi_scale: bool = True, group: int | None = None) -> nn.Module:
    return CARN(scale=scale, mobile=False, group=group, multi_scale=multi_scale)


@register(
    "carn-m",
    scales=(2, 3, 4),
    aliases=("carn_m", "carnm"),
    detect=detect_carn,
    description="CARN-M (Ahn et al. 2018), 0.41M params (multi-scale), grouped convs, RGB [0,1]",
)
def build_carn_m(scale: int, *, multi_scale: bool = True, group: int | None = None) -> nn.Module:
    return CARN(scale=scale, mobile=True, group=group, multi_scale=multi_scale)
