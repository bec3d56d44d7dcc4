"""MATLAB bicubic against the independent implementation in the PyPI package bicubic-pytorch, and
against exact rational arithmetic (those tests run without bicubic-pytorch too)."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from skimage import data as skdata

from attrsr.resize import downsample, imresize


@pytest.fixture(scope="module")
def bicubic_pytorch():
    return pytest.importorskip("bicubic_pytorch.core")


@pytest.fixture(scope="module")
def photo():
    # An odd-sized real crop so that ceil() output sizes and border mirroring are both exercised.
    arr = skdata.coffee()[:203, :301].astype(np.float64) / 255
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4, 0.7, 1.5])
def test_matches_bicubic_pytorch_scale(photo, scale, bicubic_pytorch):
    x = photo.float()
    ours = imresize(x, scale=scale)
    ref = bicubic_pytorch.imresize(x, scale=scale)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [(100, 77), (51, 150), (406, 602), (250, 555)])
def test_matches_bicubic_pytorch_size(photo, size, bicubic_pytorch):
    x = photo.float()
    ours = imresize(x, size=size)
    ref = bicubic_pytorch.imresize(x, sizes=size)
    assert ours.shape[-2:] == size
    assert (ours - ref).abs().max().item() <= 1e-5


def _exact_row(n_in: int, n_out: int, j: int) -> list[Fraction]:
    """MATLAB's contributions for output index ``j`` (1-based), in exact rational arithmetic."""

    def cubic(t: Fraction) -> Fraction:
        t = abs(t)
        if t <= 1:
            return Fraction(3, 2) * t**3 - Fraction(5, 2) * t**2 + 1
        if t <= 2:
            return -Fraction(1, 2) * t**3 + Fraction(5, 2) * t**2 - 4 * t + 2
        return Fraction(0)

    s = Fraction(n_out, n_in)
    u = Fraction(j) / s + Fraction(1, 2) * (1 - 1 / s)
    idx = [math.floor(u - 2) + k for k in range(6)]
    w = [cubic(u - i) for i in idx]
    row = [Fraction(0)] * n_in
    for i, v in zip(idx, w):
        k = (i - 1) % (2 * n_in)
        row[k if k < n_in else 2 * n_in - 1 - k] += v / sum(w)
    return row


def test_large_upscale_matches_exact_arithmetic(photo):
    """At 301→700 bicubic-pytorch drifts by ~1e-5 (float32 positions); check against exact maths."""
    x = photo[:, :1]
    ours = imresize(x, size=(300, 700))
    img = photo[0, 0].numpy()
    for r, c in [(289, 550), (0, 0), (299, 699), (150, 351)]:
        rh, rw = _exact_row(203, 300, r + 1), _exact_row(301, 700, c + 1)
        exact = sum(float(rh[i]) * sum(float(rw[k]) * img[i, k] for k in range(301) if rw[k]) for i in range(203) if rh[i])
        assert abs(ours[0, 0, r, c].item() - exact) < 1e-12


def test_no_antialias_matches(photo, bicubic_pytorch):
    x = photo.float()
    ref = bicubic_pytorch.imresize(x, scale=0.25, antialiasing=False)
    assert (imresize(x, scale=0.25, antialias=False) - ref).abs().max().item() <= 1e-5


def test_numpy_uint8_follows_matlab_rounding(photo):
    u8 = np.round(photo[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = imresize(u8, scale=0.5)
    assert out.dtype == np.uint8 and out.shape == (102, 151, 3)
    ref = imresize(torch.from_numpy(u8.astype(np.float64)).permute(2, 0, 1), scale=0.5).permute(1, 2, 0).numpy()
    assert np.array_equal(out, np.clip(np.round(ref), 0, 255).astype(np.uint8))


def test_batched_and_differentiable(photo):
    x = photo.float().repeat(3, 1, 1, 1).requires_grad_(True)
    y = imresize(x, scale=0.5)
    assert y.shape == (3, 3, 102, 151)
    assert torch.allclose(y[0], y[2])
    y.sum().backward()
    # Each row of the weight matrix sums to 1, so the gradient of the sum integrates to the pixel count.
    assert torch.isclose(x.grad.sum(), torch.tensor(float(y.numel())), rtol=1e-4)


def test_upscale_then_constant_is_preserved():
    flat = torch.full((1, 3, 9, 7), 0.3)
    assert torch.allclose(imresize(flat, scale=3), torch.full((1, 3, 27, 21), 0.3), atol=1e-6)


def test_downsample_matches_shipped_matlab_lr_mostly(set5):
    """The shipped LR files are MATLAB's; a Python MATLAB-bicubic agrees up to ±1–2 levels (README)."""
    from attrsr.images import load_image, modcrop

    hr = modcrop(load_image(set5 / "HR" / "baby.png"), 4)
    lr = downsample(hr[None], 4)[0]
    shipped = load_image(set5 / "LR_bicubic" / "X4" / "babyx4.png")
    diff = ((lr - shipped).abs() * 255).round()
    assert diff.max() <= 2
    assert (diff > 0).float().mean() < 0.2
