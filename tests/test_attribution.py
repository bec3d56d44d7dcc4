"""LAM (METHODS.md §1) against hand-written references, on real images and real PAN ×4 weights.

References in this file are written from METHODS.md independently of the package's code: the blur
is checked against scipy's "mirror" (= reflect-101) correlation, the detector against the
full-image definition, LAM against a one-point-at-a-time loop, the Gini against hand values.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from attrsr.attribution import (
    BlurPath,
    Window,
    blur_path,
    diffusion_index,
    gaussian_kernel,
    gini,
    gradient_detector,
    lam,
    saliency_map,
)
from attrsr.data import load_sample
from attrsr.errors import AttrsrError
from attrsr.images import load_image, modcrop, to_tensor
from attrsr.resize import downsample

from conftest import LAM_IMAGES, need

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lam_lr() -> torch.Tensor:
    """A 32×32 LR crop of LAM's test image 1 (textured building), made the standard way."""
    hr = modcrop(load_image(need(LAM_IMAGES / "1.png")), 4)
    return downsample(hr[None], 4)[0][:, 24:56, 16:48].contiguous()


def photo_lr(name: str = "chelsea", size: int = 24, top: int = 100, left: int = 120) -> torch.Tensor:
    return to_tensor(np.array(load_sample(name)))[:, top : top + size, left : left + size].contiguous()


class TinySR(nn.Module):
    """A small ×2 ReLU network with fixed random weights (fast, and every op has a plain gradient)."""

    def __init__(self, seed: int = 0, scale: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 3 * scale * scale, 3, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.2
        self.act = nn.ReLU()
        self.up = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + self.up(self.c3(self.act(self.c2(self.act(self.c1(x))))))


# ---------------------------------------------------------------------------------------------
# Path, detector, Gini


def test_gaussian_kernel_is_the_formula_and_zero_sigma_is_a_delta():
    u = np.arange(9) - 4
    d2 = u[:, None] ** 2 + u[None, :] ** 2
    for sigma in (1.2, 0.6, 0.024):
        k = np.exp(-d2 / (2 * (sigma + 1e-5) ** 2))
        np.testing.assert_allclose(gaussian_kernel(sigma, 9).numpy(), k / k.sum(), rtol=1e-12, atol=1e-15)
    delta = gaussian_kernel(0.0, 9).numpy()
    assert delta[4, 4] == 1.0 and delta.sum() == 1.0


def test_blur_path_is_reflect101_correlation_and_ends_exactly_at_the_input():
    from scipy.ndimage import correlate

    x = photo_lr("astronaut", 20)
    steps = 5
    path = blur_path(x, sigma=1.2, steps=steps, kernel_size=9)
    assert path.shape == (steps + 1, 3, 20, 20)
    assert torch.equal(path[-1], x)
    xn = x.double().numpy()
    for k in range(steps + 1):
        sigma = 1.2 * (1 - k / steps)
        kern = gaussian_kernel(sigma, 9).numpy()
        # scipy's "mirror" is OpenCV's reflect-101 (d c b | a b c d | c b a)
        ref = np.stack([correlate(xn[c], kern, mode="mirror") for c in range(3)])
        np.testing.assert_allclose(path[k].double().numpy(), ref, atol=2e-7)
    # made in pieces (as the chunks ask for them) = made whole
    bp = BlurPath(x, 1.2, steps, 9)
    assert torch.equal(torch.cat([bp.points(0, 2), bp.points(2, 6)]), path)


def test_blur_levels_equal_the_grouped_conv_bit_for_bit():
    """The fast blur (a GEMM row pass, shifted multiply-adds down the columns) gives the floats of the
    straightforward float64 depthwise conv2d, for CAM's 101 levels on a non-square photo."""
    import torch.nn.functional as F

    from attrsr.attribution.paths import _gaussian_1d, blur_sigmas, gaussian_blur

    x = photo_lr("astronaut", 40)[:, :, :29].contiguous()
    sig = blur_sigmas(1.2, 100)
    g = torch.stack([_gaussian_1d(float(s), 9) for s in sig])
    k, (c, h, w) = len(sig), x.shape
    ref = x.double()[None].expand(k, c, h, w).reshape(1, k * c, h, w)
    wts = g.repeat_interleave(c, dim=0)
    ref = F.conv2d(F.pad(ref, (4, 4, 0, 0), mode="reflect"), wts[:, None, None, :], groups=k * c)
    ref = F.conv2d(F.pad(ref, (0, 0, 4, 4), mode="reflect"), wts[:, None, :, None], groups=k * c)
    ref = ref.view(k, c, h, w).float()
    ref[-1] = x
    assert torch.equal(gaussian_blur(x, sig, 9), ref)


def test_detector_is_the_full_image_definition_with_x_as_column():
    g = torch.Generator().manual_seed(1)
    sr = torch.rand(2, 3, 30, 40, generator=g)  # H=30 rows, W=40 columns: x and y are not interchangeable
    x, y, s = 21, 7, 6
    y_np = sr.double().numpy()
    V = (y_np[..., :-1, :] - y_np[..., 1:, :]) ** 2  # (H-1) × W
    Hd = (y_np[..., :, :-1] - y_np[..., :, 1:]) ** 2  # H × (W-1)
    G = np.sqrt(V[..., :, :-1] + Hd[..., :-1, :])  # common (H-1) × (W-1) grid
    want = G[..., y : y + s, x : x + s].sum(axis=(1, 2, 3))
    got = gradient_detector(sr, Window(x, y, s)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    swapped = G[..., x : x + s, y : y + s].sum(axis=(1, 2, 3))
    assert not np.allclose(got, swapped, rtol=1e-3)


def test_gini_and_di_on_hand_computed_maps():
    eps = 1e-7
    # uniform: no inequality at all
    assert gini(np.full(10, 0.3)) == pytest.approx(0.0, abs=1e-15)
    assert diffusion_index(torch.ones(4, 4)) == pytest.approx(100.0, abs=1e-10)
    # one-hot of n=4: sorted (ε, ε, ε, 1+ε); Σ(2i−n−1)m_i = 3, Σm = 1+4ε → G = 3 / (4(1+4ε))
    assert gini(np.array([0.0, 0.0, 1.0, 0.0])) == pytest.approx(3 / (4 * (1 + 4 * eps)), rel=1e-12)
    # (0,1,2,3): Σ(2i−5)m_i = −3ε −(1+ε) + (2+ε) + 3(3+ε) = 10, Σm = 6+4ε → G = 10/(4(6+4ε))
    g = gini(np.array([3.0, 1.0, 0.0, 2.0]))
    assert g == pytest.approx(10 / (4 * (6 + 4 * eps)), rel=1e-12)
    assert diffusion_index(np.array([[3.0, 1.0], [0.0, 2.0]])) == pytest.approx((1 - g) * 100, rel=1e-12)
    # the same Gini as the mean-absolute-difference definition Σ|xi − xj| / (2 n² mean)
    v = np.random.default_rng(0).random(50) + eps
    mad = np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size**2 * v.mean())
    assert gini(v - eps) == pytest.approx(mad, rel=1e-10)


def test_saliency_is_abs_channel_sum_over_its_max():
    a = torch.tensor([[[1.0, -2.0]], [[1.0, 0.5]], [[-4.0, 0.5]]])  # channel sums: -2, -1
    np.testing.assert_allclose(saliency_map(a).numpy(), [[1.0, 0.5]])


# ---------------------------------------------------------------------------------------------
# LAM itself


def reference_lam(model, x, window, sigma=1.2, steps=8, l=9):
    """METHODS.md §1 literally: one path point at a time, right-endpoint Riemann sum, NaN → 0."""
    from scipy.ndimage import correlate

    xn = x.double().numpy()
    u = np.arange(l) - l // 2
    d2 = u[:, None] ** 2 + u[None, :] ** 2
    path = []
    for k in range(steps + 1):
        s = sigma * (1 - k / steps)
        kern = np.exp(-d2 / (2 * (s + 1e-5) ** 2))
        kern /= kern.sum()
        path.append(np.stack([correlate(xn[c], kern, mode="mirror") for c in range(3)]))
    total = np.zeros_like(xn)
    for i in range(steps):
        p = torch.tensor(path[i + 1], dtype=torch.float32)[None].requires_grad_(True)
        out = model(p)
        r, c, w = window[1], window[0], window[2]
        V = (out[..., :-1, :] - out[..., 1:, :]) ** 2
        H = (out[..., :, :-1] - out[..., :, 1:]) ** 2
        D = torch.sqrt(V[..., :, :-1] + H[..., :-1, :])[..., r : r + w, c : c + w].sum()
        (g,) = torch.autograd.grad(D, p)
        g = g[0].double().numpy()
        g[np.isnan(g)] = 0
        total += g * (path[i + 1] - path[i])
    m = np.abs(total.sum(0))
    return total, m / m.max()


def test_lam_equals_the_literal_algorithm():
    model = TinySR()
    x = photo_lr("coffee", 20, top=150, left=200)
    window = (13, 9, 6)
    ref_a, ref_m = reference_lam(model, x, window, steps=8)
    res = lam(model, x, window, steps=8, chunk=3, channels_last=False)
    np.testing.assert_allclose(res.attribution.double().numpy(), ref_a, rtol=1e-4, atol=1e-6 * np.abs(ref_a).max())
    np.testing.assert_allclose(res.saliency.numpy(), ref_m, atol=1e-5)
    assert res.di == pytest.approx(diffusion_index(ref_m), abs=1e-3)
    assert res.attribution.shape == (3, 20, 20) and res.sr.shape == (3, 40, 40)
    # the stored detector values are D(F(x)) and D(F(γ0))
    with torch.no_grad():
        d_x = float(gradient_detector(model(x[None]), Window(*window)))
        d_0 = float(gradient_detector(model(blur_path(x, 1.2, 8)[0][None]), Window(*window)))
    assert res.objective_input == pytest.approx(d_x, rel=1e-5)
    assert res.objective_baseline == pytest.approx(d_0, rel=1e-5)


def test_chunk_changes_speed_not_values(pan, lam_lr):
    a = lam(pan, lam_lr, (60, 52, 16), steps=16, chunk=1)
    b = lam(pan, lam_lr, (60, 52, 16), steps=16, chunk=16)
    scale = float(a.attribution.abs().max())
    assert float((a.attribution - b.attribution).abs().max()) <= 1e-5 * scale
    assert float((a.saliency - b.saliency).abs().max()) <= 1e-5
    assert a.di == pytest.approx(b.di, abs=1e-4)


def test_completeness_tightens_with_more_steps_on_pan(pan, lam_lr):
    # |ΣA − (D(F(x)) − D(F(γ0)))| has two parts: the right-endpoint rule's O(1/N) bias, and an
    # erratic part from PAN's many activation kinks along the path (its path gradient is rough at
    # the 1/200 scale), which shrinks more slowly. On a 16-pixel window both are tiny (~0.5% of ΔD
    # at 50 steps) and the erratic part can win; on a 48-pixel window the 1/N term dominates and the
    # error falls ~4x from 50 to 200 steps (measured: 0.28x on this image, 0.27x on LAM image 3).
    window = (20, 20, 48)
    r50 = lam(pan, lam_lr, window, steps=50, chunk=10)
    r200 = lam(pan, lam_lr, window, steps=200, chunk=10)
    gap = r50.objective_input - r50.objective_baseline
    assert gap > 100.0  # the blur removes real structure from the window
    assert r50.objective_input == pytest.approx(r200.objective_input, rel=1e-5)
    assert r50.objective_baseline == pytest.approx(r200.objective_baseline, rel=1e-5)
    e50, e200 = r50.completeness_error, r200.completeness_error
    print(f"completeness error: 50 steps {e50:.4f} ({e50 / gap:.3%} of ΔD), 200 steps {e200:.4f} ({e200 / gap:.3%})")
    assert e200 < 0.5 * e50
    assert r50.relative_completeness_error < 0.05


def test_model_state_is_restored_and_no_parameter_gradients(lam_lr):
    model = TinySR()
    model.train()
    model.c2.eval()  # a mixed state must come back as it was
    model.c1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lam(model, lam_lr[:, :16, :16], (4, 4, 8), steps=4)
    assert model.training and not model.c2.training and model.c3.training
    assert not model.c1.weight.requires_grad and model.c2.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_any_module_without_a_scale_attribute(lam_lr):
    class Plain(nn.Module):  # a user network: no `scale`, no zoo wrapper
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 27, 3, padding=1)
            self.up = nn.PixelShuffle(3)

        def forward(self, x):
            return torch.sigmoid(self.up(self.conv(x)))

    torch.manual_seed(0)
    res = lam(Plain(), lam_lr[:, :12, :12], (10, 12, 8), steps=4)
    assert res.scale == 3 and res.sr.shape == (3, 36, 36)
    assert 0 < res.di <= 100


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "window, words",
    [
        ((120, 10, 16), ["outside", "x ≤ 111"]),  # 32·4 = 128 columns; the detector needs one more
        ((10, 112, 16), ["outside", "y ≤ 111"]),
        ((-1, 10, 16), ["negative"]),
        ((10, 10, 1), ["too small", "at least 2"]),
        ((10.5, 10, 16), ["whole number"]),
        ("here", ["not understood"]),
    ],
)
def test_bad_windows_are_named(window, words, lam_lr):
    with pytest.raises(AttrsrError) as exc:
        lam(TinySR(scale=4), lam_lr, window, steps=2)
    for w in words:
        assert w in str(exc.value)


def test_window_touching_the_last_detector_column_is_fine_one_more_is_not(lam_lr):
    model = TinySR(scale=4)
    lam(model, lam_lr, (111, 111, 16), steps=1)  # reads SR columns up to 127 = W−1
    with pytest.raises(AttrsrError, match="gradient detector"):
        lam(model, lam_lr, (112, 111, 16), steps=1)


def test_bad_lr_is_named(lam_lr):
    model = TinySR()
    with pytest.raises(AttrsrError, match="1 channel"):
        lam(model, lam_lr[:1], (4, 4, 8))
    with pytest.raises(AttrsrError, match="4 channel"):
        lam(model, torch.cat([lam_lr, lam_lr[:1]]), (4, 4, 8))
    with pytest.raises(AttrsrError, match=r"\[0,1\]"):
        lam(model, lam_lr * 255, (4, 4, 8))
    with pytest.raises(AttrsrError, match="shape"):
        lam(model, lam_lr[None].repeat(2, 1, 1, 1), (4, 4, 8))
    with pytest.raises(AttrsrError, match="too small"):
        lam(model, lam_lr[:, :4, :4], (0, 0, 4))
    with pytest.raises(AttrsrError, match="chunk"):
        lam(model, lam_lr, (4, 4, 8), chunk=0)
