"""LAM's speed-ups give the same maps: the receptive-field crop (``attrsr.attribution.reach``:
measured from gradients, checked against the whole image before it is trusted, refused where a
network looks at the whole image) and several windows sharing each forward pass (``lam_windows``).

Tiny randomly initialised networks keep it fast; their structure is what matters: EDSR-baseline is
convolutions only (reach 2 per residual block + head/tail), RCAN has channel attention (a global
average pool), SwinIR attends within windows whose partition depends on where the image starts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attrsr
from attrsr.attribution import lam, lam_windows
from attrsr.attribution.reach import TRUST_R, _probe, measure_radius, reach_of

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name, **kw):
    torch.manual_seed(0)
    return attrsr.models.create(name, scale=2, **kw).eval()


def test_the_crop_gives_the_whole_images_map_on_a_local_network():
    net = tiny("edsr-baseline", n_resblocks=2, n_feats=16)
    reach = reach_of(net, 2)
    # head conv + 2 blocks × 2 convs + body conv = 6 3×3 convolutions before the upsampler (reach 6),
    # then the ×2 upsampler's conv and the tail conv at SR resolution (one more LR pixel each side)
    assert reach.trusted and reach.radius == 8, reach
    x = _probe(64, seed=5)[0]
    whole = lam(net, x, (20, 90, 8), steps=6, crop=False)
    cut = lam(net, x, (20, 90, 8), steps=6, crop=True)
    x0, y0, x1, y1 = cut.params["crop"]
    assert (x1 - x0) * (y1 - y0) < 0.3 * 64 * 64  # the crop is a fraction of the image
    a, b = whole.attribution.double().numpy().ravel(), cut.attribution.double().numpy().ravel()
    assert np.corrcoef(a, b)[0, 1] >= TRUST_R
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()  # measured: 0 to 1e-7
    assert abs(whole.di - cut.di) < 1e-4 and whole.params["crop"] is None
    np.testing.assert_allclose(cut.objective_baseline, whole.objective_baseline, rtol=1e-5)


def test_a_network_with_channel_attention_gets_no_crop():
    net = tiny("rcan", n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)
    radius, reason = measure_radius(net, 2)
    assert radius is None and "global operation" in reason
    reach = reach_of(net, 2)
    assert reach.radius is None and not reach.trusted
    x = _probe(40, seed=5)[0]
    res = lam(net, x, (20, 20, 8), steps=2, crop=True)
    assert res.params["crop"] is None  # refused: the whole image was evaluated


def test_a_crop_that_changes_the_map_is_not_trusted():
    """SwinIR's attention windows are laid from the image's corner: a crop moves their borders. The
    reach is bounded for one layer, but the check against the whole image finds the difference."""
    net = tiny("swinir", img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, num_feat=8, drop_path_rate=0.0)
    radius, _ = measure_radius(net, 2)
    assert radius is not None  # local in reach …
    reach = reach_of(net, 2)
    assert not reach.trusted and reach.radius is None, reach  # … but not shift-equivariant
    assert reach.check_diff > 1e-4


def test_crop_refuses_a_bad_value():
    net = tiny("edsr-baseline", n_resblocks=1, n_feats=8)
    with pytest.raises(attrsr.errors.AttrsrError, match="crop must be"):
        lam(net, _probe(24)[0], (4, 4, 8), steps=2, crop=-1)


@pytest.mark.parametrize("crop", [False, True])
def test_windows_sharing_each_forward_pass_get_the_maps_of_separate_calls(crop):
    net = tiny("edsr-baseline", n_resblocks=2, n_feats=16)
    x = _probe(64, seed=6)[0]
    wins = [(20, 90, 8), (30, 100, 16), (90, 20, 8)]
    shared = lam_windows(net, x, wins, steps=5, chunk=2, crop=crop)
    for w, res in zip(wins, shared):
        alone = lam(net, x, w, steps=5, chunk=2, crop=False)
        a, b = alone.attribution.double(), res.attribution.double()
        assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())
        assert abs(alone.di - res.di) < 1e-4 and res.window == alone.window
        assert res.objective_baseline == pytest.approx(alone.objective_baseline, rel=1e-6)
    if crop:  # one crop for all: the union of the windows' boxes
        assert shared[0].params["crop"] == shared[1].params["crop"] is not None
