"""The fast conv double backprop gives PyTorch's own gradients (float64, to rounding) for losses on an
input gradient, on odd convolutions (groups, dilation, stride 2, no bias, frozen weights) and on a
real SR network with a real photo; it leaves no mode behind, even when the forward pass fails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import _get_current_function_mode_stack

from attrsr.attribution.double_backprop import attach


def _photo(size: int = 24) -> torch.Tensor:
    from skimage import data

    return torch.from_numpy(data.astronaut()[200 : 200 + size, 180 : 180 + size]).permute(2, 0, 1).double()[None] / 255


class _OddConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False)
        self.c = torch.nn.Conv2d(8, 48, 3, stride=2, padding=1)
        self.d = torch.nn.Conv2d(48, 48, (1, 3), padding=(0, 1))
        self.d.weight.requires_grad_(False)
        self.e = torch.nn.Conv2d(3, 3, 5, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a(x))
        y = torch.tanh(self.b(y)) + y
        y = self.d(F.relu(self.c(y)))  # stride 2: through conv_transpose2d
        y = F.pixel_shuffle(y, 4)
        return F.conv2d(y, self.e.weight, self.e.bias, padding=2)  # the functional form


def _prior_like_grads(model: torch.nn.Module, x0: torch.Tensor) -> list[torch.Tensor]:
    """Parameter gradients of L1 + a loss on A = ∂(Σ_window model(x))/∂x (as the attribution prior)."""
    x = x0.clone().requires_grad_(True)
    sr = model(x)
    (a,) = torch.autograd.grad(sr[..., 10:20, 8:18].sum(), x, create_graph=True)
    n = a.abs().sum(1)
    s = n[:, 2:7, 2:7].sum() / (n[:, 2:7, 2:7].sum() + n[:, 12:17, 3:8].sum())
    loss = (sr - 0.5).abs().mean() + (s - 0.7) ** 2
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


@pytest.mark.parametrize("net", ["odd", "edsr"])
def test_gradients_equal_pytorch_double_backward(net):
    torch.manual_seed(0)
    if net == "odd":
        model = _OddConvs().double()
    else:
        from attrsr import models

        model = models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=8).double()
    x = _photo()
    reference = _prior_like_grads(model, x)
    attachment = attach(model)
    fast = _prior_like_grads(model, x)
    attachment.remove()
    assert len(reference) == len(fast)
    for r, f in zip(reference, fast):
        if r is None:
            assert f is None
            continue
        assert float(r.abs().max()) > 0
        torch.testing.assert_close(f, r, rtol=1e-10, atol=1e-14)
    assert torch.equal(torch.stack([g.sum() for g in reference if g is not None]),
                       torch.stack([g.sum() for g in _prior_like_grads(model, x) if g is not None]))  # removed: PyTorch's path again


def test_mode_is_left_after_a_failing_forward_and_skipped_in_eval():
    model = _OddConvs().double()
    attach(model)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 5, 8, 8, dtype=torch.float64))  # wrong channel count
    assert _get_current_function_mode_stack() == []
    seen = []
    model.d.register_forward_hook(lambda *a: seen.append(len(_get_current_function_mode_stack())))
    model.train()(_photo(8))
    model.eval()(_photo(8))
    assert seen == [1, 0]
