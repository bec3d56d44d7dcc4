"""Layers shared by the EDSR-PyTorch family (EDSR, RCAN, RNAN, SAN).

These networks come from one code base (sanghyun-son/EDSR-PyTorch ``src/model/common.py`` and the
copies of it in yulunzhang/RCAN, yulunzhang/RNAN and daitao/SAN). They share the sub-module names
that appear in every published checkpoint: ``sub_mean``/``add_mean`` (a 1x1 "MeanShift" conv),
``head.0``, residual blocks whose two convs sit at ``body.0`` and ``body.2``, and an
``Upsampler`` whose convs sit at even indices of ``tail.0``. They all work on [0, 255] data
(``rgb_range=255``), so the builders wrap them in :class:`~attrsr.models.registry.ContractWrapper`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: RGB mean of the 800 DIV2K training images, the default of every model in this family.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """A 'same'-padded convolution (EDSR's ``default_conv``)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Adds (``sign=+1``) or subtracts (``sign=-1``) ``rgb_range * mean`` per channel.

    The official code implements this as a frozen 3->3 1x1 convolution, so checkpoints carry
    ``weight`` (3,3,1,1) and ``bias`` (3,). They are persistent *buffers* here: they load and save
    under the official names but are not parameters, so optimisers never touch them and parameter
    counts equal the published (trainable) ones. Loaded values are used as they are (in some
    releases the shift was accidentally trainable, so it need not be the identity).

    Shapes: (B,3,H,W) -> (B,3,H,W).
    """

    def __init__(
        self,
        rgb_range: float = 255.0,
        rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
        rgb_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        sign: int = -1,
    ) -> None:
        super().__init__()
        weight, bias = mean_shift_tensors(rgb_range, rgb_mean, rgb_std, sign)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


def mean_shift_tensors(
    rgb_range: float = 255.0,
    rgb_mean: tuple[float, float, float] = DIV2K_RGB_MEAN,
    rgb_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    sign: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(weight, bias)`` the official ``MeanShift`` initialises, computed the same way
    (float32, ``sign * rgb_range * mean / std``) so that values match theirs bit for bit."""
    std = torch.tensor(rgb_std, dtype=torch.float32)
    weight = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
    bias = sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32) / std
    return weight, bias


def default_mean_shift_state(rgb_range: float = 255.0) -> dict[str, torch.Tensor]:
    """``sub_mean``/``add_mean`` entries for checkpoints that lack them (e.g. BasicSR's layout,
    which keeps the mean as a plain attribute and subtracts it before scaling by ``img_range``)."""
    sw, sb = mean_shift_tensors(rgb_range, sign=-1)
    aw, ab = mean_shift_tensors(rgb_range, sign=+1)
    return {"sub_mean.weight": sw, "sub_mean.bias": sb, "add_mean.weight": aw, "add_mean.bias": ab}


class ResBlock(nn.Module):
    """EDSR residual block without batch norm: ``x + res_scale * conv(relu(conv(x)))``.

    Keys: ``body.0`` and ``body.2`` (``body.1`` is the ReLU). Shapes: (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, kernel_size), nn.ReLU(inplace=True), conv(n_feats, n_feats, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1:
            res = res * self.res_scale
        return res + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: log2(s) x (conv C->4C, PixelShuffle(2)) for s = 2^n, or one
    (conv C->9C, PixelShuffle(3)) for s = 3. Convs at indices 0, 2, 4, …

    Shapes: (B,C,H,W) -> (B,C,sH,sW).
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale >= 1 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upsampler supports scales 2^n and 3, not {scale}")
        super().__init__(*layers)


class MeanShiftedSR(nn.Module):
    """The skeleton EDSR and RCAN share, on [0, rgb_range] data: subtract the mean, a head conv, a
    body of ``make_blocks()`` and a conv with the long skip, an upsampler and a conv, add the mean back.
    (B,3,h,w) -> (B,3,s*h,s*w). Sub-module names are the official ones (``sub_mean``, ``head.0``,
    ``body.N``, ``tail.0``/``tail.1``, ``add_mean``)."""

    def __init__(self, scale: int, make_blocks: Callable[[], list[nn.Module]], n_feats: int, rgb_range: float,
                 rgb_mean: tuple[float, float, float], n_colors: int) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, rgb_mean, sign=-1)
        self.head = nn.Sequential(conv(n_colors, n_feats))
        # Built here, after the head: the modules' creation order is the random initialisation's order.
        self.body = nn.Sequential(*make_blocks(), conv(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, n_colors))
        self.add_mean = MeanShift(rgb_range, rgb_mean, sign=+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): up to the long skip."""
        x = self.head(self.sub_mean(x))
        return (self.body(x) + x,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.add_mean(self.tail(body[0]))


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "symmetric") -> tuple[torch.Tensor, int, int]:
    """Pad the bottom/right of ``x`` (B,C,H,W) so that H and W are multiples of ``multiple``.

    ``symmetric`` repeats the edge pixel and mirrors beyond it (what SwinIR's test script does by
    concatenating a flipped copy); ``reflect`` mirrors without repeating the edge. Returns the padded
    tensor and the original (H, W) so callers can crop ``scale * H, scale * W`` afterwards.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, h, w
    if mode == "symmetric":
        # Concatenating flipped copies handles pads larger than the image (tiny inputs) too.
        while x.shape[-2] < h + ph:
            x = torch.cat([x, torch.flip(x, [-2])], dim=-2)
        while x.shape[-1] < w + pw:
            x = torch.cat([x, torch.flip(x, [-1])], dim=-1)
        return x[..., : h + ph, : w + pw], h, w
    return F.pad(x, (0, pw, 0, ph), mode=mode), h, w


def body_depth(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered children ``prefix.N.`` in a state dict (max N + 1; 0 when none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = [int(m.group(1)) for k in state if (m := pattern.match(k))]
    return max(idx) + 1 if idx else 0
