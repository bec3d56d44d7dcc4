"""Faster double backprop through 2-D convolutions: the same gradients as PyTorch's own, cheaper.

Losses on an input gradient (the attribution prior: A = ∂(Σ_PoI F(x))/∂x with ``create_graph``, then
``backward`` through A) differentiate each convolution's backward pass. PyTorch's derivative of
``convolution_backward`` (``_convolution_double_backward``) computes the weight gradient as a
convolution whose kernel is the whole feature map, which on the CPU costs several times a normal
convolution (measured: 44 % of an EDSR-s prior step; ``benchmarks/bench_methods.py``). Here the input
gradient of a stride-1 convolution is written as a plain convolution with the flipped, transposed
kernel, whose own backward is PyTorch's ordinary (fast) convolution backward; other strides go
through ``conv_transpose2d``. The weight gradient is computed only when the running backward pass
needs it (not in the ``autograd.grad(…, inputs=x)`` pass that builds A).

    attachment = attach(model)   # training-mode forward passes of ``model`` use it
    attachment.remove()

It changes no values beyond float rounding (tests compare both ways in float64), no weights and
no state dict; evaluation (``model.eval()``, ``torch.no_grad``) runs untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.graph import _get_grad_fn_or_grad_acc
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _engine_needs(t: torch.Tensor | None) -> bool:
    """Whether the running backward pass will use a gradient for ``t`` (False for the weights in
    ``autograd.grad(…, inputs=x)``). Private PyTorch API (as torch.utils.checkpoint uses it): when it
    is missing, every gradient is computed, which is correct, only slower."""
    if t is None or not t.requires_grad:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(_get_grad_fn_or_grad_acc(t)))
    except (AttributeError, RuntimeError):
        return True


def conv2d_input_grad(grad: torch.Tensor, weight: torch.Tensor, input_size: torch.Size, stride: tuple[int, int],
                      padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """∂⟨grad, conv2d(x, weight)⟩/∂x, written with differentiable ops whose backward is fast."""
    k = weight.shape[-2:]
    if stride == (1, 1):
        cout, cin_g = weight.shape[:2]
        flipped = weight.view(groups, cout // groups, cin_g, *k).transpose(1, 2).reshape(groups * cin_g, cout // groups, *k)
        pad = (dilation[0] * (k[0] - 1) - padding[0], dilation[1] * (k[1] - 1) - padding[1])
        if min(pad) >= 0:
            return F.conv2d(grad, flipped.flip(-2, -1), None, 1, pad, dilation, groups)
    out_pad = [input_size[-2 + i] - ((grad.shape[-2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + 1)
               for i in range(2)]
    return F.conv_transpose2d(grad, weight, None, stride, padding, out_pad, groups, dilation)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.bias = bias
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv2d_input_grad(grad, weight, x.shape, stride, padding, dilation, groups)
        need_w = ctx.needs_input_grad[1] and _engine_needs(weight)
        need_b = ctx.needs_input_grad[2] and _engine_needs(ctx.bias)
        if need_w or need_b:
            bias_sizes = [weight.shape[0]] if ctx.bias is not None else None
            _, gw, gb = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, stride, padding, dilation,
                                                             False, [0, 0], groups, [False, need_w, need_b])
        return gx, gw, gb, None, None, None, None


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


class FastConvDoubleBackprop(TorchFunctionMode):
    """Inside this mode, ``F.conv2d`` with numeric padding goes through :class:`_Conv2d`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d and torch.is_grad_enabled():
            a = {**_CONV_DEFAULTS, **dict(zip(_CONV_ARGS, args)), **kwargs}
            if not isinstance(a["padding"], str) and a["input"].dim() == 4:
                return _Conv2d.apply(a["input"], a["weight"], a["bias"], _pair(a["stride"]), _pair(a["padding"]),
                                     _pair(a["dilation"]), int(a["groups"]))
        return func(*args, **kwargs)


class Attachment:
    """The hooks :func:`attach` registered; ``remove()`` takes them off."""

    def __init__(self, *handles: RemovableHandle) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def attach(module: torch.nn.Module) -> Attachment:
    """Route the convolutions of ``module``'s training-mode forward passes (grad enabled) through the
    fast double backprop; ``.remove()`` on the returned handle undoes it. The hooks are plain
    closures, so copies of the module (the EMA's deepcopy) share them harmlessly (evaluated in eval
    mode, they do nothing)."""
    active: list[FastConvDoubleBackprop | None] = []

    def enter(mod: torch.nn.Module, args: Any) -> None:
        mode = FastConvDoubleBackprop() if mod.training and torch.is_grad_enabled() else None
        if mode is not None:
            mode.__enter__()
        active.append(mode)

    def leave(mod: torch.nn.Module, args: Any, output: Any) -> None:
        mode = active.pop() if active else None
        if mode is not None:
            mode.__exit__(None, None, None)

    pre = module.register_forward_pre_hook(enter)
    post = module.register_forward_hook(leave, always_call=True)
    return Attachment(pre, post)
