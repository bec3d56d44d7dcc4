"""Large zoo architectures: EDSR(-baseline/-T), RCAN(-T), RNAN(-T), SAN, RRDBNet, MSRResNet, SwinIR.

No pretrained weights of these exist on this machine, so compatibility with the published files is
shown by checks that could fail: (1) full-size parameter counts equal published figures (and an
independent layer-by-layer count from the architecture descriptions); (2) samples of the official
state-dict key names and shapes are present; (3) save -> ``attrsr.models.load`` round trips are
strict and bit-identical, and foreign key layouts (BasicSR, older ESRGAN/mmsr, SAN's later release)
load through the checkpoint filters into the same function; (4) forwards on a real photo crop obey
the contract, with mean-shift / bilinear-skip models reducing to the right image when their last
layer is zeroed, and SwinIR padding to the window size exactly like the official test script.
Full-size models are only built on the meta device; every forward uses a tiny config.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

import attrsr.models as zoo
from attrsr.errors import AttrsrError
from attrsr.models._edsr_common import DIV2K_RGB_MEAN
from attrsr.models.san import covariance_pool, sqrtm_newton_schulz
from zoo_configs import TINY_LARGE

pytestmark = pytest.mark.usefixtures("one_thread")

LARGE = ("edsr", "edsr-baseline", "edsr-t", "rcan", "rcan-t", "rnan", "rnan-t", "san",
         "rrdbnet", "msrresnet", "swinir", "swinir-light")

# Tiny configurations for forwards (2 cores, ~90 s for the whole file).
SMALL = TINY_LARGE


@pytest.fixture(scope="module")
def lr_crop() -> torch.Tensor:
    """A 24x24 RGB crop of skimage's astronaut: her right eye (sharp edges and smooth skin)."""
    img = skdata.astronaut()[96:120, 192:216].astype(np.float32) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).contiguous()


@functools.lru_cache(maxsize=None)
def meta_model(name: str, scale: int) -> torch.nn.Module:
    """The full-size model, built without allocating weights (cached: built once per name/scale)."""
    with torch.device("meta"):
        return zoo.create(name, scale=scale)


def n_params(model: torch.nn.Module, exclude: str | None = None) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if exclude is None or exclude not in k)


# ----------------------------------------------------------------------------------------------
# (1) Parameter counts


def _conv(ci: int, co: int, k: int = 3) -> int:
    return ci * co * k * k + co


def _upsampler(scale: int, f: int) -> int:
    return _conv(f, 9 * f) if scale == 3 else int(np.log2(scale)) * _conv(f, 4 * f)


def expected_edsr(scale: int, blocks: int, f: int) -> int:
    return _conv(3, f) + blocks * 2 * _conv(f, f) + _conv(f, f) + _upsampler(scale, f) + _conv(f, 3)


def expected_rcan(scale: int, groups: int, blocks: int, f: int = 64, r: int = 16) -> int:
    rcab = 2 * _conv(f, f) + _conv(f, f // r, 1) + _conv(f // r, f, 1)
    body = groups * (blocks * rcab + _conv(f, f)) + _conv(f, f)
    return _conv(3, f) + body + _upsampler(scale, f) + _conv(f, 3)


def expected_rnan(scale: int, groups: int, f: int = 64) -> int:
    rb = 2 * _conv(f, f)
    # RB1, trunk (2 RB), mask (RB, stride-2 conv, 2 RB, 6x6 transposed conv, RB, 1x1), tail (2 RB)
    module = 9 * rb + _conv(f, f) + (f * f * 36 + f) + _conv(f, f, 1)
    nonlocal_block = 3 * _conv(f, f // 2, 1) + _conv(f // 2, f, 1)
    group = module + _conv(f, f)
    body = 2 * (group + nonlocal_block) + (groups - 2) * group + _conv(f, f)
    return _conv(3, f) + body + _upsampler(scale, f) + _conv(f, 3)


def expected_san(scale: int, groups: int = 20, blocks: int = 10, f: int = 64, r: int = 16) -> int:
    # Paper: G=20 LSRAGs of m=10 residual blocks + SOCA (r=16); RL-NL (k=2) at head and tail.
    # The official model also holds a gamma per group and overall, an unused conv_last and an
    # unused SOCA (r=8) inside the non-local module; its non-local block has f/8 channels.
    soca = lambda red: _conv(f, f // red, 1) + _conv(f // red, f, 1)  # noqa: E731
    lsrag = blocks * 2 * _conv(f, f) + soca(r) + _conv(f, f) + 1
    nonlocal_ca = soca(8) + 3 * _conv(f, f // 8, 1) + _conv(f // 8, f, 1)
    return _conv(3, f) + 1 + groups * lsrag + _conv(f, f) + nonlocal_ca + _upsampler(scale, f) + _conv(f, 3)


def expected_rrdbnet(nb: int = 23, nf: int = 64, gc: int = 32) -> int:
    rdb = sum(_conv(nf + i * gc, gc) for i in range(4)) + _conv(nf + 4 * gc, nf)
    return _conv(3, nf) + nb * 3 * rdb + 4 * _conv(nf, nf) + _conv(nf, 3)


def expected_swinir(scale: int, dim: int, depths: int, layers: int, direct: bool, ws: int = 8, heads: int = 6) -> int:
    block = 4 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (2 * ws - 1) ** 2 * heads
    block += (dim * 2 * dim + 2 * dim) + (2 * dim * dim + dim)  # mlp_ratio 2
    body = layers * (depths * block + _conv(dim, dim)) + 2 * dim + _conv(dim, dim)  # + final norm
    head = _conv(3, dim) + 2 * dim  # conv_first + patch_embed.norm
    if direct:
        return head + body + _conv(dim, 3 * scale * scale)
    return head + body + _conv(dim, 64) + _upsampler(scale, 64) + _conv(64, 3)


# (name, scale, exact count, published figure, tolerance of that figure's rounding, independent count)
# Sources of the published figures:
#  EDSR paper (Lim et al. 2017, Table 1): EDSR 43M, baseline 1.5M (x4).
#  Attribution-prior thesis, Table 4.1 (shared/papers/nonlocal-attribution-prior-thesis.txt, x2):
#    EDSR-B 40.7M, EDSR-T 1.4M, RCAN-B 15.4M, RCAN-T 5.0M, RNAN-B 9.1M, RNAN-T 1.9M (our 1.985M
#    reads as truncated, hence the 0.1M tolerance there).
#  SwinIR README (JingyunLiang/SwinIR, RCAN-vs-SwinIR table, x4): RCAN 15.6M, SwinIR 11.9M.
#  AIM 2019 constrained-SR challenge README: baseline MSRResNet (x4) 1,517,571.
#  ESRGAN RRDBNet (23 blocks, x4; e.g. RealESRGAN_x4plus model cards): 16,697,987.
#  SwinIR paper (Table 3, lightweight SR): 878K / 886K / 897K for x2 / x3 / x4, which count
#    everything except the 24 relative-position bias tables (24 * 225 * 6 = 32,400).
PARAMS = [
    ("edsr", 2, 40_729_603, 40.7e6, 0.05e6, expected_edsr(2, 32, 256)),
    ("edsr", 4, 43_089_923, 43e6, 0.5e6, expected_edsr(4, 32, 256)),
    ("edsr-baseline", 2, 1_369_859, 1.4e6, 0.05e6, expected_edsr(2, 16, 64)),
    ("edsr-baseline", 4, 1_517_571, 1.5e6, 0.05e6, expected_edsr(4, 16, 64)),
    ("edsr-t", 2, 1_369_859, 1.4e6, 0.05e6, expected_edsr(2, 16, 64)),
    ("rcan", 2, 15_444_643, 15.4e6, 0.05e6, expected_rcan(2, 10, 20)),
    ("rcan", 4, 15_592_355, 15.6e6, 0.05e6, expected_rcan(4, 10, 20)),
    ("rcan-t", 2, 5_023_603, 5.0e6, 0.05e6, expected_rcan(2, 10, 6)),
    ("rnan", 2, 9_107_267, 9.1e6, 0.05e6, expected_rnan(2, 10)),
    ("rnan-t", 2, 1_985_347, 1.9e6, 0.1e6, expected_rnan(2, 2)),
    ("san", 4, 15_860_488, None, None, expected_san(4)),
    ("rrdbnet", 4, 16_697_987, 16_697_987, 0, expected_rrdbnet()),
    ("msrresnet", 4, 1_517_571, 1_517_571, 0, expected_edsr(4, 16, 64)),  # same layer sizes as EDSR-baseline
    ("swinir", 2, 11_752_487, None, None, expected_swinir(2, 180, 6, 6, direct=False)),
    ("swinir", 4, 11_900_199, 11.9e6, 0.05e6, expected_swinir(4, 180, 6, 6, direct=False)),
    ("swinir-light", 2, 910_152, None, None, expected_swinir(2, 60, 6, 4, direct=True)),
    ("swinir-light", 3, 918_267, None, None, expected_swinir(3, 60, 6, 4, direct=True)),
    ("swinir-light", 4, 929_628, None, None, expected_swinir(4, 60, 6, 4, direct=True)),
]


@pytest.mark.parametrize("name,scale,exact,published,tol,independent", PARAMS)
def test_parameter_count_matches_published(name, scale, exact, published, tol, independent):
    model = meta_model(name, scale)
    n = n_params(model)
    assert n == exact == independent
    if published is not None:
        assert abs(n - published) <= tol, f"{name} x{scale}: {n:,} vs published {published:,}"


@pytest.mark.parametrize("scale,published_k", [(2, 878), (3, 886), (4, 897)])
def test_swinir_light_count_matches_paper_without_bias_tables(scale, published_k):
    n = n_params(meta_model("swinir-light", scale), exclude="relative_position_bias_table")
    assert round(n / 1000) == published_k


def test_mean_shift_is_not_a_parameter_but_is_in_the_state_dict():
    model = meta_model("edsr-baseline", 4)
    names = {k for k, _ in model.named_parameters()}
    state = model.state_dict()
    assert "sub_mean.weight" not in names and "add_mean.bias" not in names
    assert {"sub_mean.weight", "sub_mean.bias", "add_mean.weight", "add_mean.bias"} <= set(state)
    assert sum(t.numel() for t in state.values()) == 1_517_571 + 24


# ----------------------------------------------------------------------------------------------
# (2) Official key names and shapes

# A sample of each official state dict: key -> shape (read off the official model definitions).
OFFICIAL_KEYS = {
    ("edsr", 4): {  # sanghyun-son/EDSR-PyTorch, edsr_x4-4f62e9ef.pt
        "sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,), "head.0.weight": (256, 3, 3, 3),
        "body.0.body.0.weight": (256, 256, 3, 3), "body.31.body.2.bias": (256,), "body.32.weight": (256, 256, 3, 3),
        "tail.0.0.weight": (1024, 256, 3, 3), "tail.0.2.weight": (1024, 256, 3, 3), "tail.1.weight": (3, 256, 3, 3),
        "add_mean.bias": (3,),
    },
    ("edsr-baseline", 3): {  # edsr_baseline_x3-abf2a44e.pt
        "body.15.body.2.weight": (64, 64, 3, 3), "body.16.bias": (64,), "tail.0.0.weight": (576, 64, 3, 3),
    },
    ("rcan", 4): {  # yulunzhang/RCAN, RCAN_BIX4.pt
        "head.0.weight": (64, 3, 3, 3), "body.0.body.0.body.0.weight": (64, 64, 3, 3),
        "body.0.body.0.body.3.conv_du.0.weight": (4, 64, 1, 1), "body.0.body.0.body.3.conv_du.2.weight": (64, 4, 1, 1),
        "body.9.body.19.body.2.bias": (64,), "body.9.body.20.weight": (64, 64, 3, 3), "body.10.weight": (64, 64, 3, 3),
        "tail.0.2.weight": (256, 64, 3, 3), "tail.1.bias": (3,), "sub_mean.bias": (3,), "add_mean.weight": (3, 3, 1, 1),
    },
    ("rnan", 4): {  # yulunzhang/RNAN, RNAN_SR_F64G10P48BIX4.pt
        "body_nl_low.0.body.0.RA_RB1.0.body.0.weight": (64, 64, 3, 3),
        "body_nl_low.0.body.0.RA_TB.0.body.1.body.2.weight": (64, 64, 3, 3),
        "body_nl_low.0.body.0.RA_MB.0.MB_RB1.0.g.weight": (32, 64, 1, 1),
        "body_nl_low.0.body.0.RA_MB.0.MB_RB1.0.W.weight": (64, 32, 1, 1),
        "body_nl_low.0.body.0.RA_MB.0.MB_RB1.1.body.0.weight": (64, 64, 3, 3),
        "body_nl_low.0.body.0.RA_MB.0.MB_Down.0.weight": (64, 64, 3, 3),
        "body_nl_low.0.body.0.RA_MB.0.MB_RB2.1.body.2.bias": (64,),
        "body_nl_low.0.body.0.RA_MB.0.MB_Up.0.weight": (64, 64, 6, 6),
        "body_nl_low.0.body.0.RA_MB.0.MB_1x1conv.0.weight": (64, 64, 1, 1),
        "body_nl_low.0.body.0.RA_tail.1.body.2.weight": (64, 64, 3, 3),
        "body_nl_low.0.body.1.weight": (64, 64, 3, 3),
        "body.0.body.0.RA_MB.0.MB_RB1.0.body.0.weight": (64, 64, 3, 3),
        "body.7.body.1.bias": (64,), "body.8.weight": (64, 64, 3, 3),
        "body_nl_high.0.body.0.RA_MB.0.MB_RB1.0.theta.weight": (32, 64, 1, 1),
        "tail.0.0.weight": (256, 64, 3, 3), "tail.1.weight": (3, 64, 3, 3), "sub_mean.weight": (3, 3, 1, 1),
    },
    ("san", 4): {  # daitao/SAN, SAN_BI4X.pt (TrainCode/model/san.py)
        "head.0.weight": (64, 3, 3, 3), "gamma": (1,),
        "RG.0.rcab.0.conv_first.0.weight": (64, 64, 3, 3), "RG.19.rcab.9.conv_first.2.bias": (64,),
        "RG.0.soca.conv_du.0.weight": (4, 64, 1, 1), "RG.0.soca.conv_du.2.weight": (64, 4, 1, 1),
        "RG.0.conv_last.weight": (64, 64, 3, 3), "RG.7.gamma": (1,), "conv_last.weight": (64, 64, 3, 3),
        "non_local.non_local.g.0.weight": (8, 64, 1, 1), "non_local.non_local.theta.weight": (8, 64, 1, 1),
        "non_local.non_local.phi.0.bias": (8,), "non_local.non_local.W.weight": (64, 8, 1, 1),
        "non_local.soca.conv_du.0.weight": (8, 64, 1, 1), "tail.0.2.weight": (256, 64, 3, 3),
        "sub_mean.bias": (3,), "add_mean.bias": (3,),
    },
    ("rrdbnet", 4): {  # BasicSR / RRDB_ESRGAN_x4.pth, RealESRGAN_x4plus.pth
        "conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3),
        "body.0.rdb1.conv5.weight": (64, 192, 3, 3), "body.22.rdb3.conv4.bias": (32,),
        "conv_body.weight": (64, 64, 3, 3), "conv_up1.weight": (64, 64, 3, 3), "conv_up2.bias": (64,),
        "conv_hr.weight": (64, 64, 3, 3), "conv_last.weight": (3, 64, 3, 3),
    },
    ("rrdbnet", 2): {"conv_first.weight": (64, 12, 3, 3)},  # RealESRGAN_x2plus: pixel-unshuffled input
    ("msrresnet", 4): {  # BasicSR MSRResNet_x4
        "conv_first.weight": (64, 3, 3, 3), "body.15.conv2.weight": (64, 64, 3, 3),
        "upconv1.weight": (256, 64, 3, 3), "upconv2.weight": (256, 64, 3, 3),
        "conv_hr.weight": (64, 64, 3, 3), "conv_last.bias": (3,),
    },
    ("msrresnet", 3): {"upconv1.weight": (576, 64, 3, 3)},
    ("swinir", 2): {  # 001_classicalSR_DIV2K_s48w8_SwinIR-M_x2.pth
        "conv_first.weight": (180, 3, 3, 3), "patch_embed.norm.weight": (180,),
        "layers.0.residual_group.blocks.0.norm1.weight": (180,),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
        "layers.0.residual_group.blocks.0.attn.qkv.weight": (540, 180),
        "layers.0.residual_group.blocks.0.attn.proj.bias": (180,),
        "layers.5.residual_group.blocks.5.mlp.fc1.weight": (360, 180),
        "layers.5.residual_group.blocks.5.mlp.fc2.weight": (180, 360),
        "layers.5.conv.weight": (180, 180, 3, 3), "norm.bias": (180,), "conv_after_body.weight": (180, 180, 3, 3),
        "conv_before_upsample.0.weight": (64, 180, 3, 3), "upsample.0.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    },
    ("swinir-light", 4): {  # 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth
        "upsample.0.weight": (48, 60, 3, 3), "conv_after_body.bias": (60,),
    },
}

# Keys that the official state dicts do NOT have (buffers that are None or non-persistent there).
ABSENT_KEYS = {
    # SwinIR's derived buffers (relative_position_index, attn_mask) are recomputed, not saved.
    ("swinir", 2): ["layers.0.residual_group.blocks.0.attn_mask", "layers.0.residual_group.blocks.1.attn_mask",
                    "layers.0.residual_group.blocks.0.attn.relative_position_index", "mean", "absolute_pos_embed"],
    ("edsr", 4): ["net.head.0.weight", "mean"],  # ContractWrapper is transparent
}


@pytest.mark.parametrize("name,scale", sorted(OFFICIAL_KEYS))
def test_official_key_names_and_shapes(name, scale):
    state = meta_model(name, scale).state_dict()
    for key, shape in OFFICIAL_KEYS[(name, scale)].items():
        assert key in state, f"{name}: official key {key} missing"
        assert tuple(state[key].shape) == shape, f"{name}: {key} {tuple(state[key].shape)} != {shape}"
    for key in ABSENT_KEYS.get((name, scale), []):
        assert key not in state


def test_official_key_totals():
    # EDSR x4: 2 mean shifts + head + 32 blocks x 2 convs + body conv + 2 upsampler convs + tail conv.
    assert len(meta_model("edsr", 4).state_dict()) == 2 * 2 + 2 + 32 * 4 + 2 + 4 + 2
    # RRDBNet: 23 RRDBs x 3 RDBs x 5 convs + 6 outer convs.
    assert len(meta_model("rrdbnet", 4).state_dict()) == 23 * 3 * 5 * 2 + 6 * 2
    # SwinIR-M x2: 36 blocks x 13 parameter tensors + 6 RSTB convs + conv_first, patch_embed.norm,
    # norm, conv_after_body, conv_before_upsample, upsample.0 and conv_last (2 tensors each). The
    # official file adds 36 position indices and 18 masks (shifted blocks), recomputed here.
    state = meta_model("swinir", 2).state_dict()
    assert len(state) == 36 * 13 + 6 * 2 + 7 * 2


def test_thesis_tiny_variants():
    # RCAN-T keeps 10 groups of 6 RCABs; RNAN-T is the two non-local groups only; EDSR-T = baseline.
    rcan_t = meta_model("rcan-t", 2).state_dict()
    assert "body.9.body.5.body.3.conv_du.0.weight" in rcan_t and "body.9.body.6.weight" in rcan_t
    assert "body.10.weight" in rcan_t and "body.9.body.7.weight" not in rcan_t
    rnan_t = meta_model("rnan-t", 2).state_dict()
    assert "body.0.weight" in rnan_t and not any(k.startswith("body.1.") for k in rnan_t)
    base, tiny = meta_model("edsr-baseline", 2).state_dict(), meta_model("edsr-t", 2).state_dict()
    assert {k: v.shape for k, v in base.items()} == {k: v.shape for k, v in tiny.items()}


# ----------------------------------------------------------------------------------------------
# (3) Strict save -> load round trips and foreign layouts


def _small(name: str, scale: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = zoo.create(name, scale=scale, **SMALL[name]).eval()
    # Random non-zero values everywhere (zero-initialised W of non-local blocks, gamma, …) so that a
    # wrongly routed tensor changes the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


ROUND_TRIP_SCALES = {"rrdbnet": (2, 4), "swinir": (2, 4), "msrresnet": (3,)}
ROUND_TRIP = [(n, s) for n in LARGE for s in ROUND_TRIP_SCALES.get(n, (2,))]


@pytest.mark.parametrize("name,scale", ROUND_TRIP)
def test_save_load_round_trip_is_strict_and_bit_identical(name, scale, tmp_path, lr_crop):
    model = _small(name, scale)
    path = tmp_path / f"{name}_x{scale}.pth"
    torch.save(model.state_dict(), path)
    loaded = zoo.load(name, weights=path, scale=scale, **SMALL[name])
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
    x = lr_crop[..., :12, :10]
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))

    # Strictness: a missing or an extra entry is refused with a readable error.
    state = dict(a)
    dropped = sorted(state)[len(state) // 2]
    state.pop(dropped)
    with pytest.raises(AttrsrError, match="missing"):
        zoo.load(name, weights=state, scale=scale, **SMALL[name])
    state = dict(a, **{"unexpected.weight": torch.zeros(1)})
    with pytest.raises(AttrsrError, match="unexpected"):
        zoo.load(name, weights=state, scale=scale, **SMALL[name])


def test_load_accepts_basicsr_container_for_swinir(tmp_path):
    # The official SwinIR files store their tensors under "params" (KAIR's saver).
    model = _small("swinir-light", 2)
    path = tmp_path / "swinir.pth"
    torch.save({"params": model.state_dict()}, path)
    loaded = zoo.load("swinir-light", weights=path, scale=2, **SMALL["swinir-light"])
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def official_swinir_state(model: torch.nn.Module, patch: int) -> dict[str, torch.Tensor]:
    """``model``'s parameters plus the derived buffers an official SwinIR file trained on
    ``patch``-px LR patches carries, computed here independently of attrsr's helpers: every
    block's (ws²,ws²) relative_position_index and, for shifted (odd) blocks, the
    ((patch/ws)², ws², ws²) attn_mask of the official ``calculate_mask``."""
    state = dict(model.state_dict())
    ws = model.window_size
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous() + (ws - 1)
    index = rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]
    img = torch.zeros(patch, patch)
    shift = ws // 2
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    win = img.view(patch // ws, ws, patch // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    mask = win[:, None, :] - win[:, :, None]
    mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
    for key in [k for k in state if k.endswith("attn.relative_position_bias_table")]:
        block = key[: -len("attn.relative_position_bias_table")]
        state[block + "attn.relative_position_index"] = index
        if int(block.rstrip(".").rsplit(".", 1)[1]) % 2 == 1:
            state[block + "attn_mask"] = mask
    return state


@pytest.mark.parametrize("cfg", [
    dict(SMALL["swinir"]),                                                     # classical (pixelshuffle)
    dict(SMALL["swinir-light"], upsampler="pixelshuffledirect"),               # lightweight
    dict(SMALL["swinir"], upsampler="nearest+conv", resi_connection="3conv"),  # real-SR (x4)
])
def test_swinir_s48_and_s64_checkpoints_load_strictly_into_one_model(cfg, lr_crop, tmp_path):
    # The official files carry attn_mask buffers sized for their training patch (48 or 64 LR px);
    # both load strictly into the same model (built for neither), and compute the same function.
    scale = 4 if cfg.get("upsampler") == "nearest+conv" else 2
    cfg = dict(cfg, window_size=8)
    torch.manual_seed(0)
    model = zoo.create("swinir", scale=scale, **cfg).eval()
    x = lr_crop[..., :20, :17]
    with torch.no_grad():
        want = model(x)
    for patch in (48, 64):
        official = official_swinir_state(model, patch)
        assert official["layers.0.residual_group.blocks.1.attn_mask"].shape == ((patch // 8) ** 2, 64, 64)
        torch.save({"params": official}, tmp_path / f"s{patch}.pth")
        loaded = zoo.load("swinir", weights=tmp_path / f"s{patch}.pth", scale=scale, **cfg)
        detected = zoo.load(weights=tmp_path / f"s{patch}.pth")  # no name, scale or configuration given
        assert detected.scale == scale and "key names and shapes" in detected.detection
        with torch.no_grad():
            assert torch.equal(loaded(x), want) and torch.equal(detected(x), want)
        # Direct nn.Module loading (the official test script's way) is strict too.
        fresh = zoo.create("swinir", scale=scale, **dict(cfg, img_size=patch))
        assert not fresh.load_state_dict(official, strict=True).missing_keys
    # A parameter that is missing is still refused: only the derived buffers are recomputed.
    official = official_swinir_state(model, 64)
    official.pop("layers.0.residual_group.blocks.1.attn.qkv.weight")
    with pytest.raises(AttrsrError, match="missing"):
        zoo.load("swinir", weights=official, scale=scale, **cfg)


def test_wrong_scale_is_refused():
    state = _small("edsr-baseline", 2).state_dict()
    with pytest.raises(AttrsrError, match="weights are for scale 2 .*not scale 3"):
        zoo.load("edsr-baseline", weights=state, scale=3, **SMALL["edsr-baseline"])


def _to_basicsr_edsr(state: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    """Independent renaming of official EDSR keys to BasicSR's (which never saves the mean shift)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] in ("sub_mean", "add_mean"):
            continue
        if k.startswith("head.0."):
            k = "conv_first." + parts[-1]
        elif parts[0] == "body" and parts[1] == str(n_blocks):
            k = "conv_after_body." + parts[-1]
        elif parts[0] == "body":
            k = f"body.{parts[1]}.conv{1 if parts[3] == '0' else 2}.{parts[-1]}"
        elif k.startswith("tail.0."):
            k = f"upsample.{parts[2]}.{parts[-1]}"
        elif k.startswith("tail.1."):
            k = "conv_last." + parts[-1]
        out[k] = v
    return out


def _basicsr_edsr_forward(
    sd: dict[str, torch.Tensor], x: torch.Tensor, n_blocks: int, res_scale: float
) -> torch.Tensor:
    """BasicSR's EDSR forward written from its definition: (x - mean) * 255 … / 255 + mean."""
    def conv(t, name):
        return F.conv2d(t, sd[name + ".weight"], sd[name + ".bias"], padding=1)

    mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1)
    feat = conv((x - mean) * 255.0, "conv_first")
    res = feat
    for i in range(n_blocks):
        res = res + conv(F.relu(conv(res, f"body.{i}.conv1")), f"body.{i}.conv2") * res_scale
    res = conv(res, "conv_after_body") + feat
    idx = sorted(int(k.split(".")[1]) for k in sd if k.startswith("upsample.") and k.endswith(".weight"))
    for i in idx:
        res = conv(res, f"upsample.{i}")
        res = F.pixel_shuffle(res, int(round((res.shape[1] // feat.shape[1]) ** 0.5)))
    return conv(res, "conv_last") / 255.0 + mean


@pytest.mark.parametrize("scale", [3, 4])
def test_edsr_basicsr_layout_loads_into_official_layout(scale, lr_crop):
    cfg = dict(n_resblocks=2, n_feats=8, res_scale=0.1)
    model = _small("edsr", scale)  # SMALL["edsr"] with the default res_scale 0.1
    basicsr = _to_basicsr_edsr(model.state_dict(), n_blocks=2)
    assert "conv_after_body.weight" in basicsr and not any("mean" in k for k in basicsr)
    loaded = zoo.load("edsr", weights=basicsr, scale=scale, **cfg)
    x = lr_crop[..., :10, :12]
    with torch.no_grad():
        ours = model(x)
        assert torch.equal(ours, loaded(x))
        # And the official MeanShift formulation equals BasicSR's own forward on the same weights.
        ref = _basicsr_edsr_forward(basicsr, x, n_blocks=2, res_scale=0.1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)


def test_rcan_basicsr_layout_loads(lr_crop):
    model = _small("rcan", 2)
    n_blocks = SMALL["rcan"]["n_resblocks"]
    basicsr = {}
    for k, v in model.state_dict().items():
        p = k.split(".")
        if p[0] in ("sub_mean", "add_mean"):
            continue
        if p[0] == "head":
            k = "conv_first." + p[-1]
        elif p[0] == "body" and len(p) == 3:
            k = "conv_after_body." + p[-1]
        elif p[0] == "body" and p[3] == str(n_blocks):
            k = f"body.{p[1]}.conv.{p[-1]}"
        elif p[0] == "body":
            layer = {"0": "0", "2": "2", "3": "3"}[p[5]]
            tail = ".".join(p[6:]).replace("conv_du.0", "attention.1").replace("conv_du.2", "attention.3")
            k = f"body.{p[1]}.residual_group.{p[3]}.rcab.{layer}.{tail}"
        elif k.startswith("tail.0."):
            k = f"upsample.{p[2]}.{p[-1]}"
        else:
            k = "conv_last." + p[-1]
        basicsr[k] = v
    assert "body.0.residual_group.1.rcab.3.attention.3.weight" in basicsr
    loaded = zoo.load("rcan", weights=basicsr, scale=2, **SMALL["rcan"])
    with torch.no_grad():
        assert torch.equal(model(lr_crop), loaded(lr_crop))


def test_rrdbnet_older_esrgan_layouts_load(lr_crop):
    model = _small("rrdbnet", 4)
    state = model.state_dict()
    nb = SMALL["rrdbnet"]["num_block"]
    # xinntao/ESRGAN RRDBNet_arch.py
    esrgan = {}
    for k, v in state.items():
        k = k.replace("body.", "RRDB_trunk.", 1) if k.startswith("body.") else k
        k = k.replace(".rdb", ".RDB")
        renames = (("conv_body", "trunk_conv"), ("conv_up1", "upconv1"), ("conv_up2", "upconv2"), ("conv_hr", "HRconv"))
        for new, old in renames:
            if k.startswith(new + "."):
                k = old + k[len(new):]
        esrgan[k] = v
    assert "RRDB_trunk.0.RDB2.conv3.weight" in esrgan and "HRconv.bias" in esrgan
    # The original "old arch" files (what transer_RRDB_models.py converts from).
    old = {}
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}", "conv_up1": "model.3",
           "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    for k, v in state.items():
        p = k.split(".")
        if p[0] == "body":
            k = f"model.1.sub.{p[1]}.RDB{p[2][-1]}.{p[3]}.0.{p[4]}"
        else:
            k = f"{top[p[0]]}.{p[1]}"
        old[k] = v
    x = lr_crop[..., :9, :11]
    with torch.no_grad():
        want = model(x)
        for layout in (esrgan, old):
            loaded = zoo.load("rrdbnet", weights=layout, scale=4, **SMALL["rrdbnet"])
            assert torch.equal(want, loaded(x))


def test_msrresnet_mmsr_layout_loads(lr_crop):
    model = _small("msrresnet", 4)
    mmsr = {
        k.replace("body.", "recon_trunk.", 1).replace("conv_hr.", "HRconv."): v for k, v in model.state_dict().items()
    }
    loaded = zoo.load("msrresnet", weights=mmsr, scale=4, **SMALL["msrresnet"])
    with torch.no_grad():
        assert torch.equal(model(lr_crop), loaded(lr_crop))


def test_san_later_release_without_unused_modules_loads(lr_crop):
    # daitao/SAN code/model/san.py drops RG.*.gamma, conv_last and the non-local's SOCA, and uses
    # an n_feats//4 non-local block; none of the dropped modules is used by the forward pass.
    model = _small("san", 2)
    cfg = dict(SMALL["san"])
    unused = ("non_local.soca.", "conv_last.")
    state = {
        k: v for k, v in model.state_dict().items()
        if not (k.startswith(unused) or (k.startswith("RG.") and k.endswith(".gamma")))
    }
    loaded = zoo.load("san", weights=state, scale=2, **cfg)
    with torch.no_grad():
        assert torch.equal(model(lr_crop), loaded(lr_crop))
    torch.manual_seed(1)
    quarter = zoo.create("san", scale=2, nl_reduction=4, **cfg).state_dict()
    state = {k: v for k, v in quarter.items() if not k.startswith(("non_local.soca.", "conv_last."))}
    zoo.load("san", weights=state, scale=2, nl_reduction=4, **cfg)  # strict: must not raise


# ----------------------------------------------------------------------------------------------
# (4) Forward contract on a real photo crop


@pytest.mark.parametrize("name", LARGE)
def test_forward_contract_on_photo(name, lr_crop):
    scale = 2
    model = _small(name, scale)
    assert model.scale == scale
    with torch.no_grad():
        y = model(lr_crop)
        y_odd = model(lr_crop[..., :11, :13])  # odd, non-square, not a window multiple
    assert y.shape == (1, 3, 48, 48) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert y_odd.shape == (1, 3, 22, 26) and torch.isfinite(y_odd).all()


MEAN_SHIFT_LAST = {  # the layer whose zeroing leaves only the model's global skip path
    "edsr": "tail.1", "rcan": "tail.1", "rnan": "tail.1", "san": "tail.1",
    "swinir": "conv_last", "swinir-light": "upsample.0",
}


@pytest.mark.parametrize("name", sorted(MEAN_SHIFT_LAST))
def test_zeroed_last_layer_outputs_the_training_mean(name, lr_crop):
    # With the reconstruction layer zeroed, [0,255] models must return add_mean(0)/255 and SwinIR
    # 0/img_range + mean: exactly the DIV2K mean colour. Wrong range handling or sign breaks this.
    model = _small(name, 2)
    prefix = "net." if hasattr(model, "net") else ""  # ContractWrapper-ed [0,255] models
    layer = dict(model.named_modules())[prefix + MEAN_SHIFT_LAST[name]]
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        y = model(lr_crop)
    want = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1).expand_as(y)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_msrresnet_with_zeroed_last_conv_is_bilinear_upsampling(scale, lr_crop):
    model = _small("msrresnet", scale)
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
        y = model(lr_crop)
    bilinear = F.interpolate(lr_crop, scale_factor=scale, mode="bilinear", align_corners=False)
    assert torch.equal(y, bilinear)
    # …and that is a sensible image: close to a nearest-neighbour enlargement of the same photo.
    assert (y - lr_crop.repeat_interleave(scale, 2).repeat_interleave(scale, 3)).abs().mean() < 0.05


def test_swinir_pads_like_the_official_test_script(lr_crop):
    # main_test_swinir.py pads by appending flipped copies (= numpy 'symmetric') up to a multiple of
    # the window, runs the network and crops. Our internal padding must give the same pixels.
    model = _small("swinir", 2)
    x = lr_crop[..., :13, :21]
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 3), (0, 3)), mode="symmetric")
    with torch.no_grad():
        y = model(x)
        ref = model(torch.from_numpy(padded))[..., :26, :42]
    assert y.shape == (1, 3, 26, 42)
    assert torch.equal(y, ref)


def test_swinir_mask_for_other_sizes_equals_registered_mask(lr_crop):
    # A 24x24 input on an img_size=16 model uses masks computed on the fly; an img_size=24 model
    # with the same weights uses its registered buffers. Both must agree.
    model = _small("swinir", 2)
    other = zoo.create("swinir", scale=2, **dict(SMALL["swinir"], img_size=24)).eval()
    other.load_state_dict(model.state_dict(), strict=True)  # masks are not saved: nothing to mismatch
    with torch.no_grad():
        torch.testing.assert_close(model(lr_crop), other(lr_crop), rtol=0, atol=1e-6)


def test_swinir_real_sr_variant_builds_and_runs(lr_crop):
    # The real-world SR configuration: nearest+conv reconstruction (x4 only) and 3conv residuals.
    cfg = dict(SMALL["swinir"], upsampler="nearest+conv", resi_connection="3conv")
    torch.manual_seed(0)
    model = zoo.create("swinir", scale=4, **cfg).eval()
    state = model.state_dict()
    assert {"conv_up1.weight", "conv_hr.weight", "layers.1.conv.4.weight", "conv_after_body.2.weight"} <= set(state)
    with torch.no_grad():
        assert model(lr_crop[..., :9, :10]).shape == (1, 3, 36, 40)
    with pytest.raises(ValueError, match="scale 4"):
        zoo.create("swinir", scale=2, **cfg)


def test_rrdbnet_x2_and_x1_pixel_unshuffle_any_size(lr_crop):
    for scale in (1, 2):
        model = _small("rrdbnet", scale)
        with torch.no_grad():
            y = model(lr_crop[..., :7, :10])
        assert y.shape == (1, 3, 7 * scale, 10 * scale)


def test_batch_items_are_independent(lr_crop):
    # SOCA, the non-local blocks and channel attention pool over space, never over the batch.
    x = torch.cat([lr_crop, lr_crop.flip(-1)])
    for name in ("san", "rnan-t", "rcan"):
        model = _small(name, 2)
        with torch.no_grad():
            both = model(x)
            torch.testing.assert_close(both[1:], model(x[1:]), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# SAN's second-order pooling, checked against independent formulations


def test_covariance_pool_equals_official_centring_matrix_form():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    m = 12
    i_hat = torch.eye(m, dtype=torch.float64) / m - torch.full((m, m), 1.0 / m**2, dtype=torch.float64)
    flat = x.reshape(2, 5, m)
    torch.testing.assert_close(covariance_pool(x), flat @ i_hat @ flat.transpose(1, 2))


def test_newton_schulz_sqrt_matches_textbook_iteration_and_eigen_sqrt():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    eig = torch.tensor([0.8, 0.9, 1.0, 1.1, 1.3, 1.5], dtype=torch.float64) * 7.0
    a = (q * eig) @ q.T
    # Higham's coupled iteration on A/tr(A): Y0 = A, Z0 = I, T = (3I - Z Y)/2, Y <- Y T, Z <- T Z;
    # MPN-COV's iterN=5 performs five such updates (the last one needs only Y).
    tr = torch.trace(a)
    y, z, eye = a / tr, torch.eye(6, dtype=torch.float64), torch.eye(6, dtype=torch.float64)
    for _ in range(5):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    textbook = y * tr.sqrt()
    ours = sqrtm_newton_schulz(a.unsqueeze(0), 5)[0]
    torch.testing.assert_close(ours, textbook, rtol=1e-12, atol=1e-12)
    exact = (q * eig.sqrt()) @ q.T
    assert (ours - exact).abs().max() < 1e-3 * exact.abs().max()


def test_registry_names_aliases_and_config_errors():
    assert set(LARGE) <= set(zoo.names())
    assert zoo.spec("esrgan").name == "rrdbnet" and zoo.spec("SwinIR-S").name == "swinir-light"
    with pytest.raises(AttrsrError, match="'n_feat'.*accepted: .*n_feats"):
        zoo.create("rcan", scale=2, n_feat=8)  # typo of n_feats is not silently ignored
    with pytest.raises(AttrsrError, match="does not support scale"):
        zoo.create("swinir-light", scale=8)
