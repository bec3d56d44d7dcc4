"""BSPA — bi-sampling parameter attribution (METHODS.md §3; papers/bspa-bi-sampling-parameter-attribution.txt).

    methods: [{name: bspa, every: 500, finetune_steps: 50, ig_steps: 20, beta: 0.1}]

* **Sub-image bank** (:mod:`attrsr.data.bank`): every training image cut into LR sub-images of
  ``sub_size`` with ``sub_step`` (ClassSR's 32/16 at ×4 by default when the recipe's patch is 32), each
  scored by the MSE between a pretrained model's SR and the HR (``scorer``: default the shipped demo
  model of the recipe's scale), once per images/model through the engine's per-image cache (a grid of
  scores per image). Images smaller than a sub-image give none (counted in the log). Scores sorted
  easy-first into K long-tail classes (:mod:`attrsr.data.longtail`); ``bank.csv`` and ``classes.json``
  go to the run folder. ``bank: PATH`` reuses a bank built by ``attrsr bspa bank`` instead, after
  checking it against the recipe (scale, sub-image size and step, K and factor when the recipe
  gives them, its images in the training set) — one error line before training otherwise.
* **Samplers** (this method owns the epoch's plan): ``uniform`` over the sub-images or ``inverse``
  (class ∝ 1/N_k, then uniform within); the training patch is the sub-image (``data.patch_size`` must
  equal ``sub_size``), with the usual flips and rotations.
* **Alternate training**: every ``every`` *iterations* (the CPU recipes' unit; the paper's E epochs)
  θ_us is kept, ``finetune_steps`` normal optimisation steps run on inverse-sampled batches (θ_is),
  then — unless ``use_ig: false`` — parameter IG between θ_us and θ_is on ``ig_batches`` uniform
  batches (M = ``ig_steps``) ranks conv/linear weights by |IG|; the top p = β·(step/T) are frozen at
  their θ_is values, restored after every optimiser step (``freeze: restore``, the authors' way) or
  their gradients zeroed (``freeze: mask_grad``; Adam's momentum still moves them slightly — documented
  difference). Training continues from θ_is. Completeness of each IG is logged (``bspa`` rows).
* **Validation rows** (the paper's Fig. 3): Y-PSNR per class on ``val_per_class`` fixed sub-images of
  each training class (``bspa-class<k>``) and, with ``val_bank`` (a held-aside bank sorted by this
  bank's thresholds: ``attrsr bspa bank --data 291:val --thresholds-from BANK``), of each val class
  (``bspa-val-class<k>``). ``attrsr bspa report --val-bank`` scores all sub-images after training.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from attrsr.attribution.parameters import importance_mask, parameter_integrated_gradients, prunable_weights
from attrsr.data.longtail import sample_inverse
from attrsr.data.samplers import SamplePlan
from attrsr.engine.hooks import Method, MethodContext, register_method
from attrsr.errors import AttrsrError


class Scorer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "demo"
    weights: str | None = None
    batch: int = Field(64, ge=1)


class BSPAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sub_size: int | None = Field(None, ge=4, description="LR sub-image side (default data.patch_size)")
    sub_step: int | None = Field(None, ge=1, description="stride between sub-images (default sub_size // 2)")
    bank: str | None = Field(None, description="a bank folder from `attrsr bspa bank` (checked against the recipe); default: build one")
    k: int = Field(10, ge=2, le=100)
    factor: float = Field(10.0, ge=1.0, le=1000.0)
    scorer: Scorer = Field(default_factory=Scorer)
    sampler: Literal["uniform", "inverse"] = "uniform"
    alternate: bool = True
    every: int = Field(500, ge=1, description="iterations between refreshes")
    finetune_steps: int = Field(50, ge=1)
    use_ig: bool = True
    ig_steps: int = Field(20, ge=1)
    ig_batches: int = Field(2, ge=1)
    beta: float = Field(0.1, ge=0.0, le=1.0)
    val_per_class: int = Field(8, ge=0, description="sub-images per class in the per-class PSNR rows (0: none)")
    val_bank: str | None = Field(None, description="a held-aside bank sorted by the training bank's thresholds (attrsr bspa bank "
                                 "--thresholds-from): per-class PSNR rows on its sub-images too (bspa-val-class<k>)")
    level: Literal["weight", "filter"] = "weight"
    freeze: Literal["restore", "mask_grad"] = "restore"


@register_method("bspa")
class BSPA(Method):
    """Bi-sampling with parameter-attribution freezing (see the module doc)."""

    Params = BSPAParams
    owns: ClassVar[frozenset[str]] = frozenset({"sampler"})

    def setup(self, ctx: MethodContext) -> None:
        from attrsr.data.bank import build_bank, read_bank, write_bank

        p = self.params
        self.ctx = ctx
        self.size = p.sub_size or ctx.cfg.data.patch_size
        self.step_px = p.sub_step or max(1, self.size // 2)
        if self.size != ctx.cfg.data.patch_size:
            raise AttrsrError(f"bspa: sub_size {self.size} must equal data.patch_size {ctx.cfg.data.patch_size} (the sub-image is the training patch)")
        scale = ctx.cfg.scale
        if p.bank is not None:
            where = f"bspa bank {p.bank}"
            bank = read_bank(p.bank)
            if bank.held_aside:  # its classes are not a long-tail split (a class may even be empty)
                raise AttrsrError(f"{where}: a held-aside bank (classes from {bank.meta['thresholds_from'].get('bank')}'s thresholds) "
                                  "cannot be trained on; give the training bank")
            # k/factor given in the recipe must agree with the bank's; left out, the bank's are used
            given = p.model_fields_set
            bank.check_recipe(scale=scale, size=self.size, step=self.step_px, where=where,
                              k=p.k if "k" in given else None, factor=p.factor if "factor" in given else None)
        else:
            bank = build_bank(ctx.images.names, ctx.images.lr, ctx.images.hr, self._scorer(scale), size=self.size,
                              step=self.step_px, scale=scale, k=p.k, factor=p.factor, batch=p.scorer.batch,
                              cache=ctx.cached_per_image, meta={"scorer": p.scorer.model_dump(), "data": ctx.cfg.data.train})
            where = "bspa"
        self.image = bank.image_indices(ctx.images.names, ctx.images.lr_sizes, where=where)
        self.top, self.left, self.mse, self.classes = bank.top, bank.left, bank.mse, bank.classes
        ctx.log("bspa", {"step": ctx.step, "sub_images": len(bank), "skipped_images": bank.meta.get("skipped_images", 0),
                         "mu": self.classes.mu, "bank": str(p.bank) if p.bank else "built"})
        if ctx.dist.is_main:
            write_bank(bank, ctx.out)
        self.masks: dict[str, torch.Tensor] = {}
        self.frozen: dict[str, torch.Tensor] = {}
        self.refreshes = 0
        # a fixed sample of each class's sub-images for the per-class PSNR rows (the paper's Fig. 3)
        pick = np.random.default_rng([ctx.cfg.seed, 11])
        self.val_items = {c: pick.permutation(np.flatnonzero(self.classes.classes == c))[: p.val_per_class]
                          for c in range(self.classes.k)} if p.val_per_class else {}
        self.held = self._held_aside(bank, pick) if p.val_bank is not None else None

    def _held_aside(self, train, pick: np.random.Generator) -> dict[str, Any]:
        """The ``val_bank``'s images and a fixed sample of each of its classes, after checking that it
        was sorted by this training bank's thresholds (its classes would mean nothing otherwise)."""
        from attrsr.data.bank import read_bank
        from attrsr.data.cache import prepare_cache
        from attrsr.data.datasets import open_dataset

        p, ctx = self.params, self.ctx
        where = f"bspa val_bank {p.val_bank}"
        val = read_bank(p.val_bank)
        val.check_sorted_by(train, where=where, train_label="the training bank", train_path=str(p.bank or ctx.out))
        if not val.meta.get("data"):
            raise AttrsrError(f"{where}: classes.json does not say which images it was built on; rebuild it")
        # every rank opens the cache (a concurrent build is resolved by an atomic rename)
        images = prepare_cache(open_dataset(val.meta["data"], ctx.cfg.scale), ctx.cfg.data.cache_dir, progress=False)
        image = val.image_indices(images.names, images.lr_sizes, where=where)
        items = {c: pick.permutation(np.flatnonzero(val.classes.classes == c))[: p.val_per_class] for c in range(val.classes.k)}
        return {"images": images, "image": image, "top": val.top, "left": val.left, "items": items}

    def _scorer(self, scale: int) -> torch.nn.Module:
        from attrsr import models

        p = self.params
        if p.scorer.model == "demo":
            from attrsr.models.pretrained import load_default

            scorer = load_default(scale)
        else:
            scorer = models.load(p.scorer.model, weights=p.scorer.weights, scale=scale)
        if getattr(scorer, "scale", scale) != scale:
            raise AttrsrError(f"bspa: the scorer is ×{scorer.scale}, the recipe trains ×{scale}")
        return scorer.eval().to(self.ctx.device)

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        """Y-PSNR (border = scale, 8-bit SR; the sub-images' errors pooled) per difficulty class on a fixed sample of its sub-images:
        rows ``bspa-class<k>`` (class 0 = easiest) from the training bank (train classes) and, with ``val_bank``,
        ``bspa-val-class<k>`` from the held-aside bank (val classes; an empty class gives no row)."""
        rows = self._class_rows(model, "bspa-class", self.ctx.images, self.image, self.top, self.left, self.val_items)
        if self.held is not None:
            h = self.held
            rows += self._class_rows(model, "bspa-val-class", h["images"], h["image"], h["top"], h["left"], h["items"])
        return rows

    def _class_rows(self, model, prefix, images, image, top, left, items_of) -> list[dict[str, Any]]:
        from attrsr.data.bank import pooled_psnr
        from attrsr.metrics import psnr

        rows = []
        s, size = self.ctx.cfg.scale, self.size
        for c, items in items_of.items():
            values = []
            for j in items:
                i, t, l = int(image[j]), int(top[j]), int(left[j])
                lr = torch.from_numpy(np.array(images.lr(i)[t : t + size, l : l + size])).permute(2, 0, 1).float() / 255
                hr = np.array(images.hr(i)[s * t : s * (t + size), s * l : s * (l + size)])
                with torch.no_grad():
                    sr = model(lr[None].to(self.ctx.device))[0].clamp(0, 1).cpu()
                values.append(psnr(sr, torch.from_numpy(hr).permute(2, 0, 1).float() / 255, crop_border=s))
            if values:  # pooled: a flat sub-image reproduced exactly (PSNR inf) does not make the class inf
                rows.append({"dataset": f"{prefix}{c}", "psnr_y": pooled_psnr(values), "n": len(values)})
        return rows

    # -- sampling ----------------------------------------------------------------------------
    def _plan(self, n: int, rng: np.random.Generator, kind: str) -> SamplePlan:
        idx = rng.integers(0, len(self.mse), size=n) if kind == "uniform" else sample_inverse(self.classes.classes, n, rng)
        return SamplePlan(self.image[idx], rng.integers(0, 2**62, size=n), self.top[idx], self.left[idx])

    def plan_epoch(self, epoch: int, plan: SamplePlan, rng: np.random.Generator) -> SamplePlan:
        return self._plan(len(plan), rng, self.params.sampler)

    # -- alternate training and freezing -----------------------------------------------------
    def _params(self) -> dict[str, torch.Tensor]:
        sd = self.ctx.model.state_dict(keep_vars=True)
        return {n: sd[n] for n in prunable_weights(self.ctx.model)}

    def _restore(self) -> None:
        with torch.no_grad():
            for n, p in self._params().items():
                if n in self.masks:
                    p[self.masks[n]] = self.frozen[n][self.masks[n]]

    def after_step(self, step: int) -> None:
        p = self.params
        if self.masks and p.freeze == "restore":
            self._restore()
        if p.alternate and step % p.every == 0 and step < self.ctx.cfg.train.iterations:
            self._refresh(step)

    def _refresh(self, step: int) -> None:
        p, ctx = self.params, self.ctx
        model = ctx.model
        theta_us = {k: v.detach().clone() for k, v in model.state_dict().items()}
        rng = np.random.default_rng([ctx.cfg.seed, step, 7])
        bs = ctx.cfg.data.batch_size
        for batch in ctx.batches(self._plan(p.finetune_steps * bs, rng, "inverse")):
            ctx.optimise(batch)
            if self.masks and p.freeze == "restore":
                self._restore()
        theta_is = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if not p.use_ig:
            return
        batches = [(b["lr"], b["hr"]) for b in ctx.batches(self._plan(p.ig_batches * bs, rng, "uniform"))]
        ig = parameter_integrated_gradients(model, theta_us, theta_is, batches, steps=p.ig_steps)
        names = prunable_weights(model)
        importance = {n: ig.ig[n].abs() if n in ig.ig else torch.zeros_like(theta_is[n]) for n in names}
        fraction = p.beta * step / ctx.cfg.train.iterations
        self.masks = {n: m.to(theta_is[n].device) for n, m in importance_mask(importance, fraction, level=p.level).items()}
        self.frozen = {n: theta_is[n].clone() for n in names}
        self.refreshes += 1
        self._mask_gradients()
        ctx.log("bspa", {"step": step, "refresh": self.refreshes, "frozen_fraction": fraction,
                         "frozen": int(sum(int(m.sum()) for m in self.masks.values())),
                         "ig_sum": ig.total, "loss_us": ig.loss_a, "loss_is": ig.loss_b,
                         "completeness_error": ig.completeness_error})

    def _mask_gradients(self) -> None:
        for handle in getattr(self, "_hooks", []):
            handle.remove()
        self._hooks = []
        if self.params.freeze != "mask_grad":
            return
        for n, prm in self._params().items():
            if n in self.masks:
                keep = (~self.masks[n]).to(prm.dtype)
                self._hooks.append(prm.register_hook(lambda g, keep=keep: g * keep))

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "frozen": self.frozen, "refreshes": self.refreshes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks, self.frozen, self.refreshes = state["masks"], state["frozen"], int(state["refreshes"])
        self._mask_gradients()
