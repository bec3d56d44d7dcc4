"""SwinIR (Liang et al., ICCVW 2021): ``swinir`` (classical SR) and ``swinir-light``.

Key names follow the official release, JingyunLiang/SwinIR ``models/network_swinir.py`` (the
``001_classicalSR_DIV2K_s48w8_SwinIR-M_x*.pth``, ``001_classicalSR_DF2K_s64w8_…`` and
``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x*.pth`` files, whose tensors sit under ``params``):
``conv_first``, ``patch_embed.norm``,
``layers.L.residual_group.blocks.B.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``…attn.relative_position_bias_table``, ``layers.L.conv``, ``norm``,
``conv_after_body``, and the reconstruction ``conv_before_upsample.0``, ``upsample.N``,
``conv_last`` (``pixelshuffle``) or ``upsample.0`` (``pixelshuffledirect``).

The official files also hold two buffers derived from the configuration, ``…attn.relative_position_index``
(from the window size) and ``…attn_mask`` (shifted blocks; sized for the *training patch*, 48 or 64,
while inference uses masks for the actual input size). Both are recomputed here and never saved:
:func:`swinir_checkpoint_filter` and a load hook drop them from incoming state dicts, so s48 and s64
checkpoints load into one model, strictly in every parameter.

The network works on [0,1] with ``img_range=1`` and subtracts the DIV2K mean inside (a
non-persistent buffer: not in the official state dicts). Inputs whose size is not a multiple of
the window are padded by mirroring (edge pixel repeated, as ``main_test_swinir.py`` does by
concatenating a flipped copy) and the output is cropped to exactly ``scale`` times the input size.
Shifted-window masks for sizes other than ``img_size`` are computed on the fly and cached.

timm is not importable here: ``DropPath`` is a local few-line equivalent and the truncated-normal
initialisation is ``torch.nn.init.trunc_normal_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models._edsr_common import DIV2K_RGB_MEAN, pad_to_multiple
from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_factor, shuffle_scale
from attrsr.models.registry import register


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on (..., C)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B,H,W,C) -> (B*nW, ws, ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B*nW, ws, ws, C) -> (B,H,W,C)."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) int64 index into the (2ws-1)^2 relative-position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """(nW, ws*ws, ws*ws) additive mask (0 or -100) keeping SW-MSA inside the shifted regions."""
    img = torch.zeros((1, h, w, 1))
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).view(-1, ws * ws)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a relative position bias.

    Shapes: (B*nW, N=ws*ws, C) -> same; ``mask`` (nW, N, N) or None.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Derived from window_size alone: recomputed, not saved (see the module docstring).
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, self.num_heads, n, n) + mask.to(attn.dtype).unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


class SwinTransformerBlock(nn.Module):
    """(S)W-MSA + MLP with pre-norm residuals on token sequences (B, H*W, C)."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        if min(input_resolution) <= window_size:  # the official rule: one window, no shift
            shift_size, window_size = 0, min(input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*input_resolution, window_size, shift_size) if shift_size > 0 else None
        # Not saved: official files carry it sized for their training patch, which says nothing about
        # the weights; masks for other input sizes are computed on the fly (``_mask_for``).
        self.register_buffer("attn_mask", mask, persistent=False)
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def _mask_for(self, x_size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        if self.shift_size == 0:
            return None
        if tuple(x_size) == tuple(self.input_resolution):
            return self.attn_mask
        key = (tuple(x_size), device)
        if key not in self._mask_cache:
            if len(self._mask_cache) > 8:
                self._mask_cache.clear()
            self._mask_cache[key] = shifted_window_mask(*x_size, self.window_size, self.shift_size).to(device)
        return self._mask_cache[key]

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_size**2, c)
        windows = self.attn(windows, mask=self._mask_for(x_size, x.device))
        x = window_reverse(windows.view(-1, self.window_size, self.window_size, c), self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks alternating plain and shifted windows (key ``blocks``)."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio, drop_path) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim, input_resolution, num_heads, window_size,
                    0 if i % 2 == 0 else window_size // 2, mlp_ratio, drop_path[i],
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


def _resi_conv(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":  # the parameter-saving variant used by the real-SR large model
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ValueError(f"resi_connection must be '1conv' or '3conv', not {kind!r}")


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin layer, conv, plus input. (B,HW,C) -> (B,HW,C)."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio, drop_path, resi_connection):
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size, mlp_ratio, drop_path)
        self.conv = _resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = self.residual_group(x, x_size)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *x_size))
        return y.flatten(2).transpose(1, 2) + x


class _PatchEmbedNorm(nn.Module):
    """Holds the LayerNorm applied after flattening (key ``patch_embed.norm``)."""

    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


def init_transformer_weights(m: nn.Module) -> None:
    """The release's initialisation (applied to every module): truncated-normal linear weights, zero
    biases, unit LayerNorms. HAT uses it too."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class SwinIR(nn.Module):
    """SwinIR for SR, RGB [0,1]. (B,3,h,w) -> (B,3,s*h,s*w), any h, w."""

    def __init__(
        self,
        scale: int = 2,
        img_size: int = 64,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        in_chans: int = 3,
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.scale = scale
        self.upsampler = upsampler
        self.window_size = window_size
        self.img_range = img_range
        mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchEmbedNorm(embed_dim, patch_norm)
        resolution = (img_size, img_size)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            drop_path = dpr[start : start + depth]
            self.layers.append(
                RSTB(embed_dim, resolution, depth, heads, window_size, mlp_ratio, drop_path, resi_connection)
            )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)

        if upsampler in ("pixelshuffle", "nearest+conv"):
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
        if upsampler == "pixelshuffle":  # classical SR
            self.upsample = _pixelshuffle_upsample(scale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":  # lightweight SR: one conv + shuffle
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, scale**2 * in_chans, 3, 1, 1), nn.PixelShuffle(scale))
        elif upsampler == "nearest+conv":  # real-world SR, x4 only
            if scale != 4:
                raise ValueError("upsampler 'nearest+conv' supports only scale 4")
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        else:
            raise ValueError(f"unsupported SR upsampler {upsampler!r}")
        self.apply(init_transformer_weights)
        self._register_load_state_dict_pre_hook(_drop_derived_buffers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, x_size)
        t = self.norm(t)
        return t.transpose(1, 2).reshape(x.shape[0], -1, *x_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.forward_tail(self.forward_body(x))[..., : h * self.scale, : w * self.scale]

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`), on x padded to the window size."""
        x, _, _ = pad_to_multiple(x, self.window_size, mode="symmetric")
        x = (x - self.mean.to(x.dtype)) * self.img_range
        x = self.conv_first(x)
        return (self.conv_after_body(self.forward_features(x)) + x,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        (x,) = body
        mean = self.mean.to(x.dtype)
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        elif self.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        else:
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        return x / self.img_range + mean


DERIVED_BUFFERS = (".attn_mask", ".relative_position_index")


def _drop_derived_buffers(state_dict: dict, prefix: str, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith(DERIVED_BUFFERS)]:
        del state_dict[key]


def swinir_checkpoint_filter(state: dict[str, torch.Tensor], scale: int | None) -> dict[str, torch.Tensor]:
    """Drop the buffers the official files carry but that only restate the configuration and the
    training patch (``attn_mask``, ``relative_position_index``): they are recomputed here."""
    return {k: v for k, v in state.items() if not k.endswith(DERIVED_BUFFERS)}


def _pixelshuffle_upsample(scale: int, num_feat: int) -> nn.Sequential:
    """(conv C->4C, shuffle 2) x log2(s), or (conv C->9C, shuffle 3); convs at even indices."""
    layers: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"scale {scale} is not supported; use 2^n or 3")
    return nn.Sequential(*layers)


def detect_swinir(state: dict[str, torch.Tensor]) -> Fit | str:
    """Every SwinIR variant: width, layers and their depths, heads, window (from the bias table),
    MLP ratio, residual conv type and upsampler from the keys and shapes; the training patch
    (img_size) is not needed (see the module docstring). Lightweight (pixelshuffledirect) files
    are read as ``swinir-light``, the others as ``swinir``."""
    table = "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"
    if reason := missing(state, "conv_first.weight", "patch_embed.norm.weight", table, "norm.weight"):
        return reason
    embed_dim, in_chans = shape(state, "conv_first.weight")[:2]
    if in_chans != 3:
        return f"conv_first takes {in_chans} channels; the zoo's SwinIR is RGB"
    n_layers = count_children(state, "layers.")
    depths = tuple(count_children(state, f"layers.{i}.residual_group.blocks.") for i in range(n_layers))
    heads = tuple(shape(state, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")[1]
                  for i in range(n_layers))
    rows = shape(state, table)[0]
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        return f"relative_position_bias_table has {rows} rows, not (2·window-1)²"
    hidden = shape(state, "layers.0.residual_group.blocks.0.mlp.fc1.weight")
    config: dict = dict(embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window,
                        mlp_ratio=hidden[0] / embed_dim if hidden else 2.0,
                        resi_connection="3conv" if "conv_after_body.0.weight" in state else "1conv")
    if "conv_up1.weight" in state:
        config.update(upsampler="nearest+conv", num_feat=shape(state, "conv_up1.weight")[0])
        return Fit(config, scale=4, evidence="the real-SR nearest+conv upsampler (x4 only)", name="swinir")
    if "conv_before_upsample.0.weight" in state:
        num_feat = shape(state, "conv_before_upsample.0.weight")[0]
        config.update(upsampler="pixelshuffle", num_feat=num_feat)
        scale, evidence = shuffle_scale(state, "upsample.", num_feat)
        return Fit(config, scale=scale, evidence=evidence, name="swinir") if scale else evidence
    if reason := missing(state, "upsample.0.weight"):
        return reason
    out = shape(state, "upsample.0.weight")[0]
    scale = shuffle_factor(out, 3)
    if scale is None:
        return f"upsample.0 has {out} output channels, not 3·s²"
    config["upsampler"] = "pixelshuffledirect"
    return Fit(config, scale=scale, evidence=f"upsample.0: {out} = 3·{scale}² channels", name="swinir-light")


@register(
    "swinir",
    scales=(2, 3, 4, 8),
    detect=detect_swinir,
    aliases=("swinir-m", "swinir-classical"),
    checkpoint_filter=swinir_checkpoint_filter,
    description="SwinIR classical SR (SwinIR-M): 6 RSTB x 6 layers, dim 180, window 8, img_size 48 (DIV2K)",
)
def build_swinir(
    scale: int,
    *,
    img_size: int = 48,
    embed_dim: int = 180,
    depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
    window_size: int = 8,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    upsampler: str = "pixelshuffle",
    resi_connection: str = "1conv",
    img_range: float = 1.0,
    num_feat: int = 64,
) -> nn.Module:
    return SwinIR(
        scale, img_size=img_size, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
        window_size=window_size, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, img_range=img_range,
        upsampler=upsampler, resi_connection=resi_connection, num_feat=num_feat,
    )


@register(
    "swinir-light",
    scales=(2, 3, 4),
    detect=detect_swinir,
    aliases=("swinir-s", "swinir-lightweight"),
    checkpoint_filter=swinir_checkpoint_filter,
    description="SwinIR lightweight SR (SwinIR-S): 4 RSTB x 6 layers, dim 60, window 8, img_size 64",
)
def build_swinir_light(
    scale: int,
    *,
    img_size: int = 64,
    embed_dim: int = 60,
    depths: Sequence[int] = (6, 6, 6, 6),
    num_heads: Sequence[int] = (6, 6, 6, 6),
    window_size: int = 8,
    mlp_ratio: float = 2.0,
    drop_path_rate: float = 0.1,
    upsampler: str = "pixelshuffledirect",
    resi_connection: str = "1conv",
    img_range: float = 1.0,
    num_feat: int = 64,
) -> nn.Module:
    return SwinIR(
        scale, img_size=img_size, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
        window_size=window_size, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, img_range=img_range,
        upsampler=upsampler, resi_connection=resi_connection, num_feat=num_feat,
    )
