"""``attrsr bspa bank``: BSPA's sub-image bank and its report; ``attrsr bspa report``: finished runs
scored on a bank (per-class PSNR, the trained models' MSE histogram)."""

from __future__ import annotations

import re
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
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Upscaling factor (default 4, or the --thresholds-from bank's)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Scorer. " + MODEL_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Scorer checkpoint (.pth/.pt/.safetensors)."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help=MODEL_ARG_HELP),
    size: Optional[int] = typer.Option(None, "--size", help="LR sub-image side (default 128 // scale: ClassSR's HR 128; the CPU recipes use their 32-px patch; with --thresholds-from: that bank's)."),
    step: Optional[int] = typer.Option(None, "--step", help="Stride between sub-images in LR pixels (default size // 2; with --thresholds-from: that bank's)."),
    k: Optional[int] = typer.Option(None, "--k", help="Number of difficulty classes K (2..100; default 10)."),
    factor: Optional[float] = typer.Option(None, "--factor", help="Imbalance factor N_1/N_K (1..1000; default 10)."),
    thresholds_from: Optional[Path] = typer.Option(None, "--thresholds-from", help="A training bank (folder, or a bspa run folder): sort these held-aside images' sub-images by its MSE thresholds (the paper's validation classes) instead of splitting them anew; scale, size, step, K and factor are its, and the scorer must reproduce its scores (checked on a sample of its sub-images)."),
    thresholds_data: Optional[str] = typer.Option(None, "--thresholds-data", help="The --thresholds-from bank's images, re-scored on a sample to check the scorer (default: its classes.json's data, or a run folder's data.train)."),
    batch: int = typer.Option(64, "--batch", help="Sub-images per forward pass of the scorer."),
    examples: int = typer.Option(6, "--examples", help="Example sub-images per class in the report."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default ~/.cache/attrsr or $ATTRSR_CACHE); the scores are kept beside it."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow legacy pickled checkpoints (runs code in the file: trust it)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score every sub-image of the training images with a pretrained model and sort them into K
    long-tail difficulty classes; reuse the folder in a recipe with ``bank: FOLDER``. With
    ``--thresholds-from TRAIN_BANK``: held-aside images sorted by that bank's thresholds (a bank for
    ``attrsr bspa report --val-bank``)."""
    from attrsr.data.artifacts import cached_per_image
    from attrsr.data.bank import build_bank, check_classes, check_same_scorer, check_threshold_source, read_bank, write_bank
    from attrsr.data.cache import prepare_cache
    from attrsr.data.datasets import open_dataset
    from attrsr.errors import AttrsrError
    from attrsr.fileio import check_output, staged_dir
    from attrsr.report.bspa import write_bank_report

    check_output(out, "--out", "staged")
    train = None
    if thresholds_from is not None:
        train = read_bank(thresholds_from)
        for value, given, what in ((k, train.classes.k, "--k"), (factor, train.classes.factor, "--factor")):
            if value is not None and value != given:
                raise AttrsrError(f"{what} {value:g}: the --thresholds-from bank has {what[2:]} {given:g}; "
                                  f"held-aside classes take the training bank's (drop {what})")
        scale = scale if scale is not None else train.scale
        size = size if size is not None else train.size
        step = step if step is not None else train.step
        check_threshold_source(train, scale=scale, size=size, step=step, where=f"--thresholds-from {thresholds_from}")
        k, factor = train.classes.k, train.classes.factor
    scale = scale if scale is not None else 4
    k = k if k is not None else 10
    factor = factor if factor is not None else 10.0
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
    if train is not None:
        spec = _bank_data(train, thresholds_from, thresholds_data, "--thresholds-data")
        train.meta["data"] = spec  # recorded under thresholds_from
        train_images = prepare_cache(open_dataset(spec, scale), cache_dir, progress=show)
        train.image_indices(train_images.names, train_images.lr_sizes, where=f"--thresholds-from {thresholds_from}")
        at = {n: i for i, n in enumerate(train_images.names)}
        check_same_scorer(train, scorer.eval(), lambda n: train_images.lr(at[n]), lambda n: train_images.hr(at[n]), batch=batch,
                          where=f"--thresholds-from {thresholds_from}")
        shared = sorted(set(images.names) & set(train.names))
        if shared:
            typer.echo(f"warning: {len(shared)} of these images are also in the training bank (e.g. {shared[0]}): not held aside")
    bank = build_bank(
        images.names, images.lr, images.hr, scorer.eval(), size=size, step=step, scale=scale, k=k, factor=factor, batch=batch,
        cache=lambda n, key, compute: cached_per_image(images, n, key, compute, progress=show),
        meta={"scorer": {"model": name or getattr(scorer, "zoo_name", None) or "demo", "weights": str(weights) if weights else None},
              "data": data},
        thresholds_from=train,
    )
    index = {n: i for i, n in enumerate(images.names)}
    with staged_dir(out) as stage:
        write_bank(bank, stage)
        write_bank_report(bank, lambda n: images.hr(index[n]), stage, per_class=examples)
    skipped = bank.meta["skipped_images"]
    if skipped:
        typer.echo(f"skipped {skipped} of {len(images)} images smaller than a {size}-px LR sub-image "
                   f"(e.g. {', '.join(bank.meta['skipped_examples'][:3])})")
    how = f"by the thresholds of {thresholds_from}" if train is not None else f"(μ = {bank.classes.mu:.4f})"
    typer.echo(f"{len(bank)} sub-images of {size} px (step {step}) from {bank.meta['images']} images in K={k} classes "
               f"{how}; sizes {bank.classes.sizes}")
    typer.echo(f"bank: {out / 'bank.csv'} ({out / 'classes.json'}); report: {out / 'bank.html'}")


def _bank_data(bank, folder: Path, given: str | None, option: str) -> str:
    """The images a bank was built on: ``given``, else its classes.json's ``data``, else (a bspa run
    folder from before the bank recorded it) the run's ``data.train``."""
    from attrsr.errors import AttrsrError

    if given or bank.meta.get("data"):
        return given or bank.meta["data"]
    cfg_path = (bank.source or folder) / "config.yaml"
    if cfg_path.is_file():
        from attrsr.config import load_config

        return load_config(cfg_path).data.train
    raise AttrsrError(f"{folder}: classes.json does not say which images the bank was built on; give {option}")


def _grid_order(folder: Path):
    """Sort key for runs below an experiment folder: the variants in the grid's order (its
    grid.yaml), then by name; elsewhere by path."""
    import yaml

    try:
        variants = list((yaml.safe_load((folder / "grid.yaml").read_text()) or {}).get("variants") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        variants = []
    rank = {v: i for i, v in enumerate(variants)}

    def key(run: Path):
        variant = run.parent.name if re.fullmatch(r"seed\d+", run.name) else run.name
        return (rank.get(variant, len(rank)), str(run))

    return key


def _find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (config.yaml + model.safetensors) named directly or found below the given folders."""
    from attrsr.errors import AttrsrError

    found: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise AttrsrError(f"{p}: not a folder; give run folders (runs/<variant>/seed<k>) or an experiment folder")
        here = [p] if (p / "model.safetensors").is_file() else sorted(m.parent for m in p.rglob("model.safetensors"))
        here = sorted((r for r in here if (r / "config.yaml").is_file()), key=_grid_order(p))
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
    val_bank_dir: Optional[Path] = typer.Option(None, "--val-bank", help="A held-aside bank sorted by --bank's thresholds (attrsr bspa bank --data 291:val --thresholds-from BANK): val classes beside the train classes (the paper's Fig. 3)."),
    val_data: Optional[str] = typer.Option(None, "--val-data", help="The val bank's images (default: the data recorded in its classes.json)."),
    batch: int = typer.Option(64, "--batch", help="Sub-images per forward pass."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-image cache (default ~/.cache/attrsr or $ATTRSR_CACHE)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Per-class Y-PSNR of finished runs (uniform vs inverse vs BSPA, the paper's Fig. 3) and their MSE
    histogram against the bank's scorer (Fig. 5), on one bank's sub-images — and, with ``--val-bank``,
    on held-aside sub-images sorted by the same thresholds (train and val classes side by side)."""
    import re

    from attrsr.config import load_config
    from attrsr.data.bank import read_bank
    from attrsr.data.cache import prepare_cache
    from attrsr.data.datasets import open_dataset
    from attrsr.errors import AttrsrError
    from attrsr.experiment import load_run_model
    from attrsr.fileio import check_output, staged_dir
    from attrsr.report.bspa import attach_val, runs_report, score_models, select_rows, write_bank_report, write_runs_report

    check_output(out, "--out", "staged")
    if per_class < 0 or batch < 1:
        raise AttrsrError(f"--per-class must be >= 0 and --batch >= 1, got {per_class} and {batch}")
    bank = read_bank(bank_dir)
    if bank.held_aside:
        raise AttrsrError(f"--bank {bank_dir}: a held-aside bank; give the training bank as --bank and this one as --val-bank")
    val_bank = read_bank(val_bank_dir) if val_bank_dir is not None else None
    if val_bank is not None:
        val_bank.check_sorted_by(bank, where=f"--val-bank {val_bank_dir}", train_label=f"--bank {bank_dir}", train_path=str(bank_dir))
    folders = _find_runs(runs)
    spec = _bank_data(bank, bank_dir, data, "--data")
    vspec = _bank_data(val_bank, val_bank_dir, val_data, "--val-data") if val_bank is not None else None
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
    if val_bank is not None:
        val_images = prepare_cache(open_dataset(vspec, val_bank.scale), cache_dir, progress=show)
        val_bank.image_indices(val_images.names, val_images.lr_sizes, where=f"val bank {val_bank_dir}")
        vindex = {n: i for i, n in enumerate(val_images.names)}
        vrows = select_rows(val_bank, per_class)
        vscores = score_models(models, val_bank, lambda n: val_images.lr(vindex[n]), lambda n: val_images.hr(vindex[n]), vrows,
                               batch=batch, progress=show)
        report = attach_val(report, runs_report(vscores, val_bank, vrows, baseline))
    with staged_dir(out) as stage:
        write_runs_report(report, stage)
        write_bank_report(bank, lambda n: images.hr(index[n]), stage)  # the bank's own figures beside the runs' 
    held = f" and {report['val']['sub_images']} held-aside" if val_bank is not None else ""
    typer.echo(f"{len(models)} runs ({', '.join(variants)}) on {len(rows)}{held} sub-images; report: {out / 'bspa_report.html'}")
