"""Checkpoints that survive crashes, RNG state capture, and safetensors export.

Every file goes through :func:`attrsr.fileio.write_bytes_atomic` (temp file, fsync, rename, fsync
of the folder): a crash (even SIGKILL or power loss) leaves either the previous complete checkpoint
or the new complete one — never a truncated ``latest.pt``.

Training checkpoints are plain ``torch.save`` dicts of tensors and Python values, loadable with
``weights_only=True`` (no arbitrary unpickling when resuming).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrsr.errors import AttrsrError
from attrsr.fileio import write_bytes_atomic

FORMAT = "attrsr-train/1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    return write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AttrsrError(f"{path}: no checkpoint to resume from; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from attrsr.models.registry import ends_early

        if ends_early(path, exc):
            raise AttrsrError(f"{path}: the file ends early — was it copied incompletely, or the disk full? "
                              "Resume from a complete copy, or start again without --resume") from None
        raise AttrsrError(f"{path}: cannot read checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AttrsrError(f"{path}: not an attrsr training checkpoint (expected format {FORMAT})")
    return state


def export_safetensors(model_state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Weights only, as ``.safetensors`` (loadable by ``attrsr.models.load(name, weights=path)``).

    ``metadata`` values are stored as JSON strings (safetensors metadata is str → str).
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    return write_bytes_atomic(path, save(tensors, metadata=meta))


# --------------------------------------------------------------------------------------------
# RNG states


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may touch (torch CPU/CUDA, numpy, Python)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _py_state_to_tensors(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_py_state_from_tensors(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_tensors(st: tuple) -> list:
    version, internal, gauss = st
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _py_state_from_tensors(st: list) -> tuple:
    version, internal, gauss = st
    return (version, tuple(int(v) for v in internal.tolist()), gauss)
