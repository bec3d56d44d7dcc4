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
