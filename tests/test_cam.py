"""CAM (the ADD supplement's calibrated attribution maps): guided IG from the blurred input.

Checked against the reference implementation of Guided IG (PyPI ``saliency``) on a real network, and
against properties of the algorithm: with every element moving (fraction 1) it is the left-Riemann
integrated gradients of the same path; every step lands on its target L1 distance; completeness
tightens with more steps; a batch gives each image its own map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrsr import models
from attrsr.attribution import attribute
from attrsr.attribution.cam import cam_saliency, guided_path_attribution, make_element_path
from attrsr.attribution.objectives import Window, image_detector, make_objective
from attrsr.attribution.paths import BlurPath
from attrsr.errors import AttrsrError
from attrsr.images import load_image
from attrsr.resize import imresize
from conftest import LAM_IMAGES, need

pytestmark = pytest.mark.usefixtures("one_thread")


def _lr(size: int = 20, scale: int = 4) -> torch.Tensor:
    hr = load_image(need(LAM_IMAGES / "1.png"))
    return imresize(hr, 1 / scale)[:, 8 : 8 + size, 8 : 8 + size].clamp(0, 1).contiguous()


def _tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=8).eval()


def _photo_lr(size: int = 24) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(data.astronaut()[100 : 100 + 2 * size, 180 : 180 + 2 * size]).permute(2, 0, 1).float() / 255
    return imresize(img, 0.5).clamp(0, 1).contiguous()


def _grad_fn(model, objective):
    def run(points):
        x = points.clone().requires_grad_(True)
        d = objective(model(x))
        (g,) = torch.autograd.grad(d.sum(), x)
        return d.detach(), torch.nan_to_num(g, nan=0.0)

    return run


@pytest.mark.slow
def test_linear_path_equals_the_reference_guided_ig(pan):
    saliency = pytest.importorskip("saliency.core")
    lr = _lr()
    window = Window(24, 24, 16)
    objective = make_objective("detector", window)
    ours = attribute(pan, lr, window, method="cam", path="linear", steps=8, fraction=0.25, max_dist=0.1, channels_last=False)

    baseline = make_element_path(lr[None], "linear").baseline[0].float().numpy()

    def call_model(batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(batch), dtype=torch.float32).requires_grad_(True)
        with torch.enable_grad():
            d = objective(pan(x))
            (g,) = torch.autograd.grad(d.sum(), x)
        return {saliency.INPUT_OUTPUT_GRADIENTS: torch.nan_to_num(g, nan=0.0).numpy()}

    # saliency 0.2.1 still passes numpy's removed ``interpolation=`` keyword to np.quantile.
    quantile = np.quantile
    np.quantile = lambda a, q, interpolation=None, **kw: quantile(a, q, method=interpolation or "linear", **kw)
    try:
        for p in pan.parameters():
            p.requires_grad_(False)
        ref = saliency.GuidedIG().GetMask(lr.numpy(), call_model, x_baseline=baseline, x_steps=8, fraction=0.25, max_dist=0.1)
    finally:
        np.quantile = quantile
        for p in pan.parameters():
            p.requires_grad_(True)
    diff = np.abs(ours.attribution.double().numpy() - ref).max()
    assert diff <= 1e-4 * np.abs(ref).max(), diff / np.abs(ref).max()
    assert np.abs(ref).max() > 0


@pytest.mark.parametrize("path", ["blur", "linear"])
def test_moving_every_element_is_left_riemann_ig_on_the_same_path(path):
    model, lr, k = _tiny_model(), _photo_lr(), 6
    x = lr[None]
    objective = image_detector
    trajectory = make_element_path(x, path, resolution=k)
    attr, _ = guided_path_attribution(_grad_fn(model, objective), trajectory, steps=k, fraction=1.0, max_dist=0.0)
    if path == "blur":
        points = BlurPath(lr, sigma=1.2, steps=k).all().double()  # LAM's own path: same σ levels
    else:
        alphas = torch.arange(k + 1, dtype=torch.float64).view(-1, 1, 1, 1) / k
        points = trajectory.baseline[0] + alphas * (lr.double() - trajectory.baseline[0])
    expected = torch.zeros_like(lr, dtype=torch.float64)
    for i in range(k):
        _, g = _grad_fn(model, objective)(points[i : i + 1].float())
        expected += g[0].double() * (points[i + 1] - points[i])
    torch.testing.assert_close(attr[0], expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max()))


@pytest.mark.parametrize("path", ["blur", "linear"])
def test_every_step_lands_on_its_target_distance(path):
    model, x, k = _tiny_model(), _photo_lr()[None], 10
    trajectory = make_element_path(x, path)
    total = float(trajectory.weight.sum())
    seen = {}

    def record(i, alpha):
        seen[i] = (float((trajectory.weight * (1 - alpha)).sum()), alpha.clone())

    guided_path_attribution(_grad_fn(model, image_detector), trajectory, steps=k, fraction=0.1, max_dist=0.2, on_step=record)
    assert sorted(seen) == list(range(1, k + 1))
    for i, (distance, alpha) in seen.items():
        assert distance == pytest.approx(total * (1 - i / k), rel=1e-9, abs=1e-9 * total)
        assert float(alpha.min()) >= max(i / k - 0.2, 0) - 1e-12 and float(alpha.max()) <= min(i / k + 0.2, 1) + 1e-12
    # guided, not straight: half-way, elements sit at different positions of the band
    assert float(seen[k // 2][1].std()) > 0.05


def test_completeness_tightens_with_more_steps():
    model, lr = _tiny_model(1), _photo_lr()
    errors = [attribute(model, lr, None, method="cam", steps=k).relative_completeness_error for k in (5, 40)]
    assert errors[1] < 0.5 * errors[0], errors


def test_whole_image_cam_and_the_batched_saliency():
    model = _tiny_model(2)
    a, b = _photo_lr(), _photo_lr().flip(-1).contiguous()
    single = attribute(model, a, None, method="cam", steps=8)
    assert single.window is None and single.summary()["window"] is None
    assert single.saliency.shape == a.shape[-2:] and float(single.saliency.max()) == 1.0
    assert single.summary()["completeness"]["steps"] == 8
    batch = cam_saliency(model, torch.stack([a, b]), steps=8)
    torch.testing.assert_close(batch[0], single.saliency, rtol=0, atol=1e-4)
    alone_b = cam_saliency(model, b[None], steps=8)[0]
    torch.testing.assert_close(batch[1], alone_b, rtol=0, atol=1e-4)
    assert (batch[0] - batch[1]).abs().max() > 0.1  # two images, two maps


def test_bad_options_are_one_clear_error():
    model, lr = _tiny_model(), _photo_lr()
    with pytest.raises(AttrsrError, match="unknown CAM path 'curved'"):
        attribute(model, lr, (4, 4, 8), method="cam", path="curved")
    with pytest.raises(AttrsrError, match=r"fraction must be in \(0, 1\]"):
        attribute(model, lr, (4, 4, 8), method="cam", fraction=0)
    with pytest.raises(AttrsrError, match="does not take option"):
        attribute(model, lr, (4, 4, 8), method="cam", noise=0.1)
