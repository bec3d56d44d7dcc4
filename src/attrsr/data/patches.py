"""Aligned LR/HR training patches: crop, flips and 90° rotations, driven by a per-patch seed.

Functional core (:func:`crop_pair`, :func:`augment_pair`) on H×W×3 arrays, and
:class:`PatchDataset`, the map-style dataset a DataLoader reads with :class:`PatchRequest` indices
(see :mod:`attrsr.data.samplers`). Crops copy only the patch out of the memory-mapped image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attrsr.data.cache import DecodedImages
from attrsr.data.samplers import PatchRequest
from attrsr.errors import AttrsrError


def crop_pair(lr: np.ndarray, hr: np.ndarray, top: int, left: int, size: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """LR ``size``×``size`` patch at (top, left) and the HR patch covering the same area."""
    s = scale
    return lr[top : top + size, left : left + size], hr[top * s : (top + size) * s, left * s : (left + size) * s]


def augment_pair(lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same flips/transposition on both (the 8 symmetries of the square; rot90 = transpose + flip)."""
    if hflip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    if vflip:
        lr, hr = lr[::-1], hr[::-1]
    if transpose:
        lr, hr = lr.transpose(1, 0, 2), hr.transpose(1, 0, 2)
    return lr, hr


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 (any strides) → (3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


class PatchDataset(torch.utils.data.Dataset):
    """Items ``{"lr": (3,p,p), "hr": (3,sp,sp), "image": i, "top": y, "left": x}`` for a request.

    ``top``/``left`` are the LR coordinates of the crop before augmentation.
    """

    def __init__(self, images: DecodedImages, patch_size: int, *, flip: bool = True, rot90: bool = True, source: str | Path = "") -> None:
        self.images = images
        self.scale = images.scale
        self.patch_size = patch_size
        self.flip = flip
        self.rot90 = rot90
        small = [(n, hw) for n, hw in zip(images.names, images.lr_sizes) if min(hw) < patch_size]
        if small:
            name, (h, w) = small[0]
            raise AttrsrError(
                f"{source or 'training data'}: image {name!r} is only {w}×{h} at LR (x{self.scale}), smaller than "
                f"data.patch_size={patch_size} ({len(small)} such image(s)); lower data.patch_size or remove them"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, req: PatchRequest) -> dict:
        i, seed, top, left = req
        lr_img, hr_img = self.images.lr(i), self.images.hr(i)
        h, w = lr_img.shape[:2]
        p = self.patch_size
        rng = np.random.default_rng(seed)
        # Draw all random numbers unconditionally so a patch's flips do not depend on whether its
        # position was fixed by the request.
        ry, rx = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        hflip, vflip, transpose = rng.random(3) < 0.5
        if top < 0:
            top, left = ry, rx
        elif top + p > h or left + p > w:
            raise IndexError(f"patch at ({top},{left}) of size {p} leaves image {self.images.names[i]} ({h}×{w})")
        lr, hr = crop_pair(lr_img, hr_img, top, left, p, self.scale)
        lr, hr = augment_pair(lr, hr, self.flip and hflip, self.flip and vflip, self.rot90 and transpose)
        return {"lr": _to_tensor(lr), "hr": _to_tensor(hr), "image": i, "top": top, "left": left}
