"""Self-similarity for the non-local attribution prior (thesis ch. 3; METHODS.md §4): similarity maps,
the patch of interest (PoI) and its self-similar regions (SSRs).

Reconstructed: the thesis published no code. Its extractor, and the choices we made (parameters):

1. The greyscale LR image is split into N_P non-overlapping P×P templates (a grid from the top-left).
2. Each template is matched against the whole image by normalised cross-correlation. We use the
   standard local NCC of :func:`skimage.feature.match_template` with ``pad_input=True`` (zero padding,
   the map the size of the image, each value at the template's centre), which the tests check; the
   thesis's Eq. 3.1 normalises by the image's global statistics, which makes values depend on
   unrelated parts of the image. Negative correlations are clipped to 0, giving maps in [0,1].
   All templates of all images go through one grouped convolution (no Python loop over pixels).
3. Local maxima by max pooling (``pool`` × ``pool``); a map's score is the mean of its ``n_ssr``
   highest local maxima other than its global maximum (the template matching itself); the best
   map is kept; an image whose best score is under ``threshold`` carries no prior (texture-less).
4. Masks: ``mask_size`` × ``mask_size`` squares on the global maximum (the PoI) and on the chosen SSRs.
   Scenarios: 1 SSRs among the maxima inside a ``local_window`` square centred on the PoI;
   2 among those outside a ``far_window`` square (in both, when the region holds fewer than
   ``n_ssr`` local maxima the most similar other positions fill up, as the thesis describes); 3 a random position inside the local window;
   4 a random position outside the far window (random regions carry their map value as weight).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from attrsr.errors import AttrsrError

# BT.601 luma weights (the same as attrsr.images.rgb2ycbcr's Y, without offset and scale).
_GREY = (0.299, 0.587, 0.114)


def to_grey(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) or (3,H,W) RGB → (B,H,W) or (H,W) luma."""
    w = torch.tensor(_GREY, dtype=rgb.dtype, device=rgb.device)
    return (rgb * w.view(3, 1, 1)).sum(-3)


def templates_grid(h: int, w: int, patch: int) -> list[tuple[int, int]]:
    """Top-left corners (row, col) of the non-overlapping patch×patch templates."""
    return [(r, c) for r in range(0, h - patch + 1, patch) for c in range(0, w - patch + 1, patch)]


def similarity_maps(grey: torch.Tensor, patch: int = 5) -> torch.Tensor:
    """Normalised cross-correlation of every non-overlapping patch×patch template of each image with
    the whole image: (H,W) → (N_P,H,W) or (B,H,W) → (B,N_P,H,W), values in [0,1] (float64).

    Equal to ``skimage.feature.match_template(img, tmpl, pad_input=True)`` clipped at 0.
    """
    single = grey.ndim == 2
    g = grey[None] if single else grey
    if g.ndim != 3:
        raise AttrsrError(f"grey image must be (H,W) or (B,H,W), got shape {tuple(grey.shape)}")
    b, h, w = g.shape
    if patch < 1 or patch > min(h, w):
        raise AttrsrError(f"template size {patch} does not fit a {w}×{h} image")
    g = g.double()
    corners = templates_grid(h, w, patch)
    n = len(corners)
    tmpl = torch.stack([g[:, r : r + patch, c : c + patch] for r, c in corners], 1)  # (B,N,P,P)
    tmpl = tmpl - tmpl.mean((-2, -1), keepdim=True)
    ssd = (tmpl**2).sum((-2, -1))  # (B,N)
    padded = F.pad(g[:, None], (patch, patch, patch, patch))  # zeros, as match_template's default
    # numerator Σ I·(T−T̄) for every image and template: one grouped correlation
    num = F.conv2d(padded.reshape(1, b, *padded.shape[-2:]), tmpl.reshape(b * n, 1, patch, patch), groups=b)
    d0 = (patch - 1) // 2 + 1  # match_template's pad_input window: the template's centre at each pixel
    num = num.reshape(b, n, *num.shape[-2:])[..., d0 : d0 + h, d0 : d0 + w]
    ones = torch.ones(1, 1, patch, patch, dtype=torch.float64, device=g.device)
    s1 = F.conv2d(padded, ones)[..., d0 : d0 + h, d0 : d0 + w]
    s2 = F.conv2d(padded**2, ones)[..., d0 : d0 + h, d0 : d0 + w]
    var = (s2 - s1**2 / patch**2).clamp(min=0)  # (B,1,H,W): Σ(I−Ī)² of each window
    den = torch.sqrt(var * ssd[:, :, None, None])
    out = torch.where(den > torch.finfo(torch.float64).eps, num / den.clamp(min=1e-300), 0.0).clamp(0, 1)
    return out[0] if single else out


def _max_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Maximum over the size×size window around each pixel of (…,H,W) (as ``F.max_pool2d(x, size,
    stride=1, padding=size // 2)``): elementwise maxima of shifted views, one axis at a time —
    PyTorch's CPU max pooling (which also computes indices) took half the extractor's time."""
    lo = size // 2
    for dim in (-1, -2):
        n = x.shape[dim]
        pad = [0, 0] * (-dim - 1) + [lo, size - 1 - lo]
        padded = F.pad(x, pad, value=float("-inf"))
        out = padded.narrow(dim, 0, n)
        for k in range(1, size):
            out = torch.maximum(out, padded.narrow(dim, k, n))
        x = out
    return x


@dataclasses.dataclass
class PriorRegions:
    """Masks of the prior for a batch: ``poi`` (B,H,W) and ``ssr`` (B,N_SSR,H,W) bool, ``weights``
    (B,N_SSR) the map's value at each SSR, ``valid`` (B,) whether the image carries a prior,
    ``score`` (B,) the best map's score, ``centres`` (B,1+N_SSR,2) row/col of PoI then SSRs."""

    poi: torch.Tensor
    ssr: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor
    score: torch.Tensor
    centres: torch.Tensor


def _squares(h: int, w: int, rows: torch.Tensor, cols: torch.Tensor, size: int) -> torch.Tensor:
    """size×size boolean squares on the given centres (any shape ``S``) → (*S,H,W); an even side
    reaches one pixel further up/left than down/right; squares are clipped at the border."""
    lo = size // 2
    dr = torch.arange(h).view(-1, 1) - rows[..., None, None] + lo
    dc = torch.arange(w).view(1, -1) - cols[..., None, None] + lo
    return (dr >= 0) & (dr < size) & (dc >= 0) & (dc < size)


def prior_regions(
    lr: torch.Tensor,
    *,
    patch: int = 5,
    n_ssr: int = 3,
    mask_size: int = 5,
    pool: int = 5,
    threshold: float = 0.5,
    scenario: int = 2,
    local_window: int = 7,
    far_window: int = 11,
    rng: np.random.Generator | None = None,
) -> PriorRegions:
    """PoI and SSR masks for a batch of LR images (B,3,H,W) (or grey (B,H,W)); see the module doc."""
    if scenario not in (1, 2, 3, 4):
        raise AttrsrError(f"scenario must be 1, 2, 3 or 4 (METHODS.md §4), got {scenario!r}")
    if scenario in (3, 4) and rng is None:
        raise AttrsrError("scenarios 3 and 4 pick random regions: give a numpy generator (rng)")
    grey = to_grey(lr) if lr.ndim == 4 else lr
    b, h, w = grey.shape
    maps = similarity_maps(grey, patch)  # (B,N,H,W)
    n = maps.shape[1]
    flat = maps.flatten(2)
    glob = flat.argmax(2)  # the template matching itself
    peaks = (maps == _max_filter(maps, pool)) & (maps > 0)
    pk = torch.where(peaks.flatten(2), flat, torch.full_like(flat, -1.0))
    pk.scatter_(2, glob[..., None], -1.0)
    top = pk.topk(n_ssr, dim=2).values  # (B,N,n_ssr)
    score_all = torch.where(top >= 0, top, torch.zeros_like(top)).mean(2)
    best = score_all.argmax(1)  # (B,)
    score = score_all.gather(1, best[:, None])[:, 0]
    # everything below is per image but vectorised over the batch (it was the extractor's main cost
    # as a Python loop): the best map of each image, its global maximum (the PoI) and its SSRs
    ar = torch.arange(b)
    m = flat[ar, best]  # (B,H·W)
    is_peak = peaks[ar, best].flatten(1)
    g = glob[ar, best]  # (B,)
    pr, pc = g // w, g % w
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    dist = torch.maximum((rows - pr[:, None]).abs(), (cols - pc[:, None]).abs())  # (B,H·W) chessboard
    allowed = ((dist <= local_window // 2) & (dist > 0)) if scenario in (1, 3) else (dist > far_window // 2)
    if scenario in (1, 2):
        # local maxima first (by value); where the window holds fewer than n_ssr of them, the most
        # similar other positions fill up (the thesis: "dissimilar regions are selected to satisfy
        # the local constraint")
        rank = m + 2.0 * is_peak
    else:
        # a uniformly random subset of the allowed positions: the n_ssr largest of iid uniform keys
        rank = torch.from_numpy(rng.random((b, h * w)))
    cand = torch.where(allowed, rank, torch.full_like(rank, -1.0))
    cand[ar, g] = -1.0
    ranked, idx = cand.topk(n_ssr, dim=1)
    valid = (ranked >= 0).all(1) & (score >= threshold)
    vals = m.gather(1, idx)
    centres = torch.stack([torch.cat([pr[:, None], idx // w], 1), torch.cat([pc[:, None], idx % w], 1)], 2)
    centres = torch.where(valid[:, None, None], centres, torch.zeros_like(centres))
    squares = _squares(h, w, centres[..., 0], centres[..., 1], mask_size) & valid[:, None, None, None]
    weights = torch.where(valid[:, None], vals, torch.zeros_like(vals))
    return PriorRegions(squares[:, 0], squares[:, 1:], weights, valid, score, centres)
