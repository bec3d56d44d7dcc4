"""``attrsr interpret``: compare what several SR networks look at, over a set of images.

Writes a self-contained ``index.html`` (maps side by side, DI tables, DI vs PSNR, area-of-interest
maps) with ``attributions.csv``, ``di_<method>.csv``, ``models.csv``, ``psnr.csv``, ``report.json``
and the figures into ``--out``. Every model, image and window is checked before the first
attribution. Each attribution is kept in ``--out``/items as it finishes (``attrsr.report.interpret``):
running the command again resumes, ``--nproc N`` (or ``torchrun … -m attrsr interpret``) shares the
items among ranks, and ``--report-only`` writes the report from the items finished so far.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors
from attrsr.cli._common import MODEL_ARG_HELP, parse_model_args, parse_model_spec, resolve_model
from attrsr.errors import AttrsrError


# typer renders help with rich markup, where "[x, y]" would be read as a style tag and vanish:
# the format is spelt out in words, and the example uses numbers only (which are never tags).
WINDOWS_HELP = (
    "'auto': the --n-windows hardest (highest-gradient) non-overlapping windows of each HR image. "
    "Or a JSON file. Either a list of windows used for every image, each window a list of x, y "
    "(top-left corner in SR pixels, x = column, y = row) and optionally the size (else --window), "
    'e.g. [[120, 80, 16], [40, 200]]; or an object from image name (the file name without its '
    'extension; "*" = any image not named) to such a list, e.g. {"1": [[120, 80]], "*": [[40, 200, 24]]}. '
    "Every window is checked against every image before the first attribution."
)


def _split_list(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _load_windows(spec: str, size: int):
    from attrsr.report.interpret import parse_windows

    if spec == "auto":
        return "auto"
    path = Path(spec)
    if not path.is_file():
        raise AttrsrError(f"--windows {spec}: give 'auto' or a JSON file ([[x, y, size], ...] or {{image: [[x, y, size], ...]}})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AttrsrError(f"{path}: not valid JSON ({exc})") from None
    return parse_windows(data, size)


@app.command("interpret")
@user_errors
def interpret_command(
    ctx: typer.Context,
    model: list[str] = typer.Option(..., "--model", "-m", help="NAME:WEIGHTS of a zoo model, or the weights alone (architecture read from them); repeat for each network."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help=MODEL_ARG_HELP + " Applies to every --model."),
    data: str = typer.Option(..., "--data", "-d", help="Image folder or benchmark dataset (HR + LR_bicubic, HR-only), or 'samples'."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Upscaling factor (all models; default: read from the weights when they tell it)."),
    windows: str = typer.Option("auto", "--windows", help=WINDOWS_HELP),
    n_windows: int = typer.Option(2, "--n-windows", help="Windows per image with --windows auto."),
    window: int = typer.Option(16, "--window", help="Window side in SR pixels (auto windows, and file entries without a size)."),
    methods: list[str] = typer.Option(["lam"], "--methods", help="Attribution methods, comma-separated or repeated."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Path steps for lam/ig (default 50)."),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="LAM's largest blur σ (default 1.2)."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="Path points per forward pass."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Use only the first N images."),
    randomisation_check: bool = typer.Option(False, "--randomisation-check", help="Add the model-randomisation sanity check (first window per image)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (the finished attributions are kept in its items/ folder)."),
    nproc: int = typer.Option(1, "--nproc", help="Share the attributions among this many local processes (runs torchrun)."),
    report_only: bool = typer.Option(False, "--report-only", help="Compute nothing: write the report from the attributions finished so far (of a running or stopped run)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow legacy pickled checkpoints."),
) -> None:
    """Compare several networks' attribution maps and Diffusion Index over a set of images."""
    from attrsr.attribution.gradients import OPTIONS, normalise_method
    from attrsr.data import open_dataset
    from attrsr.fileio import check_output
    from attrsr.report.interpret import assemble_report, plan_interpret

    meths = [normalise_method(m) for m in _split_list(methods)]
    if not meths:
        raise AttrsrError("--methods is empty; give e.g. --methods lam,ig")
    if window < 2:
        raise AttrsrError(f"--window {window} is too small; use at least 2 SR pixels")
    if n_windows < 1:
        raise AttrsrError(f"--n-windows must be >= 1, got {n_windows}")
    if nproc < 1:
        raise AttrsrError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and "WORLD_SIZE" in os.environ:
        raise AttrsrError("--nproc inside torchrun: drop --nproc (torchrun already started the processes)")
    given = {"steps": steps, "sigma": sigma, "chunk": chunk}
    options = {m: {k: v for k, v in given.items() if v is not None and k in OPTIONS[m]} for m in meths}
    check_output(out, "--out", "staged")
    items = out / "items"
    check_output(items, "the items folder", "folder")
    wins = _load_windows(windows, window)
    model_args = parse_model_args(model_arg)
    specs = []
    seen = set()
    for arg in model:
        name, weights = parse_model_spec(arg)
        key = (name, str(weights.expanduser().resolve()) if weights is not None else None)
        if key in seen:
            raise AttrsrError(f"--model {arg} is given twice")
        seen.add(key)
        specs.append((arg, name, weights))
    ds = open_dataset(data, scale) if scale is not None else None  # a bad folder is found before any loading
    nets = {}
    for arg, name, weights in specs:
        net = resolve_model(name, weights, scale, allow_pickle=allow_pickle, model_args=model_args)
        if scale is None:
            scale = int(net.scale)  # the first network's weights set it; the others must agree
        name = getattr(net, "zoo_name", None) or name
        net.zoo_name = name
        label = name if name not in nets else f"{name}({weights.stem if weights else name})"
        if label in nets:
            raise AttrsrError(f"--model {arg}: two checkpoints of {name!r} with the same file name; rename one")
        nets[label] = net
    ds = ds if ds is not None else open_dataset(data, scale)
    pairs = [ds[i] for i in range(len(ds) if max_images is None else min(len(ds), max_images))]
    # Planned (everything checked) here, before any rank starts: every rank plans the same again.
    plan = plan_interpret(
        nets, pairs, windows=wins, n_windows=n_windows, window_size=window, methods=meths,
        method_options=options, randomisation=randomisation_check,
        title=f"What the networks look at — {ds.name} ×{scale}",
    )
    if nproc > 1 and not report_only:
        from attrsr.cli._launch import command_argv, launch_local

        code = launch_local(nproc, ["interpret", *command_argv(ctx, {"nproc"})], "interpret")
        raise typer.Exit(code)

    counts = None
    if not report_only:
        counts = _compute_as_rank(plan, nets, items, progress)
        if counts is None:  # not rank 0: rank 0 writes the report
            return
    report = assemble_report(plan, items, out, partial=report_only)
    for row in report["models_summary"]:
        parts = [f"{k.removeprefix('mean_di_')} DI {v:.2f}" for k, v in row.items() if k.startswith("mean_di_") and v is not None]
        psnr = row.get("mean_psnr_y")
        typer.echo(f"{row['model']}: " + ", ".join(parts) + (f", Y-PSNR {psnr:.2f} dB" if psnr is not None else ""))
    got = report["items"]
    if counts is not None:
        typer.echo(f"attributions: {counts['computed']} computed, {counts['reused']} reused (of {counts['total']})")
    elif not got["complete"]:
        typer.echo(f"partial report: {got['present']} of {got['total']} attributions finished")
    typer.echo(f"wrote {report['html']}")


def _compute_as_rank(plan, nets, items: Path, progress: bool) -> dict[str, int] | None:
    """This process's share of the items (all of them when not started by torchrun). Returns the
    counts summed over the ranks on rank 0, None on the other ranks."""
    from attrsr.engine import distributed
    from attrsr.report.interpret import compute_items

    info = distributed.setup("cpu")
    completed = False
    try:
        counts = compute_items(plan, nets, items, rank=info.rank, world=info.world, show_progress=progress)
        every = distributed.gather_objects(info, counts)
        completed = True
    finally:
        distributed.teardown(info, completed=completed)
    if not info.is_main:
        return None
    return {"computed": sum(c["computed"] for c in every), "reused": sum(c["reused"] for c in every), "total": counts["total"]}
