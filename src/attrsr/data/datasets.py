"""Paired LR/HR evaluation datasets in the standard folder layouts.

``open_dataset(path, scale)`` recognises:

* **benchmark** — ``ROOT/HR/<name>.png`` + ``ROOT/LR_bicubic/X{s}/<name>x{s}.png`` (EDSR/SwinIR test sets);
* **DIV2K** — ``ROOT/<P>_HR/0001.png`` + ``ROOT/<P>_LR_bicubic/X{s}/0001x{s}.png`` (also when ``path`` is
  the ``<P>_HR`` folder itself);
* **HR-only** — ``ROOT/HR/`` without LR files, or any folder of images: LR is made from the
  ``modcrop``-ped HR with MATLAB bicubic and rounded to 8 bits; a folder holding no images but
  class sub-folders of images (CUB-50's ``images/<Species>/``) gives every image, named
  ``<sub-folder>/<stem>``;
* ``samples`` / ``samples:val`` / ``samples:train`` — the photos bundled with scikit-image & co.;
* the training sets ``T91``, ``BSD200`` and ``291`` (both), optionally with a split ``:train`` / ``:val``
  (see :data:`TRAINING_SETS` and :func:`split_of`) — HR-only folders under ``$ATTRSR_DATA/train/``;
* a name such as ``Set5`` that is no existing path — ``$ATTRSR_DATA/benchmarks/<name>`` (see
  :mod:`attrsr.datadir`; the variable defaults to ``../shared/data``).

HR is always ``modcrop``-ped to a multiple of the scale. Every pairing problem (a missing partner, an
LR whose size is not HR/scale, an unreadable file) is found when the dataset is opened, before any
work, and named in an :class:`AttrsrError`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from attrsr import datadir
from attrsr.errors import AttrsrError
from attrsr.images import IMAGE_SUFFIXES, list_images, modcrop, read_image, to_tensor
from attrsr.resize import downsample


@dataclasses.dataclass
class Pair:
    """One evaluation sample: tensors (3,h,w) and (3,H,W) in [0,1], H = scale·h."""

    name: str
    lr: torch.Tensor
    hr: torch.Tensor


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    hr: Path | str  # a path, or "sample:<name>"
    lr: Path | None


class SRDataset(torch.utils.data.Dataset):
    """A list of (name, HR source, LR source or None); items are :class:`Pair`."""

    def __init__(self, name: str, scale: int, entries: list[_Entry], layout: str) -> None:
        if not entries:
            raise AttrsrError(f"dataset {name!r}: no images found")
        self.name = name
        self.scale = scale
        self.entries = entries
        self.layout = layout

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def read_hr(self, i: int) -> np.ndarray:
        e = self.entries[i]
        if isinstance(e.hr, str) and e.hr.startswith("sample:"):
            from attrsr.data.samples import load_sample

            arr = load_sample(e.hr[len("sample:"):])
        else:
            arr = read_image(e.hr)
        return modcrop(arr, self.scale)

    def __getitem__(self, i: int) -> Pair:
        e = self.entries[i]
        hr = to_tensor(self.read_hr(i))
        if e.lr is not None:
            lr = to_tensor(read_image(e.lr))
            if lr.dtype != hr.dtype or lr.shape[-2] * self.scale != hr.shape[-2] or lr.shape[-1] * self.scale != hr.shape[-1]:
                raise AttrsrError(_size_message(e.lr, tuple(lr.shape[-2:]), tuple(hr.shape[-2:]), self.scale))
        else:
            lr = downsample(hr[None], self.scale)[0]
        return Pair(e.name, lr, hr)

    def __repr__(self) -> str:
        return f"SRDataset({self.name!r}, x{self.scale}, {len(self)} images, {self.layout})"

    def lr_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i``'s LR, from file headers (nothing is decoded but samples)."""
        e = self.entries[i]
        if e.lr is not None:
            w, h = _probe(e.lr)
            return h, w
        if isinstance(e.hr, str):
            from attrsr.data.samples import load_sample

            h, w = load_sample(e.hr[len("sample:"):]).shape[:2]
        else:
            w, h = _probe(e.hr)
        return h // self.scale, w // self.scale

    def without_smaller_than(self, lr_side: int) -> tuple["SRDataset", list[str]]:
        """This dataset less the images whose LR is narrower or shorter than ``lr_side`` (they cannot
        give a training patch of that size), and the names of those left out."""
        small = {i for i in range(len(self)) if min(self.lr_size(i)) < lr_side}
        if not small:
            return self, []
        if len(small) == len(self):
            raise AttrsrError(
                f"dataset {self.name!r}: every image is smaller than the {lr_side}-pixel LR patch at x{self.scale}; "
                "lower data.patch_size"
            )
        kept = [e for i, e in enumerate(self.entries) if i not in small]
        return SRDataset(self.name, self.scale, kept, self.layout), [self.entries[i].name for i in sorted(small)]


def _size_message(lr_path: Path, lr_hw: tuple[int, int], hr_hw: tuple[int, int], scale: int) -> str:
    return (
        f"{lr_path}: LR size {lr_hw[1]}×{lr_hw[0]} does not match HR size {hr_hw[1]}×{hr_hw[0]} / {scale} "
        f"(expected {hr_hw[1] // scale}×{hr_hw[0] // scale}); is this the right scale (--scale) and HR file?"
    )


def _probe(path: Path) -> tuple[int, int]:
    """(width, height) from the header, after checking the file is a readable image."""
    if path.stat().st_size == 0:
        raise AttrsrError(f"{path}: image file is empty")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # checks chunk CRCs for PNG without decoding pixels
    except Exception as exc:
        raise AttrsrError(f"{path}: cannot read image ({exc}); is the file corrupt or truncated?") from None
    return size


def _check_pairs(entries: list[_Entry], scale: int) -> None:
    for e in entries:
        if isinstance(e.hr, Path):
            hw, hh = _probe(e.hr)
            if e.lr is not None:
                lw, lh = _probe(e.lr)
                mh, mw = hh - hh % scale, hw - hw % scale
                if (lh * scale, lw * scale) != (mh, mw):
                    raise AttrsrError(_size_message(e.lr, (lh, lw), (mh, mw), scale))


_LR_NAME = re.compile(r"^(?P<stem>.+?)x(?P<s>\d+)$")


def _pair_folder(hr_dir: Path, lr_dir: Path, scale: int) -> list[_Entry]:
    hr_files = {p.stem: p for p in list_images(hr_dir)}
    lr_files: dict[str, Path] = {}
    for p in list_images(lr_dir):
        m = _LR_NAME.match(p.stem)
        stem = m.group("stem") if m and int(m.group("s")) == scale else p.stem
        lr_files[stem] = p
    for stem, p in lr_files.items():
        if stem not in hr_files:
            raise AttrsrError(f"{p}: LR image has no HR partner {hr_dir / (stem + '.png')}")
    entries = []
    for stem, p in hr_files.items():
        if stem not in lr_files:
            raise AttrsrError(f"{p}: HR image has no LR partner in {lr_dir} (expected {stem}x{scale}.png)")
        entries.append(_Entry(stem, p, lr_files[stem]))
    return entries


def _lr_scale_dir(lr_root: Path, scale: int) -> Path:
    d = lr_root / f"X{scale}"
    if d.is_dir():
        return d
    have = sorted(p.name for p in lr_root.iterdir() if p.is_dir() and re.fullmatch(r"X\d+", p.name))
    raise AttrsrError(
        f"{lr_root}: no X{scale} folder (available: {', '.join(have) or 'none'}); "
        f"use a scale the data has, or point --data at the HR folder to make LR with MATLAB bicubic"
    )


def open_dataset(path: str | Path, scale: int, name: str | None = None, check: bool = True) -> SRDataset:
    """Open an evaluation dataset (see the module docstring for the layouts)."""
    if not isinstance(scale, int) or scale < 1:
        raise AttrsrError(f"scale must be a positive integer, got {scale!r}")
    spec = str(path)
    if spec == "samples" or spec.startswith("samples:"):
        from attrsr.data.samples import sample_names

        split = spec.split(":", 1)[1] if ":" in spec else "val"
        entries = [_Entry(n, f"sample:{n}", None) for n in sample_names(split)]
        return SRDataset(name or f"samples-{split}", scale, entries, "bundled photos, LR made with MATLAB bicubic")
    set_name, _, split = spec.partition(":")
    if set_name in TRAINING_SETS and not Path(spec).exists():
        entries = _training_entries(set_name, split or "all")
        if check:
            _check_pairs(entries, scale)
        label = name or (set_name if not split or split == "all" else f"{set_name}-{split}")
        return SRDataset(label, scale, entries, "training set (HR only), LR made with MATLAB bicubic")

    root = _resolve_root(Path(path))
    if root.is_file():
        if root.suffix.lower() not in IMAGE_SUFFIXES:
            raise AttrsrError(f"{root}: not an image or dataset folder")
        entries = [_Entry(root.stem, root, None)]
        layout = "single HR image, LR made with MATLAB bicubic"
    elif (root / "HR").is_dir() and (root / "LR_bicubic").is_dir():
        entries = _pair_folder(root / "HR", _lr_scale_dir(root / "LR_bicubic", scale), scale)
        layout = "benchmark (HR + LR_bicubic)"
    elif (root / "HR").is_dir():
        entries = [_Entry(p.stem, p, None) for p in list_images(root / "HR")]
        layout = "HR only, LR made with MATLAB bicubic"
    else:
        hr_dir, lr_root = _div2k_dirs(root)
        if hr_dir is not None and lr_root is not None:
            entries = _pair_folder(hr_dir, _lr_scale_dir(lr_root, scale), scale)
            layout = "DIV2K (X_HR + X_LR_bicubic)"
        elif hr_dir is not None:
            entries = [_Entry(p.stem, p, None) for p in list_images(hr_dir)]
            layout = "HR only, LR made with MATLAB bicubic"
        else:
            entries = [_Entry(p.stem, p, None) for p in list_images(root)]
            layout = "image folder, LR made with MATLAB bicubic"
            if not entries:  # class sub-folders (ImageNet/CUB style): images named "<folder>/<stem>"
                subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
                entries = [_Entry(f"{d.name}/{p.stem}", p, None) for d in subs for p in list_images(d)]
                layout = "class sub-folders, LR made with MATLAB bicubic"
    if not entries:
        raise AttrsrError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    if check:
        _check_pairs(entries, scale)
    ds_name = name or (root.name if root.is_dir() else root.stem)
    return SRDataset(ds_name, scale, entries, layout)


def _resolve_root(root: Path) -> Path:
    """A path as given, or a name (``Set5``) looked up in ``$ATTRSR_DATA/benchmarks``."""
    found = datadir.resolve(root, "benchmarks")
    if found.exists():
        return found
    raise AttrsrError(f"{root}: dataset folder not found{datadir.looked_in(root, 'benchmarks')}")


# The classic training sets, HR only, under ``$ATTRSR_DATA/train/<folder>/HR``. "291" is T91 +
# BSD200, the training set of VDSR, DRRN and LapSRN.
TRAINING_SETS: dict[str, tuple[str, ...]] = {"T91": ("T91",), "BSD200": ("BSD200",), "291": ("T91", "BSD200")}
# Held-aside validation split: within each folder, images sorted by file name, every VAL_EVERY-th one
# starting with the first (T91: 5 of 91, BSD200: 10 of 199, so 291:val has 15 images).
VAL_EVERY = 20


def split_of(index: int) -> str:
    """``"val"`` or ``"train"`` for the ``index``-th image (sorted by name) of a training folder."""
    return "val" if index % VAL_EVERY == 0 else "train"


def _training_entries(set_name: str, split: str) -> list[_Entry]:
    if split not in ("train", "val", "all"):
        raise AttrsrError(f"{set_name}:{split}: unknown split {split!r}; use {set_name}:train, {set_name}:val or {set_name}")
    entries = []
    for folder in TRAINING_SETS[set_name]:
        hr_dir = datadir.data_root() / "train" / folder / "HR"
        if not hr_dir.is_dir():
            raise AttrsrError(
                f"{set_name}: training images not found in {hr_dir}; set ATTRSR_DATA to the shared data folder"
            )
        files = list_images(hr_dir)
        entries += [_Entry(p.stem, p, None) for i, p in enumerate(files) if split == "all" or split_of(i) == split]
    return entries


def _div2k_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """Find ``<P>_HR`` and ``<P>_LR_bicubic`` for ``root`` = the parent folder or the HR folder."""
    if root.name.endswith("_HR"):
        lr = root.with_name(root.name[: -len("_HR")] + "_LR_bicubic")
        return root, (lr if lr.is_dir() else None)
    hrs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("_HR"))
    if len(hrs) > 1:
        raise AttrsrError(
            f"{root}: several HR folders ({', '.join(p.name for p in hrs)}); point --data at one of them"
        )
    if hrs:
        lr = hrs[0].with_name(hrs[0].name[: -len("_HR")] + "_LR_bicubic")
        return hrs[0], (lr if lr.is_dir() else None)
    return None, None
