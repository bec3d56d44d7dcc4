"""The non-local attribution prior as an engine method (thesis ch. 3; METHODS.md §4) — reconstructed,
the thesis published no code (the choices are listed in :mod:`attrsr.attribution.selfsim`).

    methods: [{name: attribution_prior, lambda_ap: 1.0e-4, scenario: 2, n_ssr: 3}]

Each training batch: PoI/SSR masks from the LR patches themselves (:func:`prior_regions`, one grouped
convolution for the batch — cheaper than a cache lookup, and it follows every crop and flip), the
input gradient of the PoI's SR pixels with ``create_graph`` (double backprop), and the ratio loss
L_AP (:func:`attribution_prior_loss`); the term ``prior`` = λ_AP · mean over the batch, with samples
without a prior contributing exactly 0, logged at every step. Scenarios 3 and 4 draw their random
regions from a generator seeded by each patch's (image, top, left), so a resumed run draws the same.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from attrsr.attribution.prior import attribution_prior_loss, region_input_gradient
from attrsr.attribution.selfsim import prior_regions, templates_grid
from attrsr.engine.hooks import Method, MethodContext, register_method
from attrsr.errors import AttrsrError


class PriorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_ap: float = Field(1e-4, ge=0.0, description="weight of L_AP in the total loss")
    target: Literal["sim"] | float = Field("sim", description="w: the SSM value at each SSR, or a constant in [0,1]")
    scenario: Literal[1, 2, 3, 4] = 2
    patch: int = Field(5, ge=2, description="template side P")
    n_ssr: int = Field(3, ge=1)
    mask_size: int = Field(5, ge=1, description="side l of the PoI and SSR masks (LR pixels)")
    pool: int = Field(5, ge=1, description="max-pooling window that defines a local maximum")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="minimum map score for an image to carry a prior")
    local_window: int = Field(7, ge=3)
    far_window: int = Field(11, ge=3)


@register_method("attribution_prior")
class AttributionPrior(Method):
    """L1 + λ_AP · L_AP: the PoI's input gradient is pushed to draw on self-similar regions."""

    Params = PriorParams
    needs_input_grad: ClassVar[bool] = True

    def setup(self, ctx: MethodContext) -> None:
        p, crop = self.params, ctx.cfg.data.patch_size
        if p.mask_size > crop or p.patch > crop:
            raise AttrsrError(f"attribution_prior: mask_size {p.mask_size} / patch {p.patch} larger than the {crop}-pixel LR crop (data.patch_size)")
        n_templates = len(templates_grid(crop, crop, p.patch))
        if p.n_ssr >= crop * crop or (p.scenario in (1, 2) and p.n_ssr > n_templates * 4 and p.n_ssr > crop):
            raise AttrsrError(f"attribution_prior: n_ssr={p.n_ssr} is more regions than a {crop}×{crop} crop holds")
        if isinstance(p.target, float) and not 0 <= p.target <= 1:
            raise AttrsrError(f"attribution_prior: target {p.target} must be 'sim' or in [0, 1]")
        self.scale = ctx.cfg.scale

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        p = self.params
        lr = batch["lr"]
        seed = [int(v) for k in ("image", "top", "left") for v in batch[k].reshape(-1).tolist()] if "image" in batch else [0]
        regions = prior_regions(lr.detach().cpu(), patch=p.patch, n_ssr=p.n_ssr, mask_size=p.mask_size, pool=p.pool,
                                threshold=p.threshold, scenario=p.scenario, local_window=p.local_window,
                                far_window=p.far_window, rng=np.random.default_rng(seed))
        if not bool(regions.valid.any()) or p.lambda_ap == 0:
            return {"prior": torch.zeros((), device=sr.device)}
        attribution = region_input_gradient(sr, lr, regions.poi.to(lr.device), self.scale)
        loss = attribution_prior_loss(attribution, regions, p.target).mean()
        return {"prior": p.lambda_ap * loss.to(sr.dtype)}
