"""The non-local attribution prior as an engine method (thesis ch. 3; METHODS.md §4) — reconstructed,
the thesis published no code (the choices are listed in :mod:`attrsr.attribution.selfsim`).

    methods: [{name: attribution_prior, lambda_ap: 1.0e-4, scenario: 2, n_ssr: 3}]

Each training batch: PoI/SSR masks from the LR patches themselves (:func:`prior_regions`, one grouped
convolution for the batch — cheaper than a cache lookup, and it follows every crop and flip), the
input gradient of the PoI's SR pixels with ``create_graph`` (double backprop) on the forward pass the
L1 loss uses, and the ratio loss L_AP (:func:`attribution_prior_loss`); the convolutions' double
backward goes through :mod:`attrsr.attribution.double_backprop` (same gradients; a prior step 2.2× a
plain one instead of 2.6×). The term ``prior`` = λ_AP · mean over the batch, with samples without a
prior contributing exactly 0, logged at every step. With ``val_regions``, each validation adds
Y-PSNR on the PoI and SSRs of the val benchmarks (``<name>-regions`` rows). Scenarios 3 and 4 draw their random
regions from a generator seeded by each patch's (image, top, left), so a resumed run draws the same.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from attrsr.attribution import double_backprop
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
    val_regions: bool = Field(True, description="validation rows: Y-PSNR on the PoI and on the SSRs of the val benchmarks "
                              "(attrsr.attribution.prior_eval.region_psnr with its defaults: 5 SSRs, 9-px squares)")
    fast_double_backprop: bool = Field(True, description="differentiate the convolutions' backward passes with "
                                       "attrsr.attribution.double_backprop (same gradients, faster); false: PyTorch's own")


def check_prior_params(p: PriorParams, crop: int) -> None:
    """The recipe errors the attribution prior can meet only with the crop size known (the rest the
    pydantic model checks): before training, one line naming the value and the fix."""
    where = f"the {crop}×{crop} LR crop (data.patch_size)"
    if isinstance(p.target, float) and not 0 <= p.target <= 1:
        raise AttrsrError(f"attribution_prior: target {p.target} must be 'sim' or a number in [0, 1]")
    if p.mask_size > crop:
        raise AttrsrError(f"attribution_prior: the {p.mask_size}×{p.mask_size} PoI (mask_size) is larger than {where}; "
                          f"use mask_size ≤ {crop} or larger crops")
    if p.patch > crop:
        raise AttrsrError(f"attribution_prior: the {p.patch}×{p.patch} templates (patch) are larger than {where}; "
                          f"use patch ≤ {crop}")
    n_templates = len(templates_grid(crop, crop, p.patch))
    if p.n_ssr > n_templates:
        raise AttrsrError(f"attribution_prior: n_ssr={p.n_ssr} is more than the {n_templates} templates of {where} "
                          f"with patch {p.patch}; use n_ssr ≤ {n_templates}")
    if p.scenario in (1, 3) and p.n_ssr > p.local_window**2 - 1:
        raise AttrsrError(f"attribution_prior: n_ssr={p.n_ssr} regions do not fit the {p.local_window}×{p.local_window} "
                          f"local window of scenario {p.scenario} ({p.local_window**2 - 1} positions besides the PoI); "
                          "lower n_ssr or raise local_window")
    outside = crop * crop - min(p.far_window // 2 + 1, crop) ** 2  # the most any PoI position leaves (a corner)
    if p.scenario in (2, 4) and p.n_ssr > outside:
        raise AttrsrError(f"attribution_prior: no PoI in {where} leaves n_ssr={p.n_ssr} positions outside the "
                          f"{p.far_window}×{p.far_window} window of scenario {p.scenario}; lower n_ssr or far_window")


@register_method("attribution_prior")
class AttributionPrior(Method):
    """L1 + λ_AP · L_AP: the PoI's input gradient is pushed to draw on self-similar regions."""

    Params = PriorParams
    needs_input_grad: ClassVar[bool] = True

    def setup(self, ctx: MethodContext) -> None:
        p = self.params
        check_prior_params(p, ctx.cfg.data.patch_size)
        self.scale = ctx.cfg.scale
        self.ctx = ctx
        if p.fast_double_backprop and p.lambda_ap > 0:
            double_backprop.attach(ctx.model)

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

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        from attrsr.attribution.prior_eval import region_psnr
        from attrsr.data.datasets import open_dataset

        if not self.params.val_regions or not self.ctx.dist.is_main:
            return []
        rows = []
        for spec in self.ctx.cfg.val.data:
            r = region_psnr(model, open_dataset(spec, self.scale), self.scale, border=self.ctx.cfg.val.border, device=self.ctx.device)
            rows.append({"dataset": f"{r['dataset']}-regions", "psnr_y": r["psnr_y"], "psnr_ssr": r["psnr_ssr"],
                         "psnr_poi": r["psnr_poi"], "images": len(r["images"])})
        return rows
