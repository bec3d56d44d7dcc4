"""Analyses built on attribution maps (METHODS.md §1, "Analyses in the papers").

* :func:`auto_windows` — non-overlapping windows in the hardest (highest-gradient) regions of an
  HR image: interpret where SR is difficult, not in flat sky;
* :func:`informative_window` — of several candidate windows, the one whose attribution spreads
  widest (the demo's window: a picture that shows what LAM is);
* :func:`area_of_interest` — over several networks on one image/window: which pixels almost every
  network uses, and where they differ;
* :func:`randomisation_check` — the model-randomisation sanity check (Adebayo et al. 2018): maps of
  the trained model and of a randomly re-initialised copy should differ;
* :func:`norm_by_distance` — attribution norm in growing rectangles around the window, relative to
  the window (thesis Fig. 4.5), with an optional similar/dissimilar split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attrsr.attribution._common import AttributionResult
from attrsr.attribution.objectives import Window
from attrsr.errors import AttrsrError
from attrsr.images import rgb2ycbcr


def gradient_energy(img: torch.Tensor) -> torch.Tensor:
    """Per-pixel gradient magnitude of the Y channel on the (H−1)×(W−1) grid, as LAM's detector
    measures it. img (3,H,W) in [0,1] → (H−1,W−1)."""
    y = rgb2ycbcr(img.detach().float().cpu(), y_only=True)[0]
    v = (y[:-1, :-1] - y[1:, :-1]) ** 2
    h = (y[:-1, :-1] - y[:-1, 1:]) ** 2
    return torch.sqrt(v + h)


def auto_windows(hr: torch.Tensor, n: int = 3, size: int = 16, *, margin: int = 1, border: int = 0, flattest: bool = False) -> list[Window]:
    """Up to ``n`` non-overlapping ``size`` windows with the largest (``flattest``: smallest) summed
    gradient energy.

    hr: (3,H,W) in [0,1] at SR size. Windows keep ``margin`` pixels free below/right (the detector
    reads one past the window) and ``border`` pixels from every edge. Greedy: take the best window,
    drop every candidate overlapping it, repeat. Ordered hardest first.
    """
    if n < 1:
        raise AttrsrError(f"number of windows must be >= 1, got {n}")
    if size < 2:
        raise AttrsrError(f"window size {size} is too small; use at least 2")
    H, W = hr.shape[-2:]
    energy = gradient_energy(hr)  # (H−1, W−1): entry (i, j) belongs to pixel (i, j)
    # Window sums for every top-left corner, by one box filter.
    sums = F.avg_pool2d(energy[None, None].double(), size, stride=1)[0, 0] * size * size
    if flattest:
        sums = -sums
    # sums[y, x] is the window with top-left (x, y); it needs y + size + margin <= H.
    ymax, xmax = H - size - margin - border, W - size - margin - border
    if ymax < border or xmax < border:
        raise AttrsrError(f"a {size}-pixel window does not fit a {W}×{H} image with border {border}")
    score = torch.full_like(sums, -math.inf)
    score[border : ymax + 1, border : xmax + 1] = sums[border : ymax + 1, border : xmax + 1]
    chosen: list[Window] = []
    for _ in range(n):
        best = int(torch.argmax(score))
        y, x = divmod(best, score.shape[1])
        if not math.isfinite(float(score[y, x])):
            break
        chosen.append(Window(x, y, size))
        # Corners whose window would intersect this one: |dx| < size and |dy| < size.
        score[max(0, y - size + 1) : y + size, max(0, x - size + 1) : x + size] = -math.inf
    return chosen


def informative_window(
    model: nn.Module, lr: torch.Tensor, candidates: Sequence[Any], *, steps: int = 4, context: int = 24, margin: int = 1,
) -> tuple[Window, list[float]]:
    """The candidate window whose LAM has the highest Diffusion Index — where the network draws on
    the widest area, so its map shows more than a dot — and every candidate's DI (in order).
    lr: (3,h,w) in [0,1]; candidates: windows (x, y, size) in SR pixels.

    Kept cheap: each candidate gets a short LAM (``steps``; on the demo model the DI moved by < 0.002
    between 8 and 50 steps) on an LR crop reaching ``context`` LR pixels beyond the window's
    footprint, and the map is put back into a zero map of the whole LR image so that the DIs compare
    like with like (measured against whole-image LAM on the demo model: within 0.002). A
    convolutional network sees nothing beyond its receptive field, so for networks whose receptive
    field is under ``context`` LR pixels the crop changes nothing the window depends on.
    """
    from attrsr.attribution.di import diffusion_index
    from attrsr.attribution.integrate import lam

    wins = [Window.coerce(c) for c in candidates]
    if not wins:
        raise AttrsrError("informative_window needs at least one candidate window")
    scale = int(model.scale)
    lr = lr[0] if lr.ndim == 4 else lr
    h, w = lr.shape[-2:]
    dis = []
    for win in wins:
        x0, y0 = max(0, win.x // scale - context), max(0, win.y // scale - context)
        x1 = min(w, -(-(win.x + win.size + margin) // scale) + context)
        y1 = min(h, -(-(win.y + win.size + margin) // scale) + context)
        local = Window(win.x - x0 * scale, win.y - y0 * scale, win.size)
        sal = lam(model, lr[:, y0:y1, x0:x1], local, steps=steps).saliency
        full = torch.zeros(h, w, dtype=sal.dtype)
        full[y0:y1, x0:x1] = sal
        dis.append(diffusion_index(full))
    return wins[int(np.argmax(dis))], dis


def area_of_interest(
    saliencies: Mapping[str, torch.Tensor | np.ndarray],
    dis: Mapping[str, float] | None = None,
    *,
    threshold: float = 0.05,
    common: float = 0.9,
) -> dict[str, Any]:
    """Where several networks look, for one image and window.

    A network *uses* a pixel when its saliency there is ≥ ``threshold`` (maps are max-normalised).
    Returns ``usage`` (h,w: fraction of networks using each pixel), ``common`` (bool: used by at
    least the fraction ``common`` of the networks — "almost every network"), ``differs`` (used by
    some but not almost all), and, when DIs are given, ``contrast``: mean map of the networks with
    DI above the median minus that of the rest (positive = what the widely-looking networks add).
    """
    names = list(saliencies)
    if not names:
        raise AttrsrError("area_of_interest needs at least one saliency map")
    maps = np.stack([np.asarray(saliencies[k].cpu() if isinstance(saliencies[k], torch.Tensor) else saliencies[k], np.float64) for k in names])
    usage = (maps >= threshold).mean(axis=0)
    out: dict[str, Any] = {
        "models": names,
        "usage": usage,
        "common": usage >= common - 1e-12,
        "differs": (usage > 0) & (usage < common - 1e-12),
        "threshold": threshold,
    }
    out["common_pixels"] = int(out["common"].sum())
    out["differing_pixels"] = int(out["differs"].sum())
    if dis is not None and len(names) >= 2:
        d = np.array([dis[k] for k in names], np.float64)
        med = np.median(d)
        wide, narrow = d > med, d <= med
        if wide.any() and narrow.any():
            out["contrast"] = maps[wide].mean(axis=0) - maps[narrow].mean(axis=0)
    return out


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-initialised.

    Modules with ``reset_parameters`` use their own initialiser; any parameter left over is
    randomly permuted (its values kept, their order destroyed).
    """
    clone = copy.deepcopy(model)
    done: set[int] = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in clone.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
                done.update(id(p) for p in m.parameters(recurse=False))
        for p in clone.parameters():
            if id(p) not in done and p.numel() > 1:
                p.copy_(p.flatten()[torch.randperm(p.numel())].view_as(p))
    return clone


def _rank(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a.ravel())


def randomisation_check(
    model: nn.Module,
    lr: torch.Tensor,
    window: Any,
    *,
    method: str = "lam",
    trained: AttributionResult | None = None,
    seed: int = 0,
    max_correlation: float = 0.8,
    **options: Any,
) -> dict[str, Any]:
    """Model-randomisation sanity check: attribute with the trained model and a re-initialised copy.

    A method that explains the *model* gives clearly different maps for the two. Both maps always pile
    up on the window's own LR pixels (any SR network, trained or not, depends most on the pixels under
    the window), so a correlation over the whole map mostly measures that shared peak: PAN ×4 on LAM
    image 2 gave Pearson 0.92 for clearly different maps (DI 1.10 vs 0.37). The verdict therefore uses
    the *context*: Pearson correlation over the pixels outside the window's LR footprint (grown by one
    pixel). passed = context r < ``max_correlation``; when the context is empty or constant in either
    map (nothing outside the footprint), the whole-map r decides. Also reported: whole-map Pearson and
    Spearman, the overlap (IoU) of the top 5 % pixels, and both DIs. ``trained`` reuses an existing
    result of ``model``.
    """
    from attrsr.attribution.gradients import attribute

    if trained is None:
        trained = attribute(model, lr, window, method=method, **options)
    rand = attribute(randomised_copy(model, seed), lr, window, method=method, **options)
    sa, sb = trained.saliency.double().numpy(), rand.saliency.double().numpy()
    a, b = sa.ravel(), sb.ravel()
    pearson, spearman = _pearson(a, b), _pearson(_rank(a), _rank(b))
    x0, y0, x1, y1 = trained.window.lr_box(trained.scale)
    outside = np.ones(sa.shape, bool)
    outside[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1] = False
    context = _pearson(sa[outside], sb[outside]) if outside.any() else float("nan")
    decisive = context if math.isfinite(context) else pearson
    ta, tb = a >= np.quantile(a, 0.95), b >= np.quantile(b, 0.95)
    return {
        "method": trained.method,
        "pearson_context": context,
        "pearson": pearson,
        "spearman": spearman,
        "top5_iou": float((ta & tb).sum() / max(1, (ta | tb).sum())),
        "di_trained": trained.di,
        "di_random": rand.di,
        "max_correlation": max_correlation,
        "passed": bool(decisive < max_correlation) if math.isfinite(decisive) else False,
        "seed": seed,
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def norm_by_distance(
    attribution: torch.Tensor,
    window: Window,
    scale: int,
    *,
    sections: int = 5,
    growth: int = 20,
    similar: torch.Tensor | np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Attribution L1 norm in rectangles growing around the window, relative to the window's own.

    attribution (3,h,w); the window is mapped to LR pixels; section k (1..sections) is the window's
    LR box grown by ``growth``·k pixels in width and height (clipped to the image). With a boolean
    ``similar`` mask (h,w), each row also has the similar-to-dissimilar norm ratio inside the section.
    """
    a = attribution.detach().double().abs().sum(0).cpu().numpy()
    h, w = a.shape
    x0, y0, x1, y1 = window.lr_box(scale)
    poi = a[y0:y1, x0:x1].sum()
    if poi == 0:
        raise AttrsrError("the attribution inside the window is zero; norms relative to it are undefined")
    sim = None if similar is None else np.asarray(similar.cpu() if isinstance(similar, torch.Tensor) else similar, bool)
    rows = []
    for k in range(1, sections + 1):
        g = growth * k
        lo, hi = g // 2, g - g // 2
        ys, ye, xs, xe = max(0, y0 - lo), min(h, y1 + hi), max(0, x0 - lo), min(w, x1 + hi)
        part = a[ys:ye, xs:xe]
        row = {"section": k, "box": [xs, ys, xe, ye], "relative_norm": float(part.sum() / poi)}
        if sim is not None:
            m = sim[ys:ye, xs:xe]
            dis = part[~m].sum()
            row["similar_to_dissimilar"] = float(part[m].sum() / dis) if dis > 0 else float("inf")
        rows.append(row)
    return rows


def spread_summary(results: Sequence[AttributionResult]) -> dict[str, float]:
    """Mean/min/max DI of several results (NaN DIs skipped)."""
    d = [r.di for r in results if math.isfinite(r.di)]
    if not d:
        return {"mean_di": float("nan"), "min_di": float("nan"), "max_di": float("nan"), "n": 0}
    return {"mean_di": float(np.mean(d)), "min_di": float(min(d)), "max_di": float(max(d)), "n": len(d)}
