"""PSNR / SSIM exactly as BasicSR computes them for SR papers.

Both take ``img`` (the SR result) and ``ref`` (HR) as H×W×3 uint8 RGB arrays, or float tensors in
[0,1] of shape (3,H,W)/(1,3,H,W) which are first rounded to 8 bits (BasicSR's ``tensor2img``).
Then: optional Y channel (BT.601, MATLAB coefficients, kept in floating point in [0,255]),
``crop_border`` pixels removed from every edge, and the metric in [0,255] units.

SSIM is hand-written (not ``skimage.metrics.structural_similarity``) because the convention is
BasicSR's — 11×11 Gaussian σ=1.5 applied with 'valid' filtering, C1=(0.01·255)², C2=(0.03·255)² —
and because it runs as a conv in torch; the tests check it equals scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=255)`` on the same cropped Y images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from attrsr.errors import AttrsrError
from attrsr.images import rgb2ycbcr, to_uint8


def _prepare(img, ref, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a = _as_uint8(img, "img")
    b = _as_uint8(ref, "ref")
    if a.shape != b.shape:
        raise AttrsrError(f"image shapes differ: {a.shape} vs reference {b.shape}")
    if crop_border < 0:
        raise AttrsrError(f"crop_border must be >= 0, got {crop_border}")
    if y_channel:
        a64 = rgb2ycbcr(a, y_only=True)
        b64 = rgb2ycbcr(b, y_only=True)
    else:
        a64 = a.astype(np.float64)
        b64 = b.astype(np.float64)
    if crop_border:
        if 2 * crop_border >= min(a.shape[0], a.shape[1]):
            raise AttrsrError(f"crop_border {crop_border} leaves nothing of a {a.shape[0]}×{a.shape[1]} image")
        a64 = a64[crop_border:-crop_border, crop_border:-crop_border, ...]
        b64 = b64[crop_border:-crop_border, crop_border:-crop_border, ...]
    return a64, b64


def _as_uint8(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return to_uint8(x)
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, axis=2)
        return x
    if np.issubdtype(x.dtype, np.floating):
        return to_uint8(x)
    raise AttrsrError(f"{what}: expected a uint8 array or a float tensor/array in [0,1], got {x.dtype}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2, dtype=np.float64)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def psnr(img, ref, crop_border: int = 0, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (BasicSR ``calculate_psnr``)."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    return _psnr(a, b)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    # cv2.getGaussianKernel(11, 1.5), as BasicSR uses (its 2-D window is this vector's outer product);
    # computed here to avoid an OpenCV dependency.
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma * sigma))
    return g / g.sum()


_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _ssim_channel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of (N,1,H,W) float64 images in [0,255], 'valid' Gaussian filtering; returns (N,).

    The 11×11 window is separable, so the five local moments are filtered together as two 1-D
    passes (22 instead of 121 multiply-adds a pixel; same result to float64 rounding).
    """
    if a.shape[-1] < 11 or a.shape[-2] < 11:
        raise AttrsrError(f"SSIM needs images of at least 11×11 after cropping, got {tuple(a.shape[-2:])}")
    g = _gaussian_1d().to(a)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (N,5,H,W)
    moments = F.conv2d(moments, g.view(1, 1, 11, 1).expand(5, 1, 11, 1), groups=5)
    mu_a, mu_b, e_aa, e_bb, e_ab = F.conv2d(moments, g.view(1, 1, 1, 11).expand(5, 1, 1, 11), groups=5).unbind(1)
    var_a = e_aa - mu_a**2
    var_b = e_bb - mu_b**2
    cov = e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return (num / den).mean(dim=(-2, -1))


def ssim(img, ref, crop_border: int = 0, y_channel: bool = True) -> float:
    """Structural similarity (BasicSR ``calculate_ssim``); on RGB the mean over the three channels."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    ta = torch.from_numpy(np.ascontiguousarray(a))
    tb = torch.from_numpy(np.ascontiguousarray(b))
    if ta.ndim == 2:
        ta, tb = ta[None, None], tb[None, None]
    else:
        ta, tb = ta.permute(2, 0, 1)[:, None], tb.permute(2, 0, 1)[:, None]
    return float(_ssim_channel(ta, tb).mean())


def psnr_masked(img, ref, mask, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR over the pixels where boolean ``mask`` (H×W, full image size) is true.

    Used for self-similar regions / PoI (thesis Table 4.7) and per-class PSNR. The border crop is
    applied to the mask as well.
    """
    a, b = _prepare(img, ref, crop_border, y_channel)
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = m.astype(bool)
    if crop_border:
        m = m[crop_border:-crop_border, crop_border:-crop_border]
    if m.shape != a.shape[:2]:
        raise AttrsrError(f"mask shape {m.shape} does not match the (cropped) image {a.shape[:2]}")
    if not m.any():
        raise AttrsrError("mask selects no pixels")
    return _psnr(a[m], b[m])
