"""HAT: Hybrid Attention Transformer (Chen, Wang, Zhou, Qiao, Dong — CVPR 2023), classical SR.

Key names follow the official release, XPixelGroup/HAT ``hat/archs/hat_arch.py`` (the ``HAT_SRx*.pth``,
``HAT-S_SRx*.pth`` files, tensors under ``params_ema``): ``conv_first``, ``patch_embed.norm``, per residual
hybrid attention group ``layers.L``: ``residual_group.blocks.B.{norm1, attn.{relative_position_bias_table,
qkv, proj}, conv_block.cab.{0, 2, 3.attention.1, 3.attention.3}, norm2, mlp.fc1, mlp.fc2}`` (hybrid
attention blocks: window self-attention plus a channel-attention conv branch scaled by ``conv_scale``),
``residual_group.overlap_attn.{norm1, qkv, relative_position_bias_table, proj, norm2, mlp.*}`` (the
overlapping cross-attention block) and ``conv``; then ``norm``, ``conv_after_body``,
``conv_before_upsample.0``, ``upsample.N``, ``conv_last``.

The release's current code registers the two relative-position indices as buffers
(``relative_position_index_SA``/``_OCA``), so files saved with it carry them and older files do not.
Both depend only on the window size and overlap ratio: they are recomputed here, never saved, and
dropped from incoming state dicts (as for SwinIR's derived buffers), so either kind of file loads
strictly in its parameters. The shifted-window mask is computed for each input size.

Like the release's test script, inputs are padded on the bottom/right to a multiple of the window by
reflection (``hat_model.py``); inputs smaller than the padding (where reflection is undefined) are
padded symmetrically. The output is cropped to exactly ``scale`` times the input. The DIV2K mean is
subtracted inside, ``img_range`` 1.

``hat-s`` defaults to the paper's HAT-S (embed 144, 6 groups x 6 blocks, 6 heads, window 16,
compress 24, squeeze 24, MLP ratio 2; 9.6M parameters at x4); ``hat`` to HAT (embed 180, compress 3,
squeeze 30; 20.8M). Both are one detector: the compress ratio tells them apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from attrsr.models._edsr_common import DIV2K_RGB_MEAN, pad_to_multiple
from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_scale
from attrsr.models.registry import register
from attrsr.models.swinir import (  # the pieces HAT shares with SwinIR, which it builds on
    DropPath,
    Mlp,
    _pixelshuffle_upsample,
    init_transformer_weights,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def overlap_relative_position_index(ws: int, overlap_ratio: float) -> torch.Tensor:
    """(ws², ows²) index into OCAB's (ws+ows-1)² bias table, ows = ws + int(overlap_ratio·ws):
    query positions in a ws window against key positions in the enlarged ows window."""
    ows = ws + int(overlap_ratio * ws)
    q = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")).flatten(1)
    rel = (k[:, None, :] - q[:, :, None]).permute(1, 2, 0) + (ws - ows + 1)
    return rel[:, :, 0] * (ws + ows - 1) + rel[:, :, 1]


class ChannelAttention(nn.Module):
    """RCAN's squeeze-excitation: global pool, 1x1 down, ReLU, 1x1 up, sigmoid gate (key ``attention``)."""

    def __init__(self, num_feat: int, squeeze_factor: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(num_feat, num_feat // squeeze_factor, 1), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: 3x3 conv down by ``compress_ratio``, GELU, 3x3 conv up, channel attention."""

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int) -> None:
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // compress_ratio, 3, 1, 1), nn.GELU(),
            nn.Conv2d(num_feat // compress_ratio, num_feat, 3, 1, 1), ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class WindowAttention(nn.Module):
    """Window self-attention with a relative position bias; the index is shared (passed in)."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, rpi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] * self.scale) @ qkv[1].transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        return self.proj((attn.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(b_, n, c))


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention + ``conv_scale`` x CAB, then MLP; pre-norm."""

    def __init__(self, dim, num_heads, window_size, shift_size, compress_ratio, squeeze_factor, conv_scale,
                 mlp_ratio, drop_path) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.conv_scale = window_size, shift_size, conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_size**2, c)
        windows = self.attn(windows, rpi, mask if self.shift_size > 0 else None)
        x = window_reverse(windows.view(-1, self.window_size, self.window_size, c), self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c)) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention: queries from ws windows, keys/values from enlarged ows windows."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.unfold = nn.Unfold(kernel_size=self.overlap_win_size, stride=window_size,
                                padding=(self.overlap_win_size - window_size) // 2)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, ows, heads = self.window_size, self.overlap_win_size, self.num_heads
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c).permute(3, 0, 4, 1, 2)  # 3, b, c, h, w
        q = window_partition(qkv[0].permute(0, 2, 3, 1), ws).view(-1, ws * ws, c)
        # Unfold lays out (channel, kernel position) per window: split k/v and move channels last.
        kv = self.unfold(torch.cat((qkv[1], qkv[2]), dim=1))  # b, 2c·ows², nw
        kv = kv.view(b, 2, c, ows * ows, -1).permute(1, 0, 4, 3, 2).reshape(2, -1, ows * ows, c)
        b_, nq, _ = q.shape
        d = c // heads
        q = q.reshape(b_, nq, heads, d).permute(0, 2, 1, 3)
        k = kv[0].reshape(b_, -1, heads, d).permute(0, 2, 1, 3)
        v = kv[1].reshape(b_, -1, heads, d).permute(0, 2, 1, 3)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[rpi.view(-1)].view(ws * ws, ows * ows, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, nq, c)
        x = window_reverse(out.view(-1, ws, ws, c), ws, h, w).reshape(b, h * w, c)
        x = self.proj(x) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """``depth`` HABs (alternately shifted) then one OCAB (keys ``blocks``, ``overlap_attn``)."""

    def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                 overlap_ratio, mlp_ratio, drop_path) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio, squeeze_factor,
                conv_scale, mlp_ratio, drop_path[i])
            for i in range(depth)
        ])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, mlp_ratio)

    def forward(self, x, x_size, rpi_sa, rpi_oca, mask):
        for blk in self.blocks:
            x = blk(x, x_size, rpi_sa, mask)
        return self.overlap_attn(x, x_size, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: blocks, a 3x3 conv on the image layout, plus the input."""

    def __init__(self, dim, depth, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                 overlap_ratio, mlp_ratio, drop_path) -> None:
        super().__init__()
        self.residual_group = AttenBlocks(dim, depth, num_heads, window_size, compress_ratio, squeeze_factor,
                                          conv_scale, overlap_ratio, mlp_ratio, drop_path)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x, x_size, rpi_sa, rpi_oca, mask):
        y = self.residual_group(x, x_size, rpi_sa, rpi_oca, mask)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *x_size))
        return y.flatten(2).transpose(1, 2) + x


class _PatchEmbedNorm(nn.Module):
    """The LayerNorm after flattening (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class HAT(nn.Module):
    """HAT for classical SR (pixel-shuffle upsampler), RGB [0,1]. (B,3,h,w) -> (B,3,s*h,s*w), any h, w."""

    def __init__(
        self,
        scale: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float,
        drop_path_rate: float = 0.1,
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.scale = scale
        self.window_size = window_size
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        # Derived from window_size and overlap_ratio alone: recomputed, not saved (module docstring).
        self.register_buffer("relative_position_index_SA", relative_position_index(window_size), persistent=False)
        self.register_buffer("relative_position_index_OCA", overlap_relative_position_index(window_size, overlap_ratio),
                             persistent=False)
        self._mask_cache: dict[tuple, torch.Tensor] = {}

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbedNorm(embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RHAG(embed_dim, depth, heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                                    overlap_ratio, mlp_ratio, dpr[start:start + depth]))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = _pixelshuffle_upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.apply(init_transformer_weights)
        self._register_load_state_dict_pre_hook(_drop_derived_buffers)

    def _mask_for(self, x_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        key = (tuple(x_size), device)
        if key not in self._mask_cache:
            if len(self._mask_cache) > 8:
                self._mask_cache.clear()
            self._mask_cache[key] = shifted_window_mask(*x_size, self.window_size, self.window_size // 2).to(device)
        return self._mask_cache[key]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        mask = self._mask_for(x_size, x.device)
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, x_size, self.relative_position_index_SA, self.relative_position_index_OCA, mask)
        return self.norm(t).transpose(1, 2).reshape(x.shape[0], -1, *x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.forward_tail(self.forward_body(x))[..., : h * self.scale, : w * self.scale]

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`), on x padded to the window size."""
        h, w = x.shape[-2:]
        small = max((-h) % self.window_size - h, (-w) % self.window_size - w) >= 0
        x, _, _ = pad_to_multiple(x, self.window_size, mode="symmetric" if small else "reflect")
        x = self.conv_first(x - self.mean.to(x.dtype))
        return (self.conv_after_body(self.forward_features(x)) + x,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        x = self.conv_last(self.upsample(self.conv_before_upsample(body[0])))
        return x + self.mean.to(x.dtype)


DERIVED_BUFFERS = ("relative_position_index_SA", "relative_position_index_OCA")


def _drop_derived_buffers(state_dict: dict, prefix: str, *args) -> None:
    for name in DERIVED_BUFFERS:
        state_dict.pop(prefix + name, None)


def hat_checkpoint_filter(state: dict[str, torch.Tensor], scale: int | None) -> dict[str, torch.Tensor]:
    """Drop the relative-position indices that files saved by the release's current code carry."""
    return {k: v for k, v in state.items() if k not in DERIVED_BUFFERS}


def detect_hat(state: dict[str, torch.Tensor]) -> Fit | str:
    """Width, groups and their depths, heads, window (from the bias table), overlap ratio (from OCAB's
    table), compress/squeeze ratios and MLP ratio from the shapes; HAT-S vs HAT by its compress ratio."""
    block = "layers.0.residual_group.blocks.0."
    ocab = "layers.0.residual_group.overlap_attn."
    if reason := missing(state, "conv_first.weight", block + "conv_block.cab.0.weight",
                         ocab + "relative_position_bias_table", "conv_before_upsample.0.weight"):
        return reason
    embed_dim = shape(state, "conv_first.weight")[0]
    n_layers = count_children(state, "layers.")
    depths = tuple(count_children(state, f"layers.{i}.residual_group.blocks.") for i in range(n_layers))
    heads = tuple(shape(state, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")[1]
                  for i in range(n_layers))
    rows = shape(state, block + "attn.relative_position_bias_table")[0]
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        return f"relative_position_bias_table has {rows} rows, not (2·window-1)²"
    ows = math.isqrt(shape(state, ocab + "relative_position_bias_table")[0]) - window + 1  # (ws+ows-1)² rows
    compressed = shape(state, block + "conv_block.cab.0.weight")[0]
    squeezed = shape(state, block + "conv_block.cab.3.attention.1.weight")
    hidden = shape(state, block + "mlp.fc1.weight")
    if not compressed or not squeezed or not squeezed[0] or not hidden:
        return "conv_block/mlp shapes do not fit a HAT block"
    config = dict(embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window,
                  overlap_ratio=(ows - window) / window, compress_ratio=embed_dim // compressed,
                  squeeze_factor=embed_dim // squeezed[0], mlp_ratio=hidden[0] / embed_dim)
    num_feat = shape(state, "conv_before_upsample.0.weight")[0]
    config["num_feat"] = num_feat
    scale, evidence = shuffle_scale(state, "upsample.", num_feat)
    if scale is None:
        return evidence
    # HAT-S compresses the conv branch by 24, HAT by 3 (the papers' two configurations).
    name = "hat-s" if config["compress_ratio"] > 3 else "hat"
    return Fit(config, scale=scale, evidence=evidence, name=name)


def _build(scale, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale,
           overlap_ratio, mlp_ratio, drop_path_rate, num_feat) -> nn.Module:
    return HAT(scale, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads), window_size=window_size,
               compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, conv_scale=conv_scale,
               overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, num_feat=num_feat)


@register("hat-s", scales=(2, 3, 4), detect=detect_hat, checkpoint_filter=hat_checkpoint_filter,
          description="HAT-S (Chen et al. 2023): 6 RHAG x 6 blocks, dim 144, window 16, compress 24; 9.6M params at x4")
def build_hat_s(
    scale: int,
    *,
    embed_dim: int = 144,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    compress_ratio: int = 24,
    squeeze_factor: int = 24,
    conv_scale: float = 0.01,
    overlap_ratio: float = 0.5,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    num_feat: int = 64,
) -> nn.Module:
    return _build(scale, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                  overlap_ratio, mlp_ratio, drop_path_rate, num_feat)


@register("hat", scales=(2, 3, 4), detect=detect_hat, checkpoint_filter=hat_checkpoint_filter,
          description="HAT (Chen et al. 2023): 6 RHAG x 6 blocks, dim 180, window 16, compress 3; 20.8M params at x4")
def build_hat(
    scale: int,
    *,
    embed_dim: int = 180,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 16,
    compress_ratio: int = 3,
    squeeze_factor: int = 30,
    conv_scale: float = 0.01,
    overlap_ratio: float = 0.5,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    num_feat: int = 64,
) -> nn.Module:
    return _build(scale, embed_dim, depths, num_heads, window_size, compress_ratio, squeeze_factor, conv_scale,
                  overlap_ratio, mlp_ratio, drop_path_rate, num_feat)
