"""The attribution prior in the engine: the term is logged at every step, λ = 0 trains exactly as
plain L1, a real λ changes the weights, bad parameters fail before training."""

from __future__ import annotations

import json

import pytest

from engine_helpers import run, same_weights, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _prior(**kw) -> str:
    return "methods=[" + json.dumps({"name": "attribution_prior", "threshold": 0.0, **kw}) + "]"


def test_prior_term_is_logged_and_zero_weight_is_plain_training(tmp_path, cache):
    sets = ["train.iterations=4", "train.log_every=1"]
    run(tiny_config(cache, *sets), tmp_path / "plain")
    run(tiny_config(cache, *sets, _prior(lambda_ap=0.0)), tmp_path / "zero")
    tr = run(tiny_config(cache, *sets, _prior(lambda_ap=10.0, scenario=2, n_ssr=2)), tmp_path / "prior")
    assert same_weights(weights(tmp_path / "plain" / "model.safetensors"), weights(tmp_path / "zero" / "model.safetensors"))
    assert not same_weights(weights(tmp_path / "plain" / "model.safetensors"), weights(tmp_path / "prior" / "model.safetensors"))
    head, *rows = (tmp_path / "prior" / "train.csv").read_text().splitlines()
    col = head.split(",").index("attribution_prior.prior")
    values = [float(r.split(",")[col]) for r in rows]
    assert len(values) == 4 and all(v > 0 for v in values)


@pytest.mark.parametrize("bad,words", [
    ({"mask_size": 17}, ["17×17 PoI (mask_size) is larger than the 16×16 LR crop", "mask_size ≤ 16"]),
    ({"n_ssr": 10}, ["n_ssr=10 is more than the 9 templates", "use n_ssr ≤ 9"]),  # 16-px crop, 5×5 templates
    ({"n_ssr": 9, "scenario": 1, "local_window": 3}, ["3×3 local window of scenario 1 (8 positions"]),
    ({"lambda_ap": -1.0}, ["lambda_ap", "greater than or equal to 0"]),
    ({"target": 1.5}, ["target 1.5", "[0, 1]"]),
])
def test_bad_prior_parameters_are_one_line_errors_before_training(tmp_path, cache, bad, words):
    from typer.testing import CliRunner

    from attrsr.cli import app
    from conftest import one_line_error
    from engine_helpers import TINY

    out = tmp_path / "run"
    args = ["train", str(TINY), "--out", str(out), "--no-progress"]
    for s in (f"data.cache_dir={cache}", "val.data=[]", "train.threads=1", _prior(**bad)):
        args += ["--set", s]
    one_line_error(CliRunner().invoke(app, args), *words)
    assert not out.exists()


@pytest.mark.parametrize("model", ["edsr-t", "rcan-t", "rnan-t"])
def test_gpu_recipes_hold_the_thesis_settings_and_pass_the_checks(model):
    from attrsr.config import load_config
    from attrsr.engine.compose import build_methods
    from attrsr.methods.prior import check_prior_params
    from engine_helpers import REPO

    cfg = load_config(REPO / "configs" / f"{model}-x2-prior.yaml")
    plain = load_config(REPO / "configs" / f"{model}-x2.yaml")
    assert cfg.model == plain.model and cfg.data == plain.data and cfg.optim == plain.optim and not plain.methods
    assert (cfg.model.name, cfg.scale, cfg.data.patch_size, cfg.data.batch_size) == (model, 2, 48, 16)
    (method,) = build_methods(cfg.methods, cfg.seed).methods
    p = method.params
    assert (p.lambda_ap, p.target, p.scenario, p.n_ssr, p.mask_size, p.patch) == (1e-4, "sim", 1, 1, 5, 5)
    assert p.fast_double_backprop and p.local_window == 7 and p.far_window == 11
    for scenario in (1, 2, 3, 4):  # the thesis's other settings fit the 48-px crops too
        check_prior_params(p.model_copy(update={"scenario": scenario}), cfg.data.patch_size)
