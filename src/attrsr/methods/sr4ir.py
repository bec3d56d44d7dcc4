"""SR4IR — super-resolution for image recognition (METHODS.md §5), segmentation on CamVid, as an
engine method: the engine trains the SR network S; the method adds the task network T
(``ctx.add_network``: checkpointed, resumed, DDP-wrapped by the engine) and alternates the phases.

    data: {train: <camvid>/train, flip: false, rot90: false, patch_size: 24}
    methods: [{name: sr4ir}]

* Labels ride with the patches as an auxiliary array: each HR label map pixel-unshuffled onto the
  LR grid (s² channels), cropped with the LR patch by the engine and shuffled back to the HR crop —
  so ``data.flip``/``data.rot90`` must be off (the engine does not permute sub-pixels); the method
  flips LR, HR and label together itself (horizontal, p = 0.5, from the step's generator).
* Phase 1 (the engine's step): T frozen in eval mode; L = L1 + [after ``warmup`` of the iterations]
  Σ_k w_k·mean|F_k(S(LR)) − F_k(HR)| (the ``tdp`` levels; segmentation: ``backbone``, w = 1).
* Phase 2 (``after_step``, after S's optimiser step): S frozen, SR recomputed with the updated S and
  detached; CQMix with a g×g grid (``grid`` = 8); L_T = mean of the cross-entropy (ignore 11) on SR,
  HR and the mix; SGD (``task_lr`` 2e-2, momentum 0.9) with a cosine schedule over the run.
* Validation rows: mIoU of T on SR and on HR of the ``val`` split (full frames), and the SR's PSNR.

Not built yet: classification (CUB-50) and detection (COCO128) variants, the five baselines as recipes,
the pictures (see the issue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from attrsr.engine.hooks import Method, MethodContext, register_method
from attrsr.errors import AttrsrError


class SR4IRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: str | None = Field(None, description="label folder (default: the training folder's name + 'annot')")
    val: str | None = Field(None, description="validation frames (default: the sibling 'val' folder); '' for none")
    num_classes: int = Field(11, ge=2)
    ignore_index: int = 11
    tdp: dict[str, float] = Field(default_factory=lambda: {"backbone": 1.0})
    warmup: float = Field(0.1, ge=0.0, le=1.0, description="fraction of the iterations before the TDP loss starts")
    grid: int = Field(8, ge=1)
    task_lr: float = Field(2e-2, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    val_images: int = Field(4, ge=0, description="validation frames used per validation (0: all)")


@register_method("sr4ir")
class SR4IR(Method):
    """Task-driven SR: TDP loss for S, CQMix-trained task network T, alternating per iteration."""

    Params = SR4IRParams

    def setup(self, ctx: MethodContext) -> None:
        from attrsr.tasks.datasets import read_camvid_label
        from attrsr.tasks.networks import DeepLabV3Segmenter

        p, cfg = self.params, ctx.cfg
        self.ctx, self.scale = ctx, cfg.scale
        if cfg.data.flip or cfg.data.rot90:
            raise AttrsrError("sr4ir: set data.flip=false and data.rot90=false (the method flips image and labels together itself)")
        train = Path(str(cfg.data.train))
        labels = Path(p.labels) if p.labels else train.parent / f"{train.name}annot"
        arrays = []
        for i, name in enumerate(ctx.images.names):
            path = labels / f"{Path(name).stem}.png"
            if not path.is_file():
                raise AttrsrError(f"{path}: no label map for training image {name} (labels: {labels})")
            lab = read_camvid_label(path)
            if lab.shape != ctx.images.hr(i).shape[:2]:
                raise AttrsrError(f"{path}: label {tuple(lab.shape)} and image {ctx.images.hr(i).shape[:2]} differ in size")
            arrays.append(F.pixel_unshuffle(lab[None, None].float(), self.scale)[0].permute(1, 2, 0).to(torch.uint8).numpy())
        ctx.add_aux("label", arrays)
        task = DeepLabV3Segmenter(p.num_classes)
        task.check_levels(list(p.tdp))
        opt = torch.optim.SGD(task.parameters(), lr=p.task_lr, momentum=p.momentum)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.train.iterations))
        self.task_forward = ctx.add_network("task", task, opt, sched)
        self.task, self.task_opt, self.task_sched = task, opt, sched
        val = train.parent / "val" if p.val is None else (Path(p.val) if p.val else None)
        self.val_dir = val if val is not None and val.is_dir() else None
        self.batch: dict[str, Any] | None = None

    def augment(self, batch: dict[str, Any], gen: torch.Generator, rng: np.random.Generator) -> dict[str, Any]:
        label = F.pixel_shuffle(batch["aux"]["label"].float(), self.scale)[:, 0].round().long()
        lr, hr = batch["lr"], batch["hr"]
        if rng.random() < 0.5:
            lr, hr, label = lr.flip(-1), hr.flip(-1), label.flip(-1)
        out = {**batch, "lr": lr, "hr": hr, "task_label": label}
        self.batch = out
        self.mix_seed = int(rng.integers(0, 2**62))
        return out

    def _freeze_task(self, frozen: bool) -> None:
        for prm in self.task.parameters():
            prm.requires_grad_(not frozen)
        self.task.train(not frozen)

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from attrsr.tasks.mixing import tdp_loss

        if self.ctx.step < self.params.warmup * self.ctx.cfg.train.iterations:
            return {"tdp": torch.zeros((), device=sr.device)}
        self._freeze_task(True)
        return {"tdp": tdp_loss(self.task, sr, batch["hr"], self.params.tdp)}

    def after_step(self, step: int) -> None:
        from attrsr.tasks.mixing import cqmix

        batch = self.batch
        if batch is None:
            return
        with torch.no_grad():
            sr = self.ctx.model(batch["lr"]).clamp(0, 1)
        gen = torch.Generator().manual_seed(self.mix_seed)
        mixed, _ = cqmix(sr, batch["hr"], self.params.grid, gen)
        self._freeze_task(False)
        ce = lambda x: F.cross_entropy(self.task_forward(x), batch["task_label"], ignore_index=self.params.ignore_index)  # noqa: E731
        loss = (ce(sr) + ce(batch["hr"]) + ce(mixed)) / 3
        self.task_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.task_opt.step()
        self.task_sched.step()
        self._freeze_task(True)
        self.ctx.log("sr4ir", {"step": step, "task_loss": float(loss.detach())})
        self.batch = None

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        from attrsr.images import load_image
        from attrsr.metrics import psnr
        from attrsr.tasks.datasets import make_lr, read_camvid_label
        from attrsr.tasks.metrics import ConfusionMatrix

        if self.val_dir is None:
            return []
        frames = sorted(self.val_dir.glob("*.png"))
        frames = frames[: self.params.val_images] if self.params.val_images else frames
        on_sr, on_hr = (ConfusionMatrix(self.params.num_classes, self.params.ignore_index) for _ in range(2))
        values = []
        self._freeze_task(True)
        for f in frames:
            hr = load_image(f)[None].to(self.ctx.device)
            label = read_camvid_label(self.val_dir.parent / f"{self.val_dir.name}annot" / f.name)
            with torch.no_grad():
                sr = model(make_lr(hr, self.scale)).clamp(0, 1)
                on_sr.update(self.task(sr).argmax(1)[0], label)
                on_hr.update(self.task(hr).argmax(1)[0], label)
            values.append(psnr(sr[0].cpu(), hr[0].cpu(), crop_border=self.scale))
        return [{"dataset": f"sr4ir-{self.val_dir.name}", "miou_sr": on_sr.miou(), "miou_hr": on_hr.miou(), "psnr_y": float(np.mean(values))}]
