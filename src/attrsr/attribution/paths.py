"""Integration paths from a baseline to the input: LAM's progressive blur and the straight line.

A path has points γ_0 (the baseline) … γ_N (the input). Points are made on demand, a slice at a
time (:meth:`Path.points`), so memory stays proportional to the chunk, not to N.

Why the blur path is hand-written: LAM's path is not a straight line, so no attribution library has
it, and its numbers depend on details a generic blur does not share — the kernel formula with
σ+1e-5 (σ = 0 is an exact delta, so γ_N is the input bit for bit), the l×l support, and OpenCV's
default "reflect-101" border (mirror without repeating the edge), which
``torch.nn.functional.pad(mode="reflect")`` reproduces. The Gaussian is separable, so each blur is a
row pass and a column pass in float64 (exact to rounding against the 2-D kernel, checked in the tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attrsr.errors import AttrsrError


def gaussian_kernel(sigma: float, size: int = 9) -> torch.Tensor:
    """Isotropic Gaussian on the size×size grid (offsets −⌊size/2⌋..⌊size/2⌋), summing to 1. float64.

    Weights exp(−(u²+v²)/(2(σ+1e-5)²)) as METHODS.md §1.1; σ = 0 gives a delta (the off-centre
    weights underflow to exactly 0).
    """
    g = _gaussian_1d(sigma, size)
    return g[:, None] * g[None, :]


def _gaussian_1d(sigma: float, size: int) -> torch.Tensor:
    # exp(-(u²+v²)/2s²) = exp(-u²/2s²)·exp(-v²/2s²) and the 2-D sum is the square of the 1-D sum,
    # so the normalised 2-D kernel is the outer product of this normalised 1-D one.
    if size < 1 or size % 2 == 0:
        raise AttrsrError(f"kernel_size must be a positive odd number, got {size}")
    if sigma < 0:
        raise AttrsrError(f"sigma must be >= 0, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r**2) / (2.0 * (sigma + 1e-5) ** 2))
    return g / g.sum()


def _check_size(h: int, w: int, size: int) -> None:
    # reflect-101 padding of l//2 needs more than l//2 pixels per side
    pad = size // 2
    if pad and (h <= pad or w <= pad):
        raise AttrsrError(
            f"LR image {w}×{h} is too small for a {size}×{size} blur kernel; it needs at least {pad + 1} pixels per side"
        )


def blur_sigmas(sigma: float, steps: int) -> torch.Tensor:
    """σ_k = σ_max·(1 − k/N) for k = 0..N (float64): σ_0 = σ_max (baseline) … σ_N = 0 (input)."""
    k = torch.arange(steps + 1, dtype=torch.float64)
    return sigma * (1.0 - k / steps)


def gaussian_blur(x: torch.Tensor, sigmas, size: int = 9) -> torch.Tensor:
    """Blur one image (C,h,w) with the Gaussian of each σ in ``sigmas``: → (K,C,h,w), reflect-101.

    Computed in float64 and returned in ``x``'s dtype; σ = 0 returns ``x`` itself.
    """
    c, h, w = x.shape
    sig = [float(s) for s in sigmas]
    pad = size // 2
    _check_size(h, w, size)
    g = torch.stack([_gaussian_1d(s, size) for s in sig]).to(x.device)  # (K,l)
    k = len(sig)
    x64 = x.to(torch.float64)
    # Row pass: every σ's kernel applied to the same rows is one GEMM over the l-wide windows. Column
    # pass: l multiply-adds of shifted views, each σ with its own tap weight. Both beat a grouped
    # float64 conv2d (one slow im2col call per group: 5× slower for CAM's 101 levels) and give the
    # same floats (tested bit-identical after the cast back).
    rows = F.pad(x64[None], (pad, pad, 0, 0), mode="reflect")[0] if pad else x64
    out = (rows.unfold(-1, size, 1) @ g.T).permute(3, 0, 1, 2)  # (K,C,h,w)
    cols = F.pad(out, (0, 0, pad, pad), mode="reflect") if pad else out
    taps = g.view(k, 1, 1, 1, size)
    blurred = cols[:, :, 0:h] * taps[..., 0]
    for t in range(1, size):
        blurred.addcmul_(cols[:, :, t : t + h], taps[..., t])
    blurred = blurred.to(x.dtype)
    for i, s in enumerate(sig):
        if s == 0.0:
            blurred[i] = x  # a delta kernel: exact, not just exact to rounding
    return blurred


class Path:
    """Points γ_0..γ_N of an integration path for one image ``x`` (C,h,w)."""

    def __init__(self, x: torch.Tensor, steps: int) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise AttrsrError(f"steps must be a positive integer, got {steps!r}")
        self.x = x
        self.steps = steps

    def points(self, start: int, stop: int) -> torch.Tensor:
        """γ_start … γ_{stop−1} as (stop−start, C, h, w)."""
        raise NotImplementedError

    def all(self) -> torch.Tensor:
        """The whole path (N+1, C, h, w)."""
        return self.points(0, self.steps + 1)

    @property
    def baseline(self) -> torch.Tensor:
        return self.points(0, 1)[0]


class BlurPath(Path):
    """LAM's path (METHODS.md §1.2): γ_k = K(σ_k) ⋆ x, σ_k = σ_max·(1 − k/N)."""

    def __init__(self, x: torch.Tensor, sigma: float = 1.2, steps: int = 50, kernel_size: int = 9) -> None:
        super().__init__(x, steps)
        if sigma < 0:
            raise AttrsrError(f"sigma must be >= 0, got {sigma}")
        self.sigmas = blur_sigmas(float(sigma), steps)
        self.kernel_size = kernel_size
        _gaussian_1d(0.0, kernel_size)  # validate now, not at the first chunk
        _check_size(x.shape[-2], x.shape[-1], kernel_size)

    def points(self, start: int, stop: int) -> torch.Tensor:
        return gaussian_blur(self.x, self.sigmas[start:stop], self.kernel_size)


class LinearPath(Path):
    """Straight line γ_k = b + (k/N)(x − b); the baseline ``b`` defaults to black (zeros)."""

    def __init__(self, x: torch.Tensor, baseline: torch.Tensor | None = None, steps: int = 50) -> None:
        super().__init__(x, steps)
        self.b = torch.zeros_like(x) if baseline is None else baseline.to(x)

    def points(self, start: int, stop: int) -> torch.Tensor:
        alphas = torch.arange(start, stop, dtype=torch.float64, device=self.x.device) / self.steps
        x64, b64 = self.x.to(torch.float64), self.b.to(torch.float64)
        pts = (b64[None] + alphas.view(-1, 1, 1, 1) * (x64 - b64)[None]).to(self.x.dtype)
        if stop == self.steps + 1:
            pts[-1] = self.x
        return pts


class CroppedPath(Path):
    """The points of ``path`` cut to the LR box (x0, y0, x1, y1): the path is made on the whole image
    (so a blur's borders are the image's, not the crop's) and then cut."""

    def __init__(self, path: Path, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        super().__init__(path.x[..., y0:y1, x0:x1], path.steps)
        self.path, self.box = path, box

    def points(self, start: int, stop: int) -> torch.Tensor:
        x0, y0, x1, y1 = self.box
        return self.path.points(start, stop)[..., y0:y1, x0:x1]


def blur_path(x: torch.Tensor, sigma: float = 1.2, steps: int = 50, kernel_size: int = 9) -> torch.Tensor:
    """LAM's whole path for ``x`` (C,h,w) → (N+1,C,h,w); γ_0 the baseline, γ_N = x exactly."""
    return BlurPath(x, sigma, steps, kernel_size).all()


def linear_path(x: torch.Tensor, baseline: torch.Tensor | None = None, steps: int = 50) -> torch.Tensor:
    """The straight-line path (N+1,C,h,w) from ``baseline`` (default black) to ``x`` (C,h,w)."""
    return LinearPath(x, baseline, steps).all()
