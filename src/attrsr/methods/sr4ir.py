"""SR4IR — super-resolution for image recognition (METHODS.md §5) and its five baselines, as one
engine method: the engine trains the SR network S; the method adds the task network T
(``ctx.add_network``: checkpointed, resumed, DDP-wrapped by the engine, exported as
``task.safetensors``) and decides, per ``variant``, what each network learns at each step.

    data: {train: <camvid>/train, flip: false, rot90: false, patch_size: 24}
    methods: [{name: sr4ir, task: segmentation, variant: sr4ir}]

Tasks:

* ``segmentation`` (CamVid): a DeepLabV3-style segmenter; labels ride with the patches as an auxiliary
  array (each HR label map pixel-unshuffled onto the LR grid, s² channels, cropped with the LR patch
  by the engine, shuffled back) — so ``data.flip``/``data.rot90`` must be off (the engine does not
  permute sub-pixels); the method flips LR, HR and label together itself (p = 0.5). Cross-entropy with
  the void id ignored; metric mIoU (one confusion matrix over the evaluation frames).
* ``classification`` (CUB-50): a ResNet-18 classifier; ``data.train`` is the ``images`` folder (class
  sub-folders), the labels and the split come from the index files beside it (flag 0 = train, see
  ``attrsr.tasks.datasets.cub50``). The engine decodes every image but the method's sampler draws
  only the training split. Metric top-1.
* ``detection`` (COCO128): a CenterNet-style detector (class heatmap, log size and sub-cell offset on
  the stride-4 level of an FPN over the ResNet-18 trunk; :class:`attrsr.tasks.networks.CenterNetDetector`,
  :mod:`attrsr.tasks.detection`). ``data.train`` is the ``train2017`` folder, the boxes come from the
  COCO json beside it (``annotations``; a box outside its image stops the run before training). COCO128
  has one split: every 4th image by id (32) is held out as ``test`` (validation and evaluation), the
  other 96 train (the method's sampler draws only those). Boxes ride beside the batch as padded
  tensors (class indices 0..79 ↔ the json's sorted category ids, −1 = none): each image's boxes are
  shifted to the engine's crop, clipped to it, dropped under ``min_box`` HR pixels, and mirrored with
  the image (the method flips, p = 0.5 per sample, so ``data.flip``/``data.rot90`` must be off); crowd
  boxes are no objects, their area is ignored by the heatmap loss. T's gradient norm is clipped to
  ``task_grad_clip`` (10): the head diverges within a few SGD steps at 2e-2 without it. Metrics COCO
  mAP@[.5:.95] and mAP50 through pycocotools over the evaluation images' top-``top_k`` boxes (on the
  whole modcropped image, boxes in its pixels, against the json's boxes).

Variants (the paper's §4 scenarios; ``stage`` splits the run for the two-stage ones):

=========  =====================================================================================
sr4ir      phase 1 (the engine's step): T frozen in eval mode, L = L1 + [after ``warmup``] TDP =
           Σ_k w_k·mean|F_k(S(LR)) − F_k(HR)|; phase 2 (``after_step``): S frozen, SR recomputed with
           the updated S and detached, CQMix (g×g Bernoulli(0.5) cells), L_T = mean of the task loss
           on SR, HR and the mix; step T
s_then_t   S→T: stage 1 S trained with L1 (T idle); stage 2 S frozen, T trained on S(LR)
t_then_s   T→S: stage 1 T trained on HR (S frozen); stage 2 T frozen, S trained with
           L1 + ``task_weight``·task loss through T
joint      S+T: L1 + ``task_weight``·task loss of T(S(LR)), one backward into both networks
lr_t       LR→T: T trained on bilinear-upsampled LR
hr_t       HR→T (oracle): T trained on HR
=========  =====================================================================================

In ``lr_t`` and ``hr_t`` T never sees S; the engine still trains S with L1 beside it, so their PSNR
column is that of an L1-trained S. A frozen stage (``freezes_model``) computes S's losses without
gradients and steps nothing; T's cosine schedule runs over the steps T trains. With ``stage`` 0.5
and twice the iterations, each network of a two-stage variant gets as many updates as in ``sr4ir``.

Validation rows (the ``val`` split, at each validation): the task metric of T on the input it is
evaluated on (HR for ``hr_t``, bilinear LR for ``lr_t``, S(LR) otherwise) and the PSNR of S(LR).
``evaluate_run`` (``attrsr experiment``) gives the same on the evaluation split (``eval_split``:
CamVid test, CUB-50 test, COCO128's held-out quarter) as the benchmark ``<task data>:<split>``: RGB
PSNR of S(LR) (8-bit, border = scale) per image, mIoU or mAP/mAP50 (dataset level) or top-1 (per image).

Reconstruction choices (the paper is silent): S's AdamW schedule is the engine's cosine over the
whole run also in the two-stage variants; the task loss in ``t_then_s``/``joint`` has weight 1;
classification crops are random ``data.patch_size`` LR crops of the 224-px modcropped image, its
evaluation the central 224-px crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from attrsr.engine.hooks import Method, MethodContext, register_method
from attrsr.errors import AttrsrError
from attrsr.images import modcrop

VARIANTS = ("sr4ir", "s_then_t", "t_then_s", "joint", "lr_t", "hr_t")
# Feature levels the task networks have (checked when the recipe is read, before anything runs).
_LEVELS = {
    "segmentation": ("stem", "layer1", "layer2", "layer3", "layer4", "backbone"),
    "classification": ("stem", "layer1", "layer2", "layer3", "layer4"),
    "detection": ("stem", "layer1", "layer2", "layer3", "layer4", "p2", "p3", "p4", "p5"),
}
# The paper's per-task settings (METHODS.md §5).
_DEFAULTS = {
    "segmentation": {"num_classes": 11, "tdp": {"backbone": 1.0}, "grid": 8, "task_lr": 2e-2, "task_grad_clip": 0.0},
    "classification": {"num_classes": 50, "tdp": {"layer4": 1.0}, "grid": 4, "task_lr": 3e-2, "task_grad_clip": 0.0},
    # The CenterNet head diverges within a few SGD steps at 2e-2 without clipping (measured: loss 7 → 1e8 by
    # step 6 on two COCO crops; with the gradient norm clipped to 10 it falls to 1.6 in 15 steps).
    "detection": {"num_classes": 80, "tdp": {"p2": 0.5, "p3": 0.5}, "grid": 8, "task_lr": 2e-2, "task_grad_clip": 10.0},
}


class SR4IRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: Literal["segmentation", "classification", "detection"] = "segmentation"
    variant: Literal["sr4ir", "s_then_t", "t_then_s", "joint", "lr_t", "hr_t"] = "sr4ir"
    labels: str | None = Field(None, description="segmentation label folder (default: the training folder's name + 'annot')")
    val: str | None = Field(None, description="validation split: CamVid folder name beside data.train ('val'), CUB-50 or COCO128 split ('test'); '' for none")
    annotations: str | None = Field(None, description="detection: the COCO instances json (default: <data.train>/../annotations/instances_<data.train's name>.json)")
    eval_split: str = Field("test", description="split that evaluate_run (attrsr experiment) reports")
    num_classes: int | None = Field(None, ge=2, description="default: 11 (CamVid), 50 (CUB-50), 80 (COCO)")
    ignore_index: int = 11
    tdp: dict[str, float] | None = Field(None, description="TDP levels and weights (default: seg backbone 1, cls layer4 1, det p2 0.5 + p3 0.5)")
    warmup: float = Field(0.1, ge=0.0, le=1.0, description="fraction of the iterations before the TDP loss starts")
    grid: int | None = Field(None, ge=1, description="CQMix cells per side (default: seg/det 8, cls 4)")
    task_lr: float | None = Field(None, gt=0.0, description="T's SGD learning rate (default: seg/det 2e-2, cls 3e-2)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    task_grad_clip: float | None = Field(None, ge=0.0, description="clip T's gradient norm to this before its step; 0 = off (default: det 10, seg/cls off)")
    task_width: int = Field(64, ge=4, description="T's stem channels (64 = ResNet-18; narrower for CPU runs)")
    aspp_channels: int = Field(128, ge=4)
    fpn_channels: int = Field(64, ge=4, description="detection: channels of the FPN levels and the CenterNet head")
    min_box: float = Field(2.0, ge=0.0, description="detection: boxes narrower or shorter than this (HR pixels) after cropping are dropped")
    top_k: int = Field(100, ge=1, description="detection: boxes kept per image when decoding (COCO's 100)")
    stage: float = Field(0.5, gt=0.0, lt=1.0, description="first stage's share of the iterations (s_then_t, t_then_s)")
    task_weight: float = Field(1.0, ge=0.0, description="weight of the task loss in S's objective (t_then_s, joint)")
    val_images: int = Field(4, ge=0, description="validation images per validation (0: all)")
    eval_images: int = Field(0, ge=0, description="evaluation images, evenly spaced over the split (0: all)")

    @model_validator(mode="after")
    def _task_defaults(self) -> "SR4IRParams":
        for key, value in _DEFAULTS[self.task].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        bad = [k for k in self.tdp if k not in _LEVELS[self.task]]
        if bad:
            raise ValueError(f"tdp: the {self.task} network has no feature level(s) {', '.join(bad)}; it has: {', '.join(_LEVELS[self.task])}")
        if self.task != "segmentation" and self.labels is not None:
            raise ValueError("labels: only for segmentation (CUB-50's labels come from its index files, COCO's from `annotations`)")
        if self.task != "detection" and self.annotations is not None:
            raise ValueError("annotations: only for detection")
        return self


def _evenly(items: list, n: int) -> list:
    if not n or n >= len(items):
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


@register_method("sr4ir")
class SR4IR(Method):
    """Task-driven SR and its baselines: S trained by the engine, T by the method (see the module)."""

    Params = SR4IRParams

    # ------------------------------------------------------------------------------------------
    # Set-up

    def _build_task(self) -> torch.nn.Module:
        from attrsr.tasks.networks import CenterNetDetector, DeepLabV3Segmenter, ResNet18Classifier

        p = self.params
        if p.task == "segmentation":
            return DeepLabV3Segmenter(p.num_classes, p.aspp_channels, p.task_width)
        if p.task == "detection":
            return CenterNetDetector(p.num_classes, p.fpn_channels, p.task_width)
        return ResNet18Classifier(p.num_classes, p.task_width)

    def _stage_split(self, iterations: int) -> int:
        return max(1, min(iterations - 1, round(self.params.stage * iterations))) if iterations > 1 else 1

    def _task_steps(self, iterations: int) -> int:
        v, split = self.params.variant, self._stage_split(iterations)
        return {"s_then_t": iterations - split, "t_then_s": split}.get(v, iterations)

    def setup(self, ctx: MethodContext) -> None:
        p, cfg = self.params, ctx.cfg
        self.ctx, self.ctx_cfg, self.scale = ctx, cfg, cfg.scale
        self.iterations = cfg.train.iterations
        self.split = self._stage_split(self.iterations)
        train = Path(str(cfg.data.train))
        if p.task == "segmentation":
            self._setup_segmentation(ctx, train)
        elif p.task == "detection":
            self._setup_detection(ctx, train)
        else:
            self._setup_classification(ctx, train)
        task = self._build_task()
        task.check_levels(list(p.tdp))
        opt = torch.optim.SGD(task.parameters(), lr=p.task_lr, momentum=p.momentum)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self._task_steps(self.iterations)))
        self.task_forward = ctx.add_network("task", task, opt, sched)
        self.task, self.task_opt, self.task_sched = task, opt, sched
        self.batch: dict[str, Any] | None = None

    def _setup_segmentation(self, ctx: MethodContext, train: Path) -> None:
        from attrsr.tasks.datasets import read_camvid_label

        p = self.params
        if ctx.cfg.data.flip or ctx.cfg.data.rot90:
            raise AttrsrError("sr4ir: set data.flip=false and data.rot90=false (the method flips image and labels together itself)")
        labels = Path(p.labels) if p.labels else train.parent / f"{train.name}annot"
        arrays = []
        for i, name in enumerate(ctx.images.names):
            path = labels / f"{Path(name).stem}.png"
            if not path.is_file():
                raise AttrsrError(f"{path}: no label map for training image {name} (labels: {labels})")
            lab = read_camvid_label(path, p.num_classes, p.ignore_index)
            hr_shape = ctx.images.hr(i).shape[:2]
            if lab.shape[0] < hr_shape[0] or lab.shape[1] < hr_shape[1] or lab.shape[0] - hr_shape[0] >= self.scale or lab.shape[1] - hr_shape[1] >= self.scale:
                raise AttrsrError(f"{path}: label {tuple(lab.shape)} and image {tuple(hr_shape)} differ in size")
            lab = lab[: hr_shape[0], : hr_shape[1]]  # the engine modcrops HR to a multiple of the scale
            arrays.append(F.pixel_unshuffle(lab[None, None].float(), self.scale)[0].permute(1, 2, 0).to(torch.uint8).numpy())
        ctx.add_aux("label", arrays)
        val = train.parent / "val" if p.val is None else (train.parent / p.val if p.val else None)
        self.val_dir = val if val is not None and val.is_dir() else None

    def _setup_classification(self, ctx: MethodContext, train: Path) -> None:
        from attrsr.tasks.datasets import cub50

        p = self.params
        root = train.parent
        samples = cub50(root, "train", p.num_classes)
        index = {name: i for i, name in enumerate(ctx.images.names)}
        missing = [str(s.image) for s in samples if _cub_name(s.image) not in index]
        if missing:
            raise AttrsrError(f"{missing[0]}: a CUB-50 training image is not in data.train ({train}); set data.train to <cub50>/images")
        self.image_labels = torch.full((len(ctx.images.names),), -1, dtype=torch.long)
        for s in samples:
            self.image_labels[index[_cub_name(s.image)]] = s.label
        self.train_indices = np.array(sorted(index[_cub_name(s.image)] for s in samples))
        self.val_split = "test" if p.val is None else (p.val or None)
        self.cub_root = root

    def _coco(self, train: Path) -> tuple[Path, Path, list[int]]:
        """(dataset root, annotation json, category ids) of the detection data whose images are ``train``."""
        from attrsr.tasks.datasets import coco_categories

        p = self.params
        ann = Path(p.annotations) if p.annotations else train.parent / "annotations" / f"instances_{train.name}.json"
        ids = coco_categories(train.parent, str(ann.resolve()))
        if len(ids) != p.num_classes:
            raise AttrsrError(f"{ann}: {len(ids)} categories, but the method's num_classes is {p.num_classes}; set num_classes: {len(ids)}")
        return train.parent, ann, ids

    def _setup_detection(self, ctx: MethodContext, train: Path) -> None:
        from attrsr.tasks.datasets import coco_detection, coco_split, pad_boxes

        p = self.params
        if ctx.cfg.data.flip or ctx.cfg.data.rot90:
            raise AttrsrError("sr4ir: set data.flip=false and data.rot90=false (the method flips images and boxes together itself)")
        root, ann, self.category_ids = self._coco(train)
        samples = coco_detection(root, str(ann.resolve()), train.name)  # a box outside its image stops here
        by_name = {s.image.stem: s for s in samples}
        missing = [n for n in ctx.images.names if n not in by_name]
        if missing:
            raise AttrsrError(f"{train / missing[0]}: an image of data.train without an entry in {ann}")
        self.det_boxes, self.det_labels, self.det_crowd = pad_boxes([by_name[n] for n in ctx.images.names], self.category_ids)
        index = {n: i for i, n in enumerate(ctx.images.names)}
        self.train_indices = np.array(sorted(index[s.image.stem] for s in coco_split(samples, "train") if s.image.stem in index))
        self.val_split = "test" if p.val is None else (p.val or None)

    def plan_epoch(self, epoch: int, plan, rng: np.random.Generator):
        if self.params.task == "segmentation":
            return plan
        # Only the training split: the engine decoded the test images of the same folders too.
        keep = np.isin(plan.image, self.train_indices)
        return type(plan)(plan.image[keep], plan.seed[keep], plan.top[keep], plan.left[keep])

    # ------------------------------------------------------------------------------------------
    # Training

    def augment(self, batch: dict[str, Any], gen: torch.Generator, rng: np.random.Generator) -> dict[str, Any]:
        lr, hr = batch["lr"], batch["hr"]
        if self.params.task == "segmentation":
            label = F.pixel_shuffle(batch["aux"]["label"].float(), self.scale)[:, 0].round().long()
            if rng.random() < 0.5:
                lr, hr, label = lr.flip(-1), hr.flip(-1), label.flip(-1)
        elif self.params.task == "detection":
            from attrsr.tasks.datasets import crop_flip_boxes

            # Boxes ride beside the batch as padded tensors (labels −1 = none), cropped and flipped here.
            image = batch["image"].cpu()
            flip = torch.from_numpy(rng.random(len(image)) < 0.5)
            boxes, labels = crop_flip_boxes(self.det_boxes[image], self.det_labels[image], batch["top"].cpu() * self.scale,
                                            batch["left"].cpu() * self.scale, hr.shape[-1], flip, self.params.min_box)
            where = flip.to(lr.device).view(-1, 1, 1, 1)
            lr, hr = torch.where(where, lr.flip(-1), lr), torch.where(where, hr.flip(-1), hr)
            label = {"boxes": boxes.to(lr.device), "labels": labels.to(lr.device), "crowd": self.det_crowd[image].to(lr.device)}
        else:
            label = self.image_labels.to(batch["image"].device)[batch["image"]]
        out = {**batch, "lr": lr, "hr": hr, "task_label": label}
        self.batch = out
        self.mix_seed = int(rng.integers(0, 2**62))
        return out

    def _task_loss(self, logits, label) -> torch.Tensor:
        if self.params.task == "detection":
            from attrsr.tasks.detection import centernet_loss, centernet_targets

            targets = centernet_targets(label["boxes"], label["labels"], self.params.num_classes, tuple(logits["heatmap"].shape[-2:]),
                                        self.task.STRIDE, label["crowd"])
            return centernet_loss(logits, targets)
        if self.params.task == "segmentation":
            return F.cross_entropy(logits, label, ignore_index=self.params.ignore_index)
        return F.cross_entropy(logits, label)

    def _freeze_task(self, frozen: bool) -> None:
        for prm in self.task.parameters():
            prm.requires_grad_(not frozen)
        self.task.train(not frozen)

    def freezes_model(self, step: int) -> bool:
        v = self.params.variant
        return (v == "s_then_t" and step > self.split) or (v == "t_then_s" and step <= self.split)

    def _trains_task(self, step: int) -> bool:
        v = self.params.variant
        if v == "s_then_t":
            return step > self.split
        if v == "t_then_s":
            return step <= self.split
        return True

    def extra_losses(self, batch: dict[str, Any], sr: torch.Tensor, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from attrsr.tasks.mixing import tdp_loss

        p, step = self.params, self.ctx.step + 1
        zero = torch.zeros((), device=sr.device)
        if p.variant == "sr4ir":
            if self.ctx.step < p.warmup * self.iterations:
                return {"tdp": zero}
            self._freeze_task(True)
            return {"tdp": tdp_loss(self.task, sr, batch["hr"], p.tdp)}
        if p.variant == "t_then_s":
            if step <= self.split:
                return {"task": zero}
            self._freeze_task(True)
            return {"task": p.task_weight * self._task_loss(self.task(sr), batch["task_label"])}
        if p.variant == "joint":  # one backward: the engine's fills T's gradients too; after_step steps T
            self._freeze_task(False)
            self.task_opt.zero_grad(set_to_none=True)
            return {"task": p.task_weight * self._task_loss(self.task_forward(sr), batch["task_label"])}
        return {}

    def _task_inputs(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """What T trains on in phase 2 (after S's step), per variant."""
        from attrsr.tasks.mixing import cqmix

        v, hr = self.params.variant, batch["hr"]
        if v == "hr_t" or v == "t_then_s":
            return [hr]
        if v == "lr_t":
            return [F.interpolate(batch["lr"], size=hr.shape[-2:], mode="bilinear", align_corners=False)]
        with torch.no_grad():
            sr = self.ctx.model(batch["lr"]).clamp(0, 1)
        if v == "s_then_t":
            return [sr]
        mixed, _ = cqmix(sr, hr, self.params.grid, torch.Generator().manual_seed(self.mix_seed))
        return [sr, hr, mixed]

    def after_step(self, step: int) -> None:
        batch, self.batch = self.batch, None
        if batch is None or not self._trains_task(step):
            return
        if self.params.variant == "joint":
            loss = None  # T's gradient came with the engine's backward
        else:
            inputs = self._task_inputs(batch)
            self._freeze_task(False)
            self.task_opt.zero_grad(set_to_none=True)
            loss = sum(self._task_loss(self.task_forward(x), batch["task_label"]) for x in inputs) / len(inputs)
            loss.backward()
        if self.params.task_grad_clip:
            torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.params.task_grad_clip)
        self.task_opt.step()
        self.task_sched.step()
        self._freeze_task(True)
        if loss is not None:
            self.ctx.log("sr4ir", {"step": step, "task_loss": float(loss.detach())})

    # ------------------------------------------------------------------------------------------
    # Validation and evaluation

    def _task_input(self, model: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what T is evaluated on for this variant, S(LR) clamped to [0,1])."""
        sr = model(lr).clamp(0, 1)
        if self.params.variant == "hr_t":
            return hr, sr
        if self.params.variant == "lr_t":
            return F.interpolate(lr, size=hr.shape[-2:], mode="bilinear", align_corners=False), sr
        return sr, sr

    def _eval_items(self, split: str, limit: int) -> tuple[str, list[tuple[str, Path, Any]]]:
        """(benchmark name, [(image name, image path, label path, class id or COCO image id)])."""
        from attrsr.tasks.datasets import camvid, coco_detection, coco_split, cub50

        if self.params.task == "detection":
            train = Path(str(self.ctx_cfg.data.train))
            root, ann, _ = self._coco(train)
            items = [(s.image.stem, s.image, s.image_id) for s in coco_split(coco_detection(root, str(ann.resolve()), train.name), split)]
            return f"{root.name}:{split}", _evenly(items, limit)
        if self.params.task == "segmentation":
            root = self.data_root
            items = [(s.image.stem, s.image, s.label) for s in camvid(root, split)]
            return f"{root.name}:{split}", _evenly(items, limit)
        items = [(_cub_name(s.image), s.image, s.label) for s in cub50(self.data_root, split, self.params.num_classes)]
        return f"{self.data_root.name}:{split}", _evenly(items, limit)

    def _measure(self, model: torch.nn.Module, task: torch.nn.Module, items, device) -> dict[str, Any]:
        from attrsr.images import load_image
        from attrsr.metrics import psnr
        from attrsr.tasks.datasets import make_lr, read_camvid_label
        from attrsr.tasks.metrics import ConfusionMatrix

        p = self.params
        if p.task == "detection" and not hasattr(self, "category_ids"):
            self.category_ids = self._coco(Path(str(self.ctx_cfg.data.train)))[2]
        cm = ConfusionMatrix(p.num_classes, p.ignore_index) if p.task == "segmentation" else None
        images: dict[str, dict[str, float]] = {}
        detections: list[dict[str, Any]] = []
        task.eval()
        for name, path, target in items:
            hr = load_image(path)[None].to(device)
            if p.task == "detection":
                hr = modcrop(hr, self.scale)
                with torch.no_grad():
                    x, sr = self._task_input(model, make_lr(hr, self.scale), hr)
                detections += self._detect(task, x, target)
                images[name] = {"psnr_rgb": psnr(sr[0].cpu(), hr[0].cpu(), crop_border=self.scale, y_channel=False)}
                continue
            if p.task == "segmentation":
                label = read_camvid_label(target, p.num_classes, p.ignore_index)
                h, w = (hr.shape[-2] // self.scale) * self.scale, (hr.shape[-1] // self.scale) * self.scale
                hr, label = hr[..., :h, :w], label[:h, :w]
            else:
                hr = center_crop(hr, 224 - 224 % self.scale)
            with torch.no_grad():
                x, sr = self._task_input(model, make_lr(hr, self.scale), hr)
                out = task(x)
            row = {"psnr_rgb": psnr(sr[0].cpu(), hr[0].cpu(), crop_border=self.scale, y_channel=False)}
            if cm is not None:
                cm.update(out.argmax(1)[0], label)
            else:
                row["top1"] = float(int(out.argmax(1)[0]) == int(target))
            images[name] = row
        mean_psnr = float(np.mean([r["psnr_rgb"] for r in images.values()]))
        if p.task == "detection":
            from attrsr.tasks.metrics import coco_map

            ap = coco_map(self._coco_truth([target for _, _, target in items]), detections)
            return {"map": ap["map"], "map50": ap["map50"], "psnr_rgb": mean_psnr, "images": images}
        metric = "miou" if cm is not None else "top1"
        value = cm.miou() if cm is not None else float(np.mean([r["top1"] for r in images.values()]))
        return {metric: value, "psnr_rgb": mean_psnr, "images": images}

    def _detect(self, task: torch.nn.Module, x: torch.Tensor, image_id: int) -> list[dict[str, Any]]:
        """COCO result rows of T's detections on one image (its boxes in the image's pixels)."""
        from attrsr.tasks.detection import centernet_decode

        with torch.no_grad():
            boxes, scores, cls = centernet_decode(task(x), task.STRIDE, self.params.top_k, tuple(x.shape[-2:]))
        rows = []
        for (x0, y0, x1, y1), score, c in zip(boxes[0].tolist(), scores[0].tolist(), cls[0].tolist()):
            if x1 > x0 and y1 > y0:
                rows.append({"image_id": int(image_id), "category_id": self.category_ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
        return rows

    def _coco_truth(self, image_ids: list[int]) -> dict[str, Any]:
        """The annotation json restricted to ``image_ids`` (the evaluated images)."""
        import json

        _, ann, _ = self._coco(Path(str(self.ctx_cfg.data.train)))
        data = json.loads(ann.read_text())
        keep = set(image_ids)
        return {**data, "images": [im for im in data["images"] if im["id"] in keep],
                "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}

    @property
    def data_root(self) -> Path:
        return Path(str(self.ctx_cfg.data.train)).parent

    def validate(self, model: torch.nn.Module, step: int) -> list[dict[str, Any]]:
        split = (self.val_dir.name if self.val_dir is not None else None) if self.params.task == "segmentation" else self.val_split
        if split is None:
            return []
        name, items = self._eval_items(split, self.params.val_images)
        was = self.task.training
        result = self._measure(model, self.task, items, self.ctx.device)
        self.task.train(was)
        result.pop("images")
        return [{"dataset": f"sr4ir-{name}", **result}]

    def evaluate_run(self, model: torch.nn.Module, run: Path, cfg) -> dict[str, dict[str, Any]]:
        from safetensors.torch import load_file

        path = run / "task.safetensors"
        if not path.is_file():
            raise AttrsrError(f"{path}: the run has no trained task network (was it trained with this recipe to the end?)")
        self.ctx_cfg, self.scale = cfg, cfg.scale
        task = self._build_task()
        task.load_state_dict(load_file(str(path)), strict=True)
        name, items = self._eval_items(self.params.eval_split, self.params.eval_images)
        return {name: self._measure(model.eval(), task, items, torch.device("cpu"))}


def _cub_name(path: Path) -> str:
    """A CUB image's name in the decoded training set: ``Species/NNNN``."""
    return f"{path.parent.name}/{path.stem}"


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    if min(h, w) < size:
        raise AttrsrError(f"image {w}×{h} is smaller than the {size}-pixel evaluation crop")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


# ------------------------------------------------------------------------------------------------
# Pictures (the paper's Figs. 4-6)

# SegNet's CamVid palette (ids 0-10), void black.
CAMVID_COLOURS = np.array([
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 0],
], dtype=np.uint8)


def _load_run(folder: Path):
    """(recipe, SR network, SR4IR method, task network) of a finished run folder."""
    from safetensors.torch import load_file

    from attrsr import models
    from attrsr.config import load_config

    cfg = load_config(folder / "config.yaml")
    specs = [m for m in cfg.methods if m.name == "sr4ir"]
    if not specs:
        raise AttrsrError(f"{folder}: not an sr4ir run (its recipe has no sr4ir method)")
    for need in ("model.safetensors", "task.safetensors"):
        if not (folder / need).is_file():
            raise AttrsrError(f"{folder / need}: missing; is the run finished?")
    method = SR4IR(SR4IRParams(**specs[0].model_dump(exclude={"name"})))
    method.ctx_cfg, method.scale = cfg, cfg.scale
    model = models.load(cfg.model.name, weights=folder / "model.safetensors", scale=cfg.scale, **cfg.model.args).eval()
    task = method._build_task()
    task.load_state_dict(load_file(str(folder / "task.safetensors")), strict=True)
    return cfg, model, method, task.eval()


def _draw_boxes(ax, boxes, names, colour: str) -> None:
    from matplotlib.patches import Rectangle

    for (x0, y0, x1, y1), name in zip(boxes, names):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.2))
        ax.text(x0, y0, name, fontsize=5, color="black", backgroundcolor=colour, va="bottom")


def pictures(runs: dict[str, str | Path], images: list[str], out: str | Path, *, split: str = "test",
             score_threshold: float = 0.3) -> list[dict[str, Any]]:
    """A figure like the paper's Figs. 4-6 from finished runs of one task and scale.

    ``runs``: column title → run folder (e.g. ``{"bilinear (LR→T)": …/lr_t/seed0, "S→T": …/s_then_t/seed0,
    "SR4IR": …/sr4ir/seed0}``); each column shows what that run's task network is evaluated on (bilinear
    LR for ``lr_t``, HR for ``hr_t``, S(LR) otherwise) with its RGB PSNR, and the network's prediction
    (segmentation: the coloured map and the frame's mIoU; classification: the predicted species, ✓/✗;
    detection: the boxes scoring at least ``score_threshold`` with their classes, and the image's COCO
    mAP over all its decoded boxes). The first column is HR with the ground truth (detection: crowd
    boxes left out). ``images``: names in the split (CamVid frame stem, CUB ``Species/NNNN``, COCO file
    stem). Written atomically as PNG (or any format matplotlib knows by suffix). Returns what the
    panels say: one row per image and run (``psnr_rgb``; ``miou``, ``pred`` or ``map`` and ``boxes``)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attrsr.fileio import check_output, write_bytes_atomic
    from attrsr.images import load_image, to_uint8
    from attrsr.metrics import psnr
    from attrsr.tasks.datasets import make_lr, read_camvid_label
    from attrsr.tasks.metrics import ConfusionMatrix

    out = Path(out)
    check_output(out, "the picture", "file")
    if not runs or not images:
        raise AttrsrError("pictures: give at least one run and one image")
    loaded = {title: _load_run(Path(folder)) for title, folder in runs.items()}
    tasks_scales = {(m.params.task, cfg.scale) for cfg, _, m, _ in loaded.values()}
    if len(tasks_scales) > 1:
        raise AttrsrError(f"pictures: the runs differ in task or scale ({sorted(tasks_scales)}); compare runs of one grid")
    first = next(iter(loaded.values()))[2]
    _, items = first._eval_items(split, 0)
    by_name = {name: (path, target) for name, path, target in items}
    unknown = [i for i in images if i not in by_name]
    if unknown:
        raise AttrsrError(f"pictures: {', '.join(unknown)} not in the {split} split (e.g. {', '.join(list(by_name)[:3])})")
    seg = first.params.task == "segmentation"
    det = first.params.task == "detection"
    rows_per = 2 if seg else 1
    cols = 1 + len(loaded)
    fig, axes = plt.subplots(rows_per * len(images), cols, figsize=(3.2 * cols, 2.6 * rows_per * len(images)), squeeze=False)
    class_names = None
    if det:
        from attrsr.tasks.metrics import coco_map

        first.category_ids = first._coco(Path(str(first.ctx_cfg.data.train)))[2]
        truth_all = first._coco_truth([target for _, target in by_name.values()])
        class_names = {c["id"]: c["name"] for c in truth_all["categories"]}
    elif not seg:
        table = (first.data_root / "classes.txt").read_text().splitlines()
        class_names = {int(a): b.strip() for a, b in (ln.split(",", 1) for ln in table if ln.strip())}
    shown: list[dict[str, Any]] = []
    for r, name in enumerate(images):
        path, target = by_name[name]
        hr = load_image(path)[None]
        if seg:
            label = read_camvid_label(target, first.params.num_classes, first.params.ignore_index)
            h, w = (hr.shape[-2] // first.scale) * first.scale, (hr.shape[-1] // first.scale) * first.scale
            hr, label = hr[..., :h, :w], label[:h, :w]
        elif det:
            hr = modcrop(hr, first.scale)
            truth = {**truth_all, "images": [im for im in truth_all["images"] if im["id"] == target],
                     "annotations": [a for a in truth_all["annotations"] if a["image_id"] == target]}
        else:
            hr = center_crop(hr, 224 - 224 % first.scale)
        lr = make_lr(hr, first.scale)
        top = axes[r * rows_per]
        top[0].imshow(to_uint8(hr[0]))
        if det:
            gt = [a for a in truth["annotations"] if not a.get("iscrowd")]
            _draw_boxes(top[0], [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in gt)], [class_names[a["category_id"]] for a in gt], "lime")
        top[0].set_title(f"HR\n{name}" if seg or det else f"HR: {class_names[int(target)]}", fontsize=8)
        if seg:
            axes[r * rows_per + 1][0].imshow(CAMVID_COLOURS[label.numpy()])
            axes[r * rows_per + 1][0].set_title("ground truth", fontsize=8)
        for c, (title, (cfg, model, method, task)) in enumerate(loaded.items(), start=1):
            with torch.no_grad():
                x, _ = method._task_input(model, lr, hr)
                pred = None if det else task(x).argmax(1)[0]
            value = None if method.params.variant == "hr_t" else psnr(x[0], hr[0], crop_border=method.scale, y_channel=False)
            quality = "" if value is None else f" {value:.2f} dB"
            shown.append({"image": name, "column": title, "psnr_rgb": value})
            if det:
                method.category_ids = first.category_ids
                rows = method._detect(task, x, target)
                drawn = [d for d in rows if d["score"] >= score_threshold]
                ap = coco_map(truth, rows)["map"]
                shown[-1].update({"map": ap, "boxes": len(drawn)})
                top[c].imshow(to_uint8(x[0].clamp(0, 1)))
                _draw_boxes(top[c], [(x0, y0, x0 + w, y0 + h) for x0, y0, w, h in (d["bbox"] for d in drawn)],
                            [f"{class_names[d['category_id']]} {d['score']:.2f}" for d in drawn], "orange")
                top[c].set_title(f"{title}{quality}\nmAP {ap:.3f}", fontsize=8)
            elif seg:
                cm = ConfusionMatrix(method.params.num_classes, method.params.ignore_index)
                cm.update(pred, label)
                shown[-1]["miou"] = cm.miou()
                top[c].imshow(to_uint8(x[0].clamp(0, 1)))
                top[c].set_title(f"{title}{quality}", fontsize=8)
                axes[r * rows_per + 1][c].imshow(CAMVID_COLOURS[pred.numpy()])
                axes[r * rows_per + 1][c].set_title(f"mIoU {cm.miou():.3f}", fontsize=8)
            else:
                ok = "✓" if int(pred) == int(target) else "✗"
                shown[-1]["pred"] = int(pred)
                top[c].imshow(to_uint8(x[0].clamp(0, 1)))
                top[c].set_title(f"{title}{quality}\n{ok} {class_names.get(int(pred), int(pred))}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(out, buf.getvalue())
    return shown
