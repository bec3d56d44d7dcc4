"""Typed recipes: every shipped recipe validates and builds its model; overrides, inheritance and
the one-line errors for typos and mistyped values."""

from __future__ import annotations

from pathlib import Path

import pytest

from attrsr.config import Config, dump_config, load_config
from attrsr.errors import AttrsrError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "cpu").glob("*.yaml")) + sorted((REPO / "src" / "attrsr" / "assets").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates_and_builds_its_model(path, tmp_path):
    from attrsr import models

    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name
    model = models.create(cfg.model.name, scale=cfg.scale, **cfg.model.args)
    assert model.scale == cfg.scale
    (tmp_path / "config.yaml").write_text(dump_config(cfg))  # what every run folder holds
    assert load_config(tmp_path / "config.yaml") == cfg


def test_papers_standard_settings():
    x2 = load_config(REPO / "configs" / "edsr-baseline-x2.yaml")
    x4 = load_config(REPO / "configs" / "edsr-baseline-x4.yaml")
    for cfg in (x2, x4):
        assert (cfg.model.name, cfg.data.batch_size, cfg.data.patch_size, cfg.optim.name) == ("edsr-baseline", 16, 48, "adam")
        assert (cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.gamma) == ("multistep", [200000], 0.5)
        assert cfg.train.iterations == 300000 and cfg.data.flip and cfg.data.rot90
    assert (x2.scale, x2.optim.lr, x4.scale, x4.optim.lr) == (2, 1e-4, 4, 2e-4)
    for name, model in (("edsr-t", "edsr-t"), ("rcan-t", "rcan-t"), ("rnan-t", "rnan-t")):
        t = load_config(REPO / "configs" / f"{name}-x2.yaml")
        # Thesis Sec. 4.1: fixed learning rate 1e-4, Adam(0.9, 0.999, 1e-8), 1000 epochs of 1000 iterations.
        assert (t.model.name, t.schedule.name, t.optim.lr, t.optim.betas, t.optim.eps) == (model, "constant", 1e-4, (0.9, 0.999), 1e-8)
        assert t.train.iterations == 1000 * 1000 and t.data.batch_size == 16 and t.data.patch_size == 48


def test_overrides_parse_values_as_yaml():
    cfg = load_config(
        REPO / "configs" / "tiny-cpu.yaml",
        ["optim.lr=3e-4", "optim.betas=[0.9, 0.99]", "val.data=[Set5, samples:val]", "train.ema=0.999",
         "methods=[{name: a, w: 1}, {name: b}]", "methods.0.w=2", "model.args.n_feats=8", "schedule.milestones=[10, 20]"],
    )
    assert cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.99) and cfg.train.ema == 0.999
    assert cfg.val.data == ["Set5", "samples:val"] and cfg.schedule.milestones == [10, 20]
    assert [m.name for m in cfg.methods] == ["a", "b"] and cfg.methods[0].model_extra == {"w": 2}
    assert cfg.model.args == {"n_resblocks": 2, "n_feats": 8}


def test_base_inheritance_deep_merges(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nscale: 2\noptim: {lr: 1.0e-3, weight_decay: 0.1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\noptim: {lr: 2.0e-3}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.name, cfg.scale, cfg.optim.lr, cfg.optim.weight_decay) == ("b", 2, 2e-3, 0.1)
    (tmp_path / "c.yaml").write_text("base: c.yaml\nscale: 2\n")
    with pytest.raises(AttrsrError, match="loops back"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], "unknown key 'optim.lrr' (did you mean 'lr'?); valid keys of optim: name, lr, betas, eps, weight_decay, grad_clip"),
        (["data.patch=32"], "unknown key 'data.patch' (did you mean 'patch_size'?); valid keys of data: train, lr, patch_size"),
        (["sede=3"], "unknown key 'sede' (did you mean 'seed'?); valid keys of the top level: name, seed, scale"),
        (["data.batch_size=lots"], "data.batch_size: input should be a valid integer"),
        (["loss.name=l3"], "loss.name: input should be 'l1', 'mse' or 'charbonnier' (got 'l3')"),
        (["optim.lr=-1"], "optim.lr: input should be greater than 0"),
        (["schedule.milestones=[20, 10]"], "schedule.milestones must be increasing"),
        (["optim.lr"], "expected key.sub=value"),
    ],
)
def test_typos_and_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(AttrsrError) as info:
        load_config(REPO / "configs" / "tiny-cpu.yaml", overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_file_errors(tmp_path):
    with pytest.raises(AttrsrError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("scale: 2\noptim: {lr: [\n")
    with pytest.raises(AttrsrError, match="not valid YAML at line"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "noscale.yaml").write_text("name: x\n")
    with pytest.raises(AttrsrError, match="scale: required key is missing"):
        load_config(tmp_path / "noscale.yaml")
