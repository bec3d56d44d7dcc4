"""Aligned LR/HR training patches: crop, flips and 90° rotations, driven by a per-patch seed.

Functional core (:func:`crop_pair`, :func:`augment_pair`) on H×W×3 arrays, and
:class:`PatchDataset`, the map-style dataset a DataLoader reads with :class:`PatchRequest` indices
(see :mod:`attrsr.data.samplers`). Crops copy only the patch out of the memory-mapped image.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def symmetry(arr: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    """One of the 8 symmetries of the square on an H×W or H×W×C array (rot90 = transpose + flip)."""
    if hflip:
        arr = arr[:, ::-1]
    if vflip:
        arr = arr[::-1]
    if transpose:
        arr = arr.swapaxes(0, 1)
    return arr


def augment_pair(lr: np.ndarray, hr: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same flips/transposition on both (the 8 symmetries of the square; rot90 = transpose + flip)."""
    return symmetry(lr, hflip, vflip, transpose), symmetry(hr, hflip, vflip, transpose)


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 (any strides) → (3,H,W) float32 in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def _aux_tensor(arr: np.ndarray) -> torch.Tensor:
    """An auxiliary patch as it was stored: H×W → (H,W), H×W×C → (C,H,W), dtype kept."""
    return torch.from_numpy(np.ascontiguousarray(arr if arr.ndim == 2 else arr.transpose(2, 0, 1)))


class PatchDataset(torch.utils.data.Dataset):
    """Items ``{"lr": (3,p,p), "hr": (3,sp,sp), "image": i, "top": y, "left": x}`` for a request.

    ``top``/``left`` are the LR coordinates of the crop before augmentation. With auxiliary arrays
    (:meth:`add_aux`: per-image maps on the LR grid, e.g. a saliency map), items also hold
    ``"aux": {name: patch}``, cropped, flipped and rotated exactly as the LR patch.
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

        self.aux: dict[str, Sequence[np.ndarray]] = {}

    def add_aux(self, name: str, arrays: Sequence[np.ndarray]) -> None:
        """Per-image arrays aligned with the LR images: ``arrays[i]`` is H×W or H×W×C (any dtype) with
        the LR size of image ``i`` (memory maps are fine: only the patch is copied out). Workers get a
        pickled copy when their loader starts, so add them before training begins (``setup``)."""
        if name in self.aux:
            raise ValueError(f"auxiliary array {name!r} added twice")
        if len(arrays) != len(self.images):
            raise ValueError(f"auxiliary array {name!r}: {len(arrays)} arrays for {len(self.images)} images")
        for i, (arr, hw) in enumerate(zip(arrays, self.images.lr_sizes)):
            if arr.ndim not in (2, 3) or tuple(arr.shape[:2]) != tuple(hw):
                raise ValueError(
                    f"auxiliary array {name!r} of image {self.images.names[i]!r} has shape {tuple(arr.shape)}; "
                    f"expected the LR size {tuple(hw)} (+ channels)"
                )
        self.aux[name] = arrays

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
        sym = (self.flip and hflip, self.flip and vflip, self.rot90 and transpose)
        lr, hr = augment_pair(lr, hr, *sym)
        item = {"lr": _to_tensor(lr), "hr": _to_tensor(hr), "image": i, "top": top, "left": left}
        if self.aux:
            item["aux"] = {
                name: _aux_tensor(symmetry(arrays[i][top : top + p, left : left + p], *sym)) for name, arrays in self.aux.items()
            }
        return item
