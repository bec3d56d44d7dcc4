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
from attrsr.attribution.reach import TRUST_R, _probe, measure_radius, reach_of, tail_reach_of

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


# --------------------------------------------------------------------------------------------
# The tail crop: the upsampling tail evaluated only on each window's box


def tiny_pan():
    torch.manual_seed(0)
    return attrsr.models.create("pan", scale=4, nf=12, unf=8, nb=2).eval()


def test_the_tail_crop_gives_the_whole_networks_map():
    net = tiny_pan()
    reach = tail_reach_of(net, 4)
    # PAN ×4's tail: two 3×3 convs at 2× and three at 4× (≤ 1 + ¾ LR px) behind nearest-neighbour
    # upsampling, and the bilinear global residual (1 LR px): 2 LR px.
    assert reach.trusted and reach.radius == 2, reach
    x = _probe(40, seed=7)[0]
    whole = lam(net, x, (60, 90, 16), steps=6, tail_crop=False)
    cut = lam(net, x, (60, 90, 16), steps=6)
    assert whole.params["tail_crop"] is None
    ((x0, y0, x1, y1),) = cut.params["tail_crop"]
    assert (x1 - x0) * (y1 - y0) < 0.25 * 40 * 40  # the tail ran on a fraction of the grid
    a, b = whole.attribution.double().numpy().ravel(), cut.attribution.double().numpy().ravel()
    assert np.corrcoef(a, b)[0, 1] >= TRUST_R
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()  # measured: ~5e-7 (float32 rounding)
    assert abs(whole.di - cut.di) < 1e-4
    np.testing.assert_allclose([cut.objective_input, cut.objective_baseline],
                               [whole.objective_input, whole.objective_baseline], rtol=1e-5)
    torch.testing.assert_close(cut.path_values, whole.path_values, rtol=1e-5, atol=0)


def test_windows_sharing_the_body_get_their_own_tail_boxes():
    net = tiny_pan()
    x = _probe(40, seed=8)[0]
    wins = [(10, 12, 8), (100, 120, 16), (140, 20, 8)]
    shared = lam_windows(net, x, wins, steps=4, chunk=2)
    boxes = shared[0].params["tail_crop"]
    assert len(boxes) == 3 and len({tuple(b) for b in boxes}) == 3
    for w, res in zip(wins, shared):
        alone = lam(net, x, w, steps=4, chunk=2, tail_crop=False)
        a, b = alone.attribution.double(), res.attribution.double()
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_integrated_gradients_takes_the_tail_crop_too():
    from attrsr.attribution import integrated_gradients

    net = tiny_pan()
    x = _probe(32, seed=9)[0]
    whole = integrated_gradients(net, x, (40, 40, 16), steps=5, tail_crop=False)
    cut = integrated_gradients(net, x, (40, 40, 16), steps=5)
    assert cut.params["tail_crop"] is not None
    a, b = whole.attribution.double(), cut.attribution.double()
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


class _SplitToy(torch.nn.Module):
    """A ×2 network with the body/tail split and a tail that ``kind`` makes non-local:
    "global" scales by the feature mean, "position" adds a ramp fixed to the body's grid."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind, self.scale = kind, 2
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.up = torch.nn.Conv2d(8, 12, 3, padding=1)

    def forward_body(self, x):
        return (torch.relu(self.body(x)),)

    def forward_tail(self, body):
        (f,) = body
        if self.kind == "global":
            f = f * f.mean()
        elif self.kind == "position":
            ramp = torch.linspace(0, 1, f.shape[-1], device=f.device)
            f = f * (1 + ramp)
        return torch.nn.functional.pixel_shuffle(self.up(f), 2)

    def forward(self, x):
        return self.forward_tail(self.forward_body(x))


def test_a_tail_with_a_global_operation_is_not_cropped():
    net = _SplitToy("global")
    reach = tail_reach_of(net, 2)
    assert reach.radius is None and "edges" in reach.reason
    res = lam(net, _probe(24, seed=1)[0], (10, 10, 8), steps=2)
    assert res.params["tail_crop"] is None


def test_a_tail_crop_that_changes_the_map_is_not_trusted():
    net = _SplitToy("position")  # local in reach, but a crop moves the ramp
    reach = tail_reach_of(net, 2)
    assert not reach.trusted and reach.radius is None and reach.check_diff > 1e-4, reach


def test_tail_crop_refuses_bad_values_and_networks_without_the_split():
    with pytest.raises(attrsr.errors.AttrsrError, match="tail_crop must be"):
        lam(tiny_pan(), _probe(24)[0], (4, 4, 8), steps=2, tail_crop=-1)
    luma = attrsr.models.create("fsrcnn", scale=2).eval()
    assert attrsr.models.body_and_tail(luma) is None
    assert tail_reach_of(luma, 2).radius is None
    with pytest.raises(attrsr.errors.AttrsrError, match="offers no body/tail split"):
        lam(luma, _probe(24)[0], (4, 4, 8), steps=2, tail_crop=3)


def test_the_tail_crop_still_serves_networks_that_look_at_the_whole_image():
    """RCAN's channel attention refuses the LR crop, but its upsampler is local: the tail crop holds."""
    net = tiny("rcan", n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)
    reach = tail_reach_of(net, 2)
    assert reach.trusted and reach.radius is not None, reach
    x = _probe(40, seed=5)[0]
    whole = lam(net, x, (20, 30, 8), steps=3, tail_crop=False)
    cut = lam(net, x, (20, 30, 8), steps=3)
    assert cut.params["crop"] is None and cut.params["tail_crop"] is not None
    a, b = whole.attribution.double(), cut.attribution.double()
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_the_tail_crop_on_a_padding_network_reaches_into_its_padded_grid():
    """SwinIR pads to its window size at the bottom/right; its tail boxes lie on that padded grid, so
    a window in the image's bottom-right corner still gets the whole network's map."""
    net = tiny("swinir", img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4, num_feat=8, drop_path_rate=0.0)
    x = _probe(23, seed=4)[0, :, :21, :]  # 21×23 LR: padded to 24×24
    win = (46 - 10, 42 - 10, 8)  # ends 2 SR px (1 LR px) before the image's corner
    whole = lam(net, x, win, steps=3, tail_crop=False)
    cut = lam(net, x, win, steps=3)
    ((x0, y0, x1, y1),) = cut.params["tail_crop"]
    assert x1 > 23 and y1 > 21  # the box runs into the padding
    a, b = whole.attribution.double(), cut.attribution.double()
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())


def test_the_tail_crop_on_published_pan_weights_and_a_lam_image():
    """The benchmark's case on real data: PAN ×4 (PANx4_DF2K.pth) on LAM test image 1 → 64×64 LR."""
    from attrsr.images import load_image, modcrop
    from attrsr.resize import downsample
    from conftest import DATA, need

    weights = need(DATA / "weights" / "pan" / "PANx4_DF2K.pth")
    hr = modcrop(load_image(need(DATA / "benchmarks" / "LAM_test_images" / "1.png")), 4)
    net = attrsr.models.load("pan", weights=weights, scale=4)
    lr = downsample(hr[None], 4)[0]
    whole = lam(net, lr, (110, 150, 16), steps=4, tail_crop=False)
    cut = lam(net, lr, (110, 150, 16), steps=4)
    ((x0, y0, x1, y1),) = cut.params["tail_crop"]
    assert (x1 - x0) * (y1 - y0) <= 17 * 17  # 5 LR px (window + the detector's 1-px margin) + 2 × (reach 2 + margin 4)
    a, b = whole.attribution.double(), cut.attribution.double()
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    assert abs(whole.di - cut.di) < 1e-4
