"""Light zoo architectures: PAN, IMDN, RFDN, CARN/CARN-M, FSRCNN, SRCNN, ESPCN, VDSR, RLFN, BSRN, LapSRN.

Checks the I/O contract on every entry, strict loading of the real published checkpoints with the
parameter counts of ``shared/data/README.md``, and, on a real Set5 image, that each pretrained model
clearly beats MATLAB-bicubic upscaling (proving the weights are wired correctly); PAN x4 must also
reproduce the authors' own test log for that image.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import attrsr.models as zoo
from attrsr.errors import AttrsrError
from attrsr.images import load_image
from attrsr.resize import imresize

from conftest import DATA, SET5, WEIGHTS  # noqa: E402  (one definition of the data folder: ATTRSR_DATA="" is unset)

LIGHT = ("pan", "imdn", "rfdn", "carn", "carn-m", "fsrcnn", "srcnn", "espcn", "vdsr", "rlfn", "bsrn")

# (name, scale, file, parameter count listed in shared/data/README.md)
PRETRAINED = [
    ("pan", 2, "pan/PANx2_DF2K.pth", 261_403),
    ("pan", 3, "pan/PANx3_DF2K.pth", 261_403),
    ("pan", 4, "pan/PANx4_DF2K.pth", 272_419),
    ("imdn", 2, "imdn/IMDN_x2.pth", 694_404),
    ("imdn", 3, "imdn/IMDN_x3.pth", 703_059),
    ("imdn", 4, "imdn/IMDN_x4.pth", 715_176),
    ("carn-m", 2, "carn/carn_m.pth", 414_811),
    ("carn-m", 3, "carn/carn_m.pth", 414_811),
    ("carn-m", 4, "carn/carn_m.pth", 414_811),
    ("fsrcnn", 2, "fsrcnn/fsrcnn_x2.pth", 12_809),
    ("fsrcnn", 3, "fsrcnn/fsrcnn_x3.pth", 12_809),
    ("fsrcnn", 4, "fsrcnn/fsrcnn_x4.pth", 12_809),
]


def _weights(rel: str) -> Path:
    path = WEIGHTS / rel
    if not path.is_file():
        pytest.skip(f"real checkpoint {path} not available (set ATTRSR_DATA)")
    return path


def _n_params(model: torch.nn.Module) -> int:
    # Count the state dict, not .parameters(): CARN's frozen mean shift is part of the checkpoint.
    return sum(t.numel() for t in model.state_dict().values())


# ----------------------------------------------------------------------------------------------
# Contract (no data needed)


def test_all_light_models_registered():
    assert set(LIGHT) <= set(zoo.names())
    assert zoo.spec("carn_m").name == "carn-m"


@pytest.mark.parametrize("name", LIGHT)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_contract_shape_and_scale(name, scale):
    torch.manual_seed(0)
    model = zoo.create(name, scale=scale).eval()
    assert model.scale == scale
    # 15x17: odd, non-square, and just large enough for RFDN's strided ESA branch.
    x = torch.rand(2, 3, 15, 17)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 15 * scale, 17 * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # Batch items are independent (no cross-batch statistics anywhere).
    with torch.no_grad():
        y1 = model(x[1:])
    torch.testing.assert_close(y1, y[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", LIGHT)
def test_state_dict_round_trip_without_wrapper_prefix(name):
    a = zoo.create(name, scale=3)
    keys = list(a.state_dict())
    assert keys and not any(k.startswith("net.") for k in keys)
    torch.manual_seed(1)
    b = zoo.create(name, scale=3)
    zoo.load_weights(b, a.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    ("name", "scale", "count"),
    [
        ("rfdn", 4, 433_448),  # the released nf=50, 4-block network (AIM 2020 entry: 0.433M)
        ("carn", 4, 1_591_963),  # paper: 1,592K (multi-scale)
        ("srcnn", 3, 57_281),  # 9-5-5
        ("vdsr", 3, 664_704),  # 20 layers, no bias
        ("espcn", 3, 22_729),
        ("rlfn", 4, 317_218),  # the released NTIRE 2022 model; its README: 0.317M
        ("bsrn", 4, 352_400),  # paper: 352K
    ],
)
def test_parameter_counts_without_public_weights(name, scale, count):
    assert _n_params(zoo.create(name, scale=scale)) == count


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _bsconv(cin: int, cout: int) -> int:  # 1x1 pointwise (no bias) + 3x3 depthwise (bias)
    return cin * cout + cout * 9 + cout


def test_rlfn_and_bsrn_counts_from_the_layer_lists():
    # Independent layer-by-layer counts from the papers' descriptions, for other configurations too.
    def rlfn(f, m, blocks, scale, esa=16):
        block = _conv(f, m, 3) + _conv(m, m, 3) + _conv(m, f, 3) + _conv(f, f, 1)
        block += _conv(f, esa, 1) + _conv(esa, esa, 1) + 2 * _conv(esa, esa, 3) + _conv(esa, f, 1)
        return _conv(3, f, 3) + blocks * block + _conv(f, f, 3) + _conv(f, 3 * scale**2, 3)

    def bsrn(f, blocks, scale):
        q = f // 4
        esa = _conv(f, q, 1) + _conv(q, q, 1) + 4 * _bsconv(q, q) + _conv(q, f, 1)
        cca = _conv(f, f // 16, 1) + _conv(f // 16, f, 1)
        block = 3 * (_conv(f, f // 2, 1) + _bsconv(f, f)) + _bsconv(f, f // 2) + _conv(2 * f, f, 1) + esa + cca
        return _bsconv(12, f) + blocks * block + _conv(f * blocks, f, 1) + _bsconv(f, f) + _conv(f, 3 * scale**2, 3)

    assert rlfn(46, 48, 4, 4) == 317_218
    assert _n_params(zoo.create("rlfn", scale=4, feature_channels=52, mid_channels=52, n_blocks=6)) == rlfn(52, 52, 6, 4)
    assert _n_params(zoo.create("rlfn", scale=2, feature_channels=48, mid_channels=48, n_blocks=6)) == rlfn(48, 48, 6, 2)
    assert bsrn(64, 8, 4) == 352_400
    for scale in (2, 3):
        assert _n_params(zoo.create("bsrn", scale=scale)) == bsrn(64, 8, scale)
    assert _n_params(zoo.create("bsrn", scale=4, num_feat=48, num_block=5)) == bsrn(48, 5, 4)


def test_rlfn_and_bsrn_official_key_names():
    rlfn = zoo.create("rlfn", scale=4).state_dict()
    for key, shp in {"conv_1.weight": (46, 3, 3, 3), "block_4.c1_r.weight": (48, 46, 3, 3), "block_1.c3_r.bias": (46,),
                     "block_2.c5.weight": (46, 46, 1, 1), "block_3.esa.conv2.weight": (16, 16, 3, 3),
                     "block_1.esa.conv4.weight": (46, 16, 1, 1), "conv_2.weight": (46, 46, 3, 3),
                     "upsampler.0.weight": (48, 46, 3, 3)}.items():
        assert tuple(rlfn[key].shape) == shp, key
    assert not any("conv_max" in k or "conv3_" in k for k in rlfn)  # RLFN's ESA drops them
    bsrn = zoo.create("bsrn", scale=4).state_dict()
    for key, shp in {"fea_conv.pw.weight": (64, 12, 1, 1), "fea_conv.dw.weight": (64, 1, 3, 3),
                     "B8.c1_d.weight": (32, 64, 1, 1), "B1.c4.pw.weight": (32, 64, 1, 1), "B3.c5.weight": (64, 128, 1, 1),
                     "B2.esa.conv_max.dw.bias": (16,), "B5.esa.conv2.pw.weight": (16, 16, 1, 1),
                     "B1.cca.conv_du.0.weight": (4, 64, 1, 1), "c1.weight": (64, 512, 1, 1), "c2.dw.weight": (64, 1, 3, 3),
                     "upsampler.upsampleOneStep.0.weight": (48, 64, 3, 3)}.items():
        assert tuple(bsrn[key].shape) == shp, key
    assert "fea_conv.pw.bias" not in bsrn  # the pointwise half of a BSConvU has no bias


def test_rlfn_works_in_0_255_inside():
    model = zoo.create("rlfn", scale=2).eval()
    with torch.no_grad():
        model.net.upsampler[0].weight.zero_()
        model.net.upsampler[0].bias.fill_(51.0)  # 51/255 = 0.2 outside
        y = model(torch.rand(1, 3, 16, 16))
    torch.testing.assert_close(y, torch.full_like(y, 0.2))


def test_rfdn_works_in_0_255_inside():
    """RFDN's inner net sees [0,255]: a constant-bias output layer shows up divided by 255 outside."""
    model = zoo.create("rfdn", scale=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.net.upsampler[0].bias.fill_(51.0)
        y = model(torch.rand(1, 3, 16, 16))
    torch.testing.assert_close(y, torch.full_like(y, 0.2))


def test_luma_wrapper_with_zero_residual_is_bicubic():
    """VDSR with a zeroed last layer returns its input, so the whole RGB pipeline (YCbCr, bicubic
    Y and CbCr, back to RGB) must equal MATLAB-bicubic upscaling of the RGB image."""
    model = zoo.create("vdsr", scale=3).eval()
    with torch.no_grad():
        model.net.output.weight.zero_()
    x = torch.rand(1, 3, 12, 10, dtype=torch.float32)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, imresize(x, scale=3), rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", ["fsrcnn", "espcn", "srcnn"])
def test_luma_models_are_differentiable_and_leave_chroma_to_bicubic(name):
    from attrsr.images import rgb2ycbcr

    torch.manual_seed(0)
    model = zoo.create(name, scale=2).eval()
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    y = model(x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Only Y is learned: Cb/Cr of the output are bicubic Cb/Cr of the input.
    with torch.no_grad():
        cbcr_out = rgb2ycbcr(y)[:, 1:]
        cbcr_ref = imresize(rgb2ycbcr(x)[:, 1:], scale=2)
    torch.testing.assert_close(cbcr_out, cbcr_ref, rtol=0, atol=2e-5)


def test_carn_switches_upsampler_with_scale():
    model = zoo.create("carn-m", scale=2).eval()
    assert {"up2", "up3", "up4"} <= {n for n, _ in model.upsample.named_children()}
    single = zoo.create("carn-m", scale=3, multi_scale=False)
    assert [n for n, _ in single.upsample.named_children()] == ["up3"]


# ----------------------------------------------------------------------------------------------
# Real checkpoints


@pytest.mark.parametrize(("name", "scale", "rel", "count"), PRETRAINED)
def test_real_checkpoint_loads_strictly(name, scale, rel, count):
    path = _weights(rel)
    # weights_only=True reads every one of these legacy CUDA pickles (no allow_pickle needed).
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert sum(t.numel() for t in raw.values()) == count
    model = zoo.load(name, weights=path, scale=scale)
    assert model.scale == scale and not model.training
    assert _n_params(model) == count
    state = model.state_dict()
    for key, tensor in raw.items():
        key = key.removeprefix("module.")
        assert torch.equal(state[key], tensor.float()), key


@pytest.mark.parametrize(("name", "rel", "wrong_scale"), [("pan", "pan/PANx4_DF2K.pth", 2), ("imdn", "imdn/IMDN_x2.pth", 4)])
def test_real_checkpoint_at_wrong_scale_is_refused(name, rel, wrong_scale):
    # The upsampler's shapes tell the scale: a different --scale is named as the problem.
    with pytest.raises(AttrsrError, match=f"weights are for scale {6 - wrong_scale} .*not scale {wrong_scale}"):
        zoo.load(name, weights=_weights(rel), scale=wrong_scale)


def _set5(name: str, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    hr_path = SET5 / "HR" / f"{name}.png"
    lr_path = SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"
    if not (hr_path.is_file() and lr_path.is_file()):
        pytest.skip("Set5 benchmark images not available (set ATTRSR_DATA)")
    lr = load_image(lr_path)
    hr = load_image(hr_path)
    h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
    return lr[None], hr[None, :, :h, :w]


@functools.lru_cache(maxsize=None)
def _load_pretrained(name: str, rel: str, scale: int) -> torch.nn.Module:
    return zoo.load(name, weights=_weights(rel), scale=scale)


@functools.lru_cache(maxsize=None)
def _sr(name: str, rel: str, image: str, scale: int) -> torch.Tensor:
    """SR of one Set5 image, cached: several tests look at the same outputs."""
    lr, _ = _set5(image, scale)
    with torch.no_grad():
        return _load_pretrained(name, rel, scale)(lr)


def _u8(x: torch.Tensor) -> np.ndarray:
    return np.round(x.detach().clamp(0, 1)[0].permute(1, 2, 0).double().numpy() * 255.0)


def _psnr(a: np.ndarray, b: np.ndarray, border: int) -> float:
    a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def _y(rgb8: np.ndarray) -> np.ndarray:
    return 16.0 + rgb8 @ np.array([65.481, 128.553, 24.966]) / 255.0


# Measured on Set5 "baby" x4 (RGB PSNR, border 4): bicubic 30.37; PAN and IMDN 32.27, CARN-M 32.14,
# FSRCNN 31.52; PAN with random weights is 4 dB *below* bicubic.
@pytest.mark.parametrize(
    ("name", "rel", "margin"),
    [
        ("pan", "pan/PANx4_DF2K.pth", 1.5),
        ("imdn", "imdn/IMDN_x4.pth", 1.5),
        ("carn-m", "carn/carn_m.pth", 1.3),
        ("fsrcnn", "fsrcnn/fsrcnn_x4.pth", 0.8),
    ],
)
def test_pretrained_beats_bicubic_on_real_image(name, rel, margin):
    scale = 4
    lr, hr = _set5("baby", scale)
    sr = _sr(name, rel, "baby", scale)
    bicubic = imresize(lr, scale=scale)
    ref = _u8(hr)
    gain = _psnr(_u8(sr), ref, scale) - _psnr(_u8(bicubic), ref, scale)
    assert gain > margin, f"{name}: only {gain:.2f} dB over bicubic"


def test_pan_x4_reproduces_authors_log():
    """The authors' log gives PSNR_Y per image; our PAN must match it, not just be plausible."""
    log = _weights("pan/test_PANx4_DF2K.log")
    match = re.search(r"INFO: baby\s+- PSNR: [\d.]+ dB; SSIM: [\d.]+; PSNR_Y: ([\d.]+) dB", log.read_text())
    assert match, "baby not found in the PAN x4 log"
    expected = float(match.group(1))
    _, hr = _set5("baby", 4)
    sr = _sr("pan", "pan/PANx4_DF2K.pth", "baby", 4)
    got = _psnr(_y(_u8(sr)), _y(_u8(hr)), 4)
    assert got == pytest.approx(expected, abs=2e-3)


# Set5 x4 Y-PSNR that shared/data/README.md reports from an independent pipeline.
@pytest.mark.parametrize(("name", "rel", "expected"), [("imdn", "imdn/IMDN_x4.pth", 32.210), ("carn-m", "carn/carn_m.pth", 31.883)])
def test_set5_x4_matches_independent_measurement(name, rel, expected):
    values = []
    for image in ("baby", "bird", "butterfly", "head", "woman"):
        _, hr = _set5(image, 4)
        sr = _sr(name, rel, image, 4)
        values.append(_psnr(_y(_u8(sr)), _y(_u8(hr)), 4))
    assert float(np.mean(values)) == pytest.approx(expected, abs=3e-3)


# ----------------------------------------------------------------------------------------------
# Checkpoint containers, pickles and errors (synthetic checkpoints of a tiny model)


def _espcn_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return zoo.create("espcn", scale=2).state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"params": s},
        lambda s: {"params_ema": s, "params": {k: torch.zeros_like(v) for k, v in s.items()}},  # EMA preferred
        lambda s: {"state_dict": s, "epoch": 7, "optimizer": {"lr": 1e-4}},
        lambda s: {"model": s},
        lambda s: {"model": {"state_dict": {"module." + k: v for k, v in s.items()}}},
        lambda s: {"module." + k: v for k, v in s.items()},
    ],
    ids=["plain", "params", "params_ema", "state_dict", "model", "nested-module", "module"],
)
def test_checkpoint_containers_and_module_prefix(tmp_path, wrap):
    state = _espcn_state()
    torch.save(wrap(state), tmp_path / "c.pth")
    loaded = zoo.load("espcn", weights=tmp_path / "c.pth", scale=2).state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_safetensors_checkpoint(tmp_path):
    from safetensors.torch import save_file

    state = _espcn_state()
    save_file(state, tmp_path / "c.safetensors")
    loaded = zoo.load("espcn", weights=tmp_path / "c.safetensors", scale=2).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_legacy_pickle_needs_the_explicit_flag(tmp_path):
    # A whole pickled module (as VDSR's public file) cannot load with weights_only=True.
    model = zoo.create("espcn", scale=2)
    torch.save(model, tmp_path / "whole.pth")
    with pytest.raises(AttrsrError, match="allow-pickle"):
        zoo.load("espcn", weights=tmp_path / "whole.pth", scale=2)
    loaded = zoo.load("espcn", weights=tmp_path / "whole.pth", scale=2, allow_pickle=True).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_bad_checkpoint_files_give_one_readable_error(tmp_path):
    state = _espcn_state()
    with pytest.raises(AttrsrError, match=r"is a folder.*c\.pth"):
        torch.save(state, tmp_path / "c.pth")
        zoo.load("espcn", weights=tmp_path, scale=2)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(AttrsrError, match=r"junk\.pth: cannot read checkpoint.*\.pth/\.pt or \.safetensors"):
        zoo.load("espcn", weights=tmp_path / "junk.pth", scale=2)
    with pytest.raises(AttrsrError, match=r"c\.pth: these espcn weights are for scale 2 .*not scale 5"):
        zoo.load("espcn", weights=tmp_path / "c.pth", scale=5)
    with pytest.raises(AttrsrError, match=r"c\.pth: model 'srcnn' does not support scale 5"):
        torch.save(zoo.create("srcnn", scale=2).state_dict(), tmp_path / "c.pth")
        zoo.load(weights=tmp_path / "c.pth", scale=5)
    # Missing, unexpected and mis-shaped entries together: one message that lists all three.
    bad = dict(state)
    first = next(iter(bad))
    bad[first] = bad[first][:1]
    bad.pop(list(bad)[-1])
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(AttrsrError) as info:
        zoo.load("espcn", weights=bad, scale=2)
    msg = str(info.value)
    assert "\n" not in msg and "1 missing" in msg and "1 unexpected" in msg and "1 shape mismatch" in msg


def _rlfn_as_released(sd: dict, x: torch.Tensor, scale: int, n_blocks: int) -> torch.Tensor:
    """RLFN's forward written from the release's ``block.py``/``rlfn_ntire.py``, on its state dict."""
    import torch.nn.functional as F

    def conv(t, key, **kw):
        w = sd[key + ".weight"]
        return F.conv2d(t, w, sd[key + ".bias"], padding=kw.pop("padding", w.shape[-1] // 2), **kw)

    x = x * 255.0  # test_demo.py: img_L * 255.
    fea = out = conv(x, "conv_1")
    for i in range(1, n_blocks + 1):
        p = f"block_{i}."
        o = F.leaky_relu(conv(out, p + "c1_r"), 0.05)
        o = F.leaky_relu(conv(o, p + "c2_r"), 0.05)
        o = F.leaky_relu(conv(o, p + "c3_r"), 0.05)
        o = conv(o + out, p + "c5")
        c1_ = conv(o, p + "esa.conv1")
        c3 = conv(F.max_pool2d(conv(c1_, p + "esa.conv2", stride=2, padding=0), kernel_size=7, stride=3), p + "esa.conv3")
        c3 = F.interpolate(c3, (o.shape[2], o.shape[3]), mode="bilinear", align_corners=False)
        out = o * torch.sigmoid(conv(c3 + conv(c1_, p + "esa.conv_f"), p + "esa.conv4"))
    return F.pixel_shuffle(conv(conv(out, "conv_2") + fea, "upsampler.0"), scale) / 255.0


def _bsrn_as_released(sd: dict, x: torch.Tensor, scale: int, n_blocks: int) -> torch.Tensor:
    """BSRN's forward written from the release's ``BSRN_arch.py`` (BSConvU, pixelshuffledirect)."""
    import torch.nn.functional as F

    def pw(t, key):
        return F.conv2d(t, sd[key + ".weight"], sd[key + ".bias"])

    def bsconv(t, key, stride=1, padding=1):
        t = F.conv2d(t, sd[key + ".pw.weight"])
        return F.conv2d(t, sd[key + ".dw.weight"], sd[key + ".dw.bias"], stride=stride, padding=padding, groups=t.shape[1])

    fea = out = bsconv(torch.cat([x, x, x, x], dim=1), "fea_conv")
    outs = []
    for i in range(1, n_blocks + 1):
        p = f"B{i}."
        d1, r1 = F.gelu(pw(out, p + "c1_d")), F.gelu(bsconv(out, p + "c1_r") + out)
        d2, r2 = F.gelu(pw(r1, p + "c2_d")), F.gelu(bsconv(r1, p + "c2_r") + r1)
        d3, r3 = F.gelu(pw(r2, p + "c3_d")), F.gelu(bsconv(r2, p + "c3_r") + r2)
        o = pw(torch.cat([d1, d2, d3, F.gelu(bsconv(r3, p + "c4"))], dim=1), p + "c5")
        c1_ = pw(o, p + "esa.conv1")
        v = F.max_pool2d(bsconv(c1_, p + "esa.conv2", stride=2, padding=0), kernel_size=7, stride=3)
        c3 = bsconv(F.gelu(bsconv(F.gelu(bsconv(v, p + "esa.conv_max")), p + "esa.conv3")), p + "esa.conv3_")
        c3 = F.interpolate(c3, (o.shape[2], o.shape[3]), mode="bilinear", align_corners=False)
        o = o * torch.sigmoid(pw(c3 + pw(c1_, p + "esa.conv_f"), p + "esa.conv4"))
        mean = o.sum(3, keepdim=True).sum(2, keepdim=True) / (o.shape[2] * o.shape[3])  # stdv_channels + avg_pool
        std = ((o - mean).pow(2).sum(3, keepdim=True).sum(2, keepdim=True) / (o.shape[2] * o.shape[3])).pow(0.5)
        gate = torch.sigmoid(pw(torch.relu(pw(std + mean, p + "cca.conv_du.0")), p + "cca.conv_du.2"))
        out = o * gate + out
        outs.append(out)
    trunk = F.gelu(pw(torch.cat(outs, dim=1), "c1"))
    up = sd["upsampler.upsampleOneStep.0.weight"]
    lr = bsconv(trunk, "c2") + fea
    return F.pixel_shuffle(F.conv2d(lr, up, sd["upsampler.upsampleOneStep.0.bias"], padding=1), scale)


@pytest.mark.parametrize("name,scale,config,blocks,reference", [
    ("rlfn", 4, {}, 4, _rlfn_as_released),
    ("rlfn", 3, dict(feature_channels=16, mid_channels=12, n_blocks=2), 2, _rlfn_as_released),
    ("bsrn", 2, dict(num_feat=16, num_block=3), 3, _bsrn_as_released),
    ("bsrn", 4, {}, 8, _bsrn_as_released),
])
def test_rlfn_and_bsrn_compute_the_released_function(name, scale, config, blocks, reference):
    torch.manual_seed(0)
    model = zoo.create(name, scale=scale, **config).eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.randn_like(t) * 0.02)  # no zero biases hiding a swapped key
        x = torch.rand(1, 3, 17, 16)
        torch.testing.assert_close(model(x), reference(model.state_dict(), x, scale, blocks), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# LapSRN (twtygqyy/pytorch-LapSRN layout; its only release is a pickled whole model, none here)


def _lapsrn_count(levels: int, depth: int = 10, nf: int = 64, colours: int = 1) -> int:
    """From the port's ``lapsrn.py`` layer list (every layer bias-free): the input conv, then per level
    ``depth`` 3x3 convs and one 4x4 transposed conv (features), a 3x3 conv to the residual and a 4x4
    transposed conv of the image."""
    level = depth * _conv(nf, nf, 3, bias=False) + nf * nf * 16 + _conv(nf, colours, 3, bias=False) + colours * colours * 16
    return _conv(colours, nf, 3, bias=False) + levels * level


def test_lapsrn_parameter_counts():
    # The port's x4 network, counted from its lapsrn.py: 576 + 2 x (10 x 36,864 + 65,536 + 576 + 16)
    # = 870,112. The 812K often quoted for LapSRN x4 (the authors' MatConvNet model) is not this
    # network's count (the port drops every bias, for one); we load the port's state dicts, so its
    # count is the one to match. The 812K figure was not re-derived here.
    assert _lapsrn_count(2) == 870_112
    for scale, levels in ((2, 1), (4, 2), (8, 3)):
        assert _n_params(zoo.create("lapsrn", scale=scale)) == _lapsrn_count(levels)
    assert _n_params(zoo.create("lapsrn", scale=4, depth=4, nf=16, num_channels=3)) == _lapsrn_count(2, 4, 16, 3)


def test_lapsrn_keeps_the_ports_key_names():
    state = zoo.create("lapsrn", scale=4).state_dict()
    want = {"conv_input.weight": (64, 1, 3, 3)}
    for k in (1, 2):
        want |= {f"convt_I{k}.weight": (1, 1, 4, 4), f"convt_R{k}.weight": (1, 64, 3, 3)}
        want |= {f"convt_F{k}.0.cov_block.{i}.weight": (64, 64, 3, 3) for i in range(0, 20, 2)}
        want[f"convt_F{k}.0.cov_block.20.weight"] = (64, 64, 4, 4)  # the feature branch's x2 transposed conv
    assert {k: tuple(v.shape) for k, v in state.items()} == want


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_lapsrn_contract(scale):
    torch.manual_seed(0)
    model = zoo.create("lapsrn", scale=scale).eval()
    x = torch.rand(2, 3, 7, 9)  # small: the 64-wide convs of the last level run at scale/2 times this
    with torch.no_grad():
        y = model(x)
        y1 = model(x[1:])
    assert y.shape == (2, 3, 7 * scale, 9 * scale) and torch.isfinite(y).all()
    torch.testing.assert_close(y1, y[1:], rtol=1e-4, atol=1e-5)
    with pytest.raises(AttrsrError, match="supported: 2, 4, 8"):
        zoo.create("lapsrn", scale=3)


def _lapsrn_as_ported(sd: dict, y: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The port's ``Net.forward`` written out on its state dict: (HR_2x, HR_4x, ...)."""
    import torch.nn.functional as F

    def up(t, key):
        return F.conv_transpose2d(t, sd[key], stride=2, padding=1)

    features = F.leaky_relu(F.conv2d(y, sd["conv_input.weight"], padding=1), 0.2)
    image, outs = y, []
    for k in range(1, levels + 1):
        branch = f"convt_F{k}.0.cov_block."
        depth = sum(1 for key in sd if key.startswith(branch)) - 1
        for i in range(depth):
            features = F.leaky_relu(F.conv2d(features, sd[f"{branch}{2 * i}.weight"], padding=1), 0.2)
        features = F.leaky_relu(up(features, f"{branch}{2 * depth}.weight"), 0.2)
        image = up(image, f"convt_I{k}.weight") + F.conv2d(features, sd[f"convt_R{k}.weight"], padding=1)
        outs.append(image)
    return outs


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("scale,config", [(4, {}), (8, dict(depth=3, nf=16)), (2, dict(depth=2, nf=8))])
def test_lapsrn_computes_the_ports_function_on_y(scale, config):
    from attrsr.images import rgb2ycbcr

    torch.manual_seed(0)
    model = zoo.create("lapsrn", scale=scale, **config).eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.randn_like(t) * 0.02)
        x = torch.rand(1, 3, 13, 16)
        y = rgb2ycbcr(x)[:, :1]
        reference = _lapsrn_as_ported(model.state_dict(), y, levels=scale.bit_length() - 1)
        pyramid = model.net.pyramid(y)  # every level, x2 first
        assert [p.shape[-1] for p in pyramid] == [16 * 2**k for k in range(1, len(reference) + 1)]
        for got, want in zip(pyramid, reference):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        # The RGB model's luma is the last level's output (its chroma is bicubic, as for FSRCNN).
        torch.testing.assert_close(rgb2ycbcr(model(x))[:, :1], reference[-1], rtol=1e-4, atol=2e-5)


@pytest.mark.usefixtures("one_thread")
def test_untrained_lapsrn_image_branch_is_bilinear():
    """Initialised as the port is, each level's image branch is bilinear x2 upsampling: with the residual
    convs silenced, the network is x2 bilinear applied L times (away from the zero-padded border)."""
    import torch.nn.functional as F

    net = zoo.create("lapsrn", scale=4).net.eval()
    with torch.no_grad():
        for k in (1, 2):
            getattr(net, f"convt_R{k}").weight.zero_()
        y = torch.rand(1, 1, 12, 14)
        want = y
        for _ in range(2):
            want = F.interpolate(want, scale_factor=2, mode="bilinear", align_corners=False)
        got = net(y)
    torch.testing.assert_close(got[..., 4:-4, 4:-4], want[..., 4:-4, 4:-4], rtol=0, atol=1e-6)
    assert not torch.allclose(got[..., :1, :], want[..., :1, :])  # the border is the port's zero padding
