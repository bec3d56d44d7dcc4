"""Shared machinery of the attribution methods: input checks, the model context, the result type."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from attrsr.attribution.di import diffusion_index
from attrsr.attribution.objectives import OBJECTIVE_MARGIN, Objective, Window, make_objective
from attrsr.errors import AttrsrError


# --------------------------------------------------------------------------------------------
# Result


@dataclasses.dataclass
class AttributionResult:
    """What every attribution method returns (tensors on the CPU, float32).

    attribution: (3,h,w) signed, LR size.  saliency: (h,w) in [0,1], |Σ_c A_c| / max.
    di: Diffusion Index of ``saliency`` (NaN when the attribution is all zero).
    sr: (3,H,W) the model's output F(x) (not clamped).
    objective_input / objective_baseline: the objective at F(x) and at F(baseline) (path methods);
    for LAM these are the detector values D(F(x)) and D(F(γ₀)), so completeness can be checked.
    path_values: (N,) the objective at the path points γ₁..γ_N (path methods).
    """

    method: str
    attribution: torch.Tensor
    saliency: torch.Tensor
    di: float
    sr: torch.Tensor
    window: Window | None  # None: the objective covers the whole output (CAM's image detector)
    scale: int
    objective: str
    objective_input: float
    objective_baseline: float | None = None
    steps: int | None = None
    path_values: torch.Tensor | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def detector_input(self) -> float:
        return self.objective_input

    @property
    def detector_baseline(self) -> float | None:
        return self.objective_baseline

    @property
    def attribution_sum(self) -> float:
        return float(self.attribution.double().sum())

    @property
    def completeness_error(self) -> float | None:
        """|ΣA − (obj(F(x)) − obj(F(baseline)))| for path methods, else None."""
        if self.objective_baseline is None:
            return None
        return abs(self.attribution_sum - (self.objective_input - self.objective_baseline))

    @property
    def relative_completeness_error(self) -> float | None:
        err = self.completeness_error
        if err is None:
            return None
        gap = abs(self.objective_input - self.objective_baseline)
        return err / gap if gap > 0 else float("inf") if err > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly dict of the numbers (no tensors)."""
        out: dict[str, Any] = {
            "method": self.method,
            "di": _finite(self.di),
            "window": self.window.as_dict() if self.window is not None else None,
            "scale": self.scale,
            "objective": self.objective,
            "objective_input": self.objective_input,
            "lr_size": [int(self.attribution.shape[-1]), int(self.attribution.shape[-2])],
            "sr_size": [int(self.sr.shape[-1]), int(self.sr.shape[-2])],
            "params": self.params,
            "seconds": round(self.seconds, 4),
        }
        if self.objective_baseline is not None:
            out["completeness"] = {
                "objective_input": self.objective_input,
                "objective_baseline": self.objective_baseline,
                "attribution_sum": self.attribution_sum,
                "error": self.completeness_error,
                "relative_error": _finite(self.relative_completeness_error),
                "steps": self.steps,
            }
        return out


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def saliency_map(attribution: torch.Tensor) -> torch.Tensor:
    """M = |Σ_c A_c| / max |Σ_c A_c| (METHODS.md §1.5): (3,h,w) → (h,w) in [0,1] (zeros if A ≡ 0)."""
    m = attribution.double().sum(0).abs()
    peak = m.max()
    return (m / peak if peak > 0 else m).float()


def finish(
    method: str,
    attribution: torch.Tensor,
    sr: torch.Tensor,
    window: Window | None,
    scale: int,
    objective: str,
    objective_input: float,
    started: float,
    **extra: Any,
) -> AttributionResult:
    attribution = attribution.detach().float().cpu().contiguous()
    sal = saliency_map(attribution)
    if float(sal.max()) == 0.0:
        warnings.warn(
            f"{method}: the attribution is zero everywhere (the objective does not depend on the input "
            "here, or every gradient was NaN); the DI is undefined (NaN)",
            RuntimeWarning,
            stacklevel=3,
        )
        di = float("nan")
    else:
        di = diffusion_index(sal)
    return AttributionResult(
        method=method,
        attribution=attribution,
        saliency=sal,
        di=di,
        sr=sr.detach().float().cpu().contiguous(),
        window=window,
        scale=scale,
        objective=objective,
        objective_input=float(objective_input),
        seconds=time.perf_counter() - started,
        **extra,
    )


# --------------------------------------------------------------------------------------------
# Inputs


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def as_lr_batch(model: nn.Module, lr: Any) -> torch.Tensor:
    """Validate ``lr`` ((C,h,w) or (1,C,h,w) float in [0,1]) → (1,C,h,w) float32 on the model's device."""
    if not isinstance(lr, torch.Tensor):
        raise AttrsrError(
            f"lr must be a torch tensor (3,h,w) in [0,1], got {type(lr).__name__}; "
            "use attrsr.images.load_image or attrsr.images.to_tensor"
        )
    if lr.ndim == 3:
        lr = lr[None]
    if lr.ndim != 4 or lr.shape[0] != 1:
        raise AttrsrError(f"lr must have shape (3,h,w) or (1,3,h,w), got {tuple(lr.shape)}")
    if not lr.is_floating_point():
        raise AttrsrError(f"lr has dtype {lr.dtype}; give floats in [0,1] (8-bit images: divide by 255)")
    want = int(getattr(model, "in_channels", 3))
    if lr.shape[1] != want:
        name = getattr(model, "zoo_name", type(model).__name__)
        raise AttrsrError(
            f"lr has {lr.shape[1]} channel(s) but model {name!r} takes {want} (RGB); "
            "convert the image to RGB (grey: repeat the channel; RGBA: drop alpha)"
        )
    if not torch.isfinite(lr).all():
        raise AttrsrError("lr contains NaN or infinite values")
    lo, hi = float(lr.min()), float(lr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise AttrsrError(f"lr values must be in [0,1], got [{lo:.4g}, {hi:.4g}]; 8-bit images: divide by 255")
    return lr.detach().to(model_device(model), torch.float32)


def infer_scale(model: nn.Module, lr: torch.Tensor, sr: torch.Tensor) -> int:
    """The model's scale, checked against the output it produced."""
    h, w = lr.shape[-2:]
    H, W = sr.shape[-2:]
    name = getattr(model, "zoo_name", type(model).__name__)
    if sr.ndim != 4 or sr.shape[0] != lr.shape[0] or sr.shape[1] != 3:
        raise AttrsrError(f"model {name!r} returned shape {tuple(sr.shape)} for input {tuple(lr.shape)}; expected (B,3,s·h,s·w)")
    scale = getattr(model, "scale", None)
    if scale is None:
        if H % h or W % w or H // h != W // w:
            raise AttrsrError(f"model {name!r} maps {w}×{h} to {W}×{H}, which is not an integer scale")
        scale = H // h
    if (H, W) != (scale * h, scale * w):
        raise AttrsrError(f"model {name!r} (scale {scale}) maps {w}×{h} to {W}×{H}, expected {scale * w}×{scale * h}")
    return int(scale)


def forward_checked(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """One no-grad forward of the (prepared) model; turns shape errors into a readable AttrsrError."""
    try:
        with torch.no_grad():
            return model(lr)
    except RuntimeError as exc:
        name = getattr(model, "zoo_name", type(model).__name__)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttrsrError(f"model {name!r} failed on an LR input of shape {tuple(lr.shape)}: {first}") from None


def objective_for(name: str, window: Any, sr_hw: tuple[int, int]) -> tuple[Window, Objective]:
    """Coerce and bounds-check the window for objective ``name``; return it with the bound objective."""
    w = Window.coerce(window)
    if name not in OBJECTIVE_MARGIN:
        make_objective(name, w)  # raises the readable error
    w.check(sr_hw, margin=OBJECTIVE_MARGIN[name])
    return w, make_objective(name, w)


# --------------------------------------------------------------------------------------------
# The model context


@contextlib.contextmanager
def prepared(model: nn.Module, channels_last: bool | None = None) -> Iterator[torch.memory_format]:
    """Eval mode, no parameter gradients, optionally channels-last weights; all restored on exit.

    Yields the memory format inputs should use. ``channels_last=None`` picks channels-last on the CPU,
    where oneDNN's convolutions run 2-3× faster in that layout (values agree to float rounding); the
    weights are converted in place (same Parameter objects) and converted back afterwards. A model
    whose 4-D weights are not all in the default layout is left as it is.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    device = model_device(model)
    use_cl = (device.type == "cpu") if channels_last is None else bool(channels_last)
    four_d = [t for t in list(model.parameters()) + list(model.buffers()) if t.dim() == 4]
    convert = use_cl and bool(four_d) and all(t.is_contiguous() for t in four_d)
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    if convert:
        model.to(memory_format=torch.channels_last)
    try:
        yield torch.channels_last if use_cl else torch.contiguous_format
    finally:
        if convert:
            model.to(memory_format=torch.contiguous_format)
        for p, req in flags:
            p.requires_grad_(req)
        for m, training in modes:
            m.training = training
