"""Self-similarity extractor of the non-local attribution prior: NCC maps against scikit-image,
PoI/SSR masks on images with known repetitions, the four scenarios, texture-less images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.feature import match_template

from attrsr.attribution.selfsim import prior_regions, similarity_maps, templates_grid, to_grey


def _photo(size: int = 40, at=(100, 180)):
    from skimage import data

    img = torch.from_numpy(data.astronaut()[at[0] : at[0] + size, at[1] : at[1] + size]).permute(2, 0, 1).double() / 255
    return img


@pytest.mark.parametrize("patch", [4, 5])
def test_maps_equal_skimage_match_template(patch):
    grey = torch.stack([to_grey(_photo()), to_grey(_photo(at=(300, 60)))])
    maps = similarity_maps(grey, patch)
    corners = templates_grid(40, 40, patch)
    assert maps.shape == (2, len(corners), 40, 40)
    for b in range(2):
        img = grey[b].numpy()
        for k in (0, 7, len(corners) - 1):
            r, c = corners[k]
            ref = np.clip(match_template(img, img[r : r + patch, c : c + patch], pad_input=True), 0, 1)
            np.testing.assert_allclose(maps[b, k].numpy(), ref, atol=1e-10)
    torch.testing.assert_close(similarity_maps(grey[1], patch), maps[1])


def _repeated_texture(rng):
    """A flat grey 40×40 image with one random 5×5 texture stamped at four known places."""
    img = torch.full((40, 40), 0.5, dtype=torch.float64)
    stamp = torch.from_numpy(rng.random((5, 5)))
    places = [(10, 10), (10, 30), (30, 10), (30, 30)]  # top-left corners; centres at +2
    for r, c in places:
        img[r : r + 5, c : c + 5] = stamp
    return img, [(r + 2, c + 2) for r, c in places]


def test_poi_and_ssrs_land_on_the_repetitions():
    img, centres = _repeated_texture(np.random.default_rng(0))
    res = prior_regions(img[None], patch=5, n_ssr=3, scenario=2, threshold=0.5)
    assert bool(res.valid[0])
    found = {tuple(x) for x in res.centres[0].tolist()}
    assert found == set(centres)
    assert torch.allclose(res.weights[0], torch.ones(3, dtype=torch.float64))
    assert int(res.poi[0].sum()) == 25 and res.ssr[0].sum((-2, -1)).tolist() == [25, 25, 25]


def test_scenarios_respect_their_windows_and_flat_images_carry_no_prior():
    photo = _photo()[None]
    rng = np.random.default_rng(0)
    for scenario, inside in ((1, True), (2, False), (3, True), (4, False)):
        res = prior_regions(photo, scenario=scenario, rng=rng, n_ssr=1 if scenario == 1 else 3, threshold=0.0)
        assert bool(res.valid[0]), scenario
        poi = res.centres[0, 0]
        d = (res.centres[0, 1:] - poi).abs().max(1).values
        assert bool((d <= 3).all() & (d > 0).all()) if inside else bool((d > 5).all()), (scenario, d)
    flat = torch.full((1, 3, 40, 40), 0.3, dtype=torch.float64)
    assert not bool(prior_regions(flat).valid[0])


def test_planted_photo_patches_are_found_in_a_real_photo():
    from skimage import data

    background = to_grey(_photo(size=48, at=(250, 250)))
    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1).double() / 255
    stamp = to_grey(cat[:, 100:105, 200:205])
    places = [(10, 10), (5, 35), (35, 25)]  # top-left; (10, 10) is on the template grid
    img = background.clone()
    for r, c in places:
        img[r : r + 5, c : c + 5] = stamp
    res = prior_regions(img[None], patch=5, n_ssr=2, scenario=2, threshold=0.5)
    assert bool(res.valid[0])
    assert {tuple(x) for x in res.centres[0].tolist()} == {(r + 2, c + 2) for r, c in places}
    torch.testing.assert_close(res.weights[0], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-9)


def _prior_setup():
    from attrsr import models
    from attrsr.resize import imresize

    torch.manual_seed(0)
    model = models.create("edsr-baseline", scale=2, n_resblocks=1, n_feats=8).double()
    hr = torch.stack([_photo(size=32, at=(60, 150)), _photo(size=32, at=(220, 300))])
    lr = torch.stack([imresize(x, 0.5) for x in hr]).clamp(0, 1)
    regions = prior_regions(lr, patch=4, n_ssr=2, scenario=2, threshold=0.0)
    return model, lr, regions


@pytest.mark.parametrize("fast", [False, True])
def test_prior_loss_gradient_matches_finite_differences(fast):
    from attrsr.attribution import double_backprop
    from attrsr.attribution.prior import attribution_prior_loss, region_input_gradient

    model, lr, regions = _prior_setup()
    assert bool(regions.valid.all())
    if fast:  # the method's default: the convolutions' double backward of attrsr.attribution.double_backprop
        double_backprop.attach(model)

    def loss_of_model():
        x = lr.clone().requires_grad_(True)
        a = region_input_gradient(model(x), x, regions.poi, 2)
        return attribution_prior_loss(a, regions).mean()

    weight = dict(model.named_parameters())["net.body.0.body.0.weight"]
    (grad,) = torch.autograd.grad(loss_of_model(), weight)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        idx = tuple(int(torch.randint(0, n, (1,), generator=gen)) for n in weight.shape)
        eps = 1e-5
        with torch.no_grad():
            weight[idx] += eps
        up = float(loss_of_model().detach())
        with torch.no_grad():
            weight[idx] -= 2 * eps
        down = float(loss_of_model().detach())
        with torch.no_grad():
            weight[idx] += eps
        fd = (up - down) / (2 * eps)
        assert fd == pytest.approx(float(grad[idx]), rel=1e-5, abs=1e-10)
    assert float(grad.abs().max()) > 0


def test_prior_loss_is_zero_when_s_equals_w_and_for_samples_without_prior():
    from attrsr.attribution.prior import attribution_prior_loss, region_input_gradient

    model, lr, regions = _prior_setup()
    x = lr.clone().requires_grad_(True)
    a = region_input_gradient(model(x), x, regions.poi, 2).detach()
    n = a.abs().sum(1)
    n_poi = (n * regions.poi).flatten(1).sum(1)
    n_ssr = (n[:, None] * regions.ssr).flatten(2).sum(2)
    regions.weights = n_ssr / (n_poi[:, None] + n_ssr)  # the targets equal s
    assert float(attribution_prior_loss(a, regions).abs().max()) < 1e-20
    regions.weights = torch.full_like(regions.weights, 0.5)
    loss = attribution_prior_loss(a, regions)
    assert bool((loss > 0).all())
    regions.valid[0] = False
    assert float(attribution_prior_loss(a, regions)[0]) == 0.0
