"""Several SR networks over a dataset (``attrsr interpret``), as resumable work items.

The work is planned first (every image, window and option checked), then split into *items* — one
attribution of one window of one image by one model with one method — in the order image → window →
method → model. Each item is written atomically into ``<out>/items/`` as it finishes (a compressed
``.npz``: attribution, saliency, the SR image as 8 bits, and its numbers as JSON), under a name that
is a digest of everything its result depends on (the LR pixels, the window, the method and its
options, the model's weights). So

* a killed run resumes where it stopped: finished items are found and skipped, never recomputed;
* ranks share the work without talking: the windows of one image, method and model form a group
  (LAM evaluates them together, sharing each forward pass), rank r of N takes groups r, r+N, …;
  only the end waits for all;
* the report (``index.html``, CSV tables, ``report.json``, figures) is assembled from the items alone,
  also from a partial run (``partial=True``), and the analyses can be rerun from them
  (:func:`load_items`) without recomputing an attribution.

Items of other settings (another step count, other weights) have other names and are ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attrsr.attribution import viz
from attrsr.attribution._common import AttributionResult
from attrsr.attribution.analysis import area_of_interest, auto_windows, norm_by_distance, randomisation_check
from attrsr.attribution.gradients import OPTIONS, attribute, check_guided_backprop, normalise_method
from attrsr.attribution.integrate import lam_windows
from attrsr.attribution.objectives import OBJECTIVE_MARGIN, Window
from attrsr.errors import AttrsrError
from attrsr.fileio import check_output, staged_dir, write_bytes_atomic, write_json_atomic
from attrsr.images import to_uint8
from attrsr.report.attribution import HOW_TO_READ, _count, _jsonable, _psnr, _windows_per_image
from attrsr.report.html import HtmlPage
from attrsr.report.tables import mean_by, pivot, write_csv

ITEM_FORMAT = 1
# Test hook: a process stops itself with SIGKILL after computing this many items (a run killed midway).
KILL_AFTER_ENV = "ATTRSR_INTERPRET_KILL_AFTER"


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


# --------------------------------------------------------------------------------------------
# The plan


@dataclasses.dataclass(frozen=True)
class Item:
    """One attribution: ``method`` of window ``window_index`` of image ``image_index`` by ``model``."""

    image_index: int
    window_index: int
    method: str
    model: str
    key: str  # digest of everything the result depends on; the file name

    @property
    def file(self) -> str:
        return f"{self.key}.npz"


@dataclasses.dataclass
class InterpretPlan:
    models: list[str]
    scale: int
    methods: list[str]
    method_options: dict[str, dict[str, Any]]
    randomisation: bool
    aoi_threshold: float
    title: str
    windows_mode: str
    images: list[tuple[Any, list[Window]]]  # (pair with .name/.lr/.hr, its windows)
    items: list[Item]


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def model_digest(model: nn.Module) -> str:
    """Digest of the architecture's class and every tensor of the state dict (names, shapes, values)."""
    h = hashlib.sha1(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def plan_interpret(
    models: Mapping[str, nn.Module],
    dataset: Sequence[Any],
    *,
    windows: str | Mapping[str, Sequence[Any]] = "auto",
    n_windows: int = 2,
    window_size: int = 16,
    methods: Sequence[str] = ("lam",),
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    randomisation: bool = False,
    aoi_threshold: float = 0.05,
    title: str = "Attribution comparison",
) -> InterpretPlan:
    """Check everything and list the items (cheap: no attribution). Every rank plans the same."""
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

    images = []
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
        images.append((pair, wins))
    if not images:
        raise AttrsrError("the dataset has no images")
    if "guided_backprop" in methods:  # a non-ReLU network is refused by one cheap forward, not after hours
        allow = bool(method_options.get("guided_backprop", {}).get("allow_non_relu", False))
        for model in models.values():
            check_guided_backprop(model, images[0][0].lr, allow)

    weights = {name: model_digest(m) for name, m in models.items()}
    items = []
    for ii, (pair, wins) in enumerate(images):
        lr_key = tensor_digest(pair.lr)
        for wi, w in enumerate(wins):
            for method in methods:
                for name in models:
                    key = {
                        "format": ITEM_FORMAT, "lr": lr_key, "window": [w.x, w.y, w.size], "method": method,
                        "options": method_options.get(method, {}), "weights": weights[name],
                        "randomisation": bool(randomisation and wi == 0),
                    }
                    items.append(Item(ii, wi, method, name, _digest(key)))
    return InterpretPlan(
        models=list(models), scale=scale, methods=methods, method_options=method_options, randomisation=randomisation,
        aoi_threshold=aoi_threshold, title=title, windows_mode="auto" if windows == "auto" else "given",
        images=images, items=items,
    )


# --------------------------------------------------------------------------------------------
# Items on disk


def _save_item(path: Path, res: AttributionResult, meta: dict[str, Any]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        attribution=res.attribution.numpy().astype(np.float32),
        saliency=res.saliency.numpy().astype(np.float32),
        sr=to_uint8(res.sr.clamp(0, 1)).transpose(2, 0, 1),  # what the figures show; PSNR is in meta
        meta=np.array(json.dumps(_jsonable(meta))),
    )
    write_bytes_atomic(path, buf.getvalue())


def read_item(path: str | Path) -> tuple[AttributionResult, dict[str, Any]]:
    """An item file → (the result, as the figures need it; its numbers as stored)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        res = AttributionResult(
            method=meta["method"],
            attribution=torch.from_numpy(z["attribution"]),
            saliency=torch.from_numpy(z["saliency"]),
            di=float("nan") if meta["di"] is None else meta["di"],
            sr=torch.from_numpy(z["sr"].astype(np.float32) / 255.0),
            window=Window(*meta["window"]),
            scale=meta["scale"],
            objective=meta["objective"],
            objective_input=meta["objective_input"],
            objective_baseline=meta.get("objective_baseline"),
            steps=meta.get("steps"),
            params=meta.get("params", {}),
            seconds=meta["seconds"],
        )
    return res, meta


def _item_meta(item: Item, pair: Any, w: Window, res: AttributionResult, psnr: float | None, check: dict | None) -> dict[str, Any]:
    return {
        "image": pair.name, "window_index": item.window_index, "window": [w.x, w.y, w.size], "model": item.model,
        "method": res.method, "di": res.di, "psnr_y": psnr, "scale": res.scale, "objective": res.objective,
        "objective_input": res.objective_input, "objective_baseline": res.objective_baseline, "steps": res.steps,
        "completeness_error": res.completeness_error, "relative_completeness_error": res.relative_completeness_error,
        "params": res.params, "seconds": res.seconds, "randomisation_check": check, "pid": os.getpid(),
    }


def compute_items(
    plan: InterpretPlan,
    models: Mapping[str, nn.Module],
    items_dir: str | Path,
    *,
    rank: int = 0,
    world: int = 1,
    show_progress: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Compute this rank's share of the items that are not on disk yet; returns the counts.

    Rank 0's bar counts the items of every rank (the files in ``items_dir``), so one bar shows the
    whole run; the other ranks' bars are hidden.
    """
    from attrsr.progress import progress_bar

    say = progress or (lambda s: None)
    folder = Path(items_dir)
    folder.mkdir(parents=True, exist_ok=True)
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    # The windows of one image, method and model form a group: LAM evaluates them together, one
    # forward pass per path point shared by all (lam_windows). Ranks take whole groups.
    groups: dict[tuple[int, str, str], list[Item]] = {}
    for it in plan.items:
        groups.setdefault((it.image_index, it.method, it.model), []).append(it)
    mine = list(groups.values())[rank::world]
    planned = {it.file for it in plan.items}

    def finished() -> int:
        return len(planned.intersection(os.listdir(folder)))

    counts = {"computed": 0, "reused": 0, "total": len(plan.items)}
    bar = progress_bar(total=len(plan.items), initial=finished(), enabled=show_progress and rank == 0,
                       desc="attributions", unit="item", dynamic_ncols=True)
    try:
        for group in mine:
            todo = [it for it in group if not (folder / it.file).is_file()]
            counts["reused"] += len(group) - len(todo)
            if not todo:
                continue
            first = todo[0]
            pair, wins = plan.images[first.image_index]
            model = models[first.model]
            opts = plan.method_options.get(first.method, {})
            say(f"{pair.name}: {first.method} {first.model}, {len(todo)} window(s)")
            if first.method == "lam" and len(todo) > 1:
                results = lam_windows(model, pair.lr, [wins[it.window_index] for it in todo], **opts)
            else:
                results = [attribute(model, pair.lr, wins[it.window_index], method=it.method, **opts) for it in todo]
            psnr = _psnr(results[0].sr, pair.hr, plan.scale)
            for item, res in zip(todo, results):
                w = wins[item.window_index]
                check = None
                if plan.randomisation and item.window_index == 0:
                    check = randomisation_check(model, pair.lr, w, method=item.method, trained=res, **opts)
                _save_item(folder / item.file, res, _item_meta(item, pair, w, res, psnr, check))
                counts["computed"] += 1
                bar.n = finished()
                bar.refresh()
                if kill_after and counts["computed"] >= kill_after:
                    import signal

                    os.kill(os.getpid(), signal.SIGKILL)
        if world > 1 and rank == 0:  # keep the bar moving while the other ranks finish
            while (done := finished()) < len(plan.items):
                bar.n = done
                bar.refresh()
                time.sleep(0.5)
        bar.n = finished()
        bar.refresh()
    finally:
        bar.close()
    return counts


def load_items(plan: InterpretPlan, items_dir: str | Path) -> list[tuple[Item, AttributionResult, dict[str, Any]]]:
    """The plan's items found in ``items_dir`` (in plan order), each with its result and numbers."""
    folder = Path(items_dir)
    out = []
    for item in plan.items:
        path = folder / item.file
        if path.is_file():
            res, meta = read_item(path)
            out.append((item, res, meta))
    return out


# --------------------------------------------------------------------------------------------
# The report


def assemble_report(plan: InterpretPlan, items_dir: str | Path, out_dir: str | Path, *, partial: bool = False, seconds: float | None = None) -> dict[str, Any]:
    """Write the report from the items; ``partial``: from those present (else all must be)."""
    check_output(out_dir, "the report folder", "staged")
    found = load_items(plan, items_dir)
    missing = len(plan.items) - len(found)
    if missing and not partial:
        raise AttrsrError(f"{missing} of {len(plan.items)} attributions are missing in {items_dir}; "
                          "finish the run (run the command again) or ask for a partial report")
    if not found:
        raise AttrsrError(f"no finished attributions in {items_dir} yet; nothing to report")
    scale, methods, models = plan.scale, plan.methods, plan.models

    rows: list[dict[str, Any]] = []
    figures: list[dict[str, Any]] = []
    psnr_of: dict[tuple[str, str], float | None] = {}
    checks: list[dict[str, Any]] = []
    pngs: dict[str, bytes] = {}
    groups: dict[tuple[int, int, str], list[tuple[str, AttributionResult]]] = {}
    for item, res, meta in found:
        pair, wins = plan.images[item.image_index]
        w = wins[item.window_index]
        psnr_of.setdefault((pair.name, item.model), meta["psnr_y"])
        rows.append({
            "image": pair.name, "window": item.window_index, "x": w.x, "y": w.y, "size": w.size, "model": item.model,
            "method": item.method, "di": res.di, "psnr_y": psnr_of[(pair.name, item.model)],
            "completeness_error": meta["completeness_error"],
            "relative_completeness_error": meta["relative_completeness_error"], "seconds": round(meta["seconds"], 3),
        })
        if meta.get("randomisation_check"):
            checks.append({"image": pair.name, "model": item.model, **meta["randomisation_check"]})
        groups.setdefault((item.image_index, item.window_index, item.method), []).append((item.model, res))
    for (ii, wi, method), results in groups.items():
        pair, wins = plan.images[ii]
        w = wins[wi]
        key = f"{pair.name}_w{wi}_{method}"
        lr3 = pair.lr.detach().float().cpu()
        pngs[f"figures/{key}.png"] = viz.comparison_figure(
            results, lr3, title=f"{pair.name} · window {wi} (x={w.x}, y={w.y}, size={w.size}) · {method}"
        )
        entry = {"image": pair.name, "window": wi, "method": method, "figure": f"figures/{key}.png"}
        if len(results) >= 2:
            aoi = area_of_interest({k: r.saliency for k, r in results}, {k: r.di for k, r in results}, threshold=plan.aoi_threshold)
            pngs[f"figures/{key}_aoi.png"] = viz.area_of_interest_figure(
                aoi["usage"], lr3, scale, w, title=f"{pair.name} · window {wi} · {method}: where the networks look"
            )
            entry.update(aoi=f"figures/{key}_aoi.png", common_pixels=aoi["common_pixels"], differing_pixels=aoi["differing_pixels"])
        figures.append(entry)
    # PSNR rows in image order, then model order (as the runs list them)
    psnrs = [{"image": pair.name, "model": name, "psnr_y": psnr_of[(pair.name, name)]}
             for pair, _ in plan.images for name in models if (pair.name, name) in psnr_of]

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
        di_tables[method] = pivot(long, "case", "model", "di") if long else []
    scatter_rows = []
    first = [r for r in rows if r["method"] == methods[0]]
    for rec in mean_by(first, ["image", "model"], "di") if first else []:
        scatter_rows.append({**rec, "psnr_y": psnr_of.get((rec["image"], rec["model"]))})
    scatter = viz.scatter_png(
        scatter_rows, "di", "psnr_y", "model", title=f"DI ({methods[0]}, mean over windows) vs PSNR, per image",
        xlabel="Diffusion Index", ylabel="Y-PSNR (dB)",
    )
    distance = _norm_by_distance(found, plan)
    report = {
        "title": plan.title,
        "scale": scale,
        "models": models,
        "methods": methods,
        "method_options": plan.method_options,
        "windows": plan.windows_mode,
        "images": [p.name for p, _ in plan.images],
        "rows": rows,
        "models_summary": per_model,
        "psnr": psnrs,
        "figures": figures,
        "randomisation_checks": checks,
        "norm_by_distance": distance,
        "items": {"total": len(plan.items), "present": len(found), "complete": not missing},
        "seconds": round(seconds, 2) if seconds is not None else round(sum(r["seconds"] for r in rows), 2),
    }

    sub = f"{_count(len(models), 'model')} × {_count(len(plan.images), 'image')} × {_windows_per_image(plan.images)} · ×{scale} · methods: {', '.join(methods)}"
    page = HtmlPage(plan.title, sub)
    if missing:
        page.paragraph(f"Partial report: {len(found)} of {len(plan.items)} attributions are finished; "
                       "the tables and means cover those only.")
    page.paragraph(HOW_TO_READ)
    page.heading("Models")
    page.table(per_model, caption="Mean DI over all images and windows; mean Y-PSNR over the images")
    page.image(scatter, "DI vs PSNR: each dot is one image and one model; rings are the models' means")
    for method in methods:
        page.heading(f"DI per image and window — {method}", 3)
        page.table(di_tables[method])
    if distance:
        page.heading("Attribution by distance from the window", 3)
        page.paragraph(f"L1 norm of the attribution in rectangles around the window, grown by {NORM_GROWTH}·k LR pixels "
                       "in width and height, relative to the norm inside the window (thesis Fig. 4.5); mean over "
                       "images and windows. Larger values further out: the network draws on distant pixels.")
        page.table(distance)
    if checks:
        page.heading("Model-randomisation check", 3)
        page.paragraph("Maps of each trained model vs a randomly re-initialised copy (first window per image). "
                       "A method that explains the model gives different maps: a low Pearson correlation.")
        page.table([{k: c[k] for k in ("image", "model", "method", "pearson_context", "pearson", "spearman", "top5_iou", "di_trained", "di_random", "passed")} for c in checks])
    for pair, wins in plan.images:
        page.heading(f"Image {pair.name}")
        for fig in (f for f in figures if f["image"] == pair.name):
            w = wins[fig["window"]]
            page.heading(f"window {fig['window']} (x={w.x}, y={w.y}, size={w.size}) · {fig['method']}", 3)
            page.image(pngs[fig["figure"]], "each row: one network — SR with the window, attribution, its close-up around the window, attribution over the upscaled LR")
            if "aoi" in fig:
                page.image(pngs[fig["aoi"]], f"area of interest: red = used by almost every network ({fig['common_pixels']} px), "
                           f"blue = used by some only ({fig['differing_pixels']} px); a network uses a pixel when its saliency there is ≥ {plan.aoi_threshold}")
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
        if distance:
            write_csv(stage / "norm_by_distance.csv", distance)
        write_json_atomic(stage / "report.json", _jsonable(report))
        page.write(stage / "index.html")
    report["html"] = str((out_dir / "index.html").resolve())
    return report


NORM_SECTIONS, NORM_GROWTH = 5, 20  # the thesis's sections (Fig. 4.5), in LR pixels


def _norm_by_distance(found, plan: InterpretPlan) -> list[dict[str, Any]]:
    """Mean relative attribution norm per model, method and section over the stored items (items
    with no attribution inside the window are left out: their ratios are undefined)."""
    acc: dict[tuple[str, str], list[list[float]]] = {}
    for item, res, _ in found:
        if float(res.attribution.abs().sum()) == 0:
            continue
        try:
            rows = norm_by_distance(res.attribution, res.window, plan.scale, sections=NORM_SECTIONS, growth=NORM_GROWTH)
        except AttrsrError:
            continue
        acc.setdefault((item.model, item.method), []).append([r["relative_norm"] for r in rows])
    out = []
    for (model, method), values in acc.items():
        mean = np.mean(np.array(values), axis=0)
        row: dict[str, Any] = {"model": model, "method": method, "n": len(values)}
        row.update({f"section {k + 1}": float(v) for k, v in enumerate(mean)})
        out.append(row)
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
    items_dir: str | Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Compare ``models`` ({name: model}, same scale) on ``dataset`` (items with .name, .lr, .hr), in
    one process: plan, compute the missing items, assemble the report.

    windows: ``"auto"`` (``n_windows`` hardest windows of each HR image, see :func:`auto_windows`)
    or {image name or "*": [(x, y, size), ...]}. Writes into ``out_dir``: ``index.html``
    (self-contained), ``attributions.csv`` (one row per image × window × model × method),
    ``di_<method>.csv`` (image/window × model), ``models.csv`` (means), ``report.json``, the PNG
    figures under ``figures/``, and the items under ``items_dir`` (default ``out_dir/items``).
    Returns the JSON dict (plus ``html``: its absolute path, and ``counts``: items computed/reused).
    """
    check_output(out_dir, "the report folder", "staged")
    plan = plan_interpret(
        models, dataset, windows=windows, n_windows=n_windows, window_size=window_size, methods=methods,
        method_options=method_options, randomisation=randomisation, aoi_threshold=aoi_threshold, title=title,
    )
    started = time.perf_counter()
    folder = Path(items_dir) if items_dir is not None else Path(out_dir) / "items"
    counts = compute_items(plan, models, folder, show_progress=show_progress, progress=progress)
    report = assemble_report(plan, folder, out_dir, seconds=time.perf_counter() - started)
    report["counts"] = counts
    return report
