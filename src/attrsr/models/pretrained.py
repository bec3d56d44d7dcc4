"""Weights shipped inside the package (the demo model), used when a command names no weights.

Each shipped model is described by ``attrsr/assets/<stem>.json``::

    {"model": "edsr-baseline", "scale": 2, "config": {"n_resblocks": 4, "n_feats": 32},
     "weights": "<stem>.safetensors", "recipe": "<stem>.yaml", "description": "..."}
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from attrsr.errors import AttrsrError

ASSETS = Path(str(resources.files("attrsr") / "assets"))


def shipped() -> list[dict[str, Any]]:
    """Descriptions of the shipped models (with absolute ``weights``/``recipe`` paths)."""
    out = []
    if not ASSETS.is_dir():
        return out
    for meta in sorted(ASSETS.glob("*.json")):
        info = json.loads(meta.read_text())
        if "weights" not in info:
            continue
        info["weights"] = str(ASSETS / info["weights"])
        if info.get("recipe"):
            info["recipe"] = str(ASSETS / info["recipe"])
        info["name"] = meta.stem
        out.append(info)
    return out


def shipped_scales() -> list[int]:
    """The scales a shipped model exists for, ascending."""
    return sorted({int(info["scale"]) for info in shipped()})


def default_info(scale: int) -> dict[str, Any]:
    for info in shipped():
        if int(info["scale"]) == scale:
            return info
    have = sorted({int(i["scale"]) for i in shipped()})
    raise AttrsrError(
        f"no shipped default model for x{scale} (shipped: {', '.join(f'x{s}' for s in have) or 'none'}); "
        "pass --model NAME --weights PATH"
    )


def load_default(scale: int) -> nn.Module:
    """The shipped demo model for ``scale``, in eval mode."""
    from attrsr.models.registry import load

    info = default_info(scale)
    model = load(info["model"], weights=info["weights"], scale=scale, **info.get("config", {}))
    model.zoo_name = info["name"]
    return model
