"""MSRResNet, BasicSR's modified SRResNet (Ledig et al. 2017 without BN): ``msrresnet``.

Key names follow BasicSR ``basicsr/archs/srresnet_arch.py`` (``MSRResNet_x4.pth`` and the AIM 2019
constrained-SR baseline): ``conv_first``, ``body.N.conv1/conv2``, ``upconv1`` (+ ``upconv2`` at x4),
``conv_hr``, ``conv_last``. The network predicts a residual over the bilinear upsampling of the
input (``align_corners=False``); input and output are RGB in [0, 1].

The older xinntao/BasicSR (mmsr) layout — ``recon_trunk.N``, ``HRconv`` — is renamed by
:func:`msrresnet_checkpoint_filter`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_factor
from attrsr.models.registry import register


def _scaled_kaiming_(modules: list[nn.Module], scale: float = 0.1) -> None:
    # BasicSR's default_init_weights: Kaiming normal times 0.1 keeps the residual stack near identity.
    for m in modules:
        nn.init.kaiming_normal_(m.weight)
        with torch.no_grad():
            m.weight.mul_(scale)
        nn.init.zeros_(m.bias)


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        _scaled_kaiming_([self.conv1, self.conv2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """MSRResNet, RGB [0,1]. (B,3,h,w) -> (B,3,s*h,s*w) for s in {2, 3, 4}."""

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 16, num_in_ch: int = 3) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"MSRResNet supports scales 2, 3 and 4, not {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        if scale == 4:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(2)
        else:
            self.upconv1 = nn.Conv2d(num_feat, num_feat * scale * scale, 3, 1, 1)
            self.pixel_shuffle = nn.PixelShuffle(scale)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)
        ups = [self.upconv1] + ([self.upconv2] if scale == 4 else [])
        _scaled_kaiming_([self.conv_first, *ups, self.conv_hr, self.conv_last])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): features, and x for the bilinear skip."""
        return self.body(self.lrelu(self.conv_first(x))), x

    def forward_tail(self, body: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        out, x = body
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        if self.scale == 4:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


def msrresnet_checkpoint_filter(state: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """Rename the mmsr-era layout (``recon_trunk``, ``HRconv``) to BasicSR's."""
    if not any(k.startswith(("recon_trunk.", "HRconv.")) for k in state):
        return state
    renames = {"recon_trunk.": "body.", "HRconv.": "conv_hr."}
    return {
        next((new + k[len(old):] for old, new in renames.items() if k.startswith(old)), k): v
        for k, v in state.items()
    }


def detect_msrresnet(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight"):
        return reason
    num_feat = shape(state, "conv_first.weight")[0]
    config = dict(num_feat=num_feat, num_block=count_children(state, "body."))
    if "upconv2.weight" in state:
        return Fit(config, scale=4, evidence="two x2 upsampling convs (upconv2)")
    up = shape(state, "upconv1.weight")[0]
    scale = shuffle_factor(up, num_feat)
    if scale is None:
        return f"upconv1 has {up} output channels, not {num_feat}·s²"
    return Fit(config, scale=scale, evidence=f"upconv1: {up} = {num_feat}·{scale}² channels")


@register(
    "msrresnet",
    detect=detect_msrresnet,
    scales=(2, 3, 4),
    aliases=("srresnet", "msrresnet-psnr"),
    checkpoint_filter=msrresnet_checkpoint_filter,
    description="BasicSR MSRResNet (SRResNet without BN), 16 blocks x 64 features, bilinear skip",
)
def build_msrresnet(
    scale: int,
    *,
    num_feat: int = 64,
    num_block: int = 16,
    n_feats: int | None = None,
    n_blocks: int | None = None,
) -> nn.Module:
    return MSRResNet(
        scale,
        num_feat=num_feat if n_feats is None else n_feats,
        num_block=num_block if n_blocks is None else n_blocks,
    )
