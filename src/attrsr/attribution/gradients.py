"""The attribution family on LAM's window objective, one call shape for all: :func:`attribute`.

Methods (METHODS.md §1, "other attribution methods"); the objective is LAM's gradient detector
unless said otherwise:

=================  ==========================================================================
``lam``            LAM (:func:`attrsr.attribution.integrate.lam`): blur path, right Riemann sum
``ig``             integrated gradients, black baseline, straight line, right Riemann sum
                   (ours by default — the LAM engine; ``backend="captum"`` runs Captum's)
``grad``           vanilla gradient ∂D/∂x (Captum ``Saliency(abs=False)``)
``grad_input``     gradient ⊙ input (Captum ``InputXGradient``)
``guided_backprop`` guided backpropagation (ReLU networks only, see below)
``smoothgrad``     mean gradient under Gaussian input noise (Captum ``NoiseTunnel``)
``vargrad``        variance of the gradient under Gaussian input noise (Captum ``NoiseTunnel``)
``input_grad``     the thesis's plain input gradient of Σ_window F(x) (objective ``sum``, one backward)
``cam``            CAM, guided IG from the blurred input (:mod:`attrsr.attribution.cam`; ADD supplement)
=================  ==========================================================================

Guided backprop is ours, not Captum's: Captum guides only ``nn.ReLU`` *modules*, and several zoo
networks (SRCNN, CARN) call ``torch.relu`` functionally, whose gradient Captum would leave
unguided without a word. A ``TorchFunctionMode`` sees every ReLU however it is called and routes it
through the guided rule r = 1[r>0]·1[f>0]·r; the tests check it equals Captum's on a network of
ReLU modules. Networks with other activations (sigmoid gates, LeakyReLU, PReLU, GELU, softmax
attention) are refused unless ``allow_non_relu=True`` (then only their ReLUs are guided, with a warning).

SmoothGrad/VarGrad add Gaussian noise of σ = ``noise`` (default 0.05 in [0,1] units) to the LR.
Larger noise pushes pixels well outside [0,1], where some SR networks stop being meaningful (PAN ×4's
output reaches 1e20 at σ = 0.1); infinite gradients are reported as an error that says so.
"""

from __future__ import annotations

import collections
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from attrsr.attribution._common import (
    AttributionResult,
    as_lr_batch,
    finish,
    forward_checked,
    infer_scale,
    objective_for,
    prepared,
)
from attrsr.attribution.integrate import DEFAULT_CHUNK, _check_chunk, integrated_gradients, lam
from attrsr.errors import AttrsrError

METHODS = ("lam", "ig", "grad", "grad_input", "guided_backprop", "smoothgrad", "vargrad", "input_grad", "cam")

_COMMON = {"objective", "channels_last"}
OPTIONS: dict[str, set[str]] = {
    "lam": _COMMON | {"sigma", "steps", "kernel_size", "chunk", "crop", "tail_crop"},
    "ig": _COMMON | {"steps", "baseline", "chunk", "backend", "crop", "tail_crop"},
    "grad": set(_COMMON),
    "grad_input": set(_COMMON),
    "guided_backprop": _COMMON | {"allow_non_relu"},
    "smoothgrad": _COMMON | {"samples", "noise", "seed", "chunk"},
    "vargrad": _COMMON | {"samples", "noise", "seed", "chunk"},
    "input_grad": {"channels_last"},
    "cam": _COMMON | {"steps", "fraction", "max_dist", "path", "sigma", "kernel_size", "resolution"},
}
_ALIASES = {
    "gradient": "grad", "saliency": "grad", "vanilla": "grad", "gradxinput": "grad_input",
    "input_x_gradient": "grad_input", "gbp": "guided_backprop", "guided": "guided_backprop",
    "integrated_gradients": "ig", "sg": "smoothgrad", "var_grad": "vargrad", "smooth_grad": "smoothgrad",
}


def normalise_method(method: str) -> str:
    key = str(method).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise AttrsrError(f"unknown attribution method {method!r}; choose one of: {', '.join(METHODS)}")
    return key


def attribute(model: nn.Module, lr: torch.Tensor, window: Any, method: str = "lam", **options: Any) -> AttributionResult:
    """Attribute a window of ``model``'s SR output to the LR input with ``method`` (see module doc).

    lr: (3,h,w) or (1,3,h,w) in [0,1]; window: (x, y[, size]) in SR pixels (x = column) or a
    :class:`Window`. Options per method: ``OPTIONS[method]``. Returns an :class:`AttributionResult`.
    """
    key = normalise_method(method)
    unknown = sorted(set(options) - OPTIONS[key])
    if unknown:
        raise AttrsrError(
            f"method {key!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(sorted(OPTIONS[key])) or 'none'}"
        )
    return _DISPATCH[key](model, lr, window, **options)


# --------------------------------------------------------------------------------------------
# Captum-backed single-pass methods


def _captum_run(method: str, model, lr, window, run, *, objective: str, channels_last, params) -> AttributionResult:
    """Shared frame: checks, prepared model, objective; ``run(forward, x, obj)`` → (1,C,h,w)."""
    started = time.perf_counter()
    x = as_lr_batch(model, lr)
    with prepared(model, channels_last) as fmt:
        x = x.contiguous(memory_format=fmt)
        sr = forward_checked(model, x)
        scale = infer_scale(model, x, sr)
        win, obj = objective_for(objective, window, tuple(sr.shape[-2:]))

        broken = []

        def forward(inp: torch.Tensor) -> torch.Tensor:
            out = model(inp)
            d = obj(out)
            if not (torch.isfinite(out).all() and torch.isfinite(d).all()):
                broken.append(inp.shape[0])
            return d

        with warnings.catch_warnings():
            # Captum's notice that it switched requires_grad on for the input it was given: noise for a user.
            warnings.filterwarnings("ignore", message=r"Input Tensor \d+ did not already require gradients")
            attr, extra = run(forward, x, obj)
        value = float(obj(sr).double())
    if broken or torch.isinf(attr).any():
        hint = " (the input noise pushes it far outside [0,1]; lower `noise`)" if "noise" in params else ""
        raise AttrsrError(f"{method}: model {_name(model)!r} produced non-finite outputs or gradients{hint}")
    # LAM's rule for the detector's sqrt at 0: a NaN gradient counts as 0.
    attr = torch.where(torch.isnan(attr), torch.zeros((), dtype=attr.dtype, device=attr.device), attr)
    return finish(method, attr[0], sr[0], win, scale, objective, value, started, params=params, **extra)


def _name(model: nn.Module) -> str:
    return str(getattr(model, "zoo_name", type(model).__name__))


def _grad(model, lr, window, *, objective: str = "detector", channels_last: bool | None = None) -> AttributionResult:
    from captum.attr import Saliency

    return _captum_run(
        "grad", model, lr, window,
        lambda f, x, _: (Saliency(f).attribute(x, abs=False), {}),
        objective=objective, channels_last=channels_last, params={"objective": objective},
    )


def _grad_input(model, lr, window, *, objective: str = "detector", channels_last: bool | None = None) -> AttributionResult:
    from captum.attr import InputXGradient

    return _captum_run(
        "grad_input", model, lr, window,
        lambda f, x, _: (InputXGradient(f).attribute(x), {}),
        objective=objective, channels_last=channels_last, params={"objective": objective},
    )


def _input_grad(model, lr, window, *, channels_last: bool | None = None) -> AttributionResult:
    from captum.attr import Saliency

    return _captum_run(
        "input_grad", model, lr, window,
        lambda f, x, _: (Saliency(f).attribute(x, abs=False), {}),
        objective="sum", channels_last=channels_last, params={"objective": "sum"},
    )


def _noise_tunnel(kind: str):
    def run_method(
        model, lr, window, *, samples: int = 16, noise: float = 0.05, seed: int = 0, chunk: int | None = DEFAULT_CHUNK,
        objective: str = "detector", channels_last: bool | None = None,
    ) -> AttributionResult:
        from captum.attr import NoiseTunnel, Saliency

        if isinstance(samples, bool) or not isinstance(samples, int) or samples < (2 if kind == "vargrad" else 1):
            raise AttrsrError(f"{kind}: samples must be an integer >= {2 if kind == 'vargrad' else 1}, got {samples!r}")
        if not noise > 0:
            raise AttrsrError(f"{kind}: noise (the Gaussian σ, in [0,1] image units) must be > 0, got {noise!r}")
        _check_chunk(chunk)

        def run(f, x, _):
            batch = _check_chunk(chunk, x.device, tuple(x.shape[-2:]))
            # Seed a forked RNG: reproducible noise without touching the caller's random state.
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                a = NoiseTunnel(Saliency(f)).attribute(
                    x, nt_type=kind, nt_samples=samples, nt_samples_batch_size=batch, stdevs=float(noise), abs=False
                )
            return a, {}

        params = {"samples": samples, "noise": noise, "seed": seed, "chunk": chunk, "objective": objective}
        return _captum_run(kind, model, lr, window, run, objective=objective, channels_last=channels_last, params=params)

    return run_method


def _ig(
    model, lr, window, *, steps: int = 50, baseline: torch.Tensor | None = None, chunk: int | None = DEFAULT_CHUNK,
    objective: str = "detector", channels_last: bool | None = None, backend: str = "attrsr", crop: bool | int | None = None,
    tail_crop: bool | int | None = None,
) -> AttributionResult:
    if backend == "attrsr":
        return integrated_gradients(
            model, lr, window, steps=steps, baseline=baseline, chunk=chunk, objective=objective, channels_last=channels_last,
            crop=crop, tail_crop=True if tail_crop is None else tail_crop,
        )
    if backend != "captum":
        raise AttrsrError(f"ig backend must be 'attrsr' or 'captum', got {backend!r}")
    if crop not in (None, False) or tail_crop not in (None, False):
        raise AttrsrError("ig: crop and tail_crop are options of the attrsr backend, not of Captum's")
    from captum.attr import IntegratedGradients

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttrsrError(f"steps must be a positive integer, got {steps!r}")
    _check_chunk(chunk)
    base_in = None if baseline is None else as_lr_batch(model, baseline)

    def run(f, x, obj):
        batch = _check_chunk(chunk, x.device, tuple(x.shape[-2:]))
        b = torch.zeros_like(x) if base_in is None else base_in.to(x).contiguous(memory_format=torch.contiguous_format)
        a = IntegratedGradients(f).attribute(x, baselines=b, n_steps=steps, method="riemann_right", internal_batch_size=batch)
        with torch.no_grad():
            v_base = float(f(b).double())
        return a, {"objective_baseline": v_base, "steps": steps}

    params = {"steps": steps, "chunk": chunk, "objective": objective, "backend": "captum",
              "baseline": "black" if baseline is None else "given"}
    return _captum_run("ig", model, lr, window, run, objective=objective, channels_last=channels_last, params=params)


# --------------------------------------------------------------------------------------------
# Guided backprop

_RELU_FUNCS = {torch.relu, torch.relu_, nn.functional.relu, nn.functional.relu_, torch.Tensor.relu, torch.Tensor.relu_}
# Activations (and activation-like gates) that guided backprop has no rule for.
NON_RELU = {
    "sigmoid", "tanh", "leaky_relu", "prelu", "rrelu", "gelu", "elu", "selu", "celu", "silu", "mish",
    "hardswish", "hardsigmoid", "hardtanh", "relu6", "softplus", "softsign", "softmax", "log_softmax",
    "logsigmoid", "glu", "tanhshrink", "softshrink", "hardshrink", "threshold",
    "scaled_dot_product_attention", "multi_head_attention_forward",
}


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward keeps a gradient only where both it and the input are positive."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x > 0)  # the mask, not x: an in-place ReLU overwrites x afterwards
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad.clamp(min=0) * mask


class _ActivationMode(TorchFunctionMode):
    """Counts activation calls during a forward; with ``guide=True`` also makes every ReLU guided."""

    def __init__(self, guide: bool = False) -> None:
        super().__init__()
        self.guide = guide
        self.seen: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FUNCS:
            self.seen["relu"] += 1
            if self.guide:
                x = args[0]
                inplace = func.__name__.endswith("_") or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
                y = _GuidedReLU.apply(x)
                return x.copy_(y) if inplace else y
        else:
            name = getattr(func, "__name__", "").rstrip("_")
            if name in NON_RELU:
                self.seen[name] += 1
        return func(*args, **kwargs)


def activation_summary(model: nn.Module, lr: torch.Tensor) -> dict[str, int]:
    """Activation calls in one forward of ``model`` on ``lr`` (1,3,h,w): e.g. {"relu": 18, "sigmoid": 2}."""
    mode = _ActivationMode(guide=False)
    with torch.no_grad(), mode:
        model(lr)
    return dict(mode.seen)


def _guided_activations(model: nn.Module, x: torch.Tensor, allow_non_relu: bool) -> dict[str, int]:
    """Activation counts of a prepared model on ``x``; raise (or, if allowed, warn) for non-ReLU ones."""
    seen = activation_summary(model, x)
    others = {k: v for k, v in seen.items() if k != "relu"}
    if others:
        listing = ", ".join(f"{k} ×{v}" for k, v in sorted(others.items()))
        msg = (
            f"guided backprop is defined for ReLU networks; model {_name(model)!r} also uses {listing}, "
            "which have no guided rule"
        )
        if not allow_non_relu:
            raise AttrsrError(msg + "; use --method lam, ig or grad instead (from Python, allow_non_relu=True guides only its ReLUs)")
        warnings.warn(msg + "; only its ReLUs are guided", RuntimeWarning, stacklevel=4)
    return seen


def check_guided_backprop(model: nn.Module, lr: torch.Tensor, allow_non_relu: bool = False) -> dict[str, int]:
    """Raise :class:`AttrsrError` now if guided backprop would refuse ``model`` (one no-grad forward
    on ``lr``); lets a multi-model report fail before its first expensive attribution."""
    x = as_lr_batch(model, lr)
    with prepared(model, False), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _guided_activations(model, x, allow_non_relu)


def _guided_backprop(
    model, lr, window, *, objective: str = "detector", channels_last: bool | None = None, allow_non_relu: bool = False,
) -> AttributionResult:
    started = time.perf_counter()
    x = as_lr_batch(model, lr)
    name = getattr(model, "zoo_name", type(model).__name__)
    with prepared(model, channels_last) as fmt:
        x = x.contiguous(memory_format=fmt)
        sr = forward_checked(model, x)
        scale = infer_scale(model, x, sr)
        win, obj = objective_for(objective, window, tuple(sr.shape[-2:]))
        seen = _guided_activations(model, x, allow_non_relu)
        if not seen.get("relu"):
            warnings.warn(f"model {name!r} has no ReLU: guided backprop equals the plain gradient", RuntimeWarning, stacklevel=3)
        inp = x.clone().requires_grad_(True)
        with _ActivationMode(guide=True):
            out = model(inp)
        (g,) = torch.autograd.grad(obj(out).sum(), inp)
        value = float(obj(sr).double())
    g = torch.where(torch.isnan(g), torch.zeros((), dtype=g.dtype, device=g.device), g)
    params = {"objective": objective, "allow_non_relu": allow_non_relu, "activations": seen}
    return finish("guided_backprop", g[0], sr[0], win, scale, objective, value, started, params=params)


def _lam(model, lr, window, **options) -> AttributionResult:
    return lam(model, lr, window, **options)


def _cam(model, lr, window, **options) -> AttributionResult:
    from attrsr.attribution.cam import cam

    return cam(model, lr, window, **options)


_DISPATCH = {
    "lam": _lam,
    "ig": _ig,
    "grad": _grad,
    "grad_input": _grad_input,
    "guided_backprop": _guided_backprop,
    "smoothgrad": _noise_tunnel("smoothgrad"),
    "vargrad": _noise_tunnel("vargrad"),
    "input_grad": _input_grad,
    "cam": _cam,
}
