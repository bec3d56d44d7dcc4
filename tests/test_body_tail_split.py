"""The body/tail split (:func:`attrsr.models.body_and_tail`) of every zoo model.

Attribution runs the upsampling tail only on a crop of the body's output, so the split must be
exact: ``forward(x) == forward_tail(forward_body(x))[..., :s·h, :s·w]`` bit for bit, with every body
tensor on x's LR grid (padded at the bottom/right by less than the model's padding multiple) and the
tail returning that padded grid times the scale. Which models offer the split is pinned, so a model
that silently loses it (or a luma wrapper that gains one) fails here.
"""

from __future__ import annotations

import pytest
import torch

import attrsr.models as zoo
from zoo_configs import TINY_LARGE

pytestmark = pytest.mark.usefixtures("one_thread")

# Small configurations (seconds for the whole file); models without size options use their defaults.
SMALL = {
    **TINY_LARGE,
    "pan": dict(nf=8, unf=8, nb=2),
    "imdn": dict(nf=16, num_modules=2),
    "rfdn": dict(nf=16, num_modules=2),
    "fsrcnn": dict(d=8, s=4, m=1),
    "vdsr": dict(num_layers=3, nf=8),
    "swinir": {**TINY_LARGE["swinir"], "window_size": 4, "num_feat": 8},  # window 4: padding runs on 15×17
    "swinir-light": {**TINY_LARGE["swinir-light"], "window_size": 4},
    "rlfn": dict(feature_channels=16, mid_channels=16, n_blocks=2),
    "bsrn": dict(num_feat=16, num_block=2),
    "lapsrn": dict(depth=2, nf=8),
    "hat-s": dict(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4, compress_ratio=4, squeeze_factor=4),
    "hat": dict(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4, compress_ratio=4, squeeze_factor=4),
}

# The multiple each model pads its input to (bottom/right); 1 where it does not pad.
PAD_MULTIPLE = {"rnan": 2, "rnan-t": 2, "swinir": 4, "swinir-light": 4, "hat-s": 4, "hat": 4}

# Model -> the scales at which it offers the split (every registered scale unless listed).
NO_SPLIT = {"srcnn", "fsrcnn", "espcn", "vdsr", "lapsrn"}  # luma wrapper / LapSRN
SPLIT_SCALES = {"rrdbnet": (4,)}  # x2/x1 pixel-unshuffle: the body grid is coarser than x's

# 15x17: odd and non-square (padding on both axes) and large enough for the ESA branches.
H, W = 15, 17

CASES = [(name, s) for name in zoo.names() for s in zoo.spec(name).scales]


def _small(name: str, scale: int, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.create(name, scale=scale, **{**SMALL.get(name, {}), **extra}).eval()
    # Random non-zero values everywhere (zero-initialised non-local W, SAN's gamma, …) so that a
    # tensor routed wrongly between body and tail changes the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _check_split(model: torch.nn.Module, body_fn, tail_fn, scale: int, multiple: int) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        y = model(x)
        body = body_fn(x)
        out = tail_fn(body)
    assert isinstance(body, tuple) and body
    for t in body:
        assert t.shape[0] == 2
        assert H <= t.shape[-2] < H + multiple and W <= t.shape[-1] < W + multiple, tuple(t.shape)
    grid = body[0].shape[-2:]
    assert all(t.shape[-2:] == grid for t in body)
    assert out.shape == (2, 3, scale * grid[0], scale * grid[1])
    assert y.shape == (2, 3, scale * H, scale * W)
    assert torch.equal(y, out[..., : scale * H, : scale * W])


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_split_is_exact_where_offered(name, scale):
    model = _small(name, scale)
    pair = zoo.body_and_tail(model)
    offered = name not in NO_SPLIT and scale in SPLIT_SCALES.get(name, zoo.spec(name).scales)
    assert (pair is not None) == offered
    if pair is not None:
        _check_split(model, *pair, scale, PAD_MULTIPLE.get(name, 1))


def test_models_offering_the_split():
    offering = {name for name in zoo.names() if zoo.body_and_tail(_small(name, max(zoo.spec(name).scales)))}
    assert offering == {
        "pan", "imdn", "rfdn", "carn", "carn-m", "rlfn", "bsrn", "msrresnet", "rrdbnet",
        "edsr", "edsr-baseline", "edsr-t", "rcan", "rcan-t", "rnan", "rnan-t", "san",
        "swinir", "swinir-light", "hat-s", "hat",
    }


def test_swinir_real_world_upsampler_split():
    model = _small("swinir", 4, upsampler="nearest+conv")
    _check_split(model, *zoo.body_and_tail(model), 4, PAD_MULTIPLE["swinir"])


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdbnet_unshuffled_declines_but_composes(scale):
    # The methods exist (the forward is built from them) but the body grid is x's / (4 // scale).
    model = _small("rrdbnet", scale)
    assert zoo.body_and_tail(model) is None
    assert model.offers_body_tail_split is False
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        (feat,) = model.forward_body(x)
        assert feat.shape[-2:] == (-(-H // model.unshuffle), -(-W // model.unshuffle))
        assert torch.equal(model(x), model.forward_tail((feat,))[..., : scale * H, : scale * W])


def test_lapsrn_rgb_offers_no_split():
    # The RGB LapSRN is a plain ContractWrapper (not the luma wrapper) around a network without a split.
    model = _small("lapsrn", 4, num_channels=3)
    assert type(model) is zoo.ContractWrapper
    assert zoo.body_and_tail(model) is None
