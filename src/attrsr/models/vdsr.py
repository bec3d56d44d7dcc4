"""VDSR: very deep SR network (Kim, Lee, Lee — CVPR 2016), 20 layers, on the Y channel.

Parameter names follow twtygqyy/pytorch-vdsr ``vdsr.py`` (current release): ``input`` (3x3, 1→64),
``residual_layer.0..17.conv`` (3x3, 64→64), ``output`` (3x3, 64→1), all without bias; the network
predicts the residual added to its (bicubic-upscaled) input.

That repository publishes its weights as a pickled whole model (``model/model_epoch_50.pth``, a dict
whose ``"model"`` is the ``nn.Module``), not a state dict: unpickling it needs the repository's own
classes, so convert it there once (``torch.save(obj["model"].state_dict(), ...)``) to use it here.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.detection import Fit, count_children, missing, shape
from attrsr.models.registry import register


class ConvReLU(nn.Module):
    """3x3 conv (no bias) + ReLU; a module of its own to keep the ``residual_layer.N.conv`` keys."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class VDSR(nn.Module):
    """VDSR core: upscaled Y (B,1,H,W) in [0,1] → Y + predicted residual (B,1,H,W)."""

    def __init__(self, num_layers: int = 20, nf: int = 64) -> None:
        super().__init__()
        self.input = nn.Conv2d(1, nf, 3, padding=1, bias=False)
        self.residual_layer = nn.Sequential(*[ConvReLU(nf) for _ in range(num_layers - 2)])
        self.output = nn.Conv2d(nf, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.input(x))
        return self.output(self.residual_layer(out)) + x


def detect_vdsr(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "input.weight", "residual_layer.0.conv.weight", "output.weight"):
        return reason
    config = dict(num_layers=count_children(state, "residual_layer.") + 2, nf=shape(state, "input.weight")[0])
    return Fit(config, evidence="VDSR refines a bicubic-upscaled image: the same weights run at any scale")


@register("vdsr", scales=(2, 3, 4), detect=detect_vdsr, description="VDSR (Kim et al. 2016), 0.67M params, Y channel on bicubic")
def build_vdsr(scale: int, *, num_layers: int = 20, nf: int = 64) -> nn.Module:
    return LumaWrapper(VDSR(num_layers=num_layers, nf=nf), scale, pre_upsample=True)
