"""RRDBNet, the ESRGAN generator (Wang et al., ECCVW 2018): ``rrdbnet``.

Key names follow BasicSR ``basicsr/archs/rrdbnet_arch.py`` (the layout of ``ESRGAN_*``,
``RRDBNet_PSNR_SRx4_DF2K_official-150ff491.pth`` and Real-ESRGAN's ``RealESRGAN_x4plus.pth``):
``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``. Input and output are RGB in [0, 1], no mean shift.

Upsampling is always x4 (two nearest-neighbour x2 steps). As in BasicSR, x2 and x1 models first
pixel-unshuffle the input by 2 or 4 (``conv_first`` then takes 12 or 48 channels); inputs whose
size is not a multiple of that factor are reflect-padded and the output cropped, as Real-ESRGAN's
inference code does.

The two older layouts of xinntao/ESRGAN are renamed by :func:`rrdbnet_checkpoint_filter`:
``RRDBNet_arch.py`` (``RRDB_trunk.N.RDB1.conv1``, ``trunk_conv``, ``upconv1/2``, ``HRconv``) and
the original "old arch" files (``model.0``, ``model.1.sub.N.RDB1.conv1.0``, ``model.3/6/8/10``).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models._edsr_common import body_depth, pad_to_multiple
from attrsr.models.detection import Fit, count_children, missing, shape
from attrsr.models.registry import register


class ResidualDenseBlock(nn.Module):
    """Five densely connected convs; ``x + 0.2 * conv5(...)``. (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # ESRGAN's initialisation: Kaiming normal scaled by 0.1 keeps the deep residual stack stable.
        for m in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(m.weight)
            with torch.no_grad():
                m.weight.mul_(0.1)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: ``x + 0.2 * rdb3(rdb2(rdb1(x)))``."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN generator, RGB [0,1]. (B,3,h,w) -> (B,3,s*h,s*w) for s in {1, 2, 4}."""

    def __init__(
        self, scale: int = 4, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32, num_in_ch: int = 3
    ) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scales 1, 2 and 4, not {scale}")
        self.scale = scale
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_in_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.forward_tail(self.forward_body(x))[..., : h * self.scale, : w * self.scale]

    @property
    def offers_body_tail_split(self) -> bool:
        # The x2/x1 variants' body runs on the pixel-unshuffled grid, coarser than x's: no split
        # on x's LR grid (:func:`attrsr.models.registry.body_and_tail`).
        return self.unshuffle == 1

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The RRDB trunk with its skip, on x's grid at x4 (on the unshuffled grid otherwise)."""
        if self.unshuffle > 1:
            mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
            x, _, _ = pad_to_multiple(x, self.unshuffle, mode=mode)
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        return (feat + self.conv_body(self.body(feat)),)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        feat = self.lrelu(self.conv_up1(F.interpolate(body[0], scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


_OLD_ARCH_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_ARCH_TOP = {"model.0.": "conv_first.", "model.3.": "conv_up1.", "model.6.": "conv_up2.",
                 "model.8.": "conv_hr.", "model.10.": "conv_last."}
_ESRGAN_TOP = {"RRDB_trunk.": "body.", "trunk_conv.": "conv_body.", "upconv1.": "conv_up1.",
               "upconv2.": "conv_up2.", "HRconv.": "conv_hr."}


def rrdbnet_checkpoint_filter(state: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """Rename xinntao/ESRGAN's two older layouts to BasicSR's; BasicSR dicts pass unchanged."""
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith("model.1.sub.") for k in state):  # the original "old arch" release
        n_blocks = body_depth({k: v for k, v in state.items() if ".RDB" in k}, "model.1.sub.")
        for key, value in state.items():
            if m := _OLD_ARCH_RDB.match(key):
                block, rdb, conv_i, kind = m.groups()
                key = f"body.{block}.rdb{rdb}.conv{conv_i}.{kind}"
            elif key.startswith(f"model.1.sub.{n_blocks}."):
                key = "conv_body." + key[len(f"model.1.sub.{n_blocks}."):]
            else:
                key = next((new + key[len(old):] for old, new in _OLD_ARCH_TOP.items() if key.startswith(old)), key)
            out[key] = value
        return out
    if any(k.startswith(("RRDB_trunk.", "trunk_conv.")) for k in state):  # ESRGAN RRDBNet_arch.py
        for key, value in state.items():
            key = next((new + key[len(old):] for old, new in _ESRGAN_TOP.items() if key.startswith(old)), key)
            out[key.replace(".RDB1.", ".rdb1.").replace(".RDB2.", ".rdb2.").replace(".RDB3.", ".rdb3.")] = value
        return out
    return state


def detect_rrdbnet(state: dict[str, torch.Tensor]) -> Fit | str:
    """Width, depth and growth from the shapes; x4/x2/x1 from conv_first's (pixel-unshuffled) input."""
    if reason := missing(state, "conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up1.weight", "conv_up2.weight"):
        return reason
    num_feat, cin = shape(state, "conv_first.weight")[:2]
    scale = {3: 4, 12: 2, 48: 1}.get(cin)
    if scale is None:
        return f"conv_first takes {cin} channels (x4: 3, x2: 12, x1: 48)"
    config = dict(num_feat=num_feat, num_block=count_children(state, "body."),
                  num_grow_ch=shape(state, "body.0.rdb1.conv1.weight")[0])
    return Fit(config, scale=scale, evidence=f"conv_first takes {cin} = 3·{4 // scale}² (pixel-unshuffled) channels")


@register(
    "rrdbnet",
    detect=detect_rrdbnet,
    scales=(1, 2, 4),
    aliases=("esrgan", "rrdb"),
    checkpoint_filter=rrdbnet_checkpoint_filter,
    description="ESRGAN's RRDBNet, 23 RRDBs, 64 features, growth 32 (BasicSR keys; RGB [0,1])",
)
def build_rrdbnet(
    scale: int,
    *,
    num_feat: int = 64,
    num_block: int = 23,
    num_grow_ch: int = 32,
    n_feats: int | None = None,
    n_blocks: int | None = None,
) -> nn.Module:
    return RRDBNet(
        scale,
        num_feat=num_feat if n_feats is None else n_feats,
        num_block=num_block if n_blocks is None else n_blocks,
        num_grow_ch=num_grow_ch,
    )
