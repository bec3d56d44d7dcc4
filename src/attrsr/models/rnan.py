"""RNAN (Zhang et al., ICLR 2019), the SR model: ``rnan`` and the thesis's ``rnan-t``.

Key names follow the official release, yulunzhang/RNAN ``SR/code/model/rnan.py`` and
``SR/code/model/common.py`` (``RNAN_SR_F64G10P48BIX{2,3,4}.pt``): ``sub_mean``, ``head.0``,
``body_nl_low.0.body.0.*`` (non-local attention module), ``body_nl_low.0.body.1`` (its conv),
``body.G.body.{0,1}`` for the plain attention groups, ``body.<n_resgroups-2>`` (conv after them),
``body_nl_high.0.*``, ``tail.0.*``, ``tail.1``, ``add_mean``. Inside an attention module:
``RA_RB1.0``, ``RA_TB.0.body.{0,1}``, ``RA_MB.0.MB_RB1.{0[,1]}``, ``MB_Down.0``, ``MB_RB2.{0,1}``,
``MB_Up.0`` (ConvTranspose2d), ``MB_RB3.0``, ``MB_1x1conv.0``, ``RA_tail.{0,1}``; residual blocks
keep EDSR's ``body.{0,2}``; the non-local block has ``g``, ``theta``, ``phi``, ``W``.

Works on [0, 255] (wrapped by :class:`ContractWrapper`). The mask branch halves the resolution with
a stride-2 conv and doubles it back with a transposed conv, which only matches odd sizes when
padded: odd inputs are padded by one reflected row/column and the output is cropped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models._edsr_common import DIV2K_RGB_MEAN, MeanShift, ResBlock, Upsampler, conv, pad_to_multiple
from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_scale
from attrsr.models.registry import ContractWrapper, register


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block over all H*W positions (no sub-sampling).

    As in the official code the softmax runs over dim 1 of the (N, N) affinity (over query
    positions for each key), and ``W`` is zero-initialised so the block starts as the identity.
    Shapes: (B,C,H,W) -> (B,C,H,W); memory grows with (H*W)^2.
    """

    def __init__(self, in_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(in_channels, inter_channels, 1)
        self.W = nn.Conv2d(inter_channels, in_channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, inter_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(b, self.inter_channels, -1)
        attn = F.softmax(torch.matmul(theta_x, phi_x), dim=1)
        y = torch.matmul(attn, g_x).permute(0, 2, 1).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


class TrunkBranch(nn.Module):
    """Two residual blocks (``body.0``, ``body.1``)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ResBlock(n_feats), ResBlock(n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MaskBranch(nn.Module):
    """Down-up mask branch producing sigmoid weights in (0,1); optionally non-local first.

    Shapes: (B,C,H,W) -> (B,C,H,W), H and W even.
    """

    def __init__(self, n_feats: int, non_local: bool) -> None:
        super().__init__()
        rb1: list[nn.Module] = [NonLocalBlock2D(n_feats, n_feats // 2)] if non_local else []
        self.MB_RB1 = nn.Sequential(*rb1, ResBlock(n_feats))
        self.MB_Down = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, stride=2, padding=1))
        self.MB_RB2 = nn.Sequential(ResBlock(n_feats), ResBlock(n_feats))
        self.MB_Up = nn.Sequential(nn.ConvTranspose2d(n_feats, n_feats, 6, stride=2, padding=2))
        self.MB_RB3 = nn.Sequential(ResBlock(n_feats))
        self.MB_1x1conv = nn.Sequential(nn.Conv2d(n_feats, n_feats, 1))
        self.MB_sigmoid = nn.Sequential(nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_rb1 = self.MB_RB1(x)
        x_up = self.MB_Up(self.MB_RB2(self.MB_Down(x_rb1)))
        return self.MB_sigmoid(self.MB_1x1conv(self.MB_RB3(x_rb1 + x_up)))


class ResAttModule(nn.Module):
    """(Non-)local residual attention module: RB, then trunk * mask + input, then two RBs.

    Official class names: ``ResAttModuleDownUpPlus`` / ``NLResAttModuleDownUpPlus``.
    Shapes: (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(self, n_feats: int, non_local: bool) -> None:
        super().__init__()
        self.RA_RB1 = nn.Sequential(ResBlock(n_feats))
        self.RA_TB = nn.Sequential(TrunkBranch(n_feats))
        self.RA_MB = nn.Sequential(MaskBranch(n_feats, non_local))
        self.RA_tail = nn.Sequential(ResBlock(n_feats), ResBlock(n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.RA_RB1(x)
        return self.RA_tail(self.RA_TB(x) * self.RA_MB(x) + x)


class ResGroup(nn.Module):
    """One attention module and a conv (no group-level skip, as in the official code)."""

    def __init__(self, n_feats: int, non_local: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(ResAttModule(n_feats, non_local), conv(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class RNAN(nn.Module):
    """RNAN for SR on [0, rgb_range] data. (B,3,h,w) -> (B,3,s*h,s*w).

    ``n_resgroups`` counts all attention groups: the first and last are non-local, the
    ``n_resgroups - 2`` in between local (so the minimum is 2).
    """

    def __init__(
        self, scale: int, n_resgroups: int = 10, n_feats: int = 64, rgb_range: float = 255.0, n_colors: int = 3
    ) -> None:
        super().__init__()
        if n_resgroups < 2:
            raise ValueError("RNAN needs n_resgroups >= 2 (a non-local group at each end)")
        self.scale = scale
        self.sub_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, sign=-1)
        self.head = nn.Sequential(conv(n_colors, n_feats))
        self.body_nl_low = nn.Sequential(ResGroup(n_feats, non_local=True))
        self.body = nn.Sequential(
            *[ResGroup(n_feats, non_local=False) for _ in range(n_resgroups - 2)], conv(n_feats, n_feats)
        )
        self.body_nl_high = nn.Sequential(ResGroup(n_feats, non_local=True))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, n_colors))
        self.add_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, sign=+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.forward_tail(self.forward_body(x))[..., : h * self.scale, : w * self.scale]

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`), on x padded to even size."""
        x, _, _ = pad_to_multiple(x, 2, mode="reflect" if min(x.shape[-2:]) > 1 else "replicate")
        shallow = self.head(self.sub_mean(x))
        return (self.body_nl_high(self.body(self.body_nl_low(shallow))) + shallow,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.add_mean(self.tail(body[0]))


def _rnan(scale: int, n_resgroups: int, n_feats: int, rgb_range: float) -> nn.Module:
    net = RNAN(scale, n_resgroups=n_resgroups, n_feats=n_feats, rgb_range=rgb_range)
    return ContractWrapper(net, scale, value_range=rgb_range)


def detect_rnan(state: dict[str, torch.Tensor]) -> Fit | str:
    """RNAN (RNAN-T: the two non-local groups only): groups, width, scale."""
    if reason := missing(state, "head.0.weight", "body_nl_low.0.body.0.RA_RB1.0.body.0.weight", "body_nl_high.0.body.1.weight"):
        return reason
    n_feats = shape(state, "head.0.weight")[0]
    scale, evidence = shuffle_scale(state, "tail.0.", n_feats)
    if scale is None:
        return evidence
    groups = count_children(state, "body.") - 1 + 2  # local groups + the two non-local ones
    return Fit(dict(n_resgroups=groups, n_feats=n_feats), scale=scale, evidence=evidence,
               name="rnan-t" if groups == 2 else "rnan")


@register(
    "rnan",
    scales=(2, 3, 4, 8),
    detect=detect_rnan,
    aliases=("rnan-b",),
    description="RNAN (SR), 10 attention groups, 64 features (official release, [0,255] inside)",
)
def build_rnan(scale: int, *, n_resgroups: int = 10, n_feats: int = 64, rgb_range: float = 255.0) -> nn.Module:
    return _rnan(scale, n_resgroups, n_feats, rgb_range)


# Thesis Table 4.1: RNAN-B has 10 "residual blocks" (attention groups) and 9.1M parameters, RNAN-T
# 2 groups and 1.9M. 10 groups give 9,107,267 at x2 (= 9.1M); 2 groups -- the two non-local
# groups and no local ones -- give 1,985,347 (the table's 1.9M looks truncated rather than rounded).
@register(
    "rnan-t",
    scales=(2, 3, 4, 8),
    detect=detect_rnan,
    description="RNAN-T of the attribution-prior thesis: 2 (non-local) attention groups, 64 features",
)
def build_rnan_t(scale: int, *, n_resgroups: int = 2, n_feats: int = 64, rgb_range: float = 255.0) -> nn.Module:
    return _rnan(scale, n_resgroups, n_feats, rgb_range)
