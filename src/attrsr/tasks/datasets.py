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


def read_camvid_label(path: Path, num_classes: int = len(CAMVID_CLASSES), ignore_index: int = CAMVID_IGNORE) -> torch.Tensor:
    """(H,W) int64 class ids, checked: 0..num_classes-1 or the void id (CamVid: 0-10 and 11)."""
    try:
        arr = np.array(Image.open(path))
    except (OSError, ValueError) as exc:
        raise AttrsrError(f"{path}: cannot read the label PNG ({exc})") from None
    if arr.ndim != 2:
        raise AttrsrError(f"{path}: a segmentation label must be a one-channel PNG of class ids, got shape {arr.shape}")
    bad = np.setdiff1d(np.unique(arr), [*range(num_classes), ignore_index])
    if bad.size:
        raise AttrsrError(
            f"{path}: class id(s) {', '.join(map(str, bad[:5]))} outside 0..{num_classes - 1} and the void id {ignore_index}; "
            "fix the label file or the method's num_classes/ignore_index"
        )
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


def cub50(root: str | Path, split: str = "train", num_classes: int = 50) -> list[ClsSample]:
    """CUB-50 with the split flag read as the README says: flag 0 = train, flag 1 = test. Class ids
    outside 0..num_classes-1 and images without a label or split flag are errors naming the file."""
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
    out = []
    for i in sorted(images):
        if i not in labels or i not in flags:
            raise AttrsrError(f"{root / 'image_class_labels.txt'}: image id {i} ({images[i]}) has no class id or split flag")
        label = int(labels[i])
        if not 0 <= label < num_classes:
            raise AttrsrError(f"{root / 'image_class_labels.txt'}: image id {i} has class id {label}, outside 0..{num_classes - 1}")
        if flags[i] == want:
            out.append(ClsSample(root / "images" / images[i], label))
    return out


@dataclasses.dataclass(frozen=True)
class DetSample:
    image: Path
    image_id: int
    width: int
    height: int
    boxes: torch.Tensor  # (N,4) float32 x0, y0, x1, y1 in pixels
    labels: torch.Tensor  # (N,) int64 COCO category ids
    crowd: torch.Tensor  # (N,) bool


def coco_detection(root: str | Path, annotations: str = "annotations/instances_train2017.json", images: str = "train2017") -> list[DetSample]:
    """COCO-style detection data (COCO128): one sample per image (images without objects included),
    boxes as x0, y0, x1, y1. A box outside its image, of non-positive size, or with an unknown
    category is an error naming the file and the annotation id."""
    import json

    root = Path(root)
    path = root / annotations
    if not path.is_file():
        raise AttrsrError(f"{path}: missing COCO annotation file")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise AttrsrError(f"{path}: not valid JSON ({exc})") from None
    cats = {c["id"] for c in data.get("categories", [])}
    per_image: dict[int, list[dict]] = {}
    info = {im["id"]: im for im in data.get("images", [])}
    for a in data.get("annotations", []):
        im = info.get(a["image_id"])
        if im is None:
            raise AttrsrError(f"{path}: annotation {a['id']} refers to image id {a['image_id']}, which the file does not list")
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > im["width"] or y + h > im["height"]:
            raise AttrsrError(
                f"{path}: annotation {a['id']} box [x={x}, y={y}, w={w}, h={h}] lies outside its image {im['file_name']} "
                f"({im['width']}×{im['height']}) or is empty; fix or drop that annotation"
            )
        if a["category_id"] not in cats:
            raise AttrsrError(f"{path}: annotation {a['id']} has category id {a['category_id']}, not among the file's categories")
        per_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image_id in sorted(info):
        im, anns = info[image_id], per_image.get(image_id, [])
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=torch.float32).reshape(-1, 4)
        out.append(DetSample(root / images / im["file_name"], image_id, im["width"], im["height"], boxes,
                             torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                             torch.tensor([bool(a.get("iscrowd", 0)) for a in anns], dtype=torch.bool)))
    return out


def coco_categories(root: str | Path, annotations: str = "annotations/instances_train2017.json") -> list[int]:
    """The file's COCO category ids in ascending order: contiguous class index i ↔ id ``ids[i]``
    (COCO's 80 ids run 1..90 with gaps)."""
    import json

    path = Path(root) / annotations
    try:
        return sorted(int(c["id"]) for c in json.loads(path.read_text()).get("categories", []))
    except (OSError, ValueError) as exc:
        raise AttrsrError(f"{path}: cannot read the COCO categories ({exc})") from None


def coco_split(samples: list[DetSample], split: str) -> list[DetSample]:
    """COCO128 has one split; we hold aside every 4th image (positions 3, 7, 11, … in image-id order)
    as ``test`` and train on the rest (``train``); ``all`` is every image."""
    if split == "all":
        return list(samples)
    if split not in ("train", "test"):
        raise AttrsrError(f"COCO128 split must be train, test or all, got {split!r}")
    return [s for i, s in enumerate(samples) if (i % 4 == 3) == (split == "test")]


def pad_boxes(samples: list[DetSample], category_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The samples' boxes as padded tensors: (S,N,4) float32, contiguous class indices (S,N) int64
    (−1 = padding), crowd (S,N) bool; N = the most boxes of any sample (at least 1)."""
    index = {c: i for i, c in enumerate(category_ids)}
    n = max([1, *(len(s.labels) for s in samples)])
    boxes = torch.zeros(len(samples), n, 4)
    labels = torch.full((len(samples), n), -1, dtype=torch.int64)
    crowd = torch.zeros(len(samples), n, dtype=torch.bool)
    for i, s in enumerate(samples):
        k = len(s.labels)
        boxes[i, :k], crowd[i, :k] = s.boxes, s.crowd
        labels[i, :k] = torch.tensor([index[int(c)] for c in s.labels], dtype=torch.int64)
    return boxes, labels, crowd


def crop_flip_boxes(boxes: torch.Tensor, labels: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int,
                    flip: torch.Tensor, min_size: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (B,N,4) of whole images → boxes of their ``size``×``size`` crops at (``top``, ``left``)
    (B,) pixels, clipped to the crop, mirrored where ``flip`` (B,) bool. A box whose clipped width or
    height is under ``min_size`` pixels (outside the crop or a sliver of it) is dropped: its label
    becomes −1. Returns (boxes, labels)."""
    shift = torch.stack([left, top, left, top], -1).to(boxes)[:, None]
    out = (boxes - shift).clamp(0, size)
    keep = (labels >= 0) & (out[..., 2] - out[..., 0] >= min_size) & (out[..., 3] - out[..., 1] >= min_size)
    mirrored = torch.stack([size - out[..., 2], out[..., 1], size - out[..., 0], out[..., 3]], -1)
    out = torch.where(flip.view(-1, 1, 1), mirrored, out)
    return out, torch.where(keep, labels, torch.full_like(labels, -1))
