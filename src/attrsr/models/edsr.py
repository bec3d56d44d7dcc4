"""EDSR (Lim et al., CVPRW 2017): ``edsr``, ``edsr-baseline`` and the thesis's ``edsr-t``.

Key names follow the official release, sanghyun-son/EDSR-PyTorch ``src/model/edsr.py`` (the
``edsr_x4-4f62e9ef.pt`` / ``edsr_baseline_x4-6b446fab.pt`` files): ``sub_mean``, ``head.0``,
``body.N.body.{0,2}``, ``body.<n_resblocks>`` (the conv after the residual blocks), ``tail.0.*``
(upsampler convs), ``tail.1`` and ``add_mean``. The network works on [0, 255] and is wrapped by
:class:`ContractWrapper` (``value_range=255``), whose state dict has no prefix.

BasicSR's EDSR (``basicsr/archs/edsr_arch.py``: ``conv_first``, ``body.N.conv1/conv2``,
``conv_after_body``, ``upsample.N``, ``conv_last``) computes the same function; its checkpoints are
renamed by :func:`edsr_checkpoint_filter`.
"""

from __future__ import annotations

import torch
from torch import nn

from attrsr.models._edsr_common import (
    DIV2K_RGB_MEAN,
    MeanShiftedSR,
    ResBlock,
    body_depth,
    default_mean_shift_state,
)
from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_scale
from attrsr.models.registry import ContractWrapper, register


class EDSR(MeanShiftedSR):
    """EDSR on [0, rgb_range] data: residual blocks in the shared skeleton. (B,3,h,w) -> (B,3,s*h,s*w)."""

    def __init__(
        self,
        scale: int,
        n_resblocks: int = 32,
        n_feats: int = 256,
        res_scale: float = 0.1,
        rgb_range: float = 255.0,
        n_colors: int = 3,
    ) -> None:
        blocks = lambda: [ResBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)]  # noqa: E731
        super().__init__(scale, blocks, n_feats, rgb_range, DIV2K_RGB_MEAN, n_colors)


def _edsr(
    scale: int, n_resblocks: int, n_feats: int, res_scale: float, rgb_range: float, n_blocks: int | None
) -> nn.Module:
    if n_blocks is not None:  # generic alias used across the zoo
        n_resblocks = n_blocks
    net = EDSR(scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, rgb_range=rgb_range)
    return ContractWrapper(net, scale, value_range=rgb_range)


def edsr_checkpoint_filter(state: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """Rename BasicSR's EDSR layout to the official one; official dicts pass through unchanged.

    BasicSR keeps the DIV2K mean as a plain tensor (never saved; dropped here if a ``mean`` entry
    exists) and subtracts it before multiplying by ``img_range=255``, which equals the official
    MeanShift convs; those are filled in with the official initial values when absent.
    """
    if not any(k.startswith(("conv_first.", "conv_after_body.")) for k in state):
        return state
    n_blocks = body_depth(state, "body.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "mean":
            continue
        if key.startswith("conv_first."):
            key = "head.0." + key[len("conv_first."):]
        elif key.startswith("conv_after_body."):
            key = f"body.{n_blocks}." + key[len("conv_after_body."):]
        elif key.startswith("body.") and (".conv1." in key or ".conv2." in key):
            key = key.replace(".conv1.", ".body.0.").replace(".conv2.", ".body.2.")
        elif key.startswith("upsample."):
            key = "tail.0." + key[len("upsample."):]
        elif key.startswith("conv_last."):
            key = "tail.1." + key[len("conv_last."):]
        out[key] = value
    for key, value in default_mean_shift_state(255.0).items():
        out.setdefault(key, value)
    return out


def detect_edsr(state: dict[str, torch.Tensor]) -> Fit | str:
    """EDSR / EDSR-baseline: width and depth from the shapes, scale from the upsampler convs.

    ``res_scale`` is not in the weights: the official EDSR (256 features) uses 0.1, the baseline
    and narrower models 1, so 256-wide files are read as ``edsr`` and narrower ones as
    ``edsr-baseline`` (``edsr-t`` is the baseline under another name).
    """
    if reason := missing(state, "head.0.weight", "body.0.body.0.weight", "tail.0.0.weight", "tail.1.weight"):
        return reason
    if len(shape(state, "body.0.body.0.weight")) != 4:
        return "body.0.body.0 is not a convolution (not EDSR's residual block)"
    n_feats = shape(state, "head.0.weight")[0]
    scale, evidence = shuffle_scale(state, "tail.0.", n_feats)
    if scale is None:
        return evidence
    config = dict(n_resblocks=count_children(state, "body.") - 1, n_feats=n_feats)
    return Fit(config, scale=scale, evidence=evidence, name="edsr" if n_feats >= 256 else "edsr-baseline")


@register(
    "edsr",
    scales=(2, 3, 4),
    detect=detect_edsr,
    aliases=("edsr-b", "edsr-l"),
    checkpoint_filter=edsr_checkpoint_filter,
    description="EDSR, 32 blocks x 256 features, res_scale 0.1 (official release, [0,255] inside)",
)
def build_edsr(
    scale: int,
    *,
    n_resblocks: int = 32,
    n_feats: int = 256,
    res_scale: float = 0.1,
    rgb_range: float = 255.0,
    n_blocks: int | None = None,
) -> nn.Module:
    return _edsr(scale, n_resblocks, n_feats, res_scale, rgb_range, n_blocks)


@register(
    "edsr-baseline",
    scales=(2, 3, 4),
    detect=detect_edsr,
    checkpoint_filter=edsr_checkpoint_filter,
    description="EDSR baseline, 16 blocks x 64 features, res_scale 1 (official release)",
)
def build_edsr_baseline(
    scale: int,
    *,
    n_resblocks: int = 16,
    n_feats: int = 64,
    res_scale: float = 1.0,
    rgb_range: float = 255.0,
    n_blocks: int | None = None,
) -> nn.Module:
    return _edsr(scale, n_resblocks, n_feats, res_scale, rgb_range, n_blocks)


# The non-local attribution prior thesis, Table 4.1: EDSR-T has 16 residual blocks of 64 features,
# no BN, 1.4M parameters (x2) -- exactly the EDSR baseline (1,369,859 at x2). Registered under its
# own name so thesis configs read as written.
@register(
    "edsr-t",
    scales=(2, 3, 4),
    detect=detect_edsr,
    checkpoint_filter=edsr_checkpoint_filter,
    description="EDSR-T of the attribution-prior thesis (= edsr-baseline: 16 blocks x 64 features)",
)
def build_edsr_t(
    scale: int,
    *,
    n_resblocks: int = 16,
    n_feats: int = 64,
    res_scale: float = 1.0,
    rgb_range: float = 255.0,
    n_blocks: int | None = None,
) -> nn.Module:
    return _edsr(scale, n_resblocks, n_feats, res_scale, rgb_range, n_blocks)
