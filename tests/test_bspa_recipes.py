"""The GPU recipes for BSPA at the paper's setting (configs/gpu/bspa-*.yaml) parse, validate and say
what the paper says: HR patch 128, Adam 2e-4 halved after 200 of 400 epochs, E = 50 epochs, β = 0.1,
K = 10, factor 10 — with an epoch read as 1000 iterations."""

from __future__ import annotations

import pytest

from attrsr import models
from attrsr.config import load_config
from attrsr.data.longtail import class_sizes
from attrsr.engine.compose import build_methods
from engine_helpers import REPO

EPOCH = 1000  # iterations per epoch (EDSR-PyTorch's unit, documented in the recipe)


@pytest.mark.parametrize("name,net", [("bspa-edsr-baseline-x4", "edsr-baseline"), ("bspa-rcan-x4", "rcan")])
def test_gpu_bspa_recipe_is_the_papers_setting(name, net):
    cfg = load_config(REPO / "configs" / "gpu" / f"{name}.yaml")
    assert cfg.model.name == net and models.spec(net).name == net
    assert cfg.scale == 4 and cfg.data.patch_size * cfg.scale == 128 and cfg.data.batch_size == 16
    assert (cfg.optim.name, cfg.optim.lr, tuple(cfg.optim.betas)) == ("adam", 2e-4, (0.9, 0.999))
    assert (cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.gamma) == ("multistep", [200 * EPOCH], 0.5)
    assert cfg.train.iterations == 400 * EPOCH
    (method,) = build_methods(cfg.methods, cfg.seed).methods  # the method's own parameter check
    p = method.params
    assert (p.every, p.beta, p.k, p.factor, p.sampler, p.alternate, p.use_ig) == (50 * EPOCH, 0.1, 10, 10.0, "uniform", True, True)
    assert (p.sub_size, p.sub_step) == (cfg.data.patch_size, 16)  # ClassSR: HR 128 step 64 at ×4
    assert class_sizes(499_875, p.k, p.factor)[1] == pytest.approx(0.7743, abs=5e-5)  # the paper's μ and sub-image count
    refreshes = list(range(p.every, cfg.train.iterations, p.every))
    assert len(refreshes) == 7 and p.beta * refreshes[-1] / cfg.train.iterations == pytest.approx(0.0875)
