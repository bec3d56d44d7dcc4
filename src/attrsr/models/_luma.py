"""Contract wrapper for networks that super-resolve only the luma (Y) channel.

SRCNN, FSRCNN, ESPCN and VDSR were trained on Y of BT.601 YCbCr in [0,1]. To meet the attrsr
contract (RGB [0,1] in and out) the wrapper converts RGB → YCbCr with MATLAB's coefficients,
super-resolves Y with the network, upscales Cb/Cr with MATLAB bicubic (as every Y-only paper
does for its colour figures) and converts back. All steps are differentiable, so attribution
methods see one RGB → RGB function.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models.registry import ContractWrapper


class LumaWrapper(ContractWrapper):
    """RGB (B,3,h,w) in [0,1] → (B,3,s·h,s·w) through a Y-channel network ``net``.

    ``pre_upsample=True`` is for networks that refine an already-interpolated image (SRCNN, VDSR):
    Y is first upscaled with MATLAB bicubic, and ``net`` maps (B,1,s·h,s·w) → (B,1,s·h,s·w).
    Otherwise ``net`` maps (B,1,h,w) → (B,1,s·h,s·w) itself (FSRCNN, ESPCN).
    Like :class:`ContractWrapper`, the state dict is exactly ``net``'s.
    """

    def __init__(self, net: nn.Module, scale: int, *, pre_upsample: bool) -> None:
        super().__init__(net, scale)
        self.pre_upsample = pre_upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from attrsr.images import rgb2ycbcr, ycbcr2rgb
        from attrsr.resize import imresize

        ycc = rgb2ycbcr(x)
        y = ycc[:, :1]
        if self.pre_upsample:
            y = imresize(y, scale=self.scale)
        y_sr = self.net(y)
        cbcr = imresize(ycc[:, 1:], scale=self.scale)
        if y_sr.shape[-2:] != cbcr.shape[-2:]:
            raise RuntimeError(f"Y network returned {tuple(y_sr.shape)}, expected spatial size {tuple(cbcr.shape[-2:])}")
        return ycbcr2rgb(torch.cat([y_sr, cbcr], dim=1))
