"""The GPU recipes for SR4IR at the paper's setting (configs/gpu/sr4ir-*.yaml) parse, validate and say
what the paper says (§4 and supplement §12): S AdamW 1e-4, T SGD (seg/det 2e-2, cls 3e-2) momentum 0.9,
cosine schedules, batch 16 (seg, det) / 128 (cls), 100 / 200 / 30 epochs, TDP after a tenth of training, CQMix
8×8 / 4×4 — and that their S is a zoo model whose weights load."""

from __future__ import annotations

import math

import pytest

from attrsr import models
from attrsr.config import load_config
from attrsr.engine.compose import build_methods
from conftest import need
from engine_helpers import REPO

CASES = [  # recipe, task, batch, epochs, training images, T's learning rate, CQMix cells per side, TDP
    ("sr4ir-camvid-x4", "segmentation", 16, 100, 367, 2e-2, 8, {"backbone": 1.0}),
    ("sr4ir-cub50-x4", "classification", 128, 200, 1500, 3e-2, 4, {"layer4": 1.0}),
    ("sr4ir-coco128-x4", "detection", 16, 30, 96, 2e-2, 8, {"p2": 0.5, "p3": 0.5}),  # 96: COCO128 less its held-out quarter
]


@pytest.mark.parametrize("name,task,batch,epochs,images,task_lr,grid,tdp", CASES, ids=[c[0] for c in CASES])
def test_gpu_sr4ir_recipe_is_the_papers_setting(name, task, batch, epochs, images, task_lr, grid, tdp):
    cfg = load_config(REPO / "configs" / "gpu" / f"{name}.yaml")
    assert cfg.scale == 4 and cfg.data.batch_size == batch
    assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.name) == ("adamw", 1e-4, "cosine")
    assert cfg.train.iterations == epochs * math.ceil(images / batch)
    (method,) = build_methods(cfg.methods, cfg.seed).methods  # the method's own parameter check
    p = method.params
    assert (p.task, p.variant, p.task_lr, p.momentum, p.grid, p.warmup, p.task_width) == (task, "sr4ir", task_lr, 0.9, grid, 0.1, 64)
    assert p.tdp == tdp
    if task == "classification":
        assert cfg.data.patch_size * cfg.scale == 224  # the whole modcropped image
    weights = REPO / cfg.model.weights
    need(weights)
    model = models.load(cfg.model.name, weights=weights, scale=cfg.scale)
    assert model.scale == 4
