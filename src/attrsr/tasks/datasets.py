"""Recognition data for SR4IR from ``$ATTRSR_DATA/tasks`` (see its README for the label semantics):

* CamVid (SegNet's 11-class version): RGB frames + same-named label PNGs, ids 0-10, 11 = void
  (``ignore_index``); any other id is an error naming the file.
* CUB-50: 50 bird species; ``train_test_split.txt`` is headed "is training?" but its flag 0 marks
  the ~30-per-species *training* images here — we take flag 0 as train and flag 1 as test.

Samples are HR crops with their labels (masks cropped and flipped with the image); the LR input is
made on the fly by :func:`make_lr`: MATLAB bicubic by default, torch bicubic without antialias (the
SR4IR authors' choice) as an option, quantised to 8 bits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from attrsr.errors import AttrsrError
from attrsr.images import load_image, quantize
from attrsr.resize import imresize

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist")
CAMVID_IGNORE = 11


def make_lr(hr: torch.Tensor, scale: int, method: str = "matlab") -> torch.Tensor:
    """LR of an HR batch (B,3,H,W) (H, W multiples of ``scale``), quantised to 8 bits."""
    if hr.shape[-2] % scale or hr.shape[-1] % scale:
        raise AttrsrError(f"HR {hr.shape[-1]}×{hr.shape[-2]} is not a multiple of the scale {scale}; crop it first")
    if method == "matlab":
        lr = torch.stack([imresize(x, 1 / scale) for x in hr])
    elif method == "torch":
        lr = F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=False)
    else:
        raise AttrsrError(f"unknown LR method {method!r}; choose 'matlab' or 'torch'")
    return quantize(lr.clamp(0, 1))


@dataclasses.dataclass(frozen=True)
class SegSample:
    image: Path
    label: Path


def camvid(root: str | Path, split: str = "train") -> list[SegSample]:
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise AttrsrError(f"CamVid split must be train, val or test, got {split!r}")
    images = sorted((root / split).glob("*.png"))
    if not images:
        raise AttrsrError(f"{root / split}: no CamVid frames (expected <split>/*.png and <split>annot/*.png)")
    out = []
    for img in images:
        lab = root / f"{split}annot" / img.name
        if not lab.is_file():
            raise AttrsrError(f"{img}: no label file {lab}")
        out.append(SegSample(img, lab))
    return out


def read_camvid_label(path: Path) -> torch.Tensor:
    """(H,W) int64 class ids, checked: 0-10 or the void id 11."""
    arr = np.array(Image.open(path))
    if arr.ndim != 2:
        raise AttrsrError(f"{path}: a CamVid label must be a one-channel PNG of class ids, got shape {arr.shape}")
    bad = np.setdiff1d(np.unique(arr), np.arange(CAMVID_IGNORE + 1))
    if bad.size:
        raise AttrsrError(f"{path}: class id(s) {', '.join(map(str, bad[:5]))} outside 0..10 and the void id 11")
    return torch.from_numpy(arr.astype(np.int64))


def load_segmentation(sample: SegSample) -> tuple[torch.Tensor, torch.Tensor]:
    img, lab = load_image(sample.image), read_camvid_label(sample.label)
    if img.shape[-2:] != lab.shape:
        raise AttrsrError(f"{sample.label}: label {tuple(lab.shape)} and image {tuple(img.shape[-2:])} differ in size")
    return img, lab


def random_crop_flip(img: torch.Tensor, label: torch.Tensor, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same crop (and horizontal flip, p = 0.5) of an image (3,H,W) and its mask (H,W)."""
    h, w = label.shape
    if size > min(h, w):
        raise AttrsrError(f"crop {size} is larger than the {w}×{h} image")
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    img, label = img[:, top : top + size, left : left + size], label[top : top + size, left : left + size]
    if rng.random() < 0.5:
        img, label = img.flip(-1), label.flip(-1)
    return img.contiguous(), label.contiguous()


@dataclasses.dataclass(frozen=True)
class ClsSample:
    image: Path
    label: int


def cub50(root: str | Path, split: str = "train") -> list[ClsSample]:
    """CUB-50 with the split flag read as the README says: flag 0 = train, flag 1 = test."""
    root = Path(root)
    if split not in ("train", "test"):
        raise AttrsrError(f"CUB-50 split must be train or test, got {split!r}")

    def table(name: str) -> dict[int, str]:
        path = root / name
        if not path.is_file():
            raise AttrsrError(f"{path}: missing CUB-50 index file")
        rows = (line.split(",", 1) for line in path.read_text().splitlines() if line.strip())
        return {int(a): b.strip() for a, b in rows}

    images, labels, flags = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    want = "0" if split == "train" else "1"
    return [ClsSample(root / "images" / images[i], int(labels[i])) for i in sorted(images) if flags[i] == want]
