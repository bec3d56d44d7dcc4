"""What the saliency-driven augmentations keep: a picture grid of training patches under each op.

One row per patch: LR, HR, its CAM saliency, then the network input each op makes from it — CutMix
with a random box vs ADD's CutMix (the source's most salient box), CutBlur with a random box vs
ADD's CutBlur (HR detail put where the patch is most salient), and ADD+'s saliency-ranked blocks —
each with its region outlined, so a reader sees what ADD keeps that the vanilla op destroys.

Shapes: ``lr`` (B,3,h,w) and ``hr`` (B,3,s·h,s·w) in [0,1], ``saliency`` (B,h,w) ≥ 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attrsr.data import augment as ops

COLUMNS = ("LR", "HR", "CAM saliency", "CutMix", "ADD · CutMix", "CutBlur", "ADD · CutBlur", "ADD+ · CutBlur blocks")


def augmentation_panels(lr: torch.Tensor, hr: torch.Tensor, saliency: torch.Tensor, scale: int, *,
                        alpha: float = 0.5, n_blocks: int = 3, block_ratio: float = 0.3, seed: int = 0) -> dict[str, tuple]:
    """``{column: (images (B,3,s·h,s·w) in [0,1] or saliency (B,h,w), region mask (B,1,h,w) or None)}``.

    Every op gets the same box size (``alpha`` of the patch side) and CutBlur pastes HR into the
    upsampled LR (``hr_in_lr``), so the columns differ only in *where* the region goes. CutMix's
    source is the next patch of the batch (a fixed permutation), for vanilla and ADD alike.
    """
    b, _, h, w = lr.shape
    rng = np.random.default_rng(seed)
    bh, bw = max(1, int(h * alpha)), max(1, int(w * alpha))
    perm = torch.roll(torch.arange(b), -1)
    size = torch.tensor([[bh, bw]]).expand(b, 2)
    corner = torch.stack([torch.from_numpy(rng.integers(0, h - bh + 1, b)), torch.from_numpy(rng.integers(0, w - bw + 1, b))], 1)
    random_box = torch.cat([corner, size], 1).long()
    salient_box = ops.saliency_boxes(saliency, bh, bw, mode="max")
    source_box = ops.saliency_boxes(saliency[perm], bh, bw, mode="max")  # ADD's CutMix: the source's salient region
    blocks = ops.saliency_blocks(saliency, max(1, int(h * block_ratio)), max(1, int(w * block_ratio)), n_blocks)

    def box(boxes: torch.Tensor) -> torch.Tensor:
        return ops.box_mask(boxes, h, w)

    def cutmix(boxes: torch.Tensor) -> torch.Tensor:
        return ops.upsample_nearest(ops.cutmix(lr, hr, rng, scale, boxes=boxes, perm=perm).input, scale)

    def cutblur(mask: torch.Tensor) -> torch.Tensor:
        return ops.cutblur(lr, hr, rng, scale, mask=mask, direction="hr_in_lr").input

    return {
        "LR": (ops.upsample_nearest(lr, scale), None),
        "HR": (hr, None),
        "CAM saliency": (saliency, None),
        "CutMix": (cutmix(random_box), box(random_box)),
        "ADD · CutMix": (cutmix(source_box), box(source_box)),  # pasted at the same place in the target
        "CutBlur": (cutblur(box(random_box)), box(random_box)),
        "ADD · CutBlur": (cutblur(box(salient_box)), box(salient_box)),
        "ADD+ · CutBlur blocks": (cutblur(blocks), blocks),
    }


def save_augmentation_figure(panels: dict[str, tuple], scale: int, path: str | Path, *, title: str = "") -> Path:
    """One row per patch, one column per panel (regions outlined in red); written as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import io

    from attrsr.fileio import write_bytes_atomic

    names = list(panels)
    rows = panels[names[0]][0].shape[0]
    fig, axes = plt.subplots(rows, len(names), figsize=(1.9 * len(names), 1.9 * rows + 0.4), squeeze=False)
    for c, name in enumerate(names):
        images, region = panels[name]
        for r in range(rows):
            ax = axes[r, c]
            if images.ndim == 3:  # saliency (h, w), shown on the HR grid
                ax.imshow(images[r].float().numpy(), cmap="inferno", interpolation="nearest")
            else:
                ax.imshow(images[r].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            if region is not None:
                ax.contour(ops.upsample_nearest(region[r : r + 1], scale)[0, 0].numpy(), levels=[0.5], colors="red", linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    return write_bytes_atomic(Path(path), buf.getvalue())
