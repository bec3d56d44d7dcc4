"""The SR augmentations keep LR and HR aligned: augmenting (LR, HR) and then downscaling the HR with
MATLAB bicubic gives the augmented LR (away from box edges, where the bicubic kernel straddles them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrsr.data import augment as aug
from attrsr.errors import AttrsrError
from attrsr.resize import imresize

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(scale: int, size: int = 32):
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1).double() / 255
    corners = [(60, 150), (200, 260), (300, 90), (20, 370)]
    hr = torch.stack([photo[:, r : r + size * scale, c : c + size * scale] for r, c in corners])
    lr = torch.stack([imresize(x, 1 / scale) for x in hr])
    return lr, hr


def _far_from_edges(boxes: torch.Tensor, h: int, w: int, margin: int = 3) -> torch.Tensor:
    """(B,1,h,w) True on LR pixels at least ``margin`` pixels away from every box edge."""
    grown = boxes.clone()
    grown[:, :2] -= margin
    grown[:, 2:] += 2 * margin
    shrunk = boxes.clone()
    shrunk[:, :2] += margin
    shrunk[:, 2:] = (shrunk[:, 2:] - 2 * margin).clamp(min=0)
    return (aug.box_mask(grown, h, w) == 0) | (aug.box_mask(shrunk, h, w) == 1)


OPS = {
    "blend": lambda lr, hr, rng, s: aug.blend(lr, hr, rng),
    "rgb": lambda lr, hr, rng, s: aug.rgb_permute(lr, hr, rng),
    "mixup": lambda lr, hr, rng, s: aug.mixup(lr, hr, rng),
    "cutmix": lambda lr, hr, rng, s: aug.cutmix(lr, hr, rng, s),
    "cutmixup": lambda lr, hr, rng, s: aug.cutmixup(lr, hr, rng, s),
}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("op", sorted(OPS))
def test_ops_keep_lr_and_hr_aligned(op, scale):
    lr, hr = _batch(scale)
    out = OPS[op](lr, hr, np.random.default_rng(3), scale)
    assert out.input.shape == lr.shape and out.target.shape == hr.shape and out.loss_mask is None
    down = torch.stack([imresize(x, 1 / scale) for x in out.target])
    if op in ("cutmix", "cutmixup"):
        boxes = aug.random_boxes(np.random.default_rng(3), lr.shape[0], *lr.shape[-2:])  # the op's first draws
        region = _far_from_edges(boxes, *lr.shape[-2:]).expand_as(lr)
        assert region.float().mean() > 0.4
        changed = aug.box_mask(boxes, *lr.shape[-2:]).expand_as(lr).bool() if op == "cutmix" else region
        assert (out.input - lr).abs()[changed].max() > 0.05
    else:
        region = torch.ones_like(lr, dtype=torch.bool)
        assert (out.input - lr).abs().max() > 0.01
    assert (down - out.input).abs()[region].max() < 1e-6


def test_cutout_masks_exactly_the_dropped_pixels():
    lr, hr = _batch(2)
    out = aug.cutout(lr.float(), hr.float(), np.random.default_rng(0), 2, alpha=0.2)
    dropped = (out.input == 0).all(1, keepdim=True) & (lr != 0).any(1, keepdim=True)
    assert 0.15 < dropped.float().mean() < 0.25
    torch.testing.assert_close(out.loss_mask, aug.upsample_nearest((~dropped).float(), 2), rtol=0, atol=0)
    kept = ~dropped.expand_as(lr)
    assert torch.equal(out.input[kept], lr.float()[kept]) and torch.equal(out.target, hr.float())


def test_cutblur_both_directions_pixel_exact():
    lr, hr = _batch(2)
    up = aug.upsample_nearest(lr, 2)
    seen = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out = aug.cutblur(lr, hr, rng, 2)
        boxes = aug.random_boxes(np.random.default_rng(seed), lr.shape[0], *lr.shape[-2:])
        inside = aug.box_mask(boxes, *lr.shape[-2:], 2).expand_as(hr).bool()
        hr_in_lr = torch.equal(out.input[inside], hr[inside]) and torch.equal(out.input[~inside], up[~inside])
        lr_in_hr = torch.equal(out.input[inside], up[inside]) and torch.equal(out.input[~inside], hr[~inside])
        assert hr_in_lr != lr_in_hr and torch.equal(out.target, hr)
        seen.add("hr_in_lr" if hr_in_lr else "lr_in_hr")
    assert seen == {"hr_in_lr", "lr_in_hr"}


def test_saliency_boxes_find_the_mass_like_a_brute_force_search():
    gen = torch.Generator().manual_seed(0)
    sal = torch.rand(3, 20, 17, generator=gen) ** 4
    boxes = aug.saliency_boxes(sal, 6, 5)
    for b in range(3):
        best = max(((float(sal[b, t : t + 6, l : l + 5].sum()), t, l) for t in range(15) for l in range(13)))
        assert boxes[b].tolist() == [best[1], best[2], 6, 5]
    # sampling follows the mass: a spot 4x heavier is chosen about 4x as often
    two = torch.zeros(1, 12, 12)
    two[0, 1, 1], two[0, 9, 9] = 1.0, 4.0
    rng = np.random.default_rng(0)
    picks = [aug.saliency_boxes(two, 1, 1, mode="sample", rng=rng)[0, :2].tolist() for _ in range(400)]
    share = picks.count([9, 9]) / len(picks)
    assert picks.count([1, 1]) + picks.count([9, 9]) == 400 and 0.72 < share < 0.88


def test_same_seed_same_augmentation_and_clear_errors():
    lr, hr = _batch(2)
    a = aug.cutmixup(lr, hr, np.random.default_rng(5), 2)
    b = aug.cutmixup(lr, hr, np.random.default_rng(5), 2)
    assert torch.equal(a.input, b.input) and torch.equal(a.target, b.target)
    with pytest.raises(AttrsrError, match="must be aligned"):
        aug.cutmix(lr, hr[..., :-2], np.random.default_rng(0), 2)
    with pytest.raises(AttrsrError, match="does not fit"):
        aug.saliency_boxes(torch.rand(1, 4, 4), 5, 2)
