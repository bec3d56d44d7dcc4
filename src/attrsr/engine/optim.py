"""Losses, optimisers, learning-rate schedules and EMA built from a :class:`~attrsr.config.Config`."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import torch
from torch import nn

from attrsr.config import LossConfig, OptimConfig, ScheduleConfig


def pixel_loss(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``loss(sr, hr, mask=None)``: the mean per-pixel loss; with a mask, the mean over masked pixels.

    sr, hr: (B,3,H,W); mask: (B,1|3,H,W) of 0/1 (or weights).
    """

    def per_pixel(d: torch.Tensor) -> torch.Tensor:
        if cfg.name == "l1":
            return d.abs()
        if cfg.name == "mse":
            return d * d
        return torch.sqrt(d * d + cfg.eps * cfg.eps)  # charbonnier: a smooth L1

    def loss(sr: torch.Tensor, hr: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        per = per_pixel(sr - hr)
        if mask is None:
            return per.mean()
        mask = mask.to(per.dtype).expand_as(per)
        return (per * mask).sum() / mask.sum().clamp_min(1.0)

    return loss


def make_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(cfg: ScheduleConfig, base_lr: float, total: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate for the optimiser step that follows ``step`` steps.

    Warm-up ramps linearly from ``1/warmup`` to 1 over the first ``warmup`` steps; cosine decays
    from the base rate to ``min_lr`` over the steps after the warm-up.
    """
    floor = cfg.min_lr / base_lr

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
        if cfg.name == "multistep":
            return warm * cfg.gamma ** bisect.bisect_right(cfg.milestones, step)
        if cfg.name == "cosine":
            t = min(1.0, max(0, step - cfg.warmup) / max(1, total - cfg.warmup))
            return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
        return warm

    return factor


def make_scheduler(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, base_lr: float, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, base_lr, total))


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the weights (buffers averaged too), BasicSR's ``net_g_ema``."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
