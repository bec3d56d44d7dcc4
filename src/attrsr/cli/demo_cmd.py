"""``attrsr demo``: the whole pipeline in about a minute, on a bare install.

Evaluates the shipped model (or, with ``--train``, one trained from scratch by the engine with the
shipped recipe) on the held-out bundled photos and, when present, on Set5 from the shared data folder
(``$ATTRSR_DATA``, default ``../shared/data``); prints Y-PSNR/SSIM next to MATLAB bicubic and writes
the SR images and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from attrsr.cli._app import app, user_errors
from attrsr.models.pretrained import shipped_scales


def shared_set5() -> Path | None:
    from attrsr.datadir import data_root

    set5 = data_root() / "benchmarks" / "Set5"
    return set5 if (set5 / "HR").is_dir() else None


@app.command("demo")
@user_errors
def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for SR images and summary.json."),
    scale: int = typer.Option(2, "--scale", "-s", help=f"Upscaling factor of the shipped model: {' or '.join(map(str, shipped_scales()))}."),
    train: bool = typer.Option(False, "--train", help="First train the model from scratch with the shipped recipe (minutes)."),
    lam: bool = typer.Option(True, "--lam/--no-lam", help="Also write a LAM report of the model (about a minute)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Evaluate the shipped model against bicubic (optionally retrain it first) and write a summary."""
    from attrsr.cli._common import print_table
    from attrsr.errors import AttrsrError
    from attrsr.evaluation import evaluate
    from attrsr.models.pretrained import default_info, load_default
    from attrsr.fileio import check_output, write_json_atomic

    scales = shipped_scales()
    if scale not in scales:  # demo has no --model: the advice is the shipped scales, nothing else
        raise AttrsrError(f"--scale {scale}: the demo ships a model for {', '.join(f'x{s}' for s in scales) or 'no scale'} only; "
                          f"use --scale {' or --scale '.join(map(str, scales))}")
    check_output(out, "--out", "folder")
    info = default_info(scale)
    started = time.perf_counter()
    trained: dict[str, Any] | None = None
    if train:
        model, trained = _train_from_recipe(info, out / "train", progress)
    else:
        model = load_default(scale)

    datasets: list[Any] = ["samples:val"]
    set5 = shared_set5()
    if set5 is not None:
        datasets.append(set5)
    ours = evaluate(model, datasets, scale, save_sr=out / "sr", progress=progress)
    bicubic = evaluate("bicubic", datasets, scale, progress=progress)

    summary: dict[str, Any] = {
        "model": info["name"],
        "architecture": {"name": info["model"], **info.get("config", {})},
        "weights": str(out / "train" / "model.safetensors") if train else info["weights"],
        "scale": scale,
        "datasets": {
            name: {
                "psnr_y": r["psnr_y"],
                "ssim_y": r["ssim_y"],
                "bicubic_psnr_y": bicubic[name]["psnr_y"],
                "bicubic_ssim_y": bicubic[name]["ssim_y"],
                "images": len(r["images"]),
            }
            for name, r in ours.items()
        },
    }
    if trained is not None:
        summary["training"] = trained
    if lam:
        summary["lam"] = _lam_step(model, out / "lam")
    summary["seconds"] = round(time.perf_counter() - started, 1)

    rows = [
        [name, str(d["images"]), f"{d['psnr_y']:.2f} / {d['ssim_y']:.4f}", f"{d['bicubic_psnr_y']:.2f} / {d['bicubic_ssim_y']:.4f}", f"{d['psnr_y'] - d['bicubic_psnr_y']:+.2f} dB"]
        for name, d in summary["datasets"].items()
    ]
    title = f"{info['name']} x{scale} ({'trained now' if train else 'shipped weights'}) vs MATLAB bicubic, Y channel"
    print_table(["dataset", "images", "model PSNR / SSIM", "bicubic PSNR / SSIM", "gain"], rows, title=title)
    if set5 is None:
        typer.echo("Set5 not found (set ATTRSR_DATA to the shared data folder to include it)")
    write_json_atomic(out / "summary.json", summary)
    done = f"SR images in {out / 'sr'}, summary in {out / 'summary.json'}"
    if lam:
        win, di = summary["lam"]["window"], summary["lam"]["di"]
        typer.echo(f"LAM of window (x={win['x']}, y={win['y']}, size={win['size']}) on chelsea: DI {di:.3f}")
        done += f", LAM report {out / 'lam' / 'index.html'}"
    typer.echo(f"{done} ({summary['seconds']:.0f}s)")


def _train_from_recipe(info: dict[str, Any], run_dir: Path, progress: bool):
    """Train the shipped recipe from scratch with the engine; returns (model, training summary)."""
    from attrsr import models
    from attrsr.config import load_config
    from attrsr.engine import train as run_training

    if not info.get("recipe"):
        from attrsr.errors import AttrsrError

        raise AttrsrError(f"shipped model {info['name']} has no recipe to train from")
    cfg = load_config(info["recipe"])
    resume = (run_dir / "latest.pt").exists()
    if resume:
        typer.echo(f"continuing the training in {run_dir} (delete that folder to start from scratch)")
    result = run_training(cfg, out=run_dir, resume=resume, progress=progress)
    model = models.load(info["model"], weights=run_dir / "model.safetensors", scale=int(info["scale"]), **info.get("config", {}))
    model.zoo_name = info["name"]
    return model, {"run": str(run_dir), "iterations": result["step"], "seconds": round(result["seconds"], 1), "recipe": info["recipe"]}


def _lam_step(model, out_dir: Path) -> dict[str, Any]:
    """LAM of the model on a held-out photo. The window: of the six most textured 16-pixel windows of
    the HR (where SR is hard), the one whose attribution spreads widest (highest DI of a short LAM):
    the first map a newcomer sees should show more than a dot under the window."""
    from attrsr.attribution.analysis import auto_windows, informative_window
    from attrsr.data import load_sample
    from attrsr.images import modcrop, to_tensor
    from attrsr.report.attribution import lam_report
    from attrsr.resize import downsample

    scale = int(model.scale)
    hr = modcrop(to_tensor(load_sample("chelsea")), scale)
    lr = downsample(hr[None], scale)[0]
    window, _ = informative_window(model, lr, auto_windows(hr, n=6, size=16, border=8))  # (x = column, y = row, size), SR px
    return lam_report(model, lr, window, out_dir, title="demo model on chelsea (held out)", hr=hr)
