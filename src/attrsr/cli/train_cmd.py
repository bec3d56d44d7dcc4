"""``attrsr train CONFIG``: train with the engine (``--resume``, ``--set``, ``--nproc`` for DDP)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors


@app.command("train")
@user_errors
def train_command(
    config: Path = typer.Argument(..., help="Recipe YAML (see configs/)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe key: --set optim.lr=2e-4 (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: the recipe's train.out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output folder from latest.pt."),
    nproc: int = typer.Option(1, "--nproc", help="Train with DDP on this many local processes (runs torchrun)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train an SR model from a recipe; checkpoints, logs and weights go to the run folder."""
    from attrsr.config import load_config
    from attrsr.errors import AttrsrError

    cfg = load_config(config, overrides)  # a typo fails here, before any process is started
    if nproc > 1:
        if "WORLD_SIZE" in os.environ:
            raise AttrsrError("--nproc inside torchrun: drop --nproc (torchrun already started the processes)")
        raise typer.Exit(_torchrun(nproc, config, overrides, out, resume, progress))
    if nproc < 1:
        raise AttrsrError(f"--nproc must be >= 1, got {nproc}")

    from attrsr.engine import train

    summary = train(cfg, out=out, resume=resume, progress=progress, announce=typer.echo)
    if int(os.environ.get("RANK", "0")) == 0:
        best = summary.get("best")
        line = f"trained {summary['step']} iterations in {summary['seconds']:.0f}s → {summary['out']}"
        if best:
            line += f"; best {best['dataset']} Y-PSNR {best['psnr_y']:.2f} dB at iteration {best['step']}"
        typer.echo(line)


def _torchrun(nproc: int, config: Path, overrides: list[str], out: Path | None, resume: bool, progress: bool) -> int:
    """Run this command on ``nproc`` local DDP processes (see ``cli._launch``)."""
    from attrsr.cli._launch import launch_local

    args = ["train", str(config)]
    for item in overrides:
        args += ["--set", item]
    if out is not None:
        args += ["--out", str(out)]
    if resume:
        args.append("--resume")
    if not progress:
        args.append("--no-progress")
    return launch_local(nproc, args, "training")
