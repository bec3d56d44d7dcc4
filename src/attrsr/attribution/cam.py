"""CAM — calibrated attribution maps (the ADD supplement's Algorithm 1), i.e. guided integrated
gradients (Kapishnikov et al., CVPR 2021) from a blurred LR image to the LR image.

Reconstructed: the ADD paper's code is unpublished; the supplement gives the algorithm as
pseudocode. What it fixes, and what we chose (each a parameter):

* k steps; at step i the fraction ``fraction`` (p_f) of the input elements with the smallest
  |gradient| are the ones that move towards the input; a calibration δ scales how far they move so
  that the path lands exactly on the target L1 distance L_TG = L_OA·(1 − i/k), L_OA the baseline's
  distance to the input; attribution accumulates (γ_{after} − γ_{before}) ⊙ gradient, and elements that
  fall behind α_min = i/k − ``max_dist`` are first pulled up to it (the supplement's [α_min, α_max]).
  Our defaults: k = 20 (the supplement's α grid 0.05 … 0.95 plus the input), p_f = 0.25 and
  max_dist = 0.1 (Guided IG's fraction; its max_dist of 4 steps of 200 scaled to 2 steps of 20).
* ``path="linear"``: each element moves on the straight line from the blurred baseline to the
  input — there CAM is Guided IG, and the tests compare it with the reference implementation
  (``saliency.core.GuidedIG``). ``path="blur"``: each element moves along its own progressive-blur
  trajectory (LAM's path, σ from σ_max to 0), interpolated linearly between ``resolution`` + 1
  precomputed blur levels. Distances are measured per element as w_e·(1 − α_e) with
  w_e = |x_e − baseline_e|, which is exactly the L1 distance on the straight line and, on the blur
  path, the same budget split along each element's trajectory.
* The objective: LAM's window detector (a window given), or the whole-image detector (window
  ``None``: the summed gradient magnitude of the whole SR output) — the saliency ADD needs.

The path is sequential (each step's direction depends on the gradient at the last point), so the
work is batched over *images* instead: :func:`guided_path_attribution` runs a batch (B,C,h,w) with
one forward/backward per step, each sample with its own selection and calibration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attrsr.attribution._common import (
    AttributionResult,
    as_lr_batch,
    finish,
    forward_checked,
    infer_scale,
    objective_for,
    prepared,
)
from attrsr.attribution.objectives import image_detector
from attrsr.attribution.paths import blur_sigmas, gaussian_blur, _check_size, _gaussian_1d
from attrsr.errors import AttrsrError

GradFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
PATHS = ("blur", "linear")
# Relative tolerance under which a step counts as on its target distance (the reference's EPSILON).
_ON_TARGET = 1e-9


class ElementPath:
    """Per-element trajectories from a baseline (α = 0) to the input (α = 1) for a batch (B,C,h,w)."""

    def __init__(self, x: torch.Tensor, baseline: torch.Tensor) -> None:
        self.x = x.double()
        self.baseline = baseline.double()
        self.weight = (self.x - self.baseline).abs()  # L1 budget of each element

    def at(self, alpha: torch.Tensor) -> torch.Tensor:
        """The point with per-element positions ``alpha`` (B,C,h,w) in [0,1]."""
        raise NotImplementedError


class LinearElementPath(ElementPath):
    def at(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.baseline + alpha * (self.x - self.baseline)


class BlurElementPath(ElementPath):
    """Each element follows its own value under a blur that fades from σ_max (α = 0) to none (α = 1)."""

    def __init__(self, x: torch.Tensor, sigma: float = 1.2, kernel_size: int = 9, resolution: int = 100) -> None:
        if resolution < 1:
            raise AttrsrError(f"resolution must be a positive integer (blur levels on the path), got {resolution}")
        _gaussian_1d(0.0, kernel_size)
        _check_size(x.shape[-2], x.shape[-1], kernel_size)
        sigmas = blur_sigmas(float(sigma), resolution)
        # (R+1, B, C, h, w): level j has σ_max·(1 − j/R); level R is the input itself
        levels = torch.stack([gaussian_blur(img.double(), sigmas, kernel_size) for img in x], dim=1)
        self.levels = levels
        self.resolution = resolution
        super().__init__(x, levels[0])

    def at(self, alpha: torch.Tensor) -> torch.Tensor:
        pos = alpha.clamp(0, 1) * self.resolution
        lo = pos.floor().clamp(max=self.resolution - 1).long()
        t = pos - lo
        a = torch.gather(self.levels, 0, lo[None]).squeeze(0)
        b = torch.gather(self.levels, 0, (lo + 1)[None]).squeeze(0)
        return a + t * (b - a)


def _lower_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row ``np.quantile(row, q, method="lower")`` of (B,n): the element at index ⌊q(n−1)⌋ of the sorted row."""
    n = values.shape[1]
    k = int(math.floor(q * (n - 1))) + 1
    return values.kthvalue(k, dim=1).values


def guided_path_attribution(
    grad_fn: GradFn,
    path: ElementPath,
    *,
    steps: int = 20,
    fraction: float = 0.25,
    max_dist: float = 0.1,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided IG with per-step calibration along ``path`` for a batch.

    ``on_step(i, alpha)`` is called after step i with the per-element positions (B,C,h,w) (for
    checks and pictures).
    grad_fn(points (B,C,h,w)) → (objective (B,), gradient (B,C,h,w)) at those points.
    Returns (attribution (B,C,h,w) float64, the objective at the point where each step's gradient
    was taken, γ before step 1 … before step k (B, steps) float64).
    """
    _check_options(steps, fraction, max_dist)
    b = path.x.shape[0]
    w = path.weight.reshape(b, -1)
    total = w.sum(1)  # L_OA per sample
    alpha = torch.zeros_like(w)
    attr = torch.zeros_like(w)
    values = []
    shape = path.x.shape
    point = path.at(alpha.view(shape)).reshape(b, -1)
    for i in range(1, steps + 1):
        value, grad = grad_fn(point.view(shape).float())
        grad = grad.double().reshape(b, -1)
        grad = torch.where(torch.isnan(grad), torch.zeros_like(grad), grad)
        values.append(value.detach().double())
        a_lo, a_hi = max(i / steps - max_dist, 0.0), min(i / steps + max_dist, 1.0)
        target = total * (1.0 - i / steps)  # L_TG
        active = total > 0
        while bool(active.any()):
            # elements that fell behind the allowed band move up to its lower edge
            alpha = torch.where(active[:, None] & (alpha < a_lo), torch.full_like(alpha, a_lo), alpha)
            current = (w * (1.0 - alpha)).sum(1)  # L_CU
            on_target = (current - target).abs() <= _ON_TARGET * torch.maximum(current.abs(), target.abs()).clamp(min=1.0)
            movable = (alpha < a_hi) & (w > 0)
            mag = torch.where(movable, grad.abs(), torch.full_like(grad, math.inf))
            chosen = movable & (mag <= _lower_quantile(mag, fraction)[:, None])
            room = (w * (a_hi - alpha) * chosen).sum(1)  # L_MF
            gamma = torch.where(room > 0, (current - target) / room.clamp(min=1e-300), torch.full_like(room, math.inf))
            move = active & ~on_target
            full = move & (gamma > 1.0)
            part = move & ~full
            new = torch.where(full[:, None] & chosen, torch.full_like(alpha, a_hi), alpha)
            new = torch.where(part[:, None] & chosen, alpha + gamma.clamp(max=1.0)[:, None] * (a_hi - alpha), new)
            alpha = torch.where(active[:, None], new, alpha)
            new_point = path.at(alpha.view(shape)).reshape(b, -1)
            attr += torch.where(active[:, None], (new_point - point) * grad, torch.zeros_like(attr))
            point = new_point
            active = move & (gamma > 1.0) & (room > 0)
        if on_step is not None:
            on_step(i, alpha.view(shape))
    return attr.view(shape), torch.stack(values, 1)


def _check_options(steps: Any, fraction: Any, max_dist: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttrsrError(f"steps must be a positive integer, got {steps!r}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise AttrsrError(f"fraction must be in (0, 1] (the share of elements moved per step), got {fraction!r}")
    if not (isinstance(max_dist, (int, float)) and 0 <= max_dist <= 1):
        raise AttrsrError(f"max_dist must be in [0, 1] (how far an element may run ahead of or lag the straight path), got {max_dist!r}")


def make_element_path(
    x: torch.Tensor, path: str = "blur", *, sigma: float = 1.2, kernel_size: int = 9, resolution: int = 100
) -> ElementPath:
    """The CAM path for a batch (B,C,h,w): ``blur`` (per-element blur trajectories) or ``linear``
    (straight line from the blurred baseline). Both start at LAM's baseline K(σ_max) ⋆ x."""
    if path == "blur":
        return BlurElementPath(x, sigma, kernel_size, resolution)
    if path == "linear":
        _check_size(x.shape[-2], x.shape[-1], kernel_size)
        base = torch.stack([gaussian_blur(img, [float(sigma)], kernel_size)[0] for img in x])
        return LinearElementPath(x, base)
    raise AttrsrError(f"unknown CAM path {path!r}; choose one of: {', '.join(PATHS)}")


def _grad_fn(model: nn.Module, objective, memory_format: torch.memory_format) -> GradFn:
    def run(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inp = points.contiguous(memory_format=memory_format).requires_grad_(True)
        out = model(inp)
        d = objective(out)
        if not (torch.isfinite(out).all() and torch.isfinite(d).all()):
            name = getattr(model, "zoo_name", type(model).__name__)
            raise AttrsrError(f"model {name!r} produced non-finite outputs on a CAM path point")
        (g,) = torch.autograd.grad(d.sum(), inp)  # samples do not interact in eval mode
        return d.detach(), g

    return run


def cam(
    model: nn.Module,
    lr: torch.Tensor,
    window: Any = None,
    *,
    steps: int = 20,
    fraction: float = 0.25,
    max_dist: float = 0.1,
    path: str = "blur",
    sigma: float = 1.2,
    kernel_size: int = 9,
    resolution: int = 100,
    objective: str = "detector",
    channels_last: bool | None = None,
) -> AttributionResult:
    """CAM of one LR image (3,h,w) for a window (x, y[, size]) of the SR output, or for the whole
    output (``window=None``). Returns an :class:`AttributionResult` with completeness numbers."""
    started = time.perf_counter()
    x = as_lr_batch(model, lr)
    params = {"steps": steps, "fraction": fraction, "max_dist": max_dist, "path": path, "sigma": sigma,
              "kernel_size": kernel_size, "resolution": resolution if path == "blur" else None}
    _check_options(steps, fraction, max_dist)
    with prepared(model, channels_last) as fmt:
        x = x.contiguous(memory_format=fmt)
        sr = forward_checked(model, x)
        scale = infer_scale(model, x, sr)
        if window is None:
            win, obj, objective = None, image_detector, "image_detector"
        else:
            win, obj = objective_for(objective, window, tuple(sr.shape[-2:]))
        trajectory = make_element_path(x.float(), path, sigma=sigma, kernel_size=kernel_size, resolution=resolution)
        with torch.no_grad():
            v_base = float(obj(model(trajectory.baseline.float().contiguous(memory_format=fmt))).double())
        attr, values = guided_path_attribution(_grad_fn(model, obj, fmt), trajectory, steps=steps, fraction=fraction, max_dist=max_dist)
        with torch.no_grad():
            v_input = float(obj(sr).double())
    return finish("cam", attr[0], sr[0], win, scale, objective, v_input, started, objective_baseline=v_base,
                  steps=steps, path_values=values[0].float().cpu(), params=params)


def cam_saliency(
    model: nn.Module,
    lr: torch.Tensor,
    *,
    steps: int = 20,
    fraction: float = 0.25,
    max_dist: float = 0.1,
    path: str = "blur",
    sigma: float = 1.2,
    kernel_size: int = 9,
    resolution: int = 100,
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Whole-image CAM saliency of a batch of LR images (B,3,h,w) → (B,h,w) in [0,1] (|Σ_c A_c| / max
    per image): what ADD's saliency cache stores. One forward/backward of the batch per step."""
    if lr.ndim != 4:
        raise AttrsrError(f"lr must be a batch (B,3,h,w), got shape {tuple(lr.shape)}")
    with prepared(model, channels_last) as fmt:
        x = lr.detach().float().to(next(model.parameters()).device)
        trajectory = make_element_path(x, path, sigma=sigma, kernel_size=kernel_size, resolution=resolution)
        attr, _ = guided_path_attribution(_grad_fn(model, image_detector, fmt), trajectory, steps=steps, fraction=fraction, max_dist=max_dist)
    m = attr.sum(1).abs()
    peak = m.flatten(1).max(1).values.clamp(min=1e-300)
    return (m / peak[:, None, None]).float().cpu()
