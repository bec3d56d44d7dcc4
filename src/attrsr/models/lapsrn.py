"""LapSRN: Laplacian pyramid SR network (Lai, Huang, Ahuja, Yang — CVPR 2017), on the Y channel.

Parameter names follow the most used PyTorch port, twtygqyy/pytorch-LapSRN ``lapsrn.py``, so its
state dicts load unchanged. Every layer is bias-free and 64 wide:

- ``conv_input`` (3x3, 1→64) + LeakyReLU(0.2) on the LR input;
- per pyramid level ``k`` (one level per ×2):
  ``convt_F{k}.0.cov_block`` — 10 × (3x3 conv 64→64, LeakyReLU) then a 4x4 stride-2 transposed conv
  64→64 (LeakyReLU), the feature branch, at indices 0, 2, …, 18 and 20 (the LeakyReLUs carry no weights);
  ``convt_R{k}`` (3x3, 64→1) predicts the level's residual from those features;
  ``convt_I{k}`` (4x4 stride-2 transposed conv, 1→1) upsamples the previous level's image;
  the level's image is ``convt_I{k}(image) + convt_R{k}(features)``.

So the scale is 2 ** (number of levels) and is readable from the keys: ×2 has ``*1`` only, ×4 (the
port's released model) ``*1``/``*2``, ×8 ``*1``..``*3``. The port's ``forward`` returns every level
(``HR_2x, HR_4x``); the zoo model returns the last (the contract is one image at ``scale``), and
:meth:`LapSRN.pyramid` returns them all, coarsest first (Y only, inside the luma wrapper:
``model.net.pyramid(y)``).

Forks widen or narrow it (``depth`` convs per level, ``nf`` features) or run it on RGB
(``num_channels=3``, e.g. yindaheng98/pytorch-LapSRN): all are builder options read by the detector.
The port publishes its ×4 weights as a pickled whole model (``model/model_epoch_100.pth``, a dict whose
``"model"`` is the ``nn.Module``) trained on Y in [0,1] of MATLAB-bicubic LR images; convert it there once
(``torch.save(obj["model"].state_dict(), ...)``) to use it here, as for VDSR.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from attrsr.models._luma import LumaWrapper
from attrsr.models.detection import Fit, count_children, missing, shape
from attrsr.models.registry import ContractWrapper, register


class _FeatureLevel(nn.Module):
    """One level's feature branch; a module of its own to keep the port's ``.0.cov_block.N`` keys."""

    def __init__(self, depth: int, nf: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(nf, nf, 3, padding=1, bias=False), nn.LeakyReLU(0.2)]
        layers += [nn.ConvTranspose2d(nf, nf, 4, stride=2, padding=1, bias=False), nn.LeakyReLU(0.2)]
        self.cov_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cov_block(x)


class LapSRN(nn.Module):
    """LapSRN core: LR (B,C,h,w) in [0,1] → (B,C,2^L·h,2^L·w), C = 1 (Y) for the port's weights."""

    def __init__(self, levels: int = 2, depth: int = 10, nf: int = 64, num_channels: int = 1) -> None:
        super().__init__()
        self.levels = levels
        self.conv_input = nn.Conv2d(num_channels, nf, 3, padding=1, bias=False)
        self.relu = nn.LeakyReLU(0.2)
        for k in range(1, levels + 1):  # registration order = the port's key order
            setattr(self, f"convt_I{k}", nn.ConvTranspose2d(num_channels, num_channels, 4, stride=2, padding=1, bias=False))
            setattr(self, f"convt_R{k}", nn.Conv2d(nf, num_channels, 3, padding=1, bias=False))
            setattr(self, f"convt_F{k}", nn.Sequential(_FeatureLevel(depth, nf)))
        self._init_like_the_port()

    def _init_like_the_port(self) -> None:
        # Training from scratch starts where the port's does: He-normal convs (fan-out) and an image
        # branch that is exactly bilinear x2 upsampling, so an untrained model is already bilinear.
        # (The port also sets the feature branch's transposed convs to a bilinear kernel repeated over
        # all channel pairs; torch's default init is kept there: those weights are learnt anyway.)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        tap = torch.tensor([0.25, 0.75, 0.75, 0.25])
        for k in range(1, self.levels + 1):
            weight = getattr(self, f"convt_I{k}").weight  # (C, C, 4, 4): one bilinear kernel per channel
            with torch.no_grad():
                weight.zero_()
                for c in range(weight.shape[0]):
                    weight[c, c] = torch.outer(tap, tap)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's output, ×2 first (the port's ``HR_2x, HR_4x, …``)."""
        features = self.relu(self.conv_input(x))
        image = x
        outputs = []
        for k in range(1, self.levels + 1):
            features = getattr(self, f"convt_F{k}")(features)
            image = getattr(self, f"convt_I{k}")(image) + getattr(self, f"convt_R{k}")(features)
            outputs.append(image)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pyramid(x)[-1]


_LEVEL_KEY = re.compile(r"convt_F(\d+)\.")


def detect_lapsrn(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "conv_input.weight", "convt_I1.weight", "convt_R1.weight"):
        return reason
    levels = max((int(m.group(1)) for k in state if (m := _LEVEL_KEY.match(k))), default=0)
    if levels == 0:
        return "no convt_F1.* feature branch"
    nf, channels = shape(state, "conv_input.weight")[:2]
    # The branch holds `depth` convs at even indices, then its transposed conv at index 2·depth.
    depth = (count_children(state, "convt_F1.0.cov_block.") - 1) // 2
    config = dict(depth=depth, nf=nf, num_channels=channels)
    ids = "convt_F1" if levels == 1 else f"convt_F1..convt_F{levels}"
    return Fit(config, scale=2**levels, evidence=f"{levels} pyramid level(s) ({ids}), ×2 each")


@register("lapsrn", scales=(2, 4, 8), detect=detect_lapsrn,
          description="LapSRN (Lai et al. 2017), 0.87M params at x4 (PyTorch port), Y channel, x2 per pyramid level")
def build_lapsrn(scale: int, *, depth: int = 10, nf: int = 64, num_channels: int = 1) -> nn.Module:
    levels = round(math.log2(scale))
    if 2**levels != scale:  # registry.create checks the scale first; this guards direct calls
        raise ValueError(f"LapSRN upsamples by 2 per level: scale must be a power of 2, not {scale}")
    net = LapSRN(levels=levels, depth=depth, nf=nf, num_channels=num_channels)
    if num_channels == 1:
        return LumaWrapper(net, scale, pre_upsample=False)
    return ContractWrapper(net, scale)
