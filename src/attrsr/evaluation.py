"""``attrsr.evaluate``: Y-PSNR / Y-SSIM of a model over datasets, BasicSR-exact.

Per image: SR = model(LR), rounded to 8 bits; HR ``modcrop``-ped; metrics on the Y channel with
``border`` (default: the scale) pixels cropped. A dataset's value is the mean of its per-image values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from attrsr.data.datasets import SRDataset, open_dataset
from attrsr.errors import AttrsrError
from attrsr.fileio import check_output, staged_dir
from attrsr.images import save_image, to_uint8
from attrsr.metrics import psnr, ssim
from attrsr.models.tiling import Bicubic, tiled_forward


# A trained SR network scores above bicubic on bicubic-downsampled images; even GAN-trained models
# stay within a couple of dB of it. Far below means the weights are used wrongly (scale, range).
FAR_BELOW_BICUBIC_DB = 3.0


def _as_datasets(data: Any, scale: int) -> list[SRDataset]:
    if isinstance(data, (str, Path, SRDataset)):
        data = [data]
    out = []
    for d in data:
        ds = d if isinstance(d, SRDataset) else open_dataset(d, scale)
        if ds.scale != scale:
            raise AttrsrError(f"dataset {ds.name!r} was opened at x{ds.scale}, evaluation asks for x{scale}")
        out.append(ds)
    names = [d.name for d in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise AttrsrError(f"two datasets share the name {sorted(dupes)[0]!r}; give folders with distinct names")
    return out


def _check_model_scale(model: nn.Module, scale: int) -> None:
    model_scale = getattr(model, "scale", None)
    if model_scale is None:
        raise AttrsrError(f"model {type(model).__name__} has no `scale` attribute; set model.scale = {scale}")
    if int(model_scale) != scale:
        raise AttrsrError(f"model is x{model_scale} but evaluation asks for x{scale}; pass --scale {model_scale}")


def evaluate(
    model: nn.Module | str,
    data: Any,
    scale: int,
    *,
    border: int | None = None,
    save_sr: str | Path | None = None,
    tile: int | None = None,
    tile_overlap: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` (an SR module, or ``"bicubic"``) on ``data`` at ``scale``.

    ``data``: a dataset path/name (see :func:`attrsr.data.open_dataset`), an :class:`SRDataset`, or a
    list of them. Returns ``{dataset: {"psnr_y", "ssim_y", "images": {name: {"psnr_y", "ssim_y"}}}}``.
    ``save_sr``: folder for SR PNGs (``<dir>/<dataset>/<name>.png``), published only when every image
    succeeded — a failure leaves the folder as it was.
    """
    if isinstance(model, str):
        if model.lower() != "bicubic":
            raise AttrsrError(f"model {model!r}: pass an nn.Module, or 'bicubic' for the baseline")
        model = Bicubic(scale)
    _check_model_scale(model, scale)
    datasets = _as_datasets(data, scale)
    border = scale if border is None else border
    if border < 0:
        raise AttrsrError(f"--border must be >= 0, got {border}")
    if save_sr is not None:
        check_output(save_sr, "--save-sr", "staged")
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        if save_sr is None:
            return {ds.name: _evaluate_one(model, ds, border, None, tile, tile_overlap, device, progress) for ds in datasets}
        with staged_dir(save_sr) as staging:
            return {ds.name: _evaluate_one(model, ds, border, staging, tile, tile_overlap, device, progress) for ds in datasets}
    finally:
        model.train(was_training)


def _evaluate_one(model, ds: SRDataset, border, staging, tile, tile_overlap, device, progress) -> dict[str, Any]:
    from attrsr.progress import progress_bar

    per_image: dict[str, dict[str, float]] = {}
    bar = progress_bar(range(len(ds)), enabled=progress, desc=f"{ds.name} x{ds.scale}", unit="img", leave=False)
    for i in bar:
        pair = ds[i]
        with torch.inference_mode():
            lr = pair.lr[None].to(device)
            sr = tiled_forward(model, lr, tile, tile_overlap) if tile else model(lr)
        expected = (pair.hr.shape[-2], pair.hr.shape[-1])
        if tuple(sr.shape[-2:]) != expected:
            raise AttrsrError(
                f"{ds.name}/{pair.name}: model output {sr.shape[-1]}×{sr.shape[-2]} does not match HR "
                f"{expected[1]}×{expected[0]}; is the model really x{ds.scale}?"
            )
        if min(expected) - 2 * border < 11:  # SSIM's 11×11 window must fit after the crop
            size = f"{expected[1]}×{expected[0]}"
            if min(expected) < 11:  # no border helps: the image itself is too small
                raise AttrsrError(
                    f"{ds.name}/{pair.name}: the HR image is {size}, smaller than the 11×11 window of "
                    "Y-SSIM; evaluate images of at least 11×11 pixels"
                )
            raise AttrsrError(
                f"{ds.name}/{pair.name}: --border {border} leaves less than 11×11 pixels of the {size} image "
                f"for the metrics; use --border {(min(expected) - 11) // 2} or less"
            )
        sr8 = to_uint8(sr[0].float().cpu())
        hr8 = to_uint8(pair.hr)
        per_image[pair.name] = {"psnr_y": psnr(sr8, hr8, border), "ssim_y": ssim(sr8, hr8, border)}
        if staging is not None:
            save_image(sr8, staging / ds.name / f"{pair.name}.png")
    n = len(per_image)
    return {
        "psnr_y": sum(v["psnr_y"] for v in per_image.values()) / n,
        "ssim_y": sum(v["ssim_y"] for v in per_image.values()) / n,
        "images": per_image,
    }


def format_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows (dataset, images, Y-PSNR, Y-SSIM) for printing."""
    return [[name, str(len(r["images"])), f"{r['psnr_y']:.2f}", f"{r['ssim_y']:.4f}"] for name, r in results.items()]
