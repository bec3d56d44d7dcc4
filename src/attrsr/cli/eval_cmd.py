"""``attrsr eval``: Y-PSNR / Y-SSIM of a model on benchmark folders."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors
from attrsr.cli._common import MODEL_ARG_HELP, MODEL_HELP, parse_model_args, parse_model_spec, print_table, resolve_model


@app.command("eval")
@user_errors
def eval_command(
    data: list[str] = typer.Option(..., "--data", "-d", help="Dataset folder (HR + LR_bicubic, DIV2K, or HR-only), or 'samples'. Repeatable."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Upscaling factor (default: read from the weights when they tell it)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint (.pth/.pt/.safetensors)."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help=MODEL_ARG_HELP),
    border: Optional[int] = typer.Option(None, "--border", help="Pixels cropped from each edge before the metrics (default: scale)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write per-dataset and per-image results as JSON."),
    save_sr: Optional[Path] = typer.Option(None, "--save-sr", help="Folder for the SR images (<dir>/<dataset>/<name>.png)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Process the LR in tiles of this size (bounded memory); 0: whole images."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow legacy pickled checkpoints (runs code in the file: trust it)."),
) -> None:
    """Evaluate a model with BasicSR-exact Y-channel PSNR/SSIM."""
    from attrsr.evaluation import evaluate, format_rows
    from attrsr.fileio import check_output

    # Outputs first: an unwritable --json or --save-sr fails now, not after the evaluation.
    if json_out is not None:
        check_output(json_out, "--json", "file")
    if save_sr is not None:
        check_output(save_sr, "--save-sr", "staged")
    name, weights = parse_model_spec(model, weights)
    net = resolve_model(name, weights, scale, allow_pickle=allow_pickle, model_args=parse_model_args(model_arg))
    scale = int(net.scale)
    start = time.perf_counter()
    # The progress bar only on a terminal: in logs and pipes it would garble the one-line errors.
    results = evaluate(net, data, scale, border=border, save_sr=save_sr, tile=tile, progress=sys.stderr.isatty())
    label = getattr(net, "zoo_name", None) or name or "model"
    print_table(["dataset", "images", "Y-PSNR", "Y-SSIM"], format_rows(results), title=f"{label} x{scale}")
    typer.echo(f"{sum(len(r['images']) for r in results.values())} images in {time.perf_counter() - start:.1f}s")
    if label != "bicubic":
        warning = below_bicubic_warning(label, results, data, scale, border)
        if warning:
            typer.echo(warning, err=True)
    if json_out is not None:
        from attrsr.fileio import write_json_atomic

        write_json_atomic(json_out, results)


from attrsr.evaluation import FAR_BELOW_BICUBIC_DB  # noqa: E402


def below_bicubic_warning(label: str, results: dict, data: list[str], scale: int, border: int | None,
                          per_dataset: int = 5) -> str | None:
    """One line when the model scores far below MATLAB bicubic on the same images, else None.

    Compares on the first ``per_dataset`` images of each dataset (the model's per-image numbers are
    already known), so the check costs a few bicubic resizes, not a second evaluation.
    """
    from attrsr.data import open_dataset
    from attrsr.data.datasets import SRDataset
    from attrsr.evaluation import evaluate

    gaps = []
    for item in data:
        ds = open_dataset(item, scale)
        if ds.name not in results:
            continue
        subset = SRDataset(ds.name, scale, ds.entries[:per_dataset], ds.layout)
        base = evaluate("bicubic", subset, scale, border=border, progress=False)[ds.name]["images"]
        ours = results[ds.name]["images"]
        model_psnr = sum(ours[n]["psnr_y"] for n in base) / len(base)
        bicubic_psnr = sum(b["psnr_y"] for b in base.values()) / len(base)
        gaps.append((bicubic_psnr - model_psnr, ds.name, model_psnr, bicubic_psnr, len(base)))
    if not gaps or max(gaps)[0] < FAR_BELOW_BICUBIC_DB:
        return None
    gap, name, model_psnr, bicubic_psnr, n = max(gaps)
    return (
        f"warning: {label} scores {model_psnr:.2f} dB on {name} ({n} images), {gap:.1f} dB below bicubic "
        f"({bicubic_psnr:.2f} dB): the weights are likely used at the wrong scale (--scale {scale}) "
        "or with the wrong input range/colour channels"
    )
