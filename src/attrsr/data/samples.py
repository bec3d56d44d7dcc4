"""Real photographs bundled with scikit-image, scikit-learn and matplotlib, with a fixed split.

No download happens: every image ships inside those packages. Grey textures are replicated to RGB.
The split is fixed so that numbers (demo, tests) are comparable across runs and machines.
"""

from __future__ import annotations

import functools

import numpy as np

from attrsr.errors import AttrsrError

_SKIMAGE = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
    "retina", "stereo_motorcycle", "brick", "grass", "gravel", "camera", "moon",
)
_SKLEARN = ("china", "flower")
_MATPLOTLIB = ("grace_hopper",)

NAMES: tuple[str, ...] = _SKIMAGE + _SKLEARN + _MATPLOTLIB
# Held out from training (demo model, tests): two photos and two textures of different character.
VAL: tuple[str, ...] = ("chelsea", "coffee", "flower", "gravel")
TRAIN: tuple[str, ...] = tuple(n for n in NAMES if n not in VAL)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray:
    if name in _SKIMAGE:
        import skimage.data

        arr = getattr(skimage.data, name)()
        if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
            arr = arr[0]
    elif name in _SKLEARN:
        from sklearn.datasets import load_sample_image

        arr = load_sample_image(f"{name}.jpg")
    elif name in _MATPLOTLIB:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data(f"{name}.jpg") as fh, Image.open(fh) as im:
            arr = np.asarray(im.convert("RGB"))
    else:
        raise AttrsrError(f"unknown sample image {name!r}; choose from: {', '.join(NAMES)}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.ascontiguousarray(arr[..., :3])
    arr.setflags(write=False)
    return arr


def load_sample(name: str) -> np.ndarray:
    """One bundled photo as an H×W×3 uint8 RGB array (read-only; copy before editing)."""
    return _load(name)


def sample_names(split: str = "all") -> tuple[str, ...]:
    """Names in ``split``: ``"train"``, ``"val"`` or ``"all"``."""
    try:
        return {"train": TRAIN, "val": VAL, "all": NAMES}[split]
    except KeyError:
        raise AttrsrError(f"unknown split {split!r}; use train, val or all") from None
