"""The evaluation of the non-local attribution prior (thesis Sec. 4.5, Table 4.7, Fig. 4.5) for one
model on one benchmark; :mod:`attrsr.report.prior` runs it over several trained runs (``attrsr
prior-report``), the method's validation rows use :func:`region_psnr`.

* **Region PSNR** (Table 4.7): each benchmark image's LR goes through the self-similarity extractor
  (:func:`attrsr.attribution.selfsim.prior_regions`, on a centre crop of ``crop`` LR pixels: the maps
  of every template against a whole large image would not fit in memory); Y-PSNR of the model's
  output only on the PoI and only on its ``n_ssr`` SSRs (``mask_size`` LR squares, × scale on the SR
  image). The masks depend on the LR image alone, so every model is measured on the same pixels.
  Images whose best map scores under ``threshold`` carry no regions and are left out (counted).
* **DI and the attribution spread** (Fig. 4.5): on ``windows`` windows per image (the
  ``window``-pixel SR windows of most gradient energy in the HR, the same for every model), the LAM
  attribution; its DI; its L1 norm over ``sections`` rectangles growing by ``growth`` LR pixels around
  the window, relative to the window's own norm; and inside each, the ratio of the norm on pixels
  similar to the window's LR patch (normalised cross-correlation ≥ ``sim_threshold``) to that on the
  others. With ``context`` LAM runs on an LR crop of that side centred on the window (much faster;
  exact for networks whose receptive field fits it, but DI then counts the crop's pixels only, so
  compare DIs of one ``context``); 0 uses the whole image.

Reconstructed choices (the thesis gives no code): PoI/SSR squares on the LR grid (``mask_size`` 9 →
18×18 SR pixels at ×2, the thesis's 17×17), SSR squares disjoint from the PoI's (scenario 2 with a far
window of 2·``mask_size`` − 1), the "similar" mask from the window's own LR patch as the template.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from attrsr.attribution.selfsim import prior_regions, to_grey
from attrsr.errors import AttrsrError


@dataclasses.dataclass(frozen=True)
class RegionSettings:
    n_ssr: int = 5
    mask_size: int = 9
    patch: int = 5
    pool: int = 5
    crop: int = 96
    threshold: float = 0.5

    def check(self) -> None:
        if self.crop < max(self.mask_size, self.patch) or self.crop < 2 * self.patch:
            raise AttrsrError(f"region crop {self.crop} is too small for {self.patch}-pixel templates and {self.mask_size}-pixel masks")
        n_templates = (self.crop // self.patch) ** 2
        if not 1 <= self.n_ssr <= n_templates:
            raise AttrsrError(f"n_ssr={self.n_ssr} must be between 1 and the {n_templates} templates of a {self.crop}-pixel crop")


@dataclasses.dataclass(frozen=True)
class SpreadSettings:
    windows: int = 2
    window: int = 13
    sections: int = 5
    growth: int = 20
    sim_threshold: float = 0.5
    steps: int = 50
    context: int = 64


def image_regions(lr: torch.Tensor, scale: int, settings: RegionSettings = RegionSettings()) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(PoI mask, union of SSR masks) on the SR grid (H,W) bool for one LR image (3,h,w), or ``None``
    when the image carries no regions (texture-less, or smaller than the templates)."""
    h, w = lr.shape[-2:]
    side = min(settings.crop, h, w)
    if side < max(settings.patch, settings.mask_size) or side * side < settings.n_ssr + 1:
        return None
    top, left = (h - side) // 2, (w - side) // 2
    crop = lr[:, top : top + side, left : left + side].double()
    reg = prior_regions(crop[None], patch=settings.patch, n_ssr=settings.n_ssr, mask_size=settings.mask_size,
                        pool=settings.pool, threshold=settings.threshold, scenario=2,
                        far_window=2 * settings.mask_size - 1)  # SSR squares clear of the PoI's
    if not bool(reg.valid[0]):
        return None
    out = []
    for m in (reg.poi[0], reg.ssr[0].any(0)):
        full = torch.zeros(h, w, dtype=torch.bool)
        full[top : top + side, left : left + side] = m
        out.append(full.repeat_interleave(scale, 0).repeat_interleave(scale, 1))
    return out[0], out[1]


def _sr8(model: nn.Module, lr: torch.Tensor, device: torch.device) -> torch.Tensor:
    from attrsr.images import to_uint8

    with torch.inference_mode():
        sr = model(lr[None].to(device))[0]
    return to_uint8(sr.float().cpu())


def region_psnr(model: nn.Module, dataset: Any, scale: int, settings: RegionSettings = RegionSettings(), *,
                border: int | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Y-PSNR of ``model`` on a benchmark: whole image (``psnr_y``), PoI only (``psnr_poi``), SSRs only
    (``psnr_ssr``), each the mean over the images that carry regions; ``images`` per image, ``skipped``
    the images without regions. ``border`` (default: the scale) is cropped as in :mod:`attrsr.evaluation`."""
    from attrsr.data.datasets import SRDataset, open_dataset
    from attrsr.images import to_uint8
    from attrsr.metrics import psnr, psnr_masked

    settings.check()
    ds = dataset if isinstance(dataset, SRDataset) else open_dataset(dataset, scale)
    border = scale if border is None else border
    device = torch.device(device)
    per_image: dict[str, dict[str, float]] = {}
    skipped = []
    for i in range(len(ds)):
        pair = ds[i]
        masks = image_regions(pair.lr, scale, settings)
        if masks is None:
            skipped.append(pair.name)
            continue
        sr8, hr8 = _sr8(model, pair.lr, device), to_uint8(pair.hr)
        if sr8.shape != hr8.shape:
            raise AttrsrError(f"{ds.name}/{pair.name}: model output {tuple(sr8.shape)} does not match HR {tuple(hr8.shape)}; is the model x{scale}?")
        row = {"psnr_y": psnr(sr8, hr8, border)}
        for key, m in zip(("psnr_poi", "psnr_ssr"), masks):
            row[key] = psnr_masked(sr8, hr8, m, border) if m[border : m.shape[0] - border, border : m.shape[1] - border].any() else math.nan
        per_image[pair.name] = row
    out: dict[str, Any] = {"dataset": ds.name, "images": per_image, "skipped": skipped}
    for key in ("psnr_y", "psnr_poi", "psnr_ssr"):
        vals = [r[key] for r in per_image.values() if math.isfinite(r[key])]
        out[key] = float(np.mean(vals)) if vals else math.nan
    return out


def similar_mask(lr: torch.Tensor, box: tuple[int, int, int, int], threshold: float) -> np.ndarray:
    """Pixels of the LR image whose NCC with the LR patch under ``box`` (x0, y0, x1, y1) is ≥ threshold:
    a thresholded self-similarity map (thesis Fig. 4.5), by scikit-image's ``match_template``."""
    from skimage.feature import match_template

    grey = to_grey(lr.double()).numpy()
    x0, y0, x1, y1 = box
    tmpl = grey[y0:y1, x0:x1]
    if tmpl.std() == 0:
        return np.zeros_like(grey, dtype=bool)
    return match_template(grey, tmpl, pad_input=True) >= threshold


def attribution_spread(model: nn.Module, dataset: Any, scale: int, settings: SpreadSettings = SpreadSettings()) -> dict[str, Any]:
    """DI and the norm-by-section analysis (module doc) of ``model`` on a benchmark: ``di`` (mean over
    windows), ``relative_norm`` and ``similar_to_dissimilar`` (per section, means over windows; ratios
    of windows without dissimilar pixels in a section are left out), ``windows`` the per-window rows."""
    from attrsr.attribution import lam
    from attrsr.attribution.analysis import auto_windows, norm_by_distance
    from attrsr.data.datasets import SRDataset, open_dataset

    ds = dataset if isinstance(dataset, SRDataset) else open_dataset(dataset, scale)
    rows = []
    for i in range(len(ds)):
        pair = ds[i]
        for win in auto_windows(pair.hr, settings.windows, settings.window, border=scale):
            lr, local = pair.lr, win
            if settings.context:
                lr, local = _context_crop(pair.lr, win, scale, settings.context)
            res = lam(model, lr, local, steps=settings.steps)
            sim = similar_mask(lr, local.lr_box(scale), settings.sim_threshold)
            try:
                sections = norm_by_distance(res.attribution, local, scale, sections=settings.sections,
                                            growth=settings.growth, similar=sim)
            except AttrsrError:  # no attribution in the window at all: no relative norms
                sections = []
            rows.append({"image": pair.name, "window": [win.x, win.y, win.size], "di": res.di,
                         "relative_norm": [s["relative_norm"] for s in sections],
                         "similar_to_dissimilar": [s["similar_to_dissimilar"] for s in sections]})
    return {"dataset": ds.name, "di": _nanmean([r["di"] for r in rows]),
            "relative_norm": _section_means(rows, "relative_norm", settings.sections),
            "similar_to_dissimilar": _section_means(rows, "similar_to_dissimilar", settings.sections),
            "windows": rows}


def _context_crop(lr: torch.Tensor, win: Any, scale: int, context: int) -> tuple[torch.Tensor, Any]:
    from attrsr.attribution.objectives import Window

    h, w = lr.shape[-2:]
    x0, y0, x1, y1 = win.lr_box(scale)
    side_y, side_x = min(context, h), min(context, w)
    top = min(max((y0 + y1) // 2 - side_y // 2, 0), h - side_y)
    left = min(max((x0 + x1) // 2 - side_x // 2, 0), w - side_x)
    return lr[:, top : top + side_y, left : left + side_x], Window(win.x - left * scale, win.y - top * scale, win.size)


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _section_means(rows: list[dict[str, Any]], key: str, n: int) -> list[float]:
    return [_nanmean([r[key][k] for r in rows if len(r[key]) > k]) for k in range(n)]
