"""``attrsr train`` user errors: each is one line on stderr, exit code 1, and nothing half-written."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from attrsr.cli import app
from engine_helpers import PYTHON, TINY, subprocess_env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(out, cache, *sets):
    args = ["train", str(TINY), "--out", str(out), "--no-progress"]
    for s in (f"data.cache_dir={cache}", "val.data=[]", "train.threads=1", *sets):
        args += ["--set", s]
    return CliRunner().invoke(app, args)


def _one_line_error(result, pattern):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0], lines[0]


def test_config_typo_in_a_real_process(tmp_path):
    """The real console entry point: a typo lists the valid keys; exit 1; no run folder."""
    out = tmp_path / "run"
    cmd = [PYTHON, "-m", "attrsr", "train", str(TINY), "--out", str(out), "--set", "optim.lrr=1e-3"]
    res = subprocess.run(cmd, env=subprocess_env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: --set optim.lrr=1e-3: unknown key 'optim.lrr' (did you mean 'lr'?); "
        "valid keys of optim: name, lr, betas, eps, weight_decay, grad_clip"
    ]
    assert not out.exists()


def test_mistyped_value_and_bad_set_syntax(tmp_path, cache):
    _one_line_error(_train(tmp_path / "r", cache, "data.batch_size=many"), "data.batch_size: input should be a valid integer")
    _one_line_error(_train(tmp_path / "r", cache, "optim.lr"), "expected key.sub=value")
    _one_line_error(_train(tmp_path / "r", cache, "model.args.n_fetas=8"), "accepted: n_resblocks, n_feats")
    assert not (tmp_path / "r").exists()


def test_missing_data_folder(tmp_path, cache):
    _one_line_error(_train(tmp_path / "r", cache, f"data.train={tmp_path / 'DIV2K'}"), "dataset folder not found")
    assert not (tmp_path / "r").exists()


def test_patch_larger_than_every_image(tmp_path, cache):
    # Images smaller than the patch are skipped (tests/test_training_sets.py); none left is an error.
    _one_line_error(_train(tmp_path / "r", cache, "data.patch_size=2000"), "every image is smaller than the 2000-pixel LR patch")
    assert not (tmp_path / "r").exists()


def test_scale_that_does_not_match_the_data(tmp_path, cache):
    from attrsr.data import load_sample

    root = tmp_path / "set"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X2").mkdir(parents=True)
    for name in ("astronaut", "rocket", "camera", "coffee"):
        hr = load_sample(name)[:120, :160]
        Image.fromarray(hr).save(root / "HR" / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(hr[::2, ::2])).save(root / "LR_bicubic" / "X2" / f"{name}x2.png")
    _one_line_error(_train(tmp_path / "r", cache, f"data.train={root}", "scale=4"), "no X4 folder (available: X2)")
    assert not (tmp_path / "r").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache):
    method = json.dumps({"name": "hook_methods:NanAt", "step": 7})
    res = _train(tmp_path / "r", cache, "train.iterations=10", "train.checkpoint_every=5", f"methods=[{method}]")
    _one_line_error(res, "not finite at iteration 7")
    assert "latest.pt (iteration 5)" in res.stderr
    import torch

    assert torch.load(tmp_path / "r" / "latest.pt", weights_only=True)["step"] == 5
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_resuming_a_cosine_run_with_another_length_is_refused(tmp_path, cache):
    cosine = ("schedule.name=cosine", "train.iterations=4", "train.checkpoint_every=2")
    assert _train(tmp_path / "r", cache, *cosine).exit_code == 0
    before = (tmp_path / "r" / "latest.pt").read_bytes()
    res = CliRunner().invoke(app, ["train", str(TINY), "--out", str(tmp_path / "r"), "--resume", "--no-progress",
                                   "--set", f"data.cache_dir={cache}", "--set", "val.data=[]", "--set", "train.threads=1",
                                   "--set", "schedule.name=cosine", "--set", "train.iterations=8"])
    _one_line_error(res, "train.iterations (4; the cosine schedule decays over it)")
    assert (tmp_path / "r" / "latest.pt").read_bytes() == before
