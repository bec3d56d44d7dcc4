"""Saliency-driven augmentation (ADD/ADD+) and the vanilla SR augmentations it builds on, as engine
methods. The image operations are :mod:`attrsr.data.augment` (pure functions, tested for LR/HR
alignment); this module decides when they run, where their boxes go, and what the network sees.

Vanilla (Yoo et al. 2020, reference defaults, METHODS.md §2)::

    methods: [{name: cutmix, prob: 1.0, alpha: 0.7}]          # blend rgb mixup cutout cutmix cutmixup cutblur
    methods: [{name: moa, ops: {cutblur: 1, cutmix: 1, mixup: 1, ...}}]   # one op per batch

ADD and ADD+ — *reconstructed from the ADD supplement*: its main paper and code are unpublished; the
supplement gives CAM (:mod:`attrsr.attribution.cam`). Our choices, each a parameter:

* saliency: whole-image CAM of every training LR image with a pretrained SR model (``saliency.model``
  /``weights``; default the shipped demo model of the recipe's scale), computed once per model and
  image set through the engine's per-image cache and carried with every patch as ``aux["saliency"]``.
  Images are cut into ``tile``×``tile`` LR tiles batched through CAM (no context across tile edges;
  the map is normalised per image);
* ADD: each op's box has the reference's random size but sits where the saliency mass is highest
  (``box: max``) or is drawn with probability ∝ that mass (``box: sample``) — in the *source* patch
  for CutMix/CutMixup (its most informative region is what gets pasted) and in the patch itself for
  CutBlur (the HR detail goes where it matters);
* ADD+: ``n_blocks`` non-overlapping saliency-ranked blocks (AttentiveMix's idea for SR) form the
  region, and the op is drawn per batch from a mixture (``ops`` weights) as MoA does.

CutBlur's input is HR-size, so the network gets a space-to-depth head (:class:`SpaceToDepthSR`):
pixel-unshuffle by the scale, then a 1×1 convolution back to 3 channels, initialised to average the
s² sub-pixels — on a nearest-upsampled LR input it reproduces the LR exactly, so the wrapped network
starts as the plain one. Any zoo model with 3-channel input and an integer scale takes it. At test
time the wrapper upsamples the LR itself, so validation and ``attrsr eval`` see an ordinary LR→SR
model; the exported weights are the wrapper's (``export_note``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from attrsr.data import augment as ops
from attrsr.engine.hooks import Method, MethodContext, register_method
from attrsr.errors import AttrsrError

Prob = Field(1.0, ge=0.0, le=1.0, description="probability that the op runs on a batch")


class SpaceToDepthSR(nn.Module):
    """An SR network fed an HR-size input through pixel-unshuffle + a 1×1 convolution (CutBlur).

    ``forward(x)`` takes LR (B,3,h,w) and upsamples it (nearest) itself; ``forward(x, hr_size=True)``
    takes an HR-size input (B,3,s·h,s·w) as CutBlur makes it."""

    def __init__(self, net: nn.Module, scale: int) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.head = nn.Conv2d(3 * scale * scale, 3, 1)
        with torch.no_grad():  # average the s² sub-pixels of each channel: exact on upsampled LR
            w = torch.zeros(3, 3, scale * scale)
            for c in range(3):
                w[c, c] = 1.0 / (scale * scale)
            self.head.weight.copy_(w.view(3, 3 * scale * scale, 1, 1))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor, hr_size: bool = False) -> torch.Tensor:
        if not hr_size:
            x = ops.upsample_nearest(x, self.scale)
        return self.net(self.head(F.pixel_unshuffle(x, self.scale)))


# ----------------------------------------------------------------------------------------------
# The vanilla operations


class _OpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prob: float = Prob


def _apply(name: str, batch: dict[str, Any], rng: np.random.Generator, scale: int, alpha: float | None,
           boxes: torch.Tensor | None = None, mask: torch.Tensor | None = None, perm: torch.Tensor | None = None) -> dict[str, Any]:
    lr, hr = batch["lr"], batch["hr"]
    if name == "blend":
        out = ops.blend(lr, hr, rng, alpha=alpha)
    elif name == "rgb":
        out = ops.rgb_permute(lr, hr, rng)
    elif name == "mixup":
        out = ops.mixup(lr, hr, rng, alpha=alpha)
    elif name == "cutout":
        out = ops.cutout(lr, hr, rng, scale, alpha=alpha)
    elif name == "cutmix":
        out = ops.cutmix(lr, hr, rng, scale, alpha=alpha, boxes=boxes, mask=mask, perm=perm)
    elif name == "cutmixup":
        out = ops.cutmixup(lr, hr, rng, scale, cutmix_alpha=alpha, boxes=boxes, mask=mask, perm=perm)
    elif name == "cutblur":
        out = ops.cutblur(lr, hr, rng, scale, alpha=alpha, boxes=boxes, mask=mask)
        return {**batch, "hr_input": out.input, "hr": out.target}
    else:  # pragma: no cover - names are validated in the params
        raise AttrsrError(f"unknown augmentation {name!r}")
    new = {**batch, "lr": out.input, "hr": out.target}
    if out.loss_mask is not None:
        new["loss_mask"] = out.loss_mask
    return new


DEFAULT_ALPHA = {"blend": 0.6, "rgb": None, "mixup": 1.2, "cutout": 0.001, "cutmix": 0.7, "cutmixup": 0.7, "cutblur": 0.7}
OpName = Literal["blend", "rgb", "mixup", "cutout", "cutmix", "cutmixup", "cutblur"]


def check_cutblur_input(method: str, wrapped: SpaceToDepthSR, scale: int, model_name: str, lr_side: int = 16) -> None:
    """Refuse, before training, a network that cannot run CutBlur's HR-size input through the
    space-to-depth head: one forward pass (eval mode, no grad) of a small HR-size input, which must
    come out at the same size.
    Every zoo model passes (tested); a network taking other than 3-channel LR-size input does not."""
    side = lr_side * scale
    device = next(wrapped.parameters()).device
    was_training = wrapped.training
    try:
        with torch.no_grad():
            out = wrapped.eval()(torch.rand(1, 3, side, side, device=device), hr_size=True)
    except Exception as exc:  # the network's own shape error, whatever its type
        raise AttrsrError(f"{method}: model {model_name!r} cannot take CutBlur's HR-size input through the space-to-depth "
                          f"head ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); drop cutblur from the ops") from None
    finally:
        wrapped.train(was_training)
    if tuple(out.shape) != (1, 3, side, side):
        raise AttrsrError(f"{method}: model {model_name!r} maps CutBlur's {side}×{side} input to {tuple(out.shape)}, "
                          f"not (1, 3, {side}, {side}); drop cutblur from the ops")


class _CutBlurInput(Method):
    """Base of every method that may run CutBlur: when it does (``uses_cutblur``), it wraps the
    network with the space-to-depth head in ``setup`` and owns the forward pass (an instance-level
    hook, so that a method whose ops exclude CutBlur leaves the forward pass to others)."""

    export_note = ("SpaceToDepthSR(net, scale): pixel-unshuffle + 1×1 conv head before the zoo network (keys head.*, net.*); "
                   "load with attrsr.methods.augment.SpaceToDepthSR")

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        if self.uses_cutblur():
            self.owns = frozenset({"forward"})
            self.forward = self._hr_size_forward  # type: ignore[method-assign]
        else:
            self.export_note = ""

    def uses_cutblur(self) -> bool:
        return False

    def setup(self, ctx: MethodContext) -> None:
        self.scale = ctx.cfg.scale
        if self.uses_cutblur():
            ctx.model = SpaceToDepthSR(ctx.model, self.scale)
            check_cutblur_input(self.name, ctx.model, self.scale, ctx.cfg.model.name)

    def rebuild(self, model: nn.Module, cfg: Any) -> nn.Module:
        return SpaceToDepthSR(model, cfg.scale) if self.uses_cutblur() else model

    def _hr_size_forward(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        if "hr_input" in batch:
            return model(batch["hr_input"], hr_size=True)
        return model(batch["lr"])  # batches without CutBlur go through the head as upsampled LR


def _vanilla(op: str):
    from pydantic import create_model

    alpha_default = DEFAULT_ALPHA[op]
    fields: dict[str, Any] = {} if alpha_default is None else {"alpha": (float, Field(alpha_default, gt=0.0))}
    params_cls = create_model(f"{op.title()}Params", __base__=_OpParams, **fields)

    class Vanilla(_CutBlurInput):
        Params = params_cls

        def uses_cutblur(self) -> bool:
            return op == "cutblur"

        def augment(self, batch, gen, rng):
            if rng.random() >= self.params.prob:
                return batch
            return _apply(op, batch, rng, self.scale, getattr(self.params, "alpha", None))

    Vanilla.__name__ = Vanilla.__qualname__ = op.title()
    Vanilla.__doc__ = f"The vanilla {op} augmentation (Yoo et al. 2020; see :mod:`attrsr.methods.augment`)."
    return register_method(op)(Vanilla)


for _op in DEFAULT_ALPHA:
    _vanilla(_op)


class MoAParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prob: float = Prob
    #: relative weight of each op (the reference: uniform over the seven)
    ops: dict[OpName, float] = Field(default_factory=lambda: {k: 1.0 for k in DEFAULT_ALPHA})
    alphas: dict[OpName, float] = Field(default_factory=dict)

    @field_validator("ops")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("ops needs at least one op with a positive weight (weights >= 0)")
        return v


@register_method("moa")
class MoA(_CutBlurInput):
    """Mixture of augmentations: each batch one op, drawn with the ``ops`` weights."""

    Params = MoAParams

    def uses_cutblur(self) -> bool:
        return self.params.ops.get("cutblur", 0) > 0

    def augment(self, batch, gen, rng):
        if rng.random() >= self.params.prob:
            return batch
        names = list(self.params.ops)
        w = np.array([self.params.ops[n] for n in names], dtype=np.float64)
        op = names[int(rng.choice(len(names), p=w / w.sum()))]
        return _apply(op, batch, rng, self.scale, self.params.alphas.get(op, DEFAULT_ALPHA[op]))


# ----------------------------------------------------------------------------------------------
# ADD / ADD+


class SaliencySource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "demo"  # a zoo name or "demo" (the shipped model of the recipe's scale)
    weights: str | None = None
    steps: int = Field(20, ge=1)
    fraction: float = Field(0.25, gt=0.0, le=1.0)
    max_dist: float = Field(0.1, ge=0.0, le=1.0)
    path: Literal["blur", "linear"] = "blur"
    tile: int = Field(64, ge=16, description="LR tile side for CAM (tiles are batched)")


class ADDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prob: float = Prob
    ops: dict[Literal["cutmix", "cutmixup", "cutblur"], float] = Field(default_factory=lambda: {"cutblur": 1.0})
    alpha: float = Field(0.7, gt=0.0, le=1.0, description="box side ratio ~ N(alpha, 0.01²), as the reference")
    box: Literal["max", "sample"] = "max"
    saliency: SaliencySource = Field(default_factory=SaliencySource)


class ADDPlusParams(ADDParams):
    ops: dict[Literal["cutmix", "cutmixup", "cutblur"], float] = Field(
        default_factory=lambda: {"cutblur": 1.0, "cutmix": 1.0, "cutmixup": 1.0})
    n_blocks: int = Field(3, ge=1)
    block_ratio: float = Field(0.35, gt=0.0, le=1.0, description="side of each block relative to the patch")


def saliency_model(src: SaliencySource, scale: int) -> nn.Module:
    from attrsr import models

    if src.model == "demo":
        from attrsr.models.pretrained import load_default  # the shipped model of this scale

        return load_default(scale)
    return models.load(src.model, weights=src.weights, scale=scale)


def _check_saliency_model(method: str, src: SaliencySource, model: nn.Module, images: Any, scale: int, n: int = 3) -> None:
    """Refuse a saliency model that reconstructs the training images far worse than bicubic.

    Weights whose scale the shapes cannot tell (FSRCNN's deconvolution, pre-upsampling SRCNN/VDSR)
    load at any scale; used at the wrong one they score ~10 dB below bicubic, and their saliency
    would be noise. Checked on the central 64×64 LR crop of the first ``n`` training images.
    """
    from attrsr.evaluation import FAR_BELOW_BICUBIC_DB
    from attrsr.metrics import psnr
    from attrsr.resize import imresize

    gaps = []
    for i in range(min(n, len(images))):
        lr, hr = np.asarray(images.lr(i)), np.asarray(images.hr(i))
        s = min(64, lr.shape[0], lr.shape[1])
        r, c = (lr.shape[0] - s) // 2, (lr.shape[1] - s) // 2
        lr, hr = lr[r : r + s, c : c + s], hr[r * scale : (r + s) * scale, c * scale : (c + s) * scale]
        x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
        device = next(model.parameters()).device
        with torch.no_grad():
            sr = model(x.to(device)).clamp(0, 1).cpu()
        bicubic = imresize(x, scale).clamp(0, 1)
        as_uint8 = lambda t: (t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
        gaps.append(psnr(as_uint8(bicubic), hr, scale) - psnr(as_uint8(sr), hr, scale))
    gap = float(np.mean(gaps))
    if gap > FAR_BELOW_BICUBIC_DB:
        raise AttrsrError(
            f"{method}: saliency model {src.model!r}{f' ({src.weights})' if src.weights else ''} scores {gap:.1f} dB "
            f"below bicubic on the training images at ×{scale}: its weights are likely for another scale; "
            "give weights trained at the recipe's scale")


def cam_tiles(model: nn.Module, lr: np.ndarray, src: SaliencySource) -> np.ndarray:
    """Whole-image CAM saliency of one LR image (H×W×3 uint8) computed on batched tiles → H×W float16."""
    from attrsr.attribution.cam import guided_path_attribution, make_element_path, _grad_fn
    from attrsr.attribution._common import prepared
    from attrsr.attribution.objectives import image_detector

    x = torch.from_numpy(np.array(lr)).permute(2, 0, 1).float() / 255  # a copy: the cache is read-only
    _, h, w = x.shape
    t = src.tile
    corners = [(min(r, max(h - t, 0)), min(c, max(w - t, 0))) for r in range(0, h, t) for c in range(0, w, t)]
    th, tw = min(t, h), min(t, w)
    tiles = torch.stack([x[:, r : r + th, c : c + tw] for r, c in corners])
    device = next(model.parameters()).device
    with prepared(model, False) as fmt:
        path = make_element_path(tiles.to(device), src.path)
        attr, _ = guided_path_attribution(_grad_fn(model, image_detector, fmt), path, steps=src.steps,
                                          fraction=src.fraction, max_dist=src.max_dist)
    sal = torch.zeros(h, w, dtype=torch.float64)
    for (r, c), a in zip(corners, attr.sum(1).abs().cpu()):
        sal[r : r + th, c : c + tw] = torch.maximum(sal[r : r + th, c : c + tw], a)
    peak = float(sal.max())
    return (sal / peak if peak > 0 else sal).numpy().astype(np.float16)


@register_method("add")
class ADD(_CutBlurInput):
    """ADD (reconstructed): the mixing ops' boxes follow the CAM saliency of the patches."""

    Params = ADDParams

    def uses_cutblur(self) -> bool:
        return self.params.ops.get("cutblur", 0) > 0

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        from attrsr.data.artifacts import weights_hash

        src = self.params.saliency
        model = saliency_model(src, ctx.cfg.scale)
        if getattr(model, "scale", ctx.cfg.scale) != ctx.cfg.scale:
            raise AttrsrError(f"{self.name}: saliency model is ×{model.scale}, the recipe trains ×{ctx.cfg.scale}")
        _check_saliency_model(self.name, src, model, ctx.images, ctx.cfg.scale)
        key = {"cam": src.model_dump(), "weights": weights_hash(model), "scale": ctx.cfg.scale}
        arrays = ctx.cached_per_image("cam_saliency", key, lambda i: cam_tiles(model, ctx.images.lr(i), src))
        ctx.add_aux("saliency", arrays)

    def _pick(self, rng: np.random.Generator) -> str:
        names = list(self.params.ops)
        w = np.array([self.params.ops[n] for n in names], dtype=np.float64)
        return names[int(rng.choice(len(names), p=w / w.sum()))]

    def _region(self, sal: torch.Tensor, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        b, h, w = sal.shape
        ratio = float(np.clip(rng.normal(self.params.alpha, 0.01), 0.05, 1.0))
        bh, bw = max(1, int(h * ratio)), max(1, int(w * ratio))
        return {"boxes": ops.saliency_boxes(sal, bh, bw, mode=self.params.box, rng=rng)}

    def augment(self, batch, gen, rng):
        if rng.random() >= self.params.prob:
            return batch
        op = self._pick(rng)
        sal = batch["aux"]["saliency"].float()
        perm = ops._permutation(rng, sal.shape[0], sal.device)
        # CutMix-like ops paste the source's informative region; CutBlur puts HR detail where the patch's is
        source = sal[perm] if op in ("cutmix", "cutmixup") else sal
        region = self._region(source, rng)
        return _apply(op, batch, rng, self.scale, self.params.alpha, perm=perm if op != "cutblur" else None, **region)


@register_method("add_plus")
class ADDPlus(ADD):
    """ADD+ (reconstructed): several saliency-ranked blocks and a mixture of the ops."""

    Params = ADDPlusParams

    def _region(self, sal: torch.Tensor, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        b, h, w = sal.shape
        side_h, side_w = max(1, int(h * self.params.block_ratio)), max(1, int(w * self.params.block_ratio))
        return {"mask": ops.saliency_blocks(sal, side_h, side_w, self.params.n_blocks)}
