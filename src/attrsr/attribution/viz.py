"""Pictures of attribution results (METHODS.md §1.7), as H×W×3 uint8 arrays and PNG files.

* :func:`heatmap` — the official look: ``seismic(0.5 + 0.5·M)`` (white → red), nearest-upscaled to SR size;
* :func:`blend` — the heatmap over the upscaled LR (α = 0.5);
* :func:`kde_map` — a Gaussian KDE of pixel positions weighted by M (a smooth "where it looks");
* :func:`draw_window` / :func:`window_zoom` — the SR output with the window drawn, and the window enlarged;
* :func:`figure` (one result) and :func:`comparison_figure` (rows of results) — matplotlib grids.

Figures use matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``, so importing or
calling this module does not switch the backend of an interactive session.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from attrsr.attribution._common import AttributionResult
from attrsr.attribution.objectives import Window
from attrsr.images import save_image, to_uint8
from attrsr.resize import imresize

# Window outline: blue reads on both the white→red maps and most photos.
WINDOW_COLOR = (20, 90, 255)


def _np(x: Any) -> np.ndarray:
    return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def colorize(values: np.ndarray | torch.Tensor, cmap: str = "seismic") -> np.ndarray:
    """Map values in [0,1] to RGB with the upper (white → red) half of ``cmap``: (h,w) → (h,w,3) uint8."""
    from matplotlib import colormaps

    v = np.clip(_np(values), 0.0, 1.0)
    rgba = colormaps[cmap](0.5 + 0.5 * v)
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def heatmap(saliency: np.ndarray | torch.Tensor, scale: int = 1, cmap: str = "seismic") -> np.ndarray:
    """The LAM heatmap: (h,w) saliency in [0,1] → (h·s, w·s, 3) uint8, nearest upscaling."""
    rgb = colorize(saliency, cmap)
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1) if scale > 1 else rgb


def upscaled_lr(lr: torch.Tensor, scale: int) -> np.ndarray:
    """LR (3,h,w) in [0,1] → MATLAB-bicubic ×scale, as (h·s, w·s, 3) uint8."""
    lr = lr[0] if lr.ndim == 4 else lr
    return to_uint8(imresize(lr.detach().float().cpu(), scale=scale).clamp(0, 1))


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(1−α)·image + α·overlay, both (H,W,3) uint8 of the same size."""
    if image.shape != overlay.shape:
        raise ValueError(f"blend: shapes differ, {image.shape} vs {overlay.shape}")
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * overlay.astype(np.float64)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def kde_density(saliency: np.ndarray | torch.Tensor, out_hw: tuple[int, int], *, bw_method: Any = None, grid: int = 128) -> np.ndarray:
    """Gaussian KDE of LR pixel positions weighted by the saliency, on an (H,W) grid; max-normalised.

    Evaluated on at most ``grid`` points per side (the density is smooth) and resized bilinearly.
    """
    from scipy.stats import gaussian_kde

    m = _np(saliency)
    h, w = m.shape
    H, W = out_hw
    rows, cols = np.nonzero(m > 0)
    if rows.size < 3 or np.ptp(rows) == 0 or np.ptp(cols) == 0:
        return np.zeros((H, W))
    # Pixel centres in output coordinates, so the density lines up with the SR image.
    ys = (rows + 0.5) * (H / h)
    xs = (cols + 0.5) * (W / w)
    kde = gaussian_kde(np.stack([xs, ys]), weights=m[rows, cols], bw_method=bw_method)
    gh, gw = min(H, grid), min(W, grid)
    gy = (np.arange(gh) + 0.5) * (H / gh)
    gx = (np.arange(gw) + 0.5) * (W / gw)
    X, Y = np.meshgrid(gx, gy)
    dens = kde(np.stack([X.ravel(), Y.ravel()])).reshape(gh, gw)
    if (gh, gw) != (H, W):
        dens = np.asarray(Image.fromarray(dens.astype(np.float32)).resize((W, H), Image.BILINEAR), np.float64)
    peak = dens.max()
    return dens / peak if peak > 0 else dens


def kde_map(saliency: np.ndarray | torch.Tensor, scale: int, *, bw_method: Any = None, cmap: str = "seismic") -> np.ndarray:
    """The KDE picture: (h,w) saliency → (h·s, w·s, 3) uint8 in the heatmap's colours."""
    h, w = _np(saliency).shape
    return colorize(kde_density(saliency, (h * scale, w * scale), bw_method=bw_method), cmap)


def draw_window(image: np.ndarray, window: Window, *, color: tuple[int, int, int] = WINDOW_COLOR, width: int | None = None, factor: float = 1.0) -> np.ndarray:
    """A copy of ``image`` (H,W,3 uint8) with the window's outline drawn around it.

    ``factor`` maps window (SR) coordinates to the image's (e.g. 1/scale for an LR-size image).
    The outline is drawn just outside the window so the pixels it explains stay visible.
    """
    H, W = image.shape[:2]
    width = width or max(1, round(max(H, W) / 160))
    im = Image.fromarray(np.ascontiguousarray(image))
    d = ImageDraw.Draw(im)
    x0, y0 = window.x * factor, window.y * factor
    x1, y1 = (window.x + window.size) * factor, (window.y + window.size) * factor
    d.rectangle([x0 - width, y0 - width, x1 - 1 + width, y1 - 1 + width], outline=color, width=width)
    return np.asarray(im)


def window_zoom(image: np.ndarray, window: Window, *, context: int = 8, zoom: int | None = None) -> np.ndarray:
    """The window plus ``context`` pixels around it, enlarged (nearest) to about 256 px, window outlined."""
    H, W = image.shape[:2]
    x0, y0 = max(0, window.x - context), max(0, window.y - context)
    x1, y1 = min(W, window.x + window.size + context), min(H, window.y + window.size + context)
    crop = image[y0:y1, x0:x1]
    zoom = zoom or max(1, 256 // max(crop.shape[:2]))
    big = np.repeat(np.repeat(crop, zoom, axis=0), zoom, axis=1)
    inner = Window((window.x - x0) * zoom, (window.y - y0) * zoom, window.size * zoom)
    return draw_window(big, inner, width=max(1, zoom // 2))


def focus_box(saliency: np.ndarray | torch.Tensor, scale: int, window: Window, *, mass: float = 0.8) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) in SR pixels around the window holding ``mass`` of the saliency,
    4 to 8 window sides wide (clipped to the image).

    LAM maps of concentrated networks are a few red pixels on a white page at full size, so the
    pictures add this close-up; the full map still shows how far the attribution spreads.
    """
    m = _np(saliency)
    h, w = m.shape
    H, W = h * scale, w * scale
    cx, cy = window.x + window.size / 2, window.y + window.size / 2
    ys, xs = (np.mgrid[0:h, 0:w] + 0.5) * scale
    dist = np.maximum(np.abs(xs - cx), np.abs(ys - cy)).ravel()  # Chebyshev: square boxes
    order = np.argsort(dist)
    cum = np.cumsum(m.ravel()[order])
    r = dist[order][min(np.searchsorted(cum, mass * cum[-1]), cum.size - 1)] if cum[-1] > 0 else 0.0
    half = int(np.ceil(min(max(2 * window.size, r + scale), 4 * window.size)))
    return box_around(window, 2 * half, (H, W))


def box_around(window: Window, side: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The square of ``side`` SR pixels centred on the window, shifted/clipped into an (H,W) image."""
    H, W = hw
    side = min(side, H, W)
    cx, cy = window.x + window.size / 2, window.y + window.size / 2
    x0 = int(np.clip(round(cx - side / 2), 0, W - side))
    y0 = int(np.clip(round(cy - side / 2), 0, H - side))
    return x0, y0, x0 + side, y0 + side


def crop_zoom(image: np.ndarray, box: tuple[int, int, int, int], target: int = 256) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` enlarged by an integer factor (nearest) to about ``target`` pixels."""
    x0, y0, x1, y1 = box
    crop = image[y0:y1, x0:x1]
    z = max(1, target // max(crop.shape[:2]))
    return np.repeat(np.repeat(crop, z, axis=0), z, axis=1)


# --------------------------------------------------------------------------------------------
# The standard set of pictures for one result


def pictures(
    result: AttributionResult, lr: torch.Tensor, *, kde: bool = True, box: tuple[int, int, int, int] | None = None
) -> dict[str, np.ndarray]:
    """The picture set of one result, all at SR size (H,W,3) uint8 except ``zoom``.

    Keys: ``sr_window`` (SR with the window), ``zoom`` (the SR's close-up), ``heatmap``,
    ``heat_zoom`` (the heatmap's close-up of the same square, see :func:`focus_box`), ``blend`` (heatmap over the
    upscaled LR), ``kde`` (if asked). ``box`` fixes the close-up's square (SR pixels).
    """
    s = result.scale
    sr = to_uint8(result.sr.clamp(0, 1))
    heat = heatmap(result.saliency, s)
    box = box or focus_box(result.saliency, s, result.window)
    z = max(1, 256 // (box[2] - box[0]))
    local = Window(result.window.x - box[0], result.window.y - box[1], result.window.size)
    inner = Window(local.x * z, local.y * z, local.size * z)
    out = {
        "sr_window": draw_window(sr, result.window),
        # The two close-ups show the same square at the same enlargement, side by side comparable.
        "zoom": draw_window(crop_zoom(sr, box), inner, width=max(2, z // 2)),
        "heatmap": draw_window(heat, result.window),
        "heat_zoom": draw_window(crop_zoom(heat, box), inner, width=max(2, z // 2)),
        "blend": draw_window(blend(upscaled_lr(lr, s), heat, 0.5), result.window),
    }
    if kde:
        out["kde"] = draw_window(blend(upscaled_lr(lr, s), kde_map(result.saliency, s), 0.6), result.window)
    return out


def save_pictures(pics: dict[str, np.ndarray], out_dir: str | Path, prefix: str = "") -> dict[str, Path]:
    """Write each picture as ``<prefix><key>.png`` in ``out_dir``; returns {key: path}."""
    out_dir = Path(out_dir)
    return {k: save_image(v, out_dir / f"{prefix}{k}.png") for k, v in pics.items()}


# --------------------------------------------------------------------------------------------
# Figures

_TITLES = {
    "sr_window": "SR output + window",
    "zoom": "SR (close-up)",
    "heatmap": "attribution",
    "heat_zoom": "attribution (close-up)",
    "blend": "attribution over LR",
    "kde": "attribution density (KDE)",
}


def _new_figure(w_in: float, h_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w_in, h_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colorbar(fig, axes, cmap: str = "seismic") -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib import colormaps

    base = colormaps[cmap]
    half = LinearSegmentedColormap.from_list("upper", base(np.linspace(0.5, 1.0, 256)))
    sm = ScalarMappable(norm=Normalize(0, 1), cmap=half)
    cb = fig.colorbar(sm, ax=axes, shrink=0.8, pad=0.01, aspect=30)
    cb.set_label("saliency (normalised)")


def _frame(ax) -> None:
    # A thin grey frame instead of no axes: a mostly white heatmap must not melt into the page.
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_color("#b0b7bf")
        sp.set_linewidth(0.8)


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


FIGURE_PANELS = ("sr_window", "zoom", "heatmap", "heat_zoom", "blend", "kde")


def figure_caption(pics: dict[str, np.ndarray]) -> str:
    """A caption naming the panels of :func:`figure`, left to right."""
    return " · ".join(_TITLES[k] for k in FIGURE_PANELS if k in pics)


def figure(result: AttributionResult, lr: torch.Tensor, *, title: str | None = None, pics: dict[str, np.ndarray] | None = None) -> bytes:
    """One row: SR + window, SR close-up, heatmap, its close-up (same region), blend, KDE — DI in the
    title. PNG bytes."""
    pics = pics or pictures(result, lr)
    keys = [k for k in FIGURE_PANELS if k in pics]
    fig = _new_figure(3.0 * len(keys) + 0.8, 3.5)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, k in zip(axes, keys):
        ax.imshow(pics[k], interpolation="nearest")
        ax.set_title(_TITLES[k], fontsize=10)
        _frame(ax)
    _colorbar(fig, list(axes[2:]))
    w = result.window
    head = title or result.method.upper()
    fig.suptitle(f"{head}   DI = {result.di:.2f}   window x={w.x}, y={w.y}, size={w.size}", fontsize=12)
    return figure_png(fig)


def comparison_figure(
    rows: Sequence[tuple[str, AttributionResult]],
    lr: torch.Tensor,
    *,
    title: str | None = None,
    columns: Sequence[str] = ("sr_window", "heatmap", "heat_zoom", "blend"),
) -> bytes:
    """One row per (label, result) — e.g. models or methods — same columns for each; DI per row. PNG bytes."""
    n = len(rows)
    fig = _new_figure(2.6 * len(columns) + 1.6, 2.6 * n + 0.6)
    axes = fig.subplots(n, len(columns), squeeze=False)
    # One close-up square for every row, so the rows compare like with like.
    boxes = [focus_box(res.saliency, res.scale, res.window) for _, res in rows]
    side = max(b[2] - b[0] for b in boxes)
    for r, (label, res) in enumerate(rows):
        box = box_around(res.window, side, tuple(res.sr.shape[-2:]))
        pics = pictures(res, lr, kde="kde" in columns, box=box)
        for c, key in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(pics[key], interpolation="nearest")
            _frame(ax)
            if r == 0:
                ax.set_title(_TITLES[key], fontsize=10)
        axes[r, 0].set_ylabel(f"{label}\nDI {res.di:.2f}", fontsize=10)
    _colorbar(fig, axes[:, -1].tolist())
    if title:
        fig.suptitle(title, fontsize=12)
    return figure_png(fig)


def area_of_interest_map(usage: np.ndarray, lr: torch.Tensor, scale: int, *, common: float = 0.9) -> np.ndarray:
    """Red where ≥ ``common`` of the networks use a pixel, blue where only some do, over grey LR.

    usage: (h,w) fraction of networks whose saliency passes the threshold. → (h·s, w·s, 3) uint8.
    """
    u = _np(usage)
    grey = upscaled_lr(lr, scale).astype(np.float64).mean(axis=2, keepdims=True).repeat(3, axis=2)
    grey = 0.35 * grey + 0.65 * 255.0  # faded, so the colours carry the message
    red = np.array([215.0, 25.0, 28.0])
    blue = np.array([44.0, 123.0, 230.0])
    col = np.zeros(u.shape + (3,))
    a = np.zeros(u.shape + (1,))
    is_common = u >= common
    some = (u > 0) & ~is_common
    col[is_common] = red
    a[is_common] = 0.85
    col[some] = blue
    a[some] = (0.25 + 0.6 * u[some] / max(common, 1e-9))[:, None]
    col = np.repeat(np.repeat(col, scale, 0), scale, 1)
    a = np.repeat(np.repeat(a, scale, 0), scale, 1)
    return np.clip(np.round((1 - a) * grey + a * col), 0, 255).astype(np.uint8)


def area_of_interest_figure(usage: np.ndarray, lr: torch.Tensor, scale: int, window: Window, *, common: float = 0.9, title: str = "") -> bytes:
    """The area-of-interest map, whole and close-up around the window, with a legend. PNG bytes."""
    from matplotlib.patches import Patch

    pic = draw_window(area_of_interest_map(usage, lr, scale, common=common), window, color=(30, 30, 30))
    u = _np(usage)
    box = focus_box(u, scale, window, mass=0.95)
    fig = _new_figure(8.4, 4.6)
    axes = fig.subplots(1, 2)
    axes[0].imshow(pic, interpolation="nearest")
    axes[0].set_title("whole image", fontsize=10)
    axes[1].imshow(crop_zoom(pic, box), interpolation="nearest")
    axes[1].set_title("close-up", fontsize=10)
    for ax in axes:
        _frame(ax)
    fig.legend(
        handles=[
            Patch(color=(215 / 255, 25 / 255, 28 / 255), label=f"used by ≥ {common:.0%} of the networks"),
            Patch(color=(44 / 255, 123 / 255, 230 / 255), label="used by some (darker = more)"),
            Patch(facecolor="none", edgecolor=(0.12, 0.12, 0.12), label="window"),
        ],
        loc="outside lower center",
        ncol=3,
        fontsize=9,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=11)
    return figure_png(fig)


def scatter_png(points: Sequence[dict[str, Any]], x: str, y: str, label: str, *, title: str = "", xlabel: str = "", ylabel: str = "") -> bytes:
    """Scatter of dict rows (``x`` vs ``y``), one colour and legend entry per ``label`` value, each
    group's mean as a ring. PNG bytes."""
    fig = _new_figure(6.0, 4.2)
    ax = fig.subplots()
    groups: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        if p.get(x) is None or p.get(y) is None:
            continue
        groups.setdefault(str(p[label]), []).append((float(p[x]), float(p[y])))
    for name, pts in groups.items():
        arr = np.array(pts)
        dots = ax.scatter(arr[:, 0], arr[:, 1], label=name, s=36, alpha=0.8)
        if len(arr) > 1:  # the group's mean, as a large ring in the same colour
            ax.scatter(arr[:, 0].mean(), arr[:, 1].mean(), s=220, facecolors="none",
                       edgecolors=dots.get_facecolor()[:1], linewidths=2)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=9)
    if title:
        ax.set_title(title)
    return figure_png(fig)
