"""``attrsr eval``: Y-PSNR / Y-SSIM of a model on benchmark folders."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors
from attrsr.cli._common import print_table, resolve_model


@app.command("eval")
@user_errors
def eval_command(
    data: list[str] = typer.Option(..., "--data", "-d", help="Dataset folder (HR + LR_bicubic, DIV2K, or HR-only), or 'samples'. Repeatable."),
    scale: int = typer.Option(..., "--scale", "-s", help="Upscaling factor."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Zoo model name, or 'bicubic'. Default: the shipped demo model."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint (.pth/.pt/.safetensors)."),
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
    net = resolve_model(model, weights, scale, allow_pickle=allow_pickle)
    start = time.perf_counter()
    # The progress bar only on a terminal: in logs and pipes it would garble the one-line errors.
    results = evaluate(net, data, scale, border=border, save_sr=save_sr, tile=tile, progress=sys.stderr.isatty())
    name = model or getattr(net, "zoo_name", "model")
    print_table(["dataset", "images", "Y-PSNR", "Y-SSIM"], format_rows(results), title=f"{name} x{scale}")
    typer.echo(f"{sum(len(r['images']) for r in results.values())} images in {time.perf_counter() - start:.1f}s")
    if json_out is not None:
        from attrsr.fileio import write_json_atomic

        write_json_atomic(json_out, results)
