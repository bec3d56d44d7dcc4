"""Attribution reports on disk: PNG pictures, a self-contained HTML page, JSON/CSV tables.

* :func:`lam_report` — one model, one image, one window (what ``attrsr lam`` and the demo write);
* :func:`attrsr.report.interpret.interpret` — several models over a set of images and windows
  (``attrsr interpret``), in resumable work items: see that module.

Every report is computed first and written into a hidden staging folder next to ``out_dir``; only
when everything is written are the files moved into ``out_dir``. A failure (bad window, a model that
does not fit the image, a full disk) leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attrsr.attribution import viz
from attrsr.attribution._common import AttributionResult, as_lr_batch
from attrsr.attribution.analysis import randomisation_check
from attrsr.attribution.gradients import attribute
from attrsr.attribution.objectives import Window
from attrsr.images import save_image
from attrsr.fileio import check_output, staged_dir, write_bytes_atomic, write_json_atomic
from attrsr.report.html import HtmlPage

HOW_TO_READ = (
    "How to read: the blue box is the window being explained (on the SR output, top-left x = column, "
    "y = row, in SR pixels). In the attribution maps white means the pixel does not matter and deeper red "
    "means it matters more for that window (|Σ over colour channels|, scaled to the map's maximum). "
    "The DI (Diffusion Index, 0-100) says how many pixels share the attribution: a high DI means the "
    "network draws on a wide area of the input."
)


def _name(model: nn.Module) -> str:
    return str(getattr(model, "zoo_name", type(model).__name__))


# --------------------------------------------------------------------------------------------
# One model, one window


def lam_report(
    model: nn.Module,
    lr: torch.Tensor,
    window: Any,
    out_dir: str | Path,
    *,
    title: str | None = None,
    method: str = "lam",
    hr: torch.Tensor | None = None,
    randomisation: bool = False,
    extra: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Attribute one window and write the pictures, ``index.html`` and ``result.json`` into ``out_dir``.

    lr: (3,h,w) in [0,1]; window: (x, y[, size]) in SR pixels (x = column) or a Window; ``method``
    and ``options`` as :func:`attrsr.attribution.attribute`. ``hr`` (3,H,W), if given, adds the SR
    PSNR. ``randomisation`` adds the model-randomisation check. ``extra`` is merged into the JSON.

    Returns the JSON dict plus ``paths`` ({picture: absolute path}), ``html`` and ``json`` (absolute).
    """
    check_output(out_dir, "the report folder", "staged")  # before the attribution, not after
    started = time.perf_counter()
    result = attribute(model, lr, window, method=method, **options)
    lr3 = as_lr_batch(model, lr)[0].cpu()
    info: dict[str, Any] = {"title": title or f"{result.method.upper()} of {_name(model)}", "model": _name(model)}
    info.update(result.summary())
    if hr is not None:
        info["psnr_y"] = _psnr(result.sr, hr, result.scale)
    if randomisation:
        info["randomisation_check"] = randomisation_check(model, lr, result.window, method=method, trained=result, **options)
    if extra:
        info.update(extra)

    t_pics = time.perf_counter()
    pics = viz.pictures(result, lr3)
    fig = viz.figure(result, lr3, title=info["title"], pics=pics)
    info["timing"] = {
        "attribution_s": round(result.seconds, 3),
        "pictures_s": round(time.perf_counter() - t_pics, 3),
        "total_s": round(time.perf_counter() - started, 3),
    }
    out_dir = Path(out_dir)
    files = {k: f"{k}.png" for k in pics} | {"figure": "figure.png", "sr": "sr.png"}
    info["files"] = files | {"html": "index.html", "json": "result.json"}
    with staged_dir(out_dir) as stage:
        viz.save_pictures(pics, stage)
        save_image(result.sr.clamp(0, 1), stage / "sr.png")
        write_bytes_atomic(stage / "figure.png", fig)
        write_json_atomic(stage / "result.json", _jsonable(info))
        _lam_page(info, result, fig, pics).write(stage / "index.html")
    out = dict(info)
    out["paths"] = {k: str((out_dir / v).resolve()) for k, v in info["files"].items()}
    out["html"] = out["paths"]["html"]
    out["json"] = out["paths"]["json"]
    return out


def _lam_page(info: dict[str, Any], result: AttributionResult, fig: bytes, pics: dict[str, np.ndarray]) -> HtmlPage:
    page = HtmlPage(info["title"], f"{result.method} · model {info['model']} · ×{result.scale}")
    w = result.window
    facts = {
        "method": result.method,
        "model": info["model"],
        "window (x, y, size)": f"{w.x}, {w.y}, {w.size}",
        # Values as measured, printed with 4 decimals by the page (rounding first would print
        # invented digits: 0.16570 rounded to 0.166 shows as "0.1660").
        "Diffusion Index": result.di if math.isfinite(result.di) else "undefined (zero map)",
        "time (s)": f"{result.seconds:.2f}",
    }
    if "psnr_y" in info:
        facts["SR Y-PSNR (dB)"] = info["psnr_y"]
    if result.completeness_error is not None:
        facts["completeness |ΣA − ΔD|"] = f"{result.completeness_error:.4g} ({100 * (result.relative_completeness_error or 0):.2f}% of ΔD = {result.objective_input - result.objective_baseline:.4g}, {result.steps} steps)"
    rc = info.get("randomisation_check")
    if rc:
        facts["randomisation check"] = f"{'passed' if rc['passed'] else 'FAILED'} (Pearson r = {rc['pearson_context']:.3f} outside the window, {rc['pearson']:.3f} over the whole map, between the trained and re-initialised maps; DI {rc['di_trained']:.2f} vs {rc['di_random']:.2f})"
    page.facts(facts)
    page.paragraph(HOW_TO_READ)
    page.image(fig, viz.figure_caption(pics))
    page.heading("Pictures")
    page.gallery([(_png(pics[k]), viz._TITLES[k]) for k in pics], width=300)
    page.paragraph("Files: " + ", ".join(sorted(info["files"].values())))
    return page


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _windows_per_image(plan: Sequence[tuple[Any, Sequence[Window]]]) -> str:
    """"1 window per image", or the range and the total when images have different numbers."""
    counts = sorted({len(w) for _, w in plan})
    if len(counts) == 1:
        return f"{_count(counts[0], 'window')} per image"
    return f"{counts[0]}–{counts[-1]} windows per image ({sum(len(w) for _, w in plan)} in all)"


def _png(arr: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _psnr(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> float | None:
    from attrsr.images import modcrop
    from attrsr.metrics import psnr

    hr = modcrop(hr[0] if hr.ndim == 4 else hr, scale)
    if tuple(hr.shape[-2:]) != tuple(sr.shape[-2:]):
        return None
    return psnr(sr.clamp(0, 1), hr.clamp(0, 1), crop_border=scale, y_channel=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _jsonable(obj.item())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj
