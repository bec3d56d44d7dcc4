"""The attribution family (IG, gradients, guided backprop, SmoothGrad/VarGrad, input gradient),
the analyses and the pictures — cross-checked against Captum and direct autograd, on real images
and real PAN ×4 weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attrsr.attribution import Window, activation_summary, attribute, gradient_detector, window_sum
from attrsr.attribution.analysis import area_of_interest, auto_windows, norm_by_distance, randomisation_check
from attrsr.errors import AttrsrError
from attrsr.images import load_image, modcrop
from attrsr.resize import downsample

from conftest import LAM_IMAGES, need

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = (40, 36, 16)


@pytest.fixture(scope="module")
def hr_image() -> torch.Tensor:
    return modcrop(load_image(need(LAM_IMAGES / "3.png")), 4)


@pytest.fixture(scope="module")
def lr24(hr_image) -> torch.Tensor:
    """A 24×24 LR crop (96×96 SR) of LAM's test image 3."""
    return downsample(hr_image[None], 4)[0][:, 20:44, 20:44].contiguous()


def objective_grad(model, lr, objective):
    """∂objective(F(x))/∂x by plain autograd on the untouched model: the reference."""
    x = lr[None].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(model(x)).sum(), x)
    return g[0]


class ModuleReLUNet(nn.Module):
    """×2 network whose ReLUs are modules (what Captum's GuidedBackprop can see)."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.scale = 2
        self.functional = functional
        self.c1 = nn.Conv2d(3, 12, 3, padding=1)
        self.c2 = nn.Conv2d(12, 12, 3, padding=1)
        self.c3 = nn.Conv2d(12, 12, 3, padding=1)
        self.r1, self.r2 = nn.ReLU(), nn.ReLU(inplace=True)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        if self.functional:  # the same network with torch.relu / in-place relu_ calls
            h = torch.relu(self.c1(x))
            h = self.c2(h).relu_()
        else:
            h = self.r1(self.c1(x))
            h = self.r2(self.c2(h))
        return self.up(self.c3(h))


# ---------------------------------------------------------------------------------------------
# Cross-checks


def test_our_integrated_gradients_equal_captums(pan, lr24):
    from captum.attr import IntegratedGradients

    # Same baseline (black), steps (12) and rule (right Riemann sum), and the same numerics: one
    # path point per pass in the default memory layout. (Rounding-level differences, e.g. batch 12
    # vs 1, can flip a LeakyReLU unit sitting at ~0 at one path point and move that step's gradient
    # by up to ~1%: measured on this crop, Captum's own batch-12 and batch-1 results differ by 3e-4.)
    w = Window(*WINDOW)
    ours = attribute(pan, lr24, w, method="ig", steps=12, chunk=1, channels_last=False)
    pan.eval()
    ig = IntegratedGradients(lambda inp: gradient_detector(pan(inp), w))
    ref = ig.attribute(
        lr24[None], baselines=torch.zeros(1, 3, 24, 24), n_steps=12, method="riemann_right", internal_batch_size=1
    )[0]
    rel = float((ours.attribution - ref).norm() / ref.norm())
    assert rel < 1e-4
    assert float((ours.attribution - ref).abs().max()) < 1e-4 * float(ref.abs().max())
    # the Captum backend of attribute() runs the same computation, and both report completeness
    via = attribute(pan, lr24, w, method="ig", steps=12, chunk=1, channels_last=False, backend="captum")
    assert float((via.attribution - ref).abs().max()) < 1e-4 * float(ref.abs().max())
    assert ours.objective_baseline == pytest.approx(via.objective_baseline, rel=1e-5)
    assert ours.completeness_error is not None and ours.relative_completeness_error < 0.2
    # with the fast defaults (4 points per pass, channels-last) the map is the same to rounding flips
    fast = attribute(pan, lr24, w, method="ig", steps=12)
    assert float((fast.attribution - ref).norm() / ref.norm()) < 1e-3


def test_gradient_methods_equal_direct_autograd(pan, lr24):
    w = Window(*WINDOW)
    g_det = objective_grad(pan, lr24, lambda sr: gradient_detector(sr, w))
    g_sum = objective_grad(pan, lr24, lambda sr: window_sum(sr, w))
    tol = lambda ref: 1e-4 * float(ref.abs().max())  # noqa: E731
    same = {"channels_last": False}  # the reference's numerics (see the IG test on rounding flips)
    grad = attribute(pan, lr24, w, method="grad", **same).attribution
    assert float((grad - g_det).abs().max()) < tol(g_det)
    gi = attribute(pan, lr24, w, method="grad_input", **same).attribution
    assert float((gi - g_det * lr24).abs().max()) < tol(g_det * lr24)
    ig = attribute(pan, lr24, w, method="input_grad", **same)
    assert float((ig.attribution - g_sum).abs().max()) < tol(g_sum)
    assert ig.objective == "sum"
    fast = attribute(pan, lr24, w, method="grad").attribution
    assert float((fast - g_det).norm() / g_det.norm()) < 1e-3
    # the thesis's objective and LAM's detector explain different things
    assert np.corrcoef(g_sum.sum(0).abs().ravel(), g_det.sum(0).abs().ravel())[0, 1] < 0.99


def test_guided_backprop_equals_captums_on_relu_modules_and_sees_functional_relus(lr24):
    from captum.attr import GuidedBackprop

    w = Window(10, 12, 8)
    x = lr24[:, :16, :16]
    mod = ModuleReLUNet()
    mod.r2 = nn.ReLU()  # Captum's hooks do not support in-place ReLU modules

    class Wrapped(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return gradient_detector(self.net(inp), w)

    ref = GuidedBackprop(Wrapped(mod)).attribute(x[None].clone())[0]
    ours = attribute(mod, x, w, method="guided_backprop").attribution
    assert float((ours - ref).abs().max()) < 1e-5 * float(ref.abs().max())
    plain = attribute(mod, x, w, method="grad").attribution
    assert float((plain - ref).abs().max()) > 1e-2 * float(ref.abs().max())  # guiding changed something

    # same weights, ReLUs called as torch.relu / Tensor.relu_: Captum would not guide them; we do
    fun = ModuleReLUNet(functional=True)
    fun.load_state_dict(mod.state_dict())
    assert activation_summary(fun, x[None]) == {"relu": 2}
    ours_f = attribute(fun, x, w, method="guided_backprop").attribution
    assert float((ours_f - ref).abs().max()) < 1e-5 * float(ref.abs().max())


def test_guided_backprop_refuses_pan_and_names_its_activations(pan, lr24):
    with pytest.raises(AttrsrError) as exc:
        attribute(pan, lr24, WINDOW, method="guided_backprop")
    msg = str(exc.value)
    assert "ReLU networks" in msg and "sigmoid" in msg and "leaky_relu" in msg
    with pytest.warns(RuntimeWarning, match="only its ReLUs are guided"):
        res = attribute(pan, lr24, WINDOW, method="guided_backprop", allow_non_relu=True)
    assert res.saliency.max() == 1.0


def test_smoothgrad_and_vargrad(pan, lr24):
    w = Window(*WINDOW)
    state = torch.random.get_rng_state()
    a = attribute(pan, lr24, w, method="smoothgrad", samples=4, noise=0.02, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    b = attribute(pan, lr24, w, method="smoothgrad", samples=4, noise=0.02, seed=1, chunk=1)
    assert float((a.attribution - b.attribution).abs().max()) < 1e-5 * float(a.attribution.abs().max())
    c = attribute(pan, lr24, w, method="smoothgrad", samples=4, noise=0.02, seed=2)
    assert not torch.allclose(a.attribution, c.attribution)
    # vanishing noise → the plain gradient
    tiny = attribute(pan, lr24, w, method="smoothgrad", samples=2, noise=1e-6).attribution
    grad = attribute(pan, lr24, w, method="grad").attribution
    assert float((tiny - grad).abs().max()) < 1e-2 * float(grad.abs().max())
    v = attribute(pan, lr24, w, method="vargrad", samples=4, noise=0.02)
    assert float(v.attribution.min()) >= 0 and float(v.attribution.max()) > 0


def test_noise_that_breaks_the_network_is_reported(pan, lr24):
    # PAN's output explodes for inputs far outside [0,1]
    with pytest.raises(AttrsrError, match="lower `noise`"):
        attribute(pan, lr24, WINDOW, method="vargrad", samples=2, noise=3.0)


def test_method_and_option_errors(lr24):
    net = ModuleReLUNet()
    with pytest.raises(AttrsrError, match="unknown attribution method"):
        attribute(net, lr24, (4, 4, 8), method="lime")
    with pytest.raises(AttrsrError, match="does not take option"):
        attribute(net, lr24, (4, 4, 8), method="grad", steps=10)
    with pytest.raises(AttrsrError, match="backend"):
        attribute(net, lr24, (4, 4, 8), method="ig", backend="jax")
    assert attribute(net, lr24, (4, 4, 8), method="Guided-Backprop").method == "guided_backprop"


def test_captum_backed_methods_do_not_leak_captums_requires_grad_warning(lr24):
    # Captum warns "Input Tensor 0 did not already require gradients" on every call; the user asked
    # for nothing wrong, so `attrsr lam --method grad` must not print it.
    import warnings

    net = ModuleReLUNet()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for method in ("grad", "grad_input", "input_grad", "smoothgrad"):
            attribute(net, lr24[:, :12, :12], (4, 4, 8), method=method)
        attribute(net, lr24[:, :12, :12], (4, 4, 8), method="ig", steps=2, backend="captum")
    assert not [w for w in caught if "require" in str(w.message)], [str(w.message) for w in caught]


# ---------------------------------------------------------------------------------------------
# Analyses


def test_randomisation_check_separates_trained_from_random_pan(pan, lr24):
    rc = randomisation_check(pan, lr24, WINDOW, method="grad")
    assert rc["passed"] and rc["pearson_context"] < 0.8 and rc["pearson"] < 0.8
    assert rc["di_trained"] > 2 * rc["di_random"]  # the trained network looks much wider


def test_randomisation_check_fails_when_there_is_nothing_to_randomise(lr24):
    class Bilinear(nn.Module):  # no parameters: the "random" copy is the same function
        scale = 2

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    rc = randomisation_check(Bilinear(), lr24, (10, 10, 16), method="grad")
    assert rc["pearson"] == pytest.approx(1.0) and not rc["passed"]


def test_randomisation_check_judges_the_context_not_the_shared_peak(pan):
    """LAM image 2, where whole-map Pearson (0.92) calls trained PAN 'FAILED' although its map
    (DI ≈ 7.2) differs clearly from the re-initialised one (DI ≈ 1.3): the context decides."""
    hr = modcrop(load_image(need(LAM_IMAGES / "2.png")), 4)[:, 64:192, 64:192]
    lr = downsample(hr[None], 4)[0]
    rc = randomisation_check(pan, lr, (56, 56, 16), method="lam", steps=16)
    assert rc["passed"], rc
    assert rc["pearson"] > rc["max_correlation"]  # measured 0.92: the whole-map rule would fail it
    assert rc["pearson_context"] < 0.6  # measured 0.42
    assert rc["di_trained"] > 2 * rc["di_random"]


def test_auto_windows_pick_hard_non_overlapping_regions(hr_image):
    wins = auto_windows(hr_image, n=4, size=16)
    H, W = hr_image.shape[-2:]
    assert len(wins) == 4
    for i, a in enumerate(wins):
        a.check((H, W), margin=1)
        for b in wins[i + 1 :]:
            assert abs(a.x - b.x) >= 16 or abs(a.y - b.y) >= 16
    # synthetic: a flat grey image with one textured square — the window goes into the square
    img = torch.full((3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(0)
    img[:, 30:50, 8:28] = torch.rand(1, 20, 20, generator=g)
    (w,) = auto_windows(img, n=1, size=16)
    assert 30 <= w.y <= 34 and 8 <= w.x <= 12
    from attrsr.attribution.analysis import gradient_energy

    e = gradient_energy(hr_image)
    first = float(e[wins[0].y : wins[0].y + 16, wins[0].x : wins[0].x + 16].sum())
    sums = torch.nn.functional.avg_pool2d(e[None, None], 16, stride=16).flatten() * 256
    assert first >= float(sums.max())  # at least as hard as any aligned tile


def test_area_of_interest_on_known_maps():
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    c = np.zeros((4, 4))
    a[1, 1] = b[1, 1] = c[1, 1] = 1.0  # everyone uses (1,1)
    a[0, 3] = 0.5  # only a uses (0,3)
    b[3, 0] = c[3, 0] = 0.2  # two of three use (3,0)
    aoi = area_of_interest({"a": a, "b": b, "c": c}, {"a": 30.0, "b": 10.0, "c": 5.0}, threshold=0.1)
    assert aoi["usage"][1, 1] == 1.0 and aoi["usage"][0, 3] == pytest.approx(1 / 3)
    assert aoi["common"].sum() == 1 and aoi["common"][1, 1]
    assert aoi["differs"].sum() == 2 and aoi["differs"][0, 3] and aoi["differs"][3, 0]
    # contrast: (a) wide-looking vs (b, c) narrow
    assert aoi["contrast"][0, 3] == pytest.approx(0.5) and aoi["contrast"][3, 0] == pytest.approx(-0.2)


def test_norm_by_distance():
    a = torch.zeros(3, 40, 40)
    a[:, 18:22, 18:22] = 1.0  # 4×4 window at LR (18,18): ×4 → SR (72,72), size 16
    a[0, 10, 10] = 48.0
    rows = norm_by_distance(a, Window(72, 72, 16), 4, sections=2, growth=8)
    assert rows[0]["relative_norm"] == pytest.approx(1.0)  # box 14..26: only the window
    assert rows[1]["relative_norm"] == pytest.approx(2.0)  # box 10..30 reaches the far pixel
    mask = np.zeros((40, 40), bool)
    mask[18:22, 18:22] = True
    rows = norm_by_distance(a, Window(72, 72, 16), 4, sections=2, growth=8, similar=mask)
    assert rows[1]["similar_to_dissimilar"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Pictures and the one-window report


def test_heatmap_colours_and_window_drawing():
    from attrsr.attribution import viz

    m = np.array([[0.0, 1.0], [0.5, 0.0]])
    h = viz.heatmap(m, 3)
    assert h.shape == (6, 6, 3) and h.dtype == np.uint8
    assert tuple(h[0, 0]) == tuple(h[2, 2])  # nearest upscaling
    assert h[0, 0].min() >= 250  # 0 → white
    r, g, b = (int(v) for v in h[0, 3])
    assert r > 100 and g < 30 and b < 30  # 1 → deep red
    img = np.zeros((32, 32, 3), np.uint8)
    out = viz.draw_window(img, Window(8, 8, 8), width=1)
    assert out[8:16, 8:16].max() == 0  # the explained pixels stay visible
    assert tuple(out[7, 10]) == viz.WINDOW_COLOR


def test_kde_peaks_where_the_saliency_is():
    from attrsr.attribution.viz import kde_density

    m = np.zeros((20, 20))
    m[5, 14] = 1.0
    m[6, 14] = m[5, 13] = 0.6
    m[15, 3] = 0.05
    d = kde_density(m, (80, 80))
    y, x = np.unravel_index(d.argmax(), d.shape)
    assert abs(y - 23) <= 4 and abs(x - 56) <= 4 and d.max() == pytest.approx(1.0)


def test_lam_report_writes_everything_or_nothing(tmp_path, lr24):
    from PIL import Image

    from attrsr.report.attribution import lam_report

    net = ModuleReLUNet()
    out = tmp_path / "rep"
    info = lam_report(net, lr24, (10, 12, 16), out, title="tiny", steps=4, randomisation=True)
    names = {"sr_window", "zoom", "heatmap", "blend", "kde", "figure", "sr"}
    for k in names:
        with Image.open(info["paths"][k]) as im:
            assert im.size[0] > 0
    with Image.open(info["paths"]["heatmap"]) as im:
        assert im.size == (48, 48)
    saved = json.loads(Path(info["json"]).read_text())
    assert saved["di"] == pytest.approx(info["di"]) and saved["window"] == {"x": 10, "y": 12, "size": 16}
    assert saved["completeness"]["steps"] == 4 and "randomisation_check" in saved
    html = Path(info["html"]).read_text()
    assert "Diffusion Index" in html and "data:image/png;base64," in html and 'src="http' not in html
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    bad = tmp_path / "bad" / "deeper"
    with pytest.raises(AttrsrError):
        lam_report(net, lr24, (40, 40, 16), bad, steps=2)
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_interpret_refuses_guided_backprop_on_a_non_relu_net_before_any_attribution(tmp_path, pan, lr24, hr_image, monkeypatch):
    from types import SimpleNamespace

    import attrsr.report.interpret as rep

    calls = []
    real = rep.attribute
    monkeypatch.setattr(rep, "attribute", lambda *a, **k: calls.append(k.get("method")) or real(*a, **k))
    pair = SimpleNamespace(name="3", lr=lr24, hr=hr_image[:, 80:176, 80:176])
    with pytest.raises(AttrsrError, match="ReLU networks"):
        rep.interpret({"pan": pan}, [pair], tmp_path / "r", windows={"*": [WINDOW]}, methods=["lam", "guided_backprop"],
                      method_options={"lam": {"steps": 2}})
    assert calls == [] and not (tmp_path / "r").exists()


def test_vargrad_is_captums_noise_tunnel_variance():
    """VarGrad = Var over noise samples of the gradient = E[g²] − E[g]², as Captum's NoiseTunnel defines
    it; not SmoothGrad squared (E[g]²). Same seed, same batch → the same noise draws in both."""
    from captum.attr import NoiseTunnel, Saliency

    net = ModuleReLUNet().eval()
    gen = torch.Generator().manual_seed(5)
    lr = torch.rand(3, 12, 12, generator=gen)
    w = Window(6, 6, 8)
    samples, noise, seed = 6, 0.05, 3
    ours = attribute(net, lr, w, method="vargrad", samples=samples, noise=noise, seed=seed, chunk=samples).attribution

    def tunnel(kind: str) -> torch.Tensor:
        x = lr[None].clone().requires_grad_(True)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            a = NoiseTunnel(Saliency(lambda inp: gradient_detector(net(inp), w))).attribute(
                x, nt_type=kind, nt_samples=samples, nt_samples_batch_size=samples, stdevs=noise, abs=False)
        return a[0].detach()

    ref, mean, mean_sq = tunnel("vargrad"), tunnel("smoothgrad"), tunnel("smoothgrad_sq")
    top = float(ref.abs().max())
    assert top > 0
    assert float((ours - ref).abs().max()) <= 1e-5 * top
    assert float((ref - (mean_sq - mean**2)).abs().max()) <= 1e-5 * top
    assert float((ours - mean**2).abs().max()) > 0.1 * top  # SmoothGrad² is a different map
