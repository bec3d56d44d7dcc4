"""The attribution prior in the engine: the term is logged at every step, λ = 0 trains exactly as
plain L1, a real λ changes the weights, bad parameters fail before training."""

from __future__ import annotations

import json

import pytest

from attrsr.errors import AttrsrError
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


@pytest.mark.parametrize("bad,msg", [({"mask_size": 40}, "larger than"), ({"n_ssr": 400}, "more regions"),
                                     ({"lambda_ap": -1.0}, "lambda_ap")])
def test_bad_prior_parameters_fail_before_training(tmp_path, cache, bad, msg):
    with pytest.raises(AttrsrError, match=msg):
        run(tiny_config(cache, _prior(**bad)), tmp_path / "run")
    assert not (tmp_path / "run").exists()
