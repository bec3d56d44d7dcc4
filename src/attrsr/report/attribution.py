"""Attribution reports on disk: PNG pictures, a self-contained HTML page, JSON/CSV tables.

* :func:`lam_report` — one model, one image, one window (what ``attrsr lam`` and the demo write);
* :func:`interpret` — several models over a set of images and windows (``attrsr interpret``): maps
  side by side, DI per image and model, DI vs PSNR, "area of interest" maps.

Every report is computed first and written into a hidden staging folder next to ``out_dir``; only
when everything is written are the files moved into ``out_dir``. A failure (bad window, a model that
does not fit the image, a full disk) leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attrsr.attribution import viz
from attrsr.attribution._common import AttributionResult, as_lr_batch
from attrsr.attribution.analysis import area_of_interest, auto_windows, randomisation_check
from attrsr.attribution.gradients import OPTIONS, attribute, check_guided_backprop, normalise_method
from attrsr.attribution.objectives import OBJECTIVE_MARGIN, Window
from attrsr.errors import AttrsrError
from attrsr.images import save_image
from attrsr.fileio import check_output, staged_dir, write_bytes_atomic, write_json_atomic
from attrsr.report.html import HtmlPage
from attrsr.report.tables import mean_by, pivot, write_csv

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


# --------------------------------------------------------------------------------------------
# Several models over a dataset


def parse_windows(spec: Any, size: int = 16) -> dict[str, list[Window]]:
    """Windows from a JSON-like spec: a list of [x, y(, size)] for every image, or {image: [...]}
    ("*" = every image). Returns {image or "*": [Window, ...]}."""
    if isinstance(spec, Mapping):
        items = spec.items()
    elif isinstance(spec, (list, tuple)):
        items = [("*", spec)]
    else:
        raise AttrsrError("windows file: expected a list of [x, y, size] or an object {image name: [[x, y, size], ...]}")
    out: dict[str, list[Window]] = {}
    for key, lst in items:
        if not isinstance(lst, (list, tuple)) or not lst:
            raise AttrsrError(f"windows file: entry {key!r} must be a non-empty list of [x, y, size]")
        wins = []
        for w in lst:
            if isinstance(w, (list, tuple)) and len(w) == 2:
                w = (*w, size)
            wins.append(Window.coerce(w))
        out[str(key)] = wins
    return out


def interpret(
    models: Mapping[str, nn.Module],
    dataset: Sequence[Any],
    out_dir: str | Path,
    *,
    windows: str | Mapping[str, Sequence[Any]] = "auto",
    n_windows: int = 2,
    window_size: int = 16,
    methods: Sequence[str] = ("lam",),
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    randomisation: bool = False,
    aoi_threshold: float = 0.05,
    title: str = "Attribution comparison",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compare ``models`` ({name: model}, same scale) on ``dataset`` (items with .name, .lr, .hr).

    windows: ``"auto"`` (``n_windows`` hardest windows of each HR image, see :func:`auto_windows`)
    or {image name or "*": [(x, y, size), ...]}. Writes into ``out_dir``: ``index.html``
    (self-contained), ``attributions.csv`` (one row per image × window × model × method),
    ``di_<method>.csv`` (image/window × model), ``models.csv`` (means), ``report.json``, and the
    PNG figures under ``figures/``. Returns the JSON dict (plus ``html``: its absolute path).
    """
    say = progress or (lambda s: None)
    if not models:
        raise AttrsrError("interpret needs at least one model")
    methods = [normalise_method(m) for m in methods]
    method_options = {normalise_method(k): dict(v) for k, v in (method_options or {}).items()}
    for m, opts in method_options.items():
        bad = sorted(set(opts) - OPTIONS[m])
        if bad:
            raise AttrsrError(f"method {m!r} does not take option(s) {', '.join(bad)}")
    scales = {name: int(getattr(m, "scale", 0)) for name, m in models.items()}
    if len(set(scales.values())) != 1:
        raise AttrsrError(f"models have different scales: {scales}; compare models of one scale")
    scale = next(iter(scales.values()))
    check_output(out_dir, "the report folder", "staged")

    # Plan everything (and check every window) before the first expensive call.
    plan = []
    for pair in dataset:
        H, W = pair.hr.shape[-2:]
        if windows == "auto":
            wins = auto_windows(pair.hr, n_windows, window_size)
        else:
            spec = windows if isinstance(windows, Mapping) else {}
            wins = [Window.coerce(w) for w in spec.get(pair.name, spec.get("*", []))]
            if not wins:
                raise AttrsrError(f"no window given for image {pair.name!r}; add it to the windows file or use \"*\"")
        for w in wins:
            margin = max(OBJECTIVE_MARGIN["sum" if m == "input_grad" else method_options.get(m, {}).get("objective", "detector")] for m in methods)
            w.check((H, W), margin=margin, what=f"window for image {pair.name!r}")
        plan.append((pair, wins))
    if not plan:
        raise AttrsrError("the dataset has no images")
    if "guided_backprop" in methods:  # a non-ReLU network is refused by one cheap forward, not after hours
        allow = bool(method_options.get("guided_backprop", {}).get("allow_non_relu", False))
        for model in models.values():
            check_guided_backprop(model, plan[0][0].lr, allow)

    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    psnrs: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    pngs: dict[str, bytes] = {}
    for pair, wins in plan:
        image_psnr: dict[str, float | None] = {}
        for wi, w in enumerate(wins):
            for method in methods:
                results: dict[str, AttributionResult] = {}
                for name, model in models.items():
                    say(f"{pair.name} window {wi + 1}/{len(wins)} {method} {name}")
                    res = attribute(model, pair.lr, w, method=method, **method_options.get(method, {}))
                    results[name] = res
                    if name not in image_psnr:
                        image_psnr[name] = _psnr(res.sr, pair.hr, scale)
                    rows.append({
                        "image": pair.name, "window": wi, "x": w.x, "y": w.y, "size": w.size, "model": name,
                        "method": method, "di": res.di, "psnr_y": image_psnr[name],
                        "completeness_error": res.completeness_error,
                        "relative_completeness_error": res.relative_completeness_error, "seconds": round(res.seconds, 3),
                    })
                    if randomisation and wi == 0:
                        rc = randomisation_check(model, pair.lr, w, method=method, trained=res, **method_options.get(method, {}))
                        checks.append({"image": pair.name, "model": name, **rc})
                key = f"{pair.name}_w{wi}_{method}"
                lr3 = pair.lr.detach().float().cpu()
                pngs[f"figures/{key}.png"] = viz.comparison_figure(
                    list(results.items()), lr3, title=f"{pair.name} · window {wi} (x={w.x}, y={w.y}, size={w.size}) · {method}"
                )
                entry = {"image": pair.name, "window": wi, "method": method, "figure": f"figures/{key}.png"}
                if len(results) >= 2:
                    aoi = area_of_interest({k: r.saliency for k, r in results.items()}, {k: r.di for k, r in results.items()}, threshold=aoi_threshold)
                    pngs[f"figures/{key}_aoi.png"] = viz.area_of_interest_figure(
                        aoi["usage"], lr3, scale, w, title=f"{pair.name} · window {wi} · {method}: where the networks look"
                    )
                    entry.update(aoi=f"figures/{key}_aoi.png", common_pixels=aoi["common_pixels"], differing_pixels=aoi["differing_pixels"])
                figures.append(entry)
        for name, p in image_psnr.items():
            psnrs.append({"image": pair.name, "model": name, "psnr_y": p})

    # Tables
    per_model = []
    for name in models:
        mrows = [r for r in rows if r["model"] == name]
        entry: dict[str, Any] = {"model": name}
        for method in methods:
            d = [r["di"] for r in mrows if r["method"] == method and r["di"] is not None and math.isfinite(r["di"])]
            entry[f"mean_di_{method}"] = float(np.mean(d)) if d else None
        ps = [p["psnr_y"] for p in psnrs if p["model"] == name and p["psnr_y"] is not None]
        entry["mean_psnr_y"] = float(np.mean(ps)) if ps else None
        per_model.append(entry)
    di_tables = {}
    for method in methods:
        long = [{**r, "case": f"{r['image']} w{r['window']}"} for r in rows if r["method"] == method]
        di_tables[method] = pivot(long, "case", "model", "di")
    scatter_rows = []
    for rec in mean_by([r for r in rows if r["method"] == methods[0]], ["image", "model"], "di"):
        p = next((q["psnr_y"] for q in psnrs if q["image"] == rec["image"] and q["model"] == rec["model"]), None)
        scatter_rows.append({**rec, "psnr_y": p})
    scatter = viz.scatter_png(
        scatter_rows, "di", "psnr_y", "model", title=f"DI ({methods[0]}, mean over windows) vs PSNR, per image",
        xlabel="Diffusion Index", ylabel="Y-PSNR (dB)",
    )
    report = {
        "title": title,
        "scale": scale,
        "models": list(models),
        "methods": methods,
        "method_options": method_options,
        "windows": "auto" if windows == "auto" else "given",
        "images": [p.name for p, _ in plan],
        "rows": rows,
        "models_summary": per_model,
        "psnr": psnrs,
        "figures": figures,
        "randomisation_checks": checks,
        "seconds": round(time.perf_counter() - started, 2),
    }

    page = HtmlPage(title, f"{_count(len(models), 'model')} × {_count(len(plan), 'image')} × {_windows_per_image(plan)} · ×{scale} · methods: {', '.join(methods)}")
    page.paragraph(HOW_TO_READ)
    page.heading("Models")
    page.table(per_model, caption="Mean DI over all images and windows; mean Y-PSNR over the images")
    page.image(scatter, "DI vs PSNR: each dot is one image and one model; rings are the models' means")
    for method in methods:
        page.heading(f"DI per image and window — {method}", 3)
        page.table(di_tables[method])
    if checks:
        page.heading("Model-randomisation check", 3)
        page.paragraph("Maps of each trained model vs a randomly re-initialised copy (first window per image). "
                       "A method that explains the model gives different maps: a low Pearson correlation.")
        page.table([{k: c[k] for k in ("image", "model", "method", "pearson_context", "pearson", "spearman", "top5_iou", "di_trained", "di_random", "passed")} for c in checks])
    for pair, wins in plan:
        page.heading(f"Image {pair.name}")
        for fig in (f for f in figures if f["image"] == pair.name):
            w = wins[fig["window"]]
            page.heading(f"window {fig['window']} (x={w.x}, y={w.y}, size={w.size}) · {fig['method']}", 3)
            page.image(pngs[fig["figure"]], "each row: one network — SR with the window, attribution, its close-up around the window, attribution over the upscaled LR")
            if "aoi" in fig:
                page.image(pngs[fig["aoi"]], f"area of interest: red = used by almost every network ({fig['common_pixels']} px), "
                           f"blue = used by some only ({fig['differing_pixels']} px); a network uses a pixel when its saliency there is ≥ {aoi_threshold}")
        prow = [{"model": p["model"], "psnr_y": p["psnr_y"]} for p in psnrs if p["image"] == pair.name]
        page.table(prow, caption=f"Y-PSNR on {pair.name} (border {scale})")

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as stage:
        for rel, data in pngs.items():
            write_bytes_atomic(stage / rel, data)
        write_bytes_atomic(stage / "di_vs_psnr.png", scatter)
        write_csv(stage / "attributions.csv", rows)
        write_csv(stage / "models.csv", per_model)
        write_csv(stage / "psnr.csv", psnrs)
        for method, table in di_tables.items():
            write_csv(stage / f"di_{method}.csv", table)
        if checks:
            write_csv(stage / "randomisation.csv", checks)
        write_json_atomic(stage / "report.json", _jsonable(report))
        page.write(stage / "index.html")
    report["html"] = str((out_dir / "index.html").resolve())
    return report
