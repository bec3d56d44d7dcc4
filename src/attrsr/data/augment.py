"""The SR augmentations of Yoo et al. (CVPR 2020, "CutBlur") as pure functions on aligned batches.

Functional core of the augmentation methods (the engine methods wrap these; ADD chooses their boxes
from saliency). Every op takes ``lr`` (B,3,h,w) and ``hr`` (B,3,s·h,s·w) in [0,1] that are
pixel-aligned (HR pixel (i,j) covers LR pixel (i//s, j//s)) and returns an :class:`Augmented`
that keeps them aligned: the same colour change, permutation or mixing weight for both, and boxes
chosen on the LR grid and multiplied by ``scale`` for the HR. All draws come from the numpy
generator given (no global RNG), so a run resumes exactly.

Defaults are the reference's (METHODS.md §2): Blend v~U(0.6,1) and a colour c~U(0,1) per channel;
Mixup v~Beta(1.2,1.2); Cutout drops each LR pixel with probability 0.001 and masks the loss there;
CutMix/CutMixup/CutBlur boxes of side ratio r~N(0.7, 0.01²). The reference draws one box and one
weight per batch; boxes here may also be given per sample (``boxes``), which ADD uses.

CutBlur needs both resolutions in one tensor: its ``input`` is HR-size — the LR upsampled with
nearest neighbour (each LR pixel repeated s×s, as the reference does) with HR pasted into the box,
or the HR with the upsampled LR pasted into the box (50/50 per batch). A network takes it only
through a space-to-depth head (the engine method checks the model at configuration time).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from attrsr.errors import AttrsrError


@dataclasses.dataclass
class Augmented:
    """The network input, the target, and where the loss counts (None: everywhere)."""

    input: torch.Tensor
    target: torch.Tensor
    loss_mask: torch.Tensor | None = None


def _check(lr: torch.Tensor, hr: torch.Tensor, scale: int) -> None:
    if lr.ndim != 4 or hr.ndim != 4 or hr.shape[0] != lr.shape[0] or hr.shape[1] != lr.shape[1]:
        raise AttrsrError(f"augmentation needs batches lr (B,C,h,w) and hr (B,C,sh,sw), got {tuple(lr.shape)} and {tuple(hr.shape)}")
    if tuple(hr.shape[-2:]) != (scale * lr.shape[-2], scale * lr.shape[-1]):
        raise AttrsrError(f"hr {tuple(hr.shape[-2:])} is not scale {scale} × lr {tuple(lr.shape[-2:])}: LR and HR must be aligned")


def _permutation(rng: np.random.Generator, n: int, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(rng.permutation(n)).to(device)


def blend(lr, hr, rng: np.random.Generator, *, alpha: float = 0.6) -> Augmented:
    """x' = v·x + (1−v)·c with one v~U(alpha,1) per batch and a colour c~U(0,1) per sample and channel."""
    b, c = lr.shape[:2]
    colour = torch.from_numpy(rng.uniform(0.0, 1.0, size=(b, c, 1, 1))).to(lr)
    v = float(rng.uniform(alpha, 1.0))
    return Augmented(v * lr + (1 - v) * colour, v * hr + (1 - v) * colour)


def rgb_permute(lr, hr, rng: np.random.Generator) -> Augmented:
    """The same random channel order for LR and HR (one per batch, as the reference)."""
    perm = torch.from_numpy(rng.permutation(lr.shape[1])).to(lr.device)
    return Augmented(lr[:, perm], hr[:, perm])


def mixup(lr, hr, rng: np.random.Generator, *, alpha: float = 1.2) -> Augmented:
    """Mix each sample with a permuted one, v~Beta(alpha, alpha) per batch, LR and HR alike."""
    v = float(rng.beta(alpha, alpha))
    perm = _permutation(rng, lr.shape[0], lr.device)
    return Augmented(v * lr + (1 - v) * lr[perm], v * hr + (1 - v) * hr[perm])


def cutout(lr, hr, rng: np.random.Generator, scale: int, *, alpha: float = 0.001) -> Augmented:
    """Zero each LR pixel independently with probability ``alpha``; the loss ignores the s×s HR
    pixels above each dropped one."""
    _check(lr, hr, scale)
    b, _, h, w = lr.shape
    keep = torch.from_numpy(rng.random((b, 1, h, w)) >= alpha).to(lr)
    return Augmented(lr * keep, hr, keep.repeat_interleave(scale, -2).repeat_interleave(scale, -1))


def random_boxes(rng: np.random.Generator, batch: int, h: int, w: int, *, alpha: float = 0.7, per_sample: bool = False) -> torch.Tensor:
    """Boxes (B,4) = (top, left, height, width) on the LR grid with side ratio r~N(alpha, 0.01²);
    one box repeated for the batch (the reference) unless ``per_sample``."""
    n = batch if per_sample else 1
    ratio = np.clip(rng.normal(alpha, 0.01, size=n), 0.0, 1.0)
    bh = np.maximum(1, (h * ratio).astype(int))
    bw = np.maximum(1, (w * ratio).astype(int))
    top = rng.integers(0, h - bh + 1)
    left = rng.integers(0, w - bw + 1)
    boxes = torch.from_numpy(np.stack([top, left, bh, bw], 1).astype(np.int64))
    return boxes.expand(batch, 4).clone() if n == 1 else boxes


def box_mask(boxes: torch.Tensor, h: int, w: int, scale: int = 1, device: torch.device | None = None) -> torch.Tensor:
    """(B,1,s·h,s·w) float mask, 1 inside each sample's box (given on the LR grid) scaled by ``scale``."""
    boxes = boxes.to(device) * scale
    rows = torch.arange(h * scale, device=device).view(1, -1, 1)
    cols = torch.arange(w * scale, device=device).view(1, 1, -1)
    top, left, bh, bw = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
    return inside[:, None].float()


def _region(rng, lr, scale, alpha, boxes, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The op's region as (LR-grid mask (B,1,h,w), HR-grid mask): from ``mask`` (LR grid, values in
    {0,1}; ADD+'s several blocks), else ``boxes``, else a random box (the reference)."""
    b, _, h, w = lr.shape
    if mask is None:
        boxes = random_boxes(rng, b, h, w, alpha=alpha) if boxes is None else boxes
        mask = box_mask(boxes, h, w, 1, lr.device)
    mask = mask.to(lr)
    if mask.shape != (b, 1, h, w):
        raise AttrsrError(f"region mask must be (B,1,h,w) = {(b, 1, h, w)}, got {tuple(mask.shape)}")
    return mask, upsample_nearest(mask, scale)


def cutmix(
    lr, hr, rng: np.random.Generator, scale: int, *, alpha: float = 0.7, boxes: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, perm: torch.Tensor | None = None,
) -> Augmented:
    """Paste the region of a permuted sample (``perm``: random unless given) into each sample at the
    same place, LR and HR alike."""
    _check(lr, hr, scale)
    m_lr, m_hr = _region(rng, lr, scale, alpha, boxes, mask)
    perm = _permutation(rng, lr.shape[0], lr.device) if perm is None else perm.to(lr.device)
    return Augmented(lr * (1 - m_lr) + lr[perm] * m_lr, hr * (1 - m_hr) + hr[perm] * m_hr)


def cutmixup(
    lr, hr, rng: np.random.Generator, scale: int, *, mixup_alpha: float = 1.2, cutmix_alpha: float = 0.7,
    boxes: torch.Tensor | None = None, mask: torch.Tensor | None = None, perm: torch.Tensor | None = None,
    inside: bool | None = None,
) -> Augmented:
    """CutMix's region with Mixup inside it or outside it (50/50 per batch unless ``inside`` is
    given): the mixed sample is v·x + (1−v)·x_perm with v~Beta(mixup_alpha, mixup_alpha)."""
    _check(lr, hr, scale)
    m_lr, m_hr = _region(rng, lr, scale, cutmix_alpha, boxes, mask)
    v = float(rng.beta(mixup_alpha, mixup_alpha))
    perm = _permutation(rng, lr.shape[0], lr.device) if perm is None else perm.to(lr.device)
    inside = bool(rng.random() < 0.5) if inside is None else inside
    out = []
    for x, m in ((lr, m_lr), (hr, m_hr)):
        m = m if inside else 1 - m
        mixed = v * x + (1 - v) * x[perm]
        out.append(x * (1 - m) + mixed * m)
    return Augmented(out[0], out[1])


def upsample_nearest(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Each LR pixel repeated scale×scale: (B,C,h,w) → (B,C,s·h,s·w) (CutBlur's LR at HR size)."""
    return lr.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def cutblur(
    lr, hr, rng: np.random.Generator, scale: int, *, alpha: float = 0.7, boxes: torch.Tensor | None = None,
    mask: torch.Tensor | None = None, direction: str | None = None,
) -> Augmented:
    """HR-size input: upsampled LR with HR pasted into the region (``direction="hr_in_lr"``) or HR
    with the upsampled LR pasted into it (``"lr_in_hr"``); 50/50 per batch when not given. Target: HR."""
    _check(lr, hr, scale)
    _, m = _region(rng, lr, scale, alpha, boxes, mask)
    if direction is None:
        direction = "hr_in_lr" if rng.random() < 0.5 else "lr_in_hr"
    if direction not in ("hr_in_lr", "lr_in_hr"):
        raise AttrsrError(f"cutblur direction must be 'hr_in_lr' or 'lr_in_hr', got {direction!r}")
    up = upsample_nearest(lr, scale)
    inp = up * (1 - m) + hr * m if direction == "hr_in_lr" else hr * (1 - m) + up * m
    return Augmented(inp, hr)


def saliency_boxes(
    saliency: torch.Tensor, height: int, width: int, *, mode: str = "max", rng: np.random.Generator | None = None
) -> torch.Tensor:
    """Per-sample boxes (B,4) of the given size where the saliency mass is highest (``mode="max"``)
    or drawn with probability ∝ the box's saliency mass (``mode="sample"``). saliency: (B,h,w) ≥ 0.
    The box sums come from one average pooling (every position at once)."""
    if saliency.ndim != 3:
        raise AttrsrError(f"saliency must be (B,h,w), got shape {tuple(saliency.shape)}")
    b, h, w = saliency.shape
    if not (1 <= height <= h and 1 <= width <= w):
        raise AttrsrError(f"box {height}×{width} does not fit a {h}×{w} saliency map")
    mass = F.avg_pool2d(saliency[:, None].double(), (height, width), stride=1)[:, 0]  # (B, h−bh+1, w−bw+1)
    flat = mass.flatten(1)
    if mode == "max":
        idx = flat.argmax(1)
    elif mode == "sample":
        if rng is None:
            raise AttrsrError("saliency_boxes(mode='sample') needs a numpy generator")
        p = flat.clamp(min=0).cpu().numpy()
        p = np.where(p.sum(1, keepdims=True) > 0, p, 1.0)
        p = p / p.sum(1, keepdims=True)
        idx = torch.tensor([rng.choice(p.shape[1], p=row) for row in p])
    else:
        raise AttrsrError(f"unknown box mode {mode!r}; choose 'max' or 'sample'")
    ncol = mass.shape[-1]
    idx = idx.cpu().long()
    top, left = idx // ncol, idx % ncol
    size = torch.tensor([height, width]).expand(b, 2)
    return torch.cat([top[:, None], left[:, None], size], 1).long()


def saliency_blocks(saliency: torch.Tensor, height: int, width: int, n_blocks: int) -> torch.Tensor:
    """ADD+'s region: the union of ``n_blocks`` non-overlapping boxes ranked by saliency mass
    (greedy: the heaviest box, then the heaviest that overlaps none chosen, …) as a (B,1,h,w) mask."""
    if n_blocks < 1:
        raise AttrsrError(f"n_blocks must be >= 1, got {n_blocks}")
    b, h, w = saliency.shape
    if not (1 <= height <= h and 1 <= width <= w):
        raise AttrsrError(f"block {height}×{width} does not fit a {h}×{w} saliency map")
    mass = F.avg_pool2d(saliency[:, None].double(), (height, width), stride=1)[:, 0].clone()
    mask = torch.zeros(b, 1, h, w, dtype=saliency.dtype, device=saliency.device)
    for _ in range(n_blocks):
        flat = mass.flatten(1)
        best = flat.argmax(1)
        ok = flat.gather(1, best[:, None])[:, 0] > -1
        top, left = best // mass.shape[-1], best % mass.shape[-1]
        for i in range(b):  # per sample: mark the block, rule out every box that would overlap it
            if not bool(ok[i]):
                continue
            t, l = int(top[i]), int(left[i])
            mask[i, 0, t : t + height, l : l + width] = 1
            mass[i, max(t - height + 1, 0) : t + height, max(l - width + 1, 0) : l + width] = -2.0
    return mask
