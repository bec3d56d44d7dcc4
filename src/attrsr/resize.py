"""MATLAB ``imresize`` (bicubic) for numpy arrays and torch tensors.

Why hand-written: torch's ``interpolate(mode="bicubic", antialias=True)`` uses a=-0.75 and clamps at
the border, and PIL uses a=-0.5 but different border handling and 8-bit intermediates; every SR
paper's LR images (and so its numbers) come from MATLAB's bicubic: cubic kernel a=-0.5, kernel
stretched to width 4/scale when shrinking (antialiasing), symmetric (mirror-with-edge) padding,
output size ``ceil(scale * input)``. We validate against the independent ``bicubic-pytorch``.

Each axis is resized by one dense (out × in) weight matrix with the padding folded in, so a resize
is two matrix products: batched, differentiable, and fast on CPU and GPU. Matrices are cached.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from attrsr.errors import AttrsrError


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


# Bounded: one matrix of a 2K image axis is ~8 MB (float64); training on many image sizes must not
# grow the cache without limit. A batch of same-sized images reuses one entry per axis.
@functools.lru_cache(maxsize=32)
def _weight_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """(out_len, in_len) float64 matrix of MATLAB's bicubic contributions along one axis."""
    shrink_aa = scale < 1 and antialias
    kernel_width = 4.0 / scale if shrink_aa else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    # Output pixel centres mapped back to input coordinates (1-based, as MATLAB).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if shrink_aa else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # Symmetric padding: 1..n, n..1 repeated; indices are 1-based here.
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


def _matrix(in_len: int, out_len: int, scale: float, antialias: bool, like: torch.Tensor) -> torch.Tensor:
    return _weight_matrix(in_len, out_len, scale, antialias).to(device=like.device, dtype=like.dtype)


def _resolve(in_hw: tuple[int, int], scale, size) -> tuple[tuple[int, int], tuple[float, float]]:
    if (scale is None) == (size is None):
        raise AttrsrError("imresize: give exactly one of scale= or size=")
    if size is not None:
        out_hw = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
        if min(out_hw) < 1:
            raise AttrsrError(f"imresize: output size must be positive, got {out_hw}")
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    else:
        sh, sw = (scale, scale) if not isinstance(scale, (tuple, list)) else scale
        if sh <= 0 or sw <= 0:
            raise AttrsrError(f"imresize: scale must be positive, got {scale}")
        scales = (float(sh), float(sw))
        out_hw = (math.ceil(in_hw[0] * sh - 1e-9), math.ceil(in_hw[1] * sw - 1e-9))
    return out_hw, scales


def imresize(x, scale: float | tuple[float, float] | None = None, size: int | tuple[int, int] | None = None, antialias: bool = True):
    """Resize like MATLAB ``imresize(x, scale, 'bicubic')`` (or to ``size`` = (H, W)).

    * torch tensors: shape (…, C, H, W), any float dtype, batched, differentiable; returns the same
      dtype (not clamped, not rounded).
    * numpy arrays: H×W or H×W×C. ``uint8`` input returns ``uint8`` rounded and clipped (MATLAB's
      behaviour); float input returns float64.

    ``scale`` is the factor applied (0.25 shrinks ×4); ``size`` the output (H, W).
    """
    if isinstance(x, np.ndarray):
        return _imresize_numpy(x, scale, size, antialias)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"imresize takes a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise AttrsrError(f"imresize: tensor must have at least 2 dims (…, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AttrsrError("imresize: tensor input must be floating point; convert with attrsr.images.to_tensor")
    in_hw = (x.shape[-2], x.shape[-1])
    out_hw, (sh, sw) = _resolve(in_hw, scale, size)
    # MATLAB resizes the dimension with the smallest scale first; with exact arithmetic the order
    # does not matter, but following it keeps float rounding closest to MATLAB.
    if sh <= sw:
        x = _matrix(in_hw[0], out_hw[0], sh, antialias, x) @ x
        x = x @ _matrix(in_hw[1], out_hw[1], sw, antialias, x).T
    else:
        x = x @ _matrix(in_hw[1], out_hw[1], sw, antialias, x).T
        x = _matrix(in_hw[0], out_hw[0], sh, antialias, x) @ x
    return x


def _imresize_numpy(arr: np.ndarray, scale, size, antialias: bool) -> np.ndarray:
    was_uint8 = arr.dtype == np.uint8
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    if arr.ndim == 3:
        t = t.permute(2, 0, 1)
    out = imresize(t, scale=scale, size=size, antialias=antialias)
    if arr.ndim == 3:
        out = out.permute(1, 2, 0)
    res = out.numpy()
    if was_uint8:
        return np.clip(np.round(res), 0, 255).astype(np.uint8)
    return res


def downsample(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """LR image from HR the standard way: MATLAB bicubic ×1/scale, then rounded to 8-bit levels.

    ``hr`` (…,3,H,W) in [0,1] with H, W multiples of ``scale`` (use ``modcrop`` first).
    """
    lr = imresize(hr, scale=1.0 / scale)
    if quantize:
        lr = torch.round(lr.clamp(0, 1) * 255.0) / 255.0
    return lr
