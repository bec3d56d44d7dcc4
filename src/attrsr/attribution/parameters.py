"""Attribution over *parameters* (BSPA, METHODS.md §3): integrated gradients along the straight
path between two parameter vectors of one network, and the masks of the most important weights.

IG_θ = (θ_b − θ_a) ⊙ (1/M) Σ_{s=1}^{M} ∇_θ L(θ_a + (s/M)(θ_b − θ_a)) — a right Riemann sum, so
Σ IG ≈ L(θ_b) − L(θ_a) (completeness), tightening as M grows. The network is evaluated at each
path point with :func:`torch.func.functional_call`, so the model's own parameters are not touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from attrsr.errors import AttrsrError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _state_names(model: nn.Module) -> dict[str, str]:
    """Parameter name (as ``named_parameters``) → its ``state_dict`` key. They differ for zoo models
    whose contract wrapper hides its ``net.`` prefix from the state dict; users see the latter."""
    key_of = {id(v): k for k, v in model.state_dict(keep_vars=True).items()}
    return {n: key_of.get(id(p), n) for n, p in model.named_parameters()}


def prunable_weights(model: nn.Module) -> list[str]:
    """State-dict names of the weights BSPA attributes and freezes: conv and linear weights (no biases)."""
    names = _state_names(model)
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
    return [names[f"{m}.weight" if m else "weight"] for m, mod in model.named_modules()
            if isinstance(mod, kinds) and getattr(mod, "weight", None) is not None]


@dataclasses.dataclass
class ParameterIG:
    """``ig`` {state-dict name: tensor} per parameter; ``loss_a``/``loss_b`` the loss at θ_a and θ_b summed over
    the batches; ``total`` = Σ IG over *every* parameter that moved (for completeness)."""

    ig: dict[str, torch.Tensor]
    loss_a: float
    loss_b: float
    total: float
    steps: int

    @property
    def completeness_error(self) -> float:
        """|Σ IG − (L(θ_b) − L(θ_a))| / |L(θ_b) − L(θ_a)|."""
        gap = self.loss_b - self.loss_a
        return abs(self.total - gap) / abs(gap) if gap else float("inf")


def parameter_integrated_gradients(
    model: nn.Module,
    theta_a: Mapping[str, torch.Tensor],
    theta_b: Mapping[str, torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int = 100,
    loss: Loss | None = None,
) -> ParameterIG:
    """IG of ``loss`` (default L1) over the path θ_a → θ_b, summed over ``batches`` of (lr, hr).

    Every parameter of ``model`` that differs between θ_a and θ_b is on the path; the others (and
    the buffers) keep ``model``'s values. Returns IG for those parameters."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttrsrError(f"steps must be a positive integer, got {steps!r}")
    loss = loss or (lambda sr, hr: (sr - hr).abs().mean())
    params = dict(model.named_parameters())
    key = _state_names(model)
    missing = sorted({key[n] for n in params} - set(theta_a) | {key[n] for n in params} - set(theta_b))
    if missing:
        raise AttrsrError(f"parameter snapshots lack {', '.join(missing[:5])}; take both with model.state_dict()")
    moving = [n for n in params if not torch.equal(theta_a[key[n]], theta_b[key[n]])]
    a = {n: theta_a[key[n]].detach().to(params[n]) for n in params}
    delta = {n: (theta_b[key[n]].detach().to(params[n]) - a[n]) for n in moving}
    batches = list(batches)
    grads = {n: torch.zeros_like(a[n], dtype=torch.float64) for n in moving}
    was_training = model.training
    model.eval()  # same function at every point: no dropout/batch-norm updates
    try:
        for s in range(1, steps + 1):
            alpha = s / steps
            point = {n: (a[n] + alpha * delta[n]).requires_grad_(True) if n in delta else a[n] for n in params}
            for lr, hr in batches:
                value = loss(functional_call(model, point, (lr,)), hr)
                gs = torch.autograd.grad(value, [point[n] for n in moving], allow_unused=True)
                for n, g in zip(moving, gs):
                    if g is not None:
                        grads[n] += g.double()
        with torch.no_grad():
            end_a = sum(float(loss(functional_call(model, a, (lr,)), hr)) for lr, hr in batches)
            b = {n: a[n] + delta[n] if n in delta else a[n] for n in params}
            end_b = sum(float(loss(functional_call(model, b, (lr,)), hr)) for lr, hr in batches)
    finally:
        model.train(was_training)
    ig = {key[n]: (delta[n].double() * grads[n] / steps).to(a[n].dtype) for n in moving}
    total = float(sum(float((delta[n].double() * grads[n] / steps).sum()) for n in moving))
    return ParameterIG(ig, end_a, end_b, total, steps)


def importance_mask(
    importance: Mapping[str, torch.Tensor], fraction: float, *, level: str = "weight"
) -> dict[str, torch.Tensor]:
    """Bool masks {name: like the parameter} of the top ``fraction`` of weights by importance,
    ranked over all given parameters together. ``level="weight"``: each element; ``"filter"``: whole
    output filters (the importance summed over a filter's elements), keeping ⌊fraction·filters⌋."""
    if not 0 <= fraction <= 1:
        raise AttrsrError(f"fraction must be in [0, 1], got {fraction}")
    if level not in ("weight", "filter"):
        raise AttrsrError(f"level must be 'weight' or 'filter', got {level!r}")
    names = list(importance)
    if level == "weight":
        scores = [importance[n].detach().abs().flatten().double() for n in names]
    else:
        scores = [importance[n].detach().abs().flatten(1).sum(1).double() for n in names]
    allv = torch.cat(scores)
    keep = int(fraction * allv.numel())
    chosen = torch.zeros(allv.numel(), dtype=torch.bool)
    if keep:
        chosen[allv.topk(keep).indices] = True
    masks, start = {}, 0
    for n, sc in zip(names, scores):
        m = chosen[start : start + sc.numel()]
        start += sc.numel()
        shape = importance[n].shape
        masks[n] = m.view(shape) if level == "weight" else m.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
    return masks
