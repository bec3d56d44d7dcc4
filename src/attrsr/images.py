"""Image I/O, tensor conversion, BT.601 colour conversion and ``modcrop``.

Conventions (DESIGN.md): in memory an image is ``torch.float32`` RGB in [0,1], shape (3,H,W) or
(B,3,H,W). On disk: 8-bit PNG/JPEG/BMP (16-bit PNG/TIFF read too) through Pillow. Numpy arrays are
H×W×3 (uint8, uint16 or float in [0,1]).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from attrsr.errors import AttrsrError
from attrsr.fileio import write_bytes_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# --------------------------------------------------------------------------------------------
# Reading and writing


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an H×W×3 RGB array: ``uint8``, or ``uint16`` for 16-bit files.

    Grey images become RGB. An alpha channel that is fully opaque is dropped; a translucent one is
    an error (compositing onto a background would change the pixels the metrics see).
    """
    path = Path(path)
    if not path.is_file():
        raise AttrsrError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise AttrsrError(f"{path}: image file is empty")
    try:
        with Image.open(path) as im:
            deep = _png16_rawmode(im)
            im.load()
            arr = _pil_to_array(im, path)
        if deep is not None:
            arr = _png16_full(path, arr, deep)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AttrsrError(f"{path}: cannot decode image ({exc}); is the file corrupt or truncated?") from None
    return arr


def _png16_rawmode(im: Image.Image) -> str | None:
    """The raw mode (``RGB;16B``/``RGBA;16B``) of a 16-bit colour PNG, else None.

    Pillow has no 16-bit colour modes: it decodes these files to 8 bits by keeping each sample's
    high byte (truncation, not rounding). :func:`_png16_full` recovers the low bytes.
    """
    if im.format != "PNG" or not im.tile:
        return None
    raw = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    return raw if raw in ("RGB;16B", "RGBA;16B") else None


def _png16_full(path: Path, high: np.ndarray, rawmode: str) -> np.ndarray:
    """Full 16-bit samples of a colour PNG: decode again, unpacking the low byte of each sample.

    The PNG filters work on bytes, so decoding with the little-endian raw mode (``RGB;16L``) runs the
    same unfiltering and keeps the *second* byte of each big-endian sample, i.e. the low byte.
    """
    with Image.open(path) as im:
        im.tile = [t._replace(args=rawmode[:-1] + "L") if hasattr(t, "_replace") else (*t[:3], rawmode[:-1] + "L")
                   for t in im.tile]
        im.load()
        low = np.asarray(im)
    low = np.ascontiguousarray(low[..., :3]).astype(np.uint16)
    return (high.astype(np.uint16) << 8) | low


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        if arr.dtype != np.uint16:
            if arr.min() < 0 or arr.max() > 65535:
                raise AttrsrError(f"{path}: {mode} image has values outside 0..65535")
            arr = arr.astype(np.uint16)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3]
        if alpha.min() < 255:
            raise AttrsrError(
                f"{path}: image has a translucent alpha channel ({(alpha < 255).mean():.1%} of pixels); "
                "flatten it onto a background first"
            )
        return np.ascontiguousarray(rgba[..., :3])
    if mode == "RGB":
        return np.asarray(im).copy()
    if mode in ("L", "1", "P", "CMYK", "YCbCr"):
        return np.asarray(im.convert("RGB")).copy()
    if mode == "F":
        raise AttrsrError(f"{path}: floating-point images are not supported; save as 8- or 16-bit")
    return np.asarray(im.convert("RGB")).copy()


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """H×W×3 array (uint8 → /255, uint16 → /65535, float kept) → (3,H,W) float32 tensor."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    else:
        scale = 1.0
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
    return t / scale if scale != 1.0 else t


def load_image(path: str | Path) -> torch.Tensor:
    """Read ``path`` as a (3,H,W) float32 RGB tensor in [0,1]."""
    return to_tensor(read_image(path))


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """Tensor (3,H,W)/(1,3,H,W) or float array in [0,1] (or a uint16 array) → H×W×3 uint8.

    Exactly BasicSR's ``tensor2img``: clamp to [0,1], multiply by 255 *in float32*, round half to
    even (``np.round``), cast. (float64 arithmetic would round a few values differently.)
    """
    if isinstance(img, torch.Tensor):
        t = img.detach()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise ValueError(f"to_uint8 takes one image, got a batch of {t.shape[0]}")
            t = t[0]
        arr = t.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    else:
        if img.dtype == np.uint8:
            return img
        if img.dtype == np.uint16:
            img = img.astype(np.float32) / np.float32(65535.0)
        arr = np.clip(img.astype(np.float32), 0, 1)
    return np.round(arr * np.float32(255.0)).astype(np.uint8)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round a [0,1] tensor to the nearest 8-bit level, staying in float [0,1] (differentiable-free)."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def save_image(img: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write an image (tensor in [0,1] or H×W×3 array) as 8-bit; the format follows the suffix.

    The file is written to a temporary name in the same folder and renamed, so a crash never leaves
    a truncated image behind.
    """
    path = Path(path)
    arr = to_uint8(img) if not (isinstance(img, np.ndarray) and img.dtype == np.uint8) else img
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise AttrsrError(f"{path}: unknown image format {path.suffix!r}; use .png, .jpg or .bmp")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    write_bytes_atomic(path, buf.getvalue())
    return path


def list_images(folder: str | Path) -> list[Path]:
    """Image files in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Colour

# MATLAB rgb2ycbcr (BT.601, "studio swing") for RGB in [0,1]; rows give Y, Cb, Cr in [0,255]/255.
_YCBCR_W = torch.tensor(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=torch.float64
) / 255.0
_YCBCR_B = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0


def rgb2ycbcr(img: torch.Tensor | np.ndarray, y_only: bool = False):
    """BT.601 RGB → YCbCr with MATLAB's coefficients, as BasicSR's ``rgb2ycbcr``.

    Tensors: (…,3,H,W) in [0,1] → (…,3,H,W) (or (…,1,H,W) with ``y_only``) in [0,1] units.
    Arrays: H×W×3 uint8 or float in [0,1]; returns float64 in [0,255] units for uint8 input (as the
    metrics need, Y not rounded) and [0,1] units for float input; H×W when ``y_only``.
    """
    if isinstance(img, torch.Tensor):
        w = _YCBCR_W.to(img.device, img.dtype)
        b = _YCBCR_B.to(img.device, img.dtype)
        if y_only:
            w, b = w[:1], b[:1]
        out = torch.einsum("oc,...chw->...ohw", w, img)
        return out + b.view(-1, 1, 1)
    arr = np.asarray(img)
    is_uint8 = arr.dtype == np.uint8
    x = arr.astype(np.float64) / 255.0 if is_uint8 else arr.astype(np.float64)
    w = _YCBCR_W.numpy()
    b = _YCBCR_B.numpy()
    if y_only:
        out = x @ w[0] + b[0]
    else:
        out = x @ w.T + b
    return out * 255.0 if is_uint8 else out


def ycbcr2rgb(img: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb2ycbcr` for tensors (…,3,H,W) in [0,1] units (not clamped)."""
    inv = torch.linalg.inv(_YCBCR_W).to(img.device, img.dtype)
    b = _YCBCR_B.to(img.device, img.dtype).view(-1, 1, 1)
    return torch.einsum("oc,...chw->...ohw", inv, img - b)


# --------------------------------------------------------------------------------------------
# Geometry


def modcrop(img, scale: int):
    """Crop the bottom/right so height and width are multiples of ``scale``.

    Works on H×W[×C] arrays and (…,C,H,W) tensors.
    """
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale, ...]
