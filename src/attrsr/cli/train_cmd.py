"""``attrsr train CONFIG``: train with the engine (``--resume``, ``--set``, ``--nproc`` for DDP)."""

from __future__ import annotations

import os
import signal
import sys
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
    """Run this command on ``nproc`` local DDP processes with torchrun's launcher (in-process, so a
    failure becomes one ``error:`` line here instead of a launcher traceback plus one line per rank)."""
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from attrsr.cli._app import ERROR_DIR_ENV

    args = ["-m", "attrsr", "train", str(config)]
    for item in overrides:
        args += ["--set", item]
    if out is not None:
        args += ["--out", str(out)]
    if resume:
        args.append("--resume")
    if not progress:
        args.append("--no-progress")
    # Each process gets an equal share of the cores unless the user chose otherwise.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    launch = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"attrsr-{os.getpid()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )
    with tempfile.TemporaryDirectory(prefix="attrsr-ddp-errors-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        try:
            elastic_launch(launch, sys.executable)(*args)
        except ChildFailedError as exc:
            messages = sorted({p.read_text().strip() for p in Path(errors).glob("rank*.txt")})
            for message in messages:
                print(f"error: {message}", file=sys.stderr)
            if not messages:
                rank, failure = exc.get_first_failure()
                print(f"error: training process of rank {rank} failed (exit code {failure.exitcode}); "
                      "its output is above", file=sys.stderr)
            return 1
        except SignalException as exc:
            # SIGTERM/SIGINT reached the launcher, which has stopped the ranks: say so in one word,
            # as for one process, instead of the launcher's traceback.
            print("terminated" if exc.sigval == signal.SIGTERM else "interrupted", file=sys.stderr)
            return 128 + int(exc.sigval)
        finally:
            os.environ.pop(ERROR_DIR_ENV, None)
    return 0
