"""SR4IR's two training signals for the SR network and the task network (METHODS.md §5).

* :func:`tdp_loss` — the task-driven perceptual loss Σ_k w_k · mean|F_k(SR) − F_k(HR)| through a frozen
  task network's named feature levels (the HR features carry no gradient).
* :func:`cqmix` — CQMix: per sample a g×g grid of Bernoulli(0.5) cells, nearest-upsampled to the
  image, I_mix = M·SR + (1−M)·HR (each pixel from exactly one source; labels unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from attrsr.errors import AttrsrError


def tdp_loss(task, sr: torch.Tensor, hr: torch.Tensor, weights: Mapping[str, float]) -> torch.Tensor:
    """Σ_k w_k·mean|F_k(sr) − F_k(hr)| for the levels named in ``weights``. Call with the task network
    frozen (eval mode, no parameter gradients) so only the SR network learns from it."""
    task.check_levels(list(weights))
    f_sr = task.features(sr)
    with torch.no_grad():
        f_hr = task.features(hr)
    return sum(w * (f_sr[k] - f_hr[k].detach()).abs().mean() for k, w in weights.items())


def cqmix(sr: torch.Tensor, hr: torch.Tensor, grid: int, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed (B,C,H,W), mask (B,1,H,W) with 1 where the pixel comes from SR). H and W must be
    divisible by ``grid`` so every cell is whole."""
    if sr.shape != hr.shape:
        raise AttrsrError(f"CQMix needs SR and HR of one shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    b, _, h, w = sr.shape
    if grid < 1 or h % grid or w % grid:
        raise AttrsrError(f"CQMix grid {grid} does not divide the {w}×{h} image into whole cells; crop to a multiple of {grid}")
    cells = torch.rand(b, 1, grid, grid, generator=gen, device="cpu") < 0.5
    mask = F.interpolate(cells.float(), size=(h, w), mode="nearest").to(sr)
    return mask * sr + (1 - mask) * hr, mask
