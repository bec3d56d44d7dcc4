"""``attrsr lam``: attribute one window of a model's SR output (LAM or another method).

Writes the pictures (heatmap, blend, KDE, SR with the window, a grid figure), ``index.html`` and
``result.json`` (DI, completeness, window, model, timing) into ``--out``. Every argument is checked
before any work; on any error nothing is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from attrsr import datadir
from attrsr.cli._app import app, user_errors
from attrsr.cli._common import MODEL_ARG_HELP, MODEL_HELP, parse_model_args, parse_model_spec, resolve_model
from attrsr.errors import AttrsrError


def load_lr(lr: Path | None, hr: Path | None, scale: int):
    """``--lr`` or ``--hr`` (exactly one) → (lr (3,h,w), hr (3,H,W) or None). HR is modcropped and
    downsampled with MATLAB bicubic (rounded to 8 bits), as benchmark LR files are made. A relative
    path that does not exist is looked up under ``$ATTRSR_DATA/benchmarks``."""
    from attrsr.images import load_image, modcrop
    from attrsr.resize import downsample

    if (lr is None) == (hr is None):
        raise AttrsrError("give exactly one of --lr IMAGE (the network's input) or --hr IMAGE (LR made from it by MATLAB bicubic)")
    given = lr if lr is not None else hr
    path = datadir.resolve(given, "benchmarks")  # LAM_test_images/1.png → $ATTRSR_DATA/benchmarks/...
    if not path.exists():
        raise AttrsrError(f"{given}: image file not found{datadir.looked_in(given, 'benchmarks')}")
    if lr is not None:
        return load_image(path), None
    hr_t = modcrop(load_image(path), scale)
    if min(hr_t.shape[-2:]) < scale:
        raise AttrsrError(f"{hr}: image is smaller than the scale {scale}")
    return downsample(hr_t[None], scale)[0], hr_t


def method_options(method: str, *, steps: int | None, sigma: float | None, chunk: int | None, kernel_size: int | None = None,
                   samples: int | None = None, noise: float | None = None) -> dict:
    """Options given on the command line (None = not given), checked against what ``method`` takes."""
    from attrsr.attribution.gradients import OPTIONS, normalise_method

    key = normalise_method(method)
    given = {"steps": steps, "sigma": sigma, "chunk": chunk, "kernel_size": kernel_size, "samples": samples, "noise": noise}
    opts = {k: v for k, v in given.items() if v is not None}
    bad = sorted(set(opts) - OPTIONS[key])
    if bad:
        flags = ", ".join("--" + b.replace("_", "-") for b in bad)
        raise AttrsrError(f"--method {key} does not use {flags}; drop it (it applies to: lam, ig, smoothgrad/vargrad as documented)")
    return opts


@app.command("lam")
@user_errors
def lam_command(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", help="Upscaling factor (default: read from the weights when they tell it)."),
    x: int = typer.Option(..., "--x", help="Window's left column on the SR image (SR pixels)."),
    y: int = typer.Option(..., "--y", help="Window's top row on the SR image (SR pixels)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint (.pth/.pt/.safetensors)."),
    model_arg: Optional[list[str]] = typer.Option(None, "--model-arg", help=MODEL_ARG_HELP),
    lr: Optional[Path] = typer.Option(None, "--lr", help="LR image: the network's input. Give exactly one of --lr / --hr."),
    hr: Optional[Path] = typer.Option(None, "--hr", help="HR image: LR is made from it with MATLAB bicubic; adds the PSNR. Give exactly one of --lr / --hr."),
    window: int = typer.Option(16, "--window", help="Window side in SR pixels."),
    method: str = typer.Option("lam", "--method", help="lam, ig, grad, grad_input, guided_backprop, smoothgrad, vargrad, input_grad or cam."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Path steps (lam, ig: default 50; cam: default 20)."),
    sigma: Optional[float] = typer.Option(None, "--sigma", help="LAM's largest blur σ (default 1.2)."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="Path points per forward pass (speed only, not values)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Noise samples (smoothgrad, vargrad)."),
    noise: Optional[float] = typer.Option(None, "--noise", help="Noise σ in [0,1] units (smoothgrad, vargrad)."),
    randomisation_check: bool = typer.Option(False, "--randomisation-check", help="Also attribute with a re-initialised copy: maps should differ."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default out/lam/<image>-<model>-<method>-x<X>-y<Y>)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow legacy pickled checkpoints (runs code in the file: trust it)."),
) -> None:
    """Local Attribution Map (or another attribution method) of one SR window: pictures + JSON."""
    from attrsr.attribution.gradients import normalise_method
    from attrsr.attribution.objectives import Window
    from attrsr.report.attribution import lam_report
    from attrsr.fileio import check_output

    key = normalise_method(method)
    opts = method_options(key, steps=steps, sigma=sigma, chunk=chunk, samples=samples, noise=noise)
    win = Window.coerce((x, y, window))
    if win.size < 2:
        raise AttrsrError(f"--window {window} is too small; use at least 2 SR pixels (default 16)")
    name, weights = parse_model_spec(model, weights)
    model_args = parse_model_args(model_arg)
    net = None
    if scale is None:  # the weights tell the scale: load the model first
        net = resolve_model(name, weights, None, allow_pickle=allow_pickle, model_args=model_args)
        scale = int(net.scale)
    lr_t, hr_t = load_lr(lr, hr, scale)
    # Bounds first: a window off the image is a typo, found before the model is even loaded.
    win.check((lr_t.shape[-2] * scale, lr_t.shape[-1] * scale), margin=0 if key == "input_grad" else 1)
    image = lr or hr
    if out is not None:  # an unwritable --out fails before the model is loaded
        check_output(out, "--out", "staged")
    if net is None:
        net = resolve_model(name, weights, scale, allow_pickle=allow_pickle, model_args=model_args)
    name = getattr(net, "zoo_name", None) or name or "demo"
    if out is None:  # the default folder is named after the (possibly detected) model
        out = Path("out") / "lam" / f"{image.stem}-{name}-{key}-x{x}-y{y}"
        check_output(out, "--out", "staged")
    extra = {
        "model": name,
        "weights": str(weights) if weights else None,
        "scale": scale,
        "image": str(image),
        "image_kind": "lr" if lr is not None else "hr",
    }
    start = time.perf_counter()
    info = lam_report(
        net, lr_t, win, out, method=key, hr=hr_t, randomisation=randomisation_check,
        title=f"{key.upper()} of {name} ×{scale} on {image.name}", extra=extra, **opts,
    )
    info_total = time.perf_counter() - start
    comp = info.get("completeness")
    line = f"{key}: DI {info['di']:.3f}" if info.get("di") is not None else f"{key}: DI undefined (zero map)"
    if comp:
        line += f", completeness error {comp['error']:.4g} ({100 * (comp['relative_error'] or 0):.2f}% of ΔD)"
    if "psnr_y" in info and info["psnr_y"] is not None:
        line += f", SR Y-PSNR {info['psnr_y']:.2f} dB"
    rc = info.get("randomisation_check")
    if rc:
        line += f", randomisation check {'passed' if rc['passed'] else 'FAILED'} (context r={rc['pearson_context']:.3f}, whole-map r={rc['pearson']:.3f})"
    typer.echo(line)
    typer.echo(f"wrote {info['html']} ({info_total:.1f}s)")
