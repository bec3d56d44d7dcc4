"""The non-local attribution prior's loss (thesis ch. 3, Eqs. 3.2-3.8; METHODS.md §4).

A = ∂(Σ_{PoI} F(x))/∂x — the input gradient of the SR pixels over the patch of interest (the PoI
given on the LR grid, × scale on the SR output) — taken with ``create_graph=True`` so the loss below
trains the network (double backprop). Per sample, n_PoI = ‖M_PoI ⊙ A‖₁, n_i = ‖M_SSR_i ⊙ A‖₁,
s_i = n_i / (n_PoI + n_i), and L_AP = mean_i (s_i − w_i)², with w_i the similarity map's value at SSR
i ("sim") or a constant. Samples without a prior (``valid`` false) contribute exactly 0.
"""

from __future__ import annotations

import torch

from attrsr.attribution.selfsim import PriorRegions
from attrsr.errors import AttrsrError


def region_input_gradient(sr: torch.Tensor, lr: torch.Tensor, poi: torch.Tensor, scale: int) -> torch.Tensor:
    """∂(Σ_{PoI×scale} sr)/∂lr with the graph kept: (B,3,h,w). ``sr`` must be computed from ``lr``
    (which requires grad); ``poi`` (B,h,w) bool on the LR grid."""
    if not lr.requires_grad:
        raise AttrsrError("the attribution prior needs the LR input to require grad (Method.needs_input_grad)")
    mask = poi.to(sr.dtype).repeat_interleave(scale, -2).repeat_interleave(scale, -1)[:, None]
    if mask.shape[-2:] != sr.shape[-2:]:
        raise AttrsrError(f"PoI mask {tuple(poi.shape[-2:])} × scale {scale} does not match the SR size {tuple(sr.shape[-2:])}")
    (grad,) = torch.autograd.grad((sr * mask).sum(), lr, create_graph=True)
    return grad


def attribution_prior_loss(attribution: torch.Tensor, regions: PriorRegions, target: str | float = "sim") -> torch.Tensor:
    """Per-sample L_AP (B,) from the attribution A (B,3,h,w) and the masks of :func:`prior_regions`."""
    a = attribution.abs().sum(1)  # (B,h,w): the L1 norm over channels, per pixel
    poi = regions.poi.to(a.device, a.dtype)
    ssr = regions.ssr.to(a.device, a.dtype)
    n_poi = (a * poi).flatten(1).sum(1)  # (B,)
    n_ssr = (a[:, None] * ssr).flatten(2).sum(2)  # (B,N_SSR)
    denom = n_poi[:, None] + n_ssr
    s = n_ssr / torch.where(denom > 0, denom, torch.ones_like(denom))
    if target == "sim":
        w = regions.weights.to(a.device, a.dtype)
    elif isinstance(target, (int, float)) and not isinstance(target, bool) and 0 <= target <= 1:
        w = torch.full_like(s, float(target))
    else:
        raise AttrsrError(f"prior target must be 'sim' or a number in [0, 1], got {target!r}")
    loss = ((s - w) ** 2).mean(1)
    return torch.where(regions.valid.to(a.device), loss, torch.zeros_like(loss))
