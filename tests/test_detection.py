"""Architecture, configuration and scale detected from the weights (``load(weights=...)`` without a name).

Round trip for every zoo name in several configurations: random weights -> saved in each container
style -> loaded with no name -> the same architecture and configuration are detected (the rebuilt
model computes the same function on a real photo crop) and the weights load strictly. Then the
scale rules (never guessed), the fast path of attrsr's own exports, and the errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata

import attrsr.models as zoo
from attrsr.errors import AttrsrError
from conftest import WEIGHTS, need

pytestmark = pytest.mark.usefixtures("one_thread")

# (zoo name, scale, config, the name detection must report). Small configurations keep it fast;
# every architecture also has one configuration that differs from its defaults in width/depth.
CASES = [
    ("pan", 4, {}, "pan"),
    ("pan", 2, dict(nf=16, unf=8, nb=2), "pan"),
    ("imdn", 3, dict(nf=16, num_modules=2), "imdn"),
    ("imdn", 4, {}, "imdn"),
    ("rfdn", 2, dict(nf=16, num_modules=2), "rfdn"),
    ("carn", 2, {}, "carn"),
    ("carn", 3, dict(multi_scale=False), "carn"),
    ("carn-m", 4, {}, "carn-m"),
    ("carn-m", 2, dict(multi_scale=False), "carn-m"),
    ("fsrcnn", 3, {}, "fsrcnn"),
    ("fsrcnn", 2, dict(d=32, s=8, m=2), "fsrcnn"),
    ("srcnn", 2, {}, "srcnn"),
    ("espcn", 3, {}, "espcn"),
    ("vdsr", 2, dict(num_layers=5, nf=16), "vdsr"),
    ("edsr", 2, dict(n_resblocks=1, n_feats=256), "edsr"),  # res_scale 0.1 belongs to 256-wide EDSR
    ("edsr-baseline", 3, dict(n_resblocks=2, n_feats=16), "edsr-baseline"),
    ("edsr-t", 4, dict(n_resblocks=1, n_feats=8), "edsr-baseline"),  # edsr-t is the baseline
    ("rcan", 2, dict(n_resgroups=2, n_resblocks=2, n_feats=16, reduction=4), "rcan"),
    ("rcan", 8, dict(n_resgroups=1, n_resblocks=1, n_feats=16, reduction=8), "rcan"),
    ("rcan-t", 3, dict(n_feats=16, reduction=4), "rcan-t"),  # 10 groups x 6 blocks: the thesis's RCAN-T
    ("rnan", 2, dict(n_resgroups=3, n_feats=8), "rnan"),
    ("rnan-t", 4, dict(n_feats=8), "rnan-t"),
    ("san", 2, dict(n_resgroups=2, n_resblocks=1, n_feats=16, reduction=4), "san"),
    ("san", 3, dict(n_resgroups=1, n_resblocks=2, n_feats=16, reduction=4, nl_reduction=4), "san"),
    ("rrdbnet", 4, dict(num_feat=8, num_block=1, num_grow_ch=4), "rrdbnet"),
    ("rrdbnet", 2, dict(num_feat=8, num_block=2, num_grow_ch=8), "rrdbnet"),
    ("rrdbnet", 1, dict(num_feat=8, num_block=1, num_grow_ch=4), "rrdbnet"),
    ("msrresnet", 4, dict(num_feat=8, num_block=2), "msrresnet"),
    ("msrresnet", 3, dict(num_feat=16, num_block=1), "msrresnet"),
    ("swinir", 2, dict(img_size=48, embed_dim=12, depths=(2, 2), num_heads=(2, 3)), "swinir"),
    ("swinir", 3, dict(img_size=64, embed_dim=16, depths=(2,), num_heads=(4,), window_size=4, mlp_ratio=4.0), "swinir"),
    ("swinir", 4, dict(img_size=64, embed_dim=12, depths=(2, 2), num_heads=(2, 2), upsampler="nearest+conv",
                       resi_connection="3conv", num_feat=16), "swinir"),  # real-SR
    ("swinir-light", 4, dict(img_size=64, embed_dim=12, depths=(2,), num_heads=(3,)), "swinir-light"),
    ("swinir-light", 2, dict(img_size=48, embed_dim=12, depths=(1, 2), num_heads=(3, 2)), "swinir-light"),
    ("rlfn", 4, {}, "rlfn"),
    ("rlfn", 3, dict(feature_channels=12, mid_channels=8, n_blocks=2, esa_channels=4), "rlfn"),
    ("bsrn", 4, {}, "bsrn"),
    ("bsrn", 2, dict(num_feat=16, num_block=2), "bsrn"),
    ("lapsrn", 4, {}, "lapsrn"),  # the port's released x4 layout: two pyramid levels
    ("lapsrn", 2, dict(depth=3, nf=16), "lapsrn"),
    ("lapsrn", 8, dict(depth=2, nf=8, num_channels=3), "lapsrn"),  # RGB fork, three levels
    ("hat-s", 4, dict(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4, compress_ratio=4,
                      squeeze_factor=4), "hat-s"),
    ("hat-s", 3, dict(embed_dim=16, depths=(1,), num_heads=(4,), window_size=8, compress_ratio=8,
                      squeeze_factor=8, mlp_ratio=1.5, num_feat=8), "hat-s"),
    ("hat", 2, dict(embed_dim=12, depths=(2,), num_heads=(3,), window_size=4, squeeze_factor=6), "hat"),
]
# Scale is not in these weights (deconvolution stride; bicubic pre-upsampling): given by the caller.
SCALE_NOT_IN_WEIGHTS = {"fsrcnn", "srcnn", "vdsr"}
# Scales whose weights have identical shapes (PAN x2/x3) or multi-scale files: given by the caller.
SCALE_TO_CHOOSE = {("pan", 2), ("pan", 3), ("carn", 2, True), ("carn-m", 4, True)}


def test_every_zoo_name_has_a_round_trip_case():
    assert {c[0] for c in CASES} == set(zoo.names())


@pytest.fixture(scope="module")
def crop() -> torch.Tensor:
    img = skdata.astronaut()[100:116, 200:215].astype(np.float32) / 255.0  # 16x15 (RFDN needs >= 15; 15 is odd)
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous()


def _containers(state):
    from safetensors.torch import save

    return {
        "params.pth": {"params": state},
        "params_ema.pth": {"params_ema": state, "params": {k: torch.zeros_like(v) for k, v in state.items()}},
        "state_dict.pth": {"state_dict": state, "epoch": 3},
        "model.pth": {"model": state},
        "module.pth": {"module." + k: v for k, v in state.items()},
        "plain.safetensors": save({k: v.contiguous() for k, v in state.items()}),
    }


def _user_scale(name, scale, config):
    multi = config.get("multi_scale", True) if name in ("carn", "carn-m") else None
    if name in SCALE_NOT_IN_WEIGHTS or (name, scale) in SCALE_TO_CHOOSE or (name, scale, multi) in SCALE_TO_CHOOSE:
        return scale
    return None


@pytest.mark.parametrize("name,scale,config,detected", CASES, ids=[f"{c[0]}-x{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_round_trip_detects_architecture_and_configuration(name, scale, config, detected, crop, tmp_path):
    torch.manual_seed(0)
    model = zoo.create(name, scale=scale, **config).eval()
    with torch.no_grad():  # give every parameter and buffer a non-default value
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.01)
        want = model(crop)
    state = model.state_dict()
    given = _user_scale(name, scale, config)
    for file, payload in _containers(state).items():
        path = tmp_path / file
        path.write_bytes(payload) if isinstance(payload, bytes) else torch.save(payload, path)
        loaded = zoo.load(weights=path, scale=given)
        assert loaded.zoo_name == detected, f"{file}: {loaded.detection}"
        assert loaded.scale == scale
        got = loaded.state_dict()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state), file
        with torch.no_grad():
            assert torch.equal(loaded(crop), want), f"{file}: detected {loaded.detection}"
    assert "architecture from the key names and shapes" in loaded.detection
    if given is None:  # the scale came from the shapes, and a different one is refused
        with pytest.raises(AttrsrError, match=f"for scale {scale}"):
            zoo.load(weights=state, scale=next(s for s in (2, 3, 4, 8) if s != scale))
    else:
        with pytest.raises(AttrsrError, match="--scale"):
            zoo.load(weights=state)


def test_attrsr_export_takes_the_metadata_fast_path(tmp_path, crop):
    from attrsr.engine.checkpoint import export_safetensors

    model = zoo.create("fsrcnn", scale=3, d=16, s=4, m=1).eval()
    export_safetensors(model.state_dict(), tmp_path / "m.safetensors",
                       {"model": "fsrcnn", "scale": 3, "config": {"d": 16, "s": 4, "m": 1}})
    loaded = zoo.load(weights=tmp_path / "m.safetensors")  # FSRCNN's scale is not in its shapes: metadata says it
    assert loaded.scale == 3 and "attrsr metadata" in loaded.detection and "d=16" in loaded.detection
    with torch.no_grad():
        assert torch.equal(loaded(crop), model(crop))
    with pytest.raises(AttrsrError, match="for scale 3"):
        zoo.load(weights=tmp_path / "m.safetensors", scale=2)


def test_shipped_demo_weights_are_detected_from_metadata():
    from attrsr.models.pretrained import default_info

    info = default_info(2)
    loaded = zoo.load(weights=info["weights"])
    assert loaded.zoo_name == info["model"] and loaded.scale == 2


def test_forced_name_and_builder_options(tmp_path):
    state = zoo.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=16).state_dict()
    forced = zoo.load("edsr-t", weights=state)  # --model forces the name; the configuration is still read
    assert forced.zoo_name == "edsr-t" and forced.scale == 2 and "architecture from --model" in forced.detection
    # Options not in the weights (res_scale) come from the caller.
    scaled = zoo.load(weights=state, res_scale=0.5)
    assert scaled.net.body[0].res_scale == 0.5
    with pytest.raises(AttrsrError, match="accepted: .*n_resblocks"):
        zoo.load(weights=state, n_resblock=3)


def test_single_scale_carn_x2_checkpoint_loads(tmp_path, crop):
    full = zoo.load("carn-m", weights=need(WEIGHTS / "carn" / "carn_m.pth"), scale=2)
    raw = torch.load(WEIGHTS / "carn" / "carn_m.pth", map_location="cpu", weights_only=True)
    single = {k: v for k, v in raw.items() if not k.startswith(("upsample.up3.", "upsample.up4."))}
    torch.save(single, tmp_path / "carn_m_x2.pth")
    loaded = zoo.load(weights=tmp_path / "carn_m_x2.pth")
    assert loaded.zoo_name == "carn-m" and loaded.scale == 2
    assert "upsample.up2 only" in loaded.detection
    with torch.no_grad():
        assert torch.equal(loaded(crop), full(crop))


@pytest.mark.parametrize("rel,name,scale", [
    ("pan/PANx4_DF2K.pth", "pan", 4), ("imdn/IMDN_x2.pth", "imdn", 2), ("imdn/IMDN_x3.pth", "imdn", 3),
    ("imdn/IMDN_x4.pth", "imdn", 4),
])
def test_published_files_detected_with_their_scale(rel, name, scale):
    loaded = zoo.load(weights=need(WEIGHTS / rel))
    assert loaded.zoo_name == name and loaded.scale == scale


@pytest.mark.parametrize("rel,choices", [
    ("pan/PANx2_DF2K.pth", "2, 3"), ("carn/carn_m.pth", "2, 3, 4"), ("fsrcnn/fsrcnn_x2.pth", None),
])
def test_scale_is_never_guessed(rel, choices):
    with pytest.raises(AttrsrError) as info:
        zoo.load(weights=need(WEIGHTS / rel))
    msg = str(info.value)
    assert "--scale" in msg and "\n" not in msg
    if choices:
        assert f"scale {choices}" in msg
    else:
        assert "do not tell their scale" in msg
    with pytest.raises(AttrsrError, match="no scale given"):
        zoo.create("pan", scale=None)


def test_unknown_architecture_names_the_closest_candidates():
    pan = zoo.create("pan", scale=4, nf=8, unf=4, nb=1).state_dict()
    pan["extra_attention.weight"] = torch.zeros(3)
    with pytest.raises(AttrsrError) as info:
        zoo.load(weights=pan)
    msg = str(info.value)
    assert "no architecture of the zoo fits" in msg and "Closest: pan (" in msg and "extra_attention" in msg
    assert "--model NAME" in msg and "\n" not in msg
    with pytest.raises(AttrsrError, match="no architecture of the zoo fits"):
        zoo.load(weights={"encoder.weight": torch.zeros(3, 3)})


def test_metadata_with_an_unknown_model_name_falls_back_to_the_shapes(tmp_path):
    from attrsr.engine.checkpoint import export_safetensors

    model = zoo.create("espcn", scale=3)
    export_safetensors(model.state_dict(), tmp_path / "m.safetensors", {"model": "espcn-v9", "scale": 3})
    loaded = zoo.load(weights=tmp_path / "m.safetensors")
    assert loaded.zoo_name == "espcn" and loaded.scale == 3 and "key names and shapes" in loaded.detection
