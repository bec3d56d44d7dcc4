"""``attrsr augment preview``: training patches under the vanilla and the saliency-driven ops, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from attrsr.cli._app import app, user_errors

augment_app = typer.Typer(help="The SR augmentations and ADD/ADD+ (issue 10).", no_args_is_help=True)
app.add_typer(augment_app, name="augment")


@augment_app.command("preview")
@user_errors
def preview_command(
    out: Path = typer.Option(..., "--out", "-o", help="PNG to write (e.g. augment-preview.png)."),
    data: str = typer.Option("291:train", "--data", "-d", help="Training images: a folder, 'samples', or a bare name such as 291:train."),
    scale: int = typer.Option(2, "--scale", "-s", help="Upscaling factor (the saliency model's)."),
    patches: int = typer.Option(4, "--patches", "-n", min=2, help="Patches shown (rows); at least 2 (CutMix needs a source)."),
    patch_size: int = typer.Option(48, "--patch-size", min=16, help="LR patch side."),
    saliency_model: str = typer.Option("demo", "--saliency-model", help="Zoo name, or 'demo' for the shipped model of --scale."),
    weights: Optional[str] = typer.Option(None, "--weights", "-w", help="Weights of --saliency-model (a zoo name needs them)."),
    steps: int = typer.Option(8, "--steps", min=1, help="CAM (guided IG) steps."),
    seed: int = typer.Option(0, "--seed", help="Picks the images, crops and random boxes."),
) -> None:
    """Draw a grid of LR / HR / CAM saliency / each op's input for a few textured training patches, so a
    reader sees what ADD keeps that CutMix and CutBlur destroy."""
    import numpy as np
    import torch

    from attrsr.data import open_dataset
    from attrsr.errors import AttrsrError
    from attrsr.fileio import check_output
    from attrsr.methods.augment import SaliencySource, cam_tiles, saliency_model as load_saliency_model
    from attrsr.report.augment import augmentation_panels, save_augmentation_figure

    check_output(out, "--out")
    ds = open_dataset(data, scale)
    src = SaliencySource(model=saliency_model, weights=weights, steps=steps, tile=patch_size)
    model = load_saliency_model(src, scale).eval()
    rng = np.random.default_rng(seed)
    lrs, hrs = [], []
    for i in rng.permutation(len(ds)):
        pair = ds[int(i)]
        h, w = pair.lr.shape[-2:]
        if h < patch_size or w < patch_size:
            continue
        # the most textured of a few random crops: flat patches make every op look alike
        best = max(((int(rng.integers(0, h - patch_size + 1)), int(rng.integers(0, w - patch_size + 1))) for _ in range(8)),
                   key=lambda rc: float(pair.lr[:, rc[0]: rc[0] + patch_size, rc[1]: rc[1] + patch_size].std()))
        r, c = best
        lrs.append(pair.lr[:, r: r + patch_size, c: c + patch_size])
        hrs.append(pair.hr[:, r * scale: (r + patch_size) * scale, c * scale: (c + patch_size) * scale])
        if len(lrs) == patches:
            break
    if len(lrs) < patches:
        raise AttrsrError(f"--data {data}: only {len(lrs)} images have an LR side of at least {patch_size} px; "
                          "lower --patch-size or --patches")
    lr, hr = torch.stack(lrs).float(), torch.stack(hrs).float()
    lr_u8 = (lr.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    saliency = torch.stack([torch.from_numpy(cam_tiles(model, x, src).astype(np.float32)) for x in lr_u8])
    panels = augmentation_panels(lr, hr, saliency, scale, seed=seed)
    title = f"{ds.name} ×{scale}: CAM saliency of {saliency_model} ({steps} steps); regions in red"
    path = save_augmentation_figure(panels, scale, out, title=title)
    typer.echo(f"wrote {path}")
