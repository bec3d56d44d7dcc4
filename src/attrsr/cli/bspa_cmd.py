"""``attrsr bspa bank``: BSPA's sub-image bank and its report; ``attrsr bspa report``: finished runs
scored on a bank (per-class PSNR, the trained models' MSE histogram)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import _App, _Group, app, user_errors
from attrsr.cli._common import MODEL_ARG_HELP, MODEL_HELP, parse_model_args, parse_model_spec, resolve_model

bspa_app = _App(name="bspa", cls=_Group, no_args_is_help=True, help="BSPA's sub-image bank and reports (METHODS.md §3).")
app.add_typer(bspa_app, name="bspa")


@bspa_app.command("bank")
@user_errors
def bank_command(
    out: Path = typer.Option(..., "--out", "-o", help="Bank folder: bank.csv, classes.json, bank.md/.html and PNGs."),
    data: str = typer.Option("291:train", "--data", "-d", help="Training images (a folder, '291', '291:train', 'samples:train', …); a recipe reuses the bank only when this is its data.train (the CPU recipes': 291:train)."),
    scale: int = typer.Option(4, "--scale", "-s", help="Upscaling factor."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Scorer. " + MODEL_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Scorer checkpoint (.pth/.pt/.safetensors)."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help=MODEL_ARG_HELP),
    size: Optional[int] = typer.Option(None, "--size", help="LR sub-image side (default 128 // scale: ClassSR's HR 128; the CPU recipes use their 32-px patch)."),
    step: Optional[int] = typer.Option(None, "--step", help="Stride between sub-images in LR pixels (default size // 2)."),
    k: int = typer.Option(10, "--k", help="Number of difficulty classes K (2..100)."),
    factor: float = typer.Option(10.0, "--factor", help="Imbalance factor N_1/N_K (1..1000)."),
    batch: int = typer.Option(64, "--batch", help="Sub-images per forward pass of the scorer."),
    examples: int = typer.Option(6, "--examples", help="Example sub-images per class in the report."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default ~/.cache/attrsr or $ATTRSR_CACHE); the scores are kept beside it."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow legacy pickled checkpoints (runs code in the file: trust it)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every sub-image of the training images with a pretrained model and sort them into K
    long-tail difficulty classes; reuse the folder in a recipe with ``bank: FOLDER``."""
    from attrsr.data.artifacts import cached_per_image
    from attrsr.data.bank import build_bank, check_classes, write_bank
    from attrsr.data.cache import prepare_cache
    from attrsr.data.datasets import open_dataset
    from attrsr.errors import AttrsrError
    from attrsr.fileio import check_output, staged_dir
    from attrsr.report.bspa import write_bank_report

    check_output(out, "--out", "staged")
    check_classes(k, factor)
    size = size if size is not None else 128 // scale
    step = step if step is not None else max(1, size // 2)
    for value, what in ((size, "--size"), (step, "--step"), (batch, "--batch"), (examples, "--examples")):
        if value < 1:
            raise AttrsrError(f"{what} must be >= 1, got {value}")
    ds = open_dataset(data, scale)
    name, weights = parse_model_spec(model, weights)
    scorer = resolve_model(name, weights, scale, allow_pickle=allow_pickle, model_args=parse_model_args(model_arg))
    if int(getattr(scorer, "scale", scale)) != scale:
        raise AttrsrError(f"the scorer is ×{scorer.scale} but --scale is {scale}; give a ×{scale} model")
    show = progress and sys.stderr.isatty()
    images = prepare_cache(ds, cache_dir, progress=show)
    bank = build_bank(
        images.names, images.lr, images.hr, scorer.eval(), size=size, step=step, scale=scale, k=k, factor=factor, batch=batch,
        cache=lambda n, key, compute: cached_per_image(images, n, key, compute, progress=show),
        meta={"scorer": {"model": name or getattr(scorer, "zoo_name", None) or "demo", "weights": str(weights) if weights else None},
              "data": data},
    )
    index = {n: i for i, n in enumerate(images.names)}
    with staged_dir(out) as stage:
        write_bank(bank, stage)
        write_bank_report(bank, lambda n: images.hr(index[n]), stage, per_class=examples)
    skipped = bank.meta["skipped_images"]
    if skipped:
        typer.echo(f"skipped {skipped} of {len(images)} images smaller than a {size}-px LR sub-image "
                   f"(e.g. {', '.join(bank.meta['skipped_examples'][:3])})")
    typer.echo(f"{len(bank)} sub-images of {size} px (step {step}) from {bank.meta['images']} images in K={k} classes "
               f"(μ = {bank.classes.mu:.4f}); sizes {bank.classes.sizes}")
    typer.echo(f"bank: {out / 'bank.csv'} ({out / 'classes.json'}); report: {out / 'bank.html'}")


def _find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (config.yaml + model.safetensors) named directly or found below the given folders."""
    from attrsr.errors import AttrsrError

    found: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise AttrsrError(f"{p}: not a folder; give run folders (runs/<variant>/seed<k>) or an experiment folder")
        here = [p] if (p / "model.safetensors").is_file() else sorted(m.parent for m in p.rglob("model.safetensors"))
        here = [r for r in here if (r / "config.yaml").is_file()]
        if not here:
            raise AttrsrError(f"{p}: no finished run in it (a run folder holds config.yaml and model.safetensors)")
        found += [r for r in here if r not in found]
    return found


@bspa_app.command("report")
@user_errors
def report_command(
    runs: list[Path] = typer.Argument(..., help="Finished run folders (runs/<variant>/seed<k>) or folders holding them (an experiment's --out)."),
    bank_dir: Path = typer.Option(..., "--bank", "-b", help="Bank folder (attrsr bspa bank, or a bspa run folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder: bspa_report.md/.html/.json, per_class.png, mse_hist.png, CSVs, and the bank's report (bank.html)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Variant the others are compared with (default: 'uniform' when present, else the first)."),
    per_class: int = typer.Option(0, "--per-class", help="Score a fixed sample of this many sub-images per class (0: all)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="The bank's images (default: the data recorded in classes.json)."),
    batch: int = typer.Option(64, "--batch", help="Sub-images per forward pass."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default ~/.cache/attrsr or $ATTRSR_CACHE)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Per-class Y-PSNR of finished runs (uniform vs inverse vs BSPA, the paper's Fig. 3) and their MSE
    histogram against the bank's scorer (Fig. 5), all on one bank's sub-images."""
    import re

    from attrsr.config import load_config
    from attrsr.data.bank import read_bank
    from attrsr.data.cache import prepare_cache
    from attrsr.data.datasets import open_dataset
    from attrsr.errors import AttrsrError
    from attrsr.experiment import load_run_model
    from attrsr.fileio import check_output, staged_dir
    from attrsr.report.bspa import runs_report, score_models, select_rows, write_bank_report, write_runs_report

    check_output(out, "--out", "staged")
    if per_class < 0 or batch < 1:
        raise AttrsrError(f"--per-class must be >= 0 and --batch >= 1, got {per_class} and {batch}")
    bank = read_bank(bank_dir)
    folders = _find_runs(runs)
    spec = data or bank.meta.get("data")
    if not spec:
        raise AttrsrError(f"{bank_dir}: classes.json does not say which images the bank was built on; give --data")
    models, seen = [], set()
    for folder in folders:
        cfg = load_config(folder / "config.yaml")
        variant = folder.parent.name if re.fullmatch(r"seed\d+", folder.name) else folder.name
        if (variant, cfg.seed) in seen:
            raise AttrsrError(f"{folder}: a second run of variant {variant!r} with seed {cfg.seed}; give each run once")
        if cfg.scale != bank.scale:
            raise AttrsrError(f"{folder}: the run trains ×{cfg.scale}, the bank is ×{bank.scale}; give a bank of the runs' scale")
        seen.add((variant, cfg.seed))
        models.append((variant, cfg.seed, load_run_model(folder, cfg)))
    variants = list(dict.fromkeys(v for v, _, _ in models))
    baseline = baseline or ("uniform" if "uniform" in variants else variants[0])
    if baseline not in variants:
        raise AttrsrError(f"--baseline {baseline}: not among the runs' variants ({', '.join(variants)})")
    show = progress and sys.stderr.isatty()
    images = prepare_cache(open_dataset(spec, bank.scale), cache_dir, progress=show)
    bank.image_indices(images.names, images.lr_sizes, where=f"bank {bank_dir}")  # every row on these images
    index = {n: i for i, n in enumerate(images.names)}
    rows = select_rows(bank, per_class)
    scores = score_models(models, bank, lambda n: images.lr(index[n]), lambda n: images.hr(index[n]), rows, batch=batch, progress=show)
    report = runs_report(scores, bank, rows, baseline)
    with staged_dir(out) as stage:
        write_runs_report(report, stage)
        write_bank_report(bank, lambda n: images.hr(index[n]), stage)  # the bank's own figures beside the runs' 
    typer.echo(f"{len(models)} runs ({', '.join(variants)}) on {len(rows)} sub-images; report: {out / 'bspa_report.html'}")
