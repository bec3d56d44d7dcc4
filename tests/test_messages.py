"""Messages a new user meets must point at the real problem: a checkpoint cut short, the --set item
that holds a bad value, the demo's shipped scales, an image too small for SSIM, a mistyped model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import one_line_error as _one_line_error
import torch
from PIL import Image
from typer.testing import CliRunner

from attrsr import models
from attrsr.cli import app
from attrsr.config import load_config
from attrsr.errors import AttrsrError
from attrsr.models.pretrained import default_info

from engine_helpers import TINY


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_state():
    info = default_info(2)
    return models.load(info["model"], weights=info["weights"], scale=2, **info["config"]).state_dict(), info


def _cut(src, dest, keep):
    data = src.read_bytes()
    dest.write_bytes(data[: keep(len(data))])
    return dest


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
@pytest.mark.parametrize("keep", [lambda n: 60, lambda n: n // 2, lambda n: n - 1], ids=["head", "half", "last-byte"])
def test_truncated_checkpoint_says_the_file_ends_early(tmp_path, demo_state, fmt, keep):
    state, _ = demo_state
    full = tmp_path / ("full.safetensors" if fmt == "safetensors" else "full.pth")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(full))
    else:
        torch.save(state, full, _use_new_zipfile_serialization=fmt == "zip")
    cut = _cut(full, tmp_path / ("cut" + full.suffix), keep)
    for allow_pickle in (False, True):
        with pytest.raises(AttrsrError) as info:
            models.read_checkpoint(cut, allow_pickle=allow_pickle)
        assert str(info.value) == f"{cut}: the file ends early — incomplete download? Download it again (or copy it again)"
    assert models.read_checkpoint(full).keys() == state.keys()  # the complete file reads


def test_truncated_weights_on_the_command_line(tmp_path, demo_state):
    state, info = demo_state
    torch.save(state, tmp_path / "full.pth", _use_new_zipfile_serialization=False)
    cut = _cut(tmp_path / "full.pth", tmp_path / "demo.pth", lambda n: 60)  # torch raises a bare EOFError here
    r = invoke("eval", "--model", info["model"], "--weights", cut, "--scale", "2", "--data", "samples")
    line = _one_line_error(r, "ends early — incomplete download?")
    assert "EOFError" not in line


def test_truncated_latest_pt_on_resume(tmp_path):
    from attrsr.engine.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint({"step": 1, "weights": torch.zeros(1000)}, tmp_path / "latest.pt")
    _cut(tmp_path / "latest.pt", tmp_path / "cut.pt", lambda n: n - 100)
    with pytest.raises(AttrsrError, match="the file ends early"):
        load_checkpoint(tmp_path / "cut.pt")


def test_bad_set_value_is_reported_against_the_command_line(tmp_path):
    with pytest.raises(AttrsrError) as info:
        load_config(TINY, ["data.batch_size=lots"])
    assert str(info.value) == "--set data.batch_size=lots: data.batch_size: input should be a valid integer, unable to parse string as an integer (got 'lots')"
    # A bad value in the file is still the file's; the last --set of a key is the one reported.
    (tmp_path / "r.yaml").write_text(f"base: {TINY}\noptim: {{lr: -1}}\n")
    with pytest.raises(AttrsrError) as info:
        load_config(tmp_path / "r.yaml", ["data.batch_size=2", "data.batch_size=lots", "optim.lrr=1"])
    text = str(info.value)
    parts = text.split("; ")
    assert f"{tmp_path / 'r.yaml'}: optim.lr: input should be greater than 0 (got -1)" in parts
    assert any(p.startswith("--set data.batch_size=lots: data.batch_size: input should be a valid integer") for p in parts)
    assert "--set optim.lrr=1: unknown key 'optim.lrr' (did you mean 'lr'?)" in parts
    assert "batch_size=2" not in text


def test_demo_with_an_unshipped_scale_lists_the_shipped_ones():
    line = _one_line_error(invoke("demo", "--scale", "3"), "--scale 3", "x2, x4", "use --scale 2 or --scale 4")
    assert "--model" not in line


def _hr_folder(tmp_path, size):
    folder = tmp_path / f"Tiny{size}"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


def test_image_smaller_than_ssim_window_does_not_advise_a_smaller_border(tmp_path):
    line = _one_line_error(invoke("eval", "--model", "bicubic", "--data", _hr_folder(tmp_path, 8), "--scale", "2", "--border", "0"),
                           "8×8", "11×11")
    assert "--border" not in line


def test_border_too_large_names_the_largest_that_fits(tmp_path):
    data = _hr_folder(tmp_path, 20)
    _one_line_error(invoke("eval", "--model", "bicubic", "--data", data, "--scale", "2", "--border", "5"), "use --border 4 or less")
    assert invoke("eval", "--model", "bicubic", "--data", data, "--scale", "2", "--border", "4").exit_code == 0


def test_model_name_typo_in_a_recipe_gets_did_you_mean(tmp_path):
    (tmp_path / "r.yaml").write_text(f"base: {TINY}\nmodel: {{name: edsr-basline, args: {{n_resblocks: 2, n_feats: 16}}}}\n")
    r = invoke("train", tmp_path / "r.yaml", "--out", tmp_path / "run", "--set", "val.data=[]")
    _one_line_error(r, "model.name: unknown model 'edsr-basline' (did you mean 'edsr-baseline'?)")
    assert not (tmp_path / "run").exists()
    with pytest.raises(AttrsrError, match=r"did you mean 'swinir-light'\?"):
        models.spec("swinir_light")
