"""SAN, the second-order attention network (Dai et al., CVPR 2019): ``san``.

Key names follow the official release, daitao/SAN ``TrainCode/model/san.py`` (the code the
published ``SAN_BI{2,3,4,8}X.pt`` models were trained with): ``sub_mean``, ``head.0``, ``gamma``
(share-source skip weight), ``RG.G.rcab.B.conv_first.{0,2}`` (residual blocks),
``RG.G.soca.conv_du.{0,2}`` (second-order channel attention), ``RG.G.conv_last``, ``RG.G.gamma``,
``conv_last``, ``non_local.soca.conv_du.{0,2}``, ``non_local.non_local.{g.0,theta,phi.0,W}``,
``tail.0.*``, ``tail.1``, ``add_mean``. Several of these (``RG.G.gamma``, the top-level
``conv_last``, ``non_local.soca``) exist in the official model but are never used in its forward
pass; they are kept so that published files load strictly. Works on [0, 255]; wrapped by
:class:`ContractWrapper`.

The later ``code/model/san.py`` of the same repository drops those unused modules and uses a
non-local block with ``n_feats // 4`` channels; its checkpoints load by passing
``nl_reduction=4`` (the unused entries are filled in by :func:`san_checkpoint_filter`).

Second-order pooling (MPN-COV) is written in plain torch and differentiated by autograd: the
covariance is computed from centred features (the official code multiplies by an (HW x HW)
centring matrix, identical in exact arithmetic but quadratic in memory), then its square root is
approximated by 5 Newton–Schulz iterations with trace pre-normalisation and post-compensation,
as in the official ``MPNCOV.SqrtmLayer(cov, 5)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrsr.models._edsr_common import DIV2K_RGB_MEAN, MeanShift, Upsampler, body_depth, conv
from attrsr.models.detection import Fit, count_children, missing, shape, shuffle_scale
from attrsr.models.registry import ContractWrapper, register

# The official SOCA crops the centre 1000x1000 of larger feature maps before pooling.
_SOCA_MAX_SIZE = 1000


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Channel covariance (1/M) Xc Xc^T of (B,C,H,W) features, M = H*W. Returns (B,C,C)."""
    b, c = x.shape[:2]
    feats = x.reshape(b, c, -1)
    feats = feats - feats.mean(dim=2, keepdim=True)
    return torch.bmm(feats, feats.transpose(1, 2)) / feats.shape[2]


def sqrtm_newton_schulz(cov: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Approximate matrix square root of SPD (B,C,C) matrices (MPN-COV's iterative layer).

    Pre-normalises by the trace, runs the coupled Newton–Schulz iteration
    Y <- Y T, Z <- T Z with T = (3I - Z Y)/2 (``iterations - 1`` updates, the last one only for Y)
    and multiplies back by sqrt(trace). Returns (B,C,C).
    """
    b, c, _ = cov.shape
    eye3 = 3.0 * torch.eye(c, dtype=cov.dtype, device=cov.device).expand(b, c, c)
    norm = cov.diagonal(dim1=1, dim2=2).sum(-1).view(b, 1, 1)
    a = cov / norm
    zy = 0.5 * (eye3 - a)
    if iterations < 2:
        y = torch.bmm(a, zy)
    else:
        y, z = torch.bmm(a, zy), zy
        for _ in range(1, iterations - 1):
            zy = 0.5 * (eye3 - torch.bmm(z, y))
            y, z = torch.bmm(y, zy), torch.bmm(zy, z)
        y = 0.5 * torch.bmm(y, eye3 - torch.bmm(z, y))
    return y * norm.sqrt()


class SOCA(nn.Module):
    """Second-order channel attention: x * sigmoid(W2 relu(W1 mean_rows(sqrtm(cov(x))))).

    Shapes: (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        top, left = max(h - _SOCA_MAX_SIZE, 0) // 2, max(w - _SOCA_MAX_SIZE, 0) // 2
        x_sub = x[:, :, top : top + _SOCA_MAX_SIZE, left : left + _SOCA_MAX_SIZE]
        cov_sqrt = sqrtm_newton_schulz(covariance_pool(x_sub), 5)
        return self.conv_du(cov_sqrt.mean(dim=1).view(b, c, 1, 1)) * x


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block whose keys/values are 2x max-pooled.

    The official 2-D block always sub-samples ``g`` and ``phi`` (a quirk of its constructor), so
    they are ``Sequential(conv, MaxPool2d(2))`` (keys ``g.0``, ``phi.0``). ``W`` starts at zero.
    Shapes: (B,C,H,W) -> (B,C,H,W), H, W >= 2.
    """

    def __init__(self, in_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Sequential(nn.Conv2d(in_channels, inter_channels, 1), nn.MaxPool2d(2))
        self.W = nn.Conv2d(inter_channels, in_channels, 1)
        nn.init.zeros_(self.W.weight)
        nn.init.zeros_(self.W.bias)
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Sequential(nn.Conv2d(in_channels, inter_channels, 1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(b, self.inter_channels, -1)
        attn = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
        y = torch.matmul(attn, g_x).permute(0, 2, 1).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


class RegionNonLocal(nn.Module):
    """Region-level non-local (RL-NL, k=2): the non-local block applied to each quadrant.

    Official class name ``Nonlocal_CA``; its ``soca`` is built but unused. (B,C,H,W) -> same.
    """

    def __init__(self, in_feat: int, inter_feat: int, with_unused_soca: bool = True) -> None:
        super().__init__()
        if with_unused_soca:
            self.soca = SOCA(in_feat, reduction=8)
        self.non_local = NonLocalBlock2D(in_feat, inter_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1, w1 = x.shape[2] // 2, x.shape[3] // 2
        top = torch.cat([self.non_local(x[:, :, :h1, :w1]), self.non_local(x[:, :, :h1, w1:])], dim=3)
        bottom = torch.cat([self.non_local(x[:, :, h1:, :w1]), self.non_local(x[:, :, h1:, w1:])], dim=3)
        return torch.cat([top, bottom], dim=2)


class RB(nn.Module):
    """Plain residual block ``x + conv(relu(conv(x)))`` with keys ``conv_first.{0,2}``."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv_first = nn.Sequential(conv(n_feats, n_feats), nn.ReLU(inplace=True), conv(n_feats, n_feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_first(x) + x


class LSRAG(nn.Module):
    """Local-source residual attention group: RBs, SOCA, conv, plus the group input.

    ``gamma`` is an (unused) parameter of the official group. (B,C,H,W) -> (B,C,H,W).
    """

    def __init__(self, n_feats: int, n_resblocks: int, reduction: int, with_unused_gamma: bool = True) -> None:
        super().__init__()
        self.rcab = nn.ModuleList([RB(n_feats) for _ in range(n_resblocks)])
        self.soca = SOCA(n_feats, reduction=reduction)
        self.conv_last = conv(n_feats, n_feats)
        if with_unused_gamma:
            self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        for block in self.rcab:
            x = block(x)
        return self.conv_last(self.soca(x)) + residual


class SAN(nn.Module):
    """SAN on [0, rgb_range] data. (B,3,h,w) -> (B,3,s*h,s*w)."""

    def __init__(
        self,
        scale: int,
        n_resgroups: int = 20,
        n_resblocks: int = 10,
        n_feats: int = 64,
        reduction: int = 16,
        nl_reduction: int = 8,
        rgb_range: float = 255.0,
        n_colors: int = 3,
        official_unused: bool = True,
    ) -> None:
        super().__init__()
        self.sub_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, sign=-1)
        self.head = nn.Sequential(conv(n_colors, n_feats))
        self.gamma = nn.Parameter(torch.zeros(1))
        self.RG = nn.ModuleList(
            [LSRAG(n_feats, n_resblocks, reduction, with_unused_gamma=official_unused) for _ in range(n_resgroups)]
        )
        if official_unused:
            self.conv_last = conv(n_feats, n_feats)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, n_colors))
        self.add_mean = MeanShift(rgb_range, DIV2K_RGB_MEAN, sign=+1)
        self.non_local = RegionNonLocal(n_feats, n_feats // nl_reduction, with_unused_soca=official_unused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tail(self.forward_body(x))

    def forward_body(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The LR-resolution part (:func:`attrsr.models.registry.body_and_tail`): up to the long skip."""
        x = self.head(self.sub_mean(x))
        xx = self.non_local(x)
        residual = xx
        for group in self.RG:  # share-source skip connection
            xx = group(xx) + self.gamma * residual
        return (self.non_local(xx) + x,)

    def forward_tail(self, body: tuple[torch.Tensor]) -> torch.Tensor:
        return self.add_mean(self.tail(body[0]))


def san_checkpoint_filter(state: dict[str, torch.Tensor], scale: int) -> dict[str, torch.Tensor]:
    """Fill in the official-but-unused entries that the later ``code/`` release of SAN lacks
    (``RG.G.gamma``, ``conv_last``, ``non_local.soca``), so both releases load strictly. Their
    values never affect the output; zeros are used."""
    if "head.0.weight" not in state or "non_local.soca.conv_du.0.weight" in state:
        return state
    out = dict(state)
    n_feats = state["head.0.weight"].shape[0]
    like = state["head.0.weight"]
    for g in range(body_depth(state, "RG.")):
        out.setdefault(f"RG.{g}.gamma", like.new_zeros(1))
    out.setdefault("conv_last.weight", like.new_zeros(n_feats, n_feats, 3, 3))
    out.setdefault("conv_last.bias", like.new_zeros(n_feats))
    red = n_feats // 8
    out.setdefault("non_local.soca.conv_du.0.weight", like.new_zeros(red, n_feats, 1, 1))
    out.setdefault("non_local.soca.conv_du.0.bias", like.new_zeros(red))
    out.setdefault("non_local.soca.conv_du.2.weight", like.new_zeros(n_feats, red, 1, 1))
    out.setdefault("non_local.soca.conv_du.2.bias", like.new_zeros(n_feats))
    return out


def detect_san(state: dict[str, torch.Tensor]) -> Fit | str:
    if reason := missing(state, "head.0.weight", "RG.0.rcab.0.conv_first.0.weight", "RG.0.soca.conv_du.0.weight",
                         "non_local.non_local.g.0.weight"):
        return reason
    n_feats = shape(state, "head.0.weight")[0]
    scale, evidence = shuffle_scale(state, "tail.0.", n_feats)
    if scale is None:
        return evidence
    config = dict(n_resgroups=count_children(state, "RG."), n_resblocks=count_children(state, "RG.0.rcab."),
                  n_feats=n_feats, reduction=n_feats // shape(state, "RG.0.soca.conv_du.0.weight")[0],
                  nl_reduction=n_feats // shape(state, "non_local.non_local.g.0.weight")[0])
    return Fit(config, scale=scale, evidence=evidence)


@register(
    "san",
    scales=(2, 3, 4, 8),
    detect=detect_san,
    checkpoint_filter=san_checkpoint_filter,
    description="SAN, 20 LSRAGs x 10 residual blocks, 64 features, SOCA reduction 16 (official, [0,255] inside)",
)
def build_san(
    scale: int,
    *,
    n_resgroups: int = 20,
    n_resblocks: int = 10,
    n_feats: int = 64,
    reduction: int = 16,
    nl_reduction: int = 8,
    rgb_range: float = 255.0,
) -> nn.Module:
    net = SAN(
        scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
        reduction=reduction, nl_reduction=nl_reduction, rgb_range=rgb_range,
    )
    return ContractWrapper(net, scale, value_range=rgb_range)
