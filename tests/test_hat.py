"""HAT / HAT-S: the release's parameter counts and key names, its function (a window-by-window
reference written from ``hat_arch.py`` on the state dict), and files with or without the
relative-position buffers the release's current code saves."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

import attrsr.models as zoo

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(embed_dim=12, depths=(2, 1), num_heads=(2, 3), window_size=4, compress_ratio=4, squeeze_factor=4)


def _n(model) -> int:
    return sum(t.numel() for t in model.state_dict().values())


def _linear(i, o):
    return i * o + o


def _conv(i, o, k):
    return i * o * k * k + o


def _hat_count(scale, dim, groups, blocks, heads, ws, compress, squeeze, mlp=2.0, overlap=0.5, feat=64):
    """From the layer list of hat_arch.py (LayerNorms: 2·dim each)."""
    ows = ws + int(overlap * ws)
    hab = (2 * dim + (2 * ws - 1) ** 2 * heads + _linear(dim, 3 * dim) + _linear(dim, dim)
           + _conv(dim, dim // compress, 3) + _conv(dim // compress, dim, 3)
           + _conv(dim, dim // squeeze, 1) + _conv(dim // squeeze, dim, 1)
           + 2 * dim + _linear(dim, int(dim * mlp)) + _linear(int(dim * mlp), dim))
    ocab = (2 * dim + _linear(dim, 3 * dim) + (ws + ows - 1) ** 2 * heads + _linear(dim, dim)
            + 2 * dim + _linear(dim, int(dim * mlp)) + _linear(int(dim * mlp), dim))
    group = blocks * hab + ocab + _conv(dim, dim, 3)
    up = {2: _conv(feat, 4 * feat, 3), 3: _conv(feat, 9 * feat, 3), 4: 2 * _conv(feat, 4 * feat, 3)}[scale]
    return (_conv(3, dim, 3) + 2 * dim + groups * group + 2 * dim + _conv(dim, dim, 3)
            + _conv(dim, feat, 3) + up + _conv(feat, 3, 3))


def test_parameter_counts_match_the_papers():
    # HAT paper (CVPR 2023), Table of model sizes: HAT-S 9.6M, HAT 20.8M (x4).
    assert _hat_count(4, 144, 6, 6, 6, 16, 24, 24) == 9_621_183
    assert _hat_count(4, 180, 6, 6, 6, 16, 3, 30) == 20_772_507
    with torch.device("meta"):  # no memory, no init time
        assert _n(zoo.create("hat-s", scale=4)) == 9_621_183
        assert _n(zoo.create("hat", scale=4)) == 20_772_507
        assert _n(zoo.create("hat-s", scale=2)) == _hat_count(2, 144, 6, 6, 6, 16, 24, 24)
        assert _n(zoo.create("hat", scale=3)) == _hat_count(3, 180, 6, 6, 6, 16, 3, 30)


def test_key_names_and_shapes_of_the_release():
    with torch.device("meta"):
        state = zoo.create("hat-s", scale=4).state_dict()
    want = {
        "conv_first.weight": (144, 3, 3, 3), "patch_embed.norm.weight": (144,),
        "layers.5.residual_group.blocks.5.attn.relative_position_bias_table": (31 * 31, 6),
        "layers.0.residual_group.blocks.1.attn.qkv.weight": (432, 144),
        "layers.0.residual_group.blocks.0.conv_block.cab.0.weight": (6, 144, 3, 3),
        "layers.0.residual_group.blocks.0.conv_block.cab.2.weight": (144, 6, 3, 3),
        "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight": (6, 144, 1, 1),
        "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.3.bias": (144,),
        "layers.2.residual_group.blocks.3.mlp.fc1.weight": (288, 144),
        "layers.1.residual_group.overlap_attn.relative_position_bias_table": ((16 + 24 - 1) ** 2, 6),
        "layers.1.residual_group.overlap_attn.qkv.weight": (432, 144),
        "layers.1.residual_group.overlap_attn.mlp.fc2.weight": (144, 288),
        "layers.3.conv.weight": (144, 144, 3, 3), "norm.bias": (144,), "conv_after_body.weight": (144, 144, 3, 3),
        "conv_before_upsample.0.weight": (64, 144, 3, 3), "upsample.2.weight": (256, 64, 3, 3),
        "conv_last.weight": (3, 64, 3, 3),
    }
    for key, shp in want.items():
        assert tuple(state[key].shape) == shp, key
    assert "relative_position_index_SA" not in state and not any(k.endswith("attn_mask") for k in state)


def _hat_as_released(sd: dict, x: torch.Tensor, cfg: dict, scale: int) -> torch.Tensor:
    """HAT's forward from hat_arch.py / hat_model.py, written window by window on the state dict."""
    ws, dim = cfg["window_size"], cfg["embed_dim"]
    ows = ws + ws // 2  # overlap_ratio 0.5
    shift = ws // 2

    def ln(t, key):
        return F.layer_norm(t, (dim,), sd[key + ".weight"], sd[key + ".bias"])

    def lin(t, key):
        return F.linear(t, sd[key + ".weight"], sd[key + ".bias"])

    def conv(t, key):
        w = sd[key + ".weight"]
        return F.conv2d(t, w, sd[key + ".bias"], padding=w.shape[-1] // 2)

    def attend(q, k, v, bias, heads, mask=None):  # q (n,C), k/v (m,C), bias (n,m,heads)
        d = dim // heads
        q, k, v = (t.view(t.shape[0], heads, d).transpose(0, 1) for t in (q, k, v))
        a = (q * d**-0.5) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
        if mask is not None:
            a = a + mask
        return (a.softmax(-1) @ v).transpose(0, 1).reshape(-1, dim)

    h0, w0 = x.shape[-2:]
    x = F.pad(x, (0, (-w0) % ws, 0, (-h0) % ws), mode="reflect")  # hat_model.py's test()
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    feat = conv(x - mean, "conv_first")
    _, _, h, w = feat.shape
    t = ln(feat[0].permute(1, 2, 0), "patch_embed.norm")  # (h, w, C)
    # The release's shifted-window regions (calculate_mask's slices), per rolled coordinate.
    region = [0 if r < h - ws else 1 if r < h - shift else 2 for r in range(h)]
    region_w = [0 if c < w - ws else 1 if c < w - shift else 2 for c in range(w)]
    for L, heads in enumerate(cfg["num_heads"]):
        group_in = t
        for B in range(cfg["depths"][L]):
            p = f"layers.{L}.residual_group.blocks.{B}."
            n = ln(t, p + "norm1")
            c = n.permute(2, 0, 1)[None]
            c = conv(F.gelu(conv(c, p + "conv_block.cab.0")), p + "conv_block.cab.2")
            gate = torch.sigmoid(conv(torch.relu(conv(c.mean((2, 3), keepdim=True), p + "conv_block.cab.3.attention.1")),
                                      p + "conv_block.cab.3.attention.3"))
            conv_x = (c * gate)[0].permute(1, 2, 0)
            s = shift if B % 2 else 0
            rolled = torch.roll(n, (-s, -s), (0, 1))
            qkv = lin(rolled, p + "attn.qkv")
            out = torch.zeros_like(rolled)
            table = sd[p + "attn.relative_position_bias_table"]
            cells = list(itertools.product(range(ws), range(ws)))
            bias = torch.stack([torch.stack([table[(qy - ky + ws - 1) * (2 * ws - 1) + (qx - kx + ws - 1)]
                                             for ky, kx in cells]) for qy, qx in cells])
            for i0, j0 in itertools.product(range(0, h, ws), range(0, w, ws)):
                win = qkv[i0:i0 + ws, j0:j0 + ws].reshape(ws * ws, 3 * dim)
                mask = None
                if s:
                    lab = torch.tensor([region[i0 + a] * 3 + region_w[j0 + b] for a, b in cells])
                    mask = torch.where(lab[:, None] == lab[None, :], 0.0, -100.0)
                o = attend(win[:, :dim], win[:, dim:2 * dim], win[:, 2 * dim:], bias, heads, mask)
                out[i0:i0 + ws, j0:j0 + ws] = lin(o, p + "attn.proj").view(ws, ws, dim)
            t = t + torch.roll(out, (s, s), (0, 1)) + conv_x * 0.01
            t = t + lin(F.gelu(lin(ln(t, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
        # OCAB: queries from each ws window, keys/values from the ows window around it (zero padded).
        p = f"layers.{L}.residual_group.overlap_attn."
        qkv = lin(ln(t, p + "norm1"), p + "qkv")
        pad = (ows - ws) // 2
        kv = F.pad(qkv[..., dim:].permute(2, 0, 1), (pad, pad, pad, pad)).permute(1, 2, 0)
        table = sd[p + "relative_position_bias_table"]
        q_cells = list(itertools.product(range(ws), range(ws)))
        k_cells = list(itertools.product(range(ows), range(ows)))
        # hat_arch's calculate_rpi_oca: (k - q + ws - ows + 1) per axis; negative values index
        # the table from its end (torch indexing), as in the release.
        bias = torch.stack([torch.stack([table[(ky - qy + ws - ows + 1) * (ws + ows - 1) + (kx - qx + ws - ows + 1)]
                                         for ky, kx in k_cells]) for qy, qx in q_cells])
        out = torch.zeros_like(t)
        for i0, j0 in itertools.product(range(0, h, ws), range(0, w, ws)):
            q = qkv[i0:i0 + ws, j0:j0 + ws, :dim].reshape(ws * ws, dim)
            k = kv[i0:i0 + ows, j0:j0 + ows, :dim].reshape(ows * ows, dim)
            v = kv[i0:i0 + ows, j0:j0 + ows, dim:].reshape(ows * ows, dim)
            out[i0:i0 + ws, j0:j0 + ws] = attend(q, k, v, bias, heads).view(ws, ws, dim)
        t = lin(out, p + "proj") + t
        t = t + lin(F.gelu(lin(ln(t, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
        t = conv(t.permute(2, 0, 1)[None], f"layers.{L}.conv")[0].permute(1, 2, 0) + group_in
    body = conv(ln(t, "norm").permute(2, 0, 1)[None], "conv_after_body") + feat
    y = F.leaky_relu(conv(body, "conv_before_upsample.0"), 0.01)
    for i in range(0, 2 * (scale.bit_length() - 1), 2) if scale != 3 else [0]:
        y = F.pixel_shuffle(conv(y, f"upsample.{i}"), 3 if scale == 3 else 2)
    y = conv(y, "conv_last") + mean
    return y[..., : h0 * scale, : w0 * scale]


@pytest.mark.parametrize("scale", [2, 3])
def test_hat_computes_the_released_function(scale):
    torch.manual_seed(0)
    model = zoo.create("hat-s", scale=scale, **SMALL).eval()
    with torch.no_grad():
        for key, v in model.state_dict().items():
            # Strong position biases and non-trivial weights: a mis-indexed bias or a swapped key
            # must move the output well beyond the tolerance (checked by breaking either on purpose).
            v.add_(torch.randn_like(v) * (2.0 if key.endswith("bias_table") else 0.1))
        # A real photo crop, 11x10: not a multiple of the window, so the reflection padding is used.
        x = torch.from_numpy(skdata.astronaut()[120:131, 200:210].astype(np.float32) / 255).permute(2, 0, 1)[None]
        torch.testing.assert_close(model(x), _hat_as_released(model.state_dict(), x, SMALL, scale), rtol=1e-4, atol=1e-5)


def test_files_with_and_without_the_index_buffers_load(tmp_path):
    torch.manual_seed(0)
    model = zoo.create("hat-s", scale=2, **SMALL).eval()
    x = torch.rand(1, 3, 8, 9)
    with torch.no_grad():
        want = model(x)
    state = dict(model.state_dict())
    # What the release's current code saves besides the parameters (register_buffer).
    state["relative_position_index_SA"] = model.relative_position_index_SA.clone()
    state["relative_position_index_OCA"] = model.relative_position_index_OCA.clone()
    for name, payload in (("new.pth", state), ("old.pth", model.state_dict())):
        torch.save({"params_ema": payload}, tmp_path / name)
        loaded = zoo.load(weights=tmp_path / name)
        assert loaded.zoo_name == "hat-s" and loaded.scale == 2, loaded.detection
        with torch.no_grad():
            assert torch.equal(loaded(x), want), name
    fresh = zoo.create("hat-s", scale=2, **SMALL)  # direct nn.Module loading is strict too
    assert not fresh.load_state_dict(state, strict=True).missing_keys


def test_inputs_smaller_than_a_window_work():
    model = zoo.create("hat-s", scale=2, **SMALL).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 3, 2))
    assert y.shape == (2, 3, 6, 4) and torch.isfinite(y).all()
