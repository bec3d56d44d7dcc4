"""One model spec for ``eval``/``lam``/``interpret``: ``--model`` optional with ``--weights`` (architecture,
configuration and scale detected), ``NAME:WEIGHTS``, ``--model-arg``, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attrsr.cli import app
from conftest import LAM_IMAGES, SET5, WEIGHTS, need

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(result, *needles: str) -> str:
    """The command failed with exactly one ``error: …`` line (no traceback) naming every needle."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # no crash
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def mini(tmp_path) -> Path:
    """Two Set5 images in the benchmark layout at x2, x3 and x4."""
    need(SET5)
    root = tmp_path / "Mini"
    for scale in (2, 3, 4):
        (root / "LR_bicubic" / f"X{scale}").mkdir(parents=True)
        for name in ("bird", "butterfly"):
            shutil.copy(SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png", root / "LR_bicubic" / f"X{scale}")
    shutil.copytree(SET5 / "HR", root / "HR", ignore=lambda d, names: [n for n in names if not n.startswith(("bird", "butterfly"))])
    return root


@pytest.mark.slow
@pytest.mark.parametrize("rel,name,scale", [
    ("pan/PANx4_DF2K.pth", "pan", 4), ("imdn/IMDN_x4.pth", "imdn", 4), ("carn/carn_m.pth", "carn-m", 4),
    ("fsrcnn/fsrcnn_x4.pth", "fsrcnn", 4),
])
def test_eval_without_model_gives_the_same_numbers(rel, name, scale, tmp_path):
    weights = need(WEIGHTS / rel, SET5)
    detected = run("eval", "--weights", weights, "--scale", scale, "--data", SET5, "--json", tmp_path / "a.json")
    assert detected.exit_code == 0, detected.stderr
    line = next(line for line in detected.stdout.splitlines() if line.startswith("model: "))
    assert line.startswith(f"model: {name} ") and "architecture from the key names and shapes" in line
    assert "warning" not in detected.stderr  # well above bicubic
    forced = run("eval", "--model", name, "--weights", weights, "--scale", scale, "--data", SET5, "--json", tmp_path / "b.json")
    assert forced.exit_code == 0, forced.stderr
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b and a["Set5"]["psnr_y"] > 30  # bicubic: 28.43


def test_name_colon_weights_form_in_eval_equals_two_flags(mini, tmp_path):
    weights = need(WEIGHTS / "fsrcnn" / "fsrcnn_x3.pth")
    colon = run("eval", "--model", f"fsrcnn:{weights}", "--scale", 3, "--data", mini, "--json", tmp_path / "a.json")
    flags = run("eval", "--model", "fsrcnn", "--weights", weights, "--scale", 3, "--data", mini, "--json", tmp_path / "b.json")
    assert colon.exit_code == 0 and flags.exit_code == 0, colon.stderr + flags.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


def test_wrong_scale_far_below_bicubic_warns(mini):
    weights = need(WEIGHTS / "fsrcnn" / "fsrcnn_x2.pth")
    wrong = run("eval", "--weights", weights, "--scale", 4, "--data", mini)
    assert wrong.exit_code == 0
    warnings = [line for line in wrong.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "below bicubic" in warnings[0] and "--scale 4" in warnings[0], wrong.stderr
    right = run("eval", "--weights", weights, "--scale", 2, "--data", mini)
    assert right.exit_code == 0 and "warning" not in right.stderr


def test_single_scale_carn_file_and_model_args(mini, tmp_path):
    raw = torch.load(need(WEIGHTS / "carn" / "carn_m.pth"), map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in raw.items() if not k.startswith(("upsample.up3.", "upsample.up4."))}, tmp_path / "x2.pth")
    ok = run("eval", "--weights", tmp_path / "x2.pth", "--data", mini)  # no --model, no --scale
    assert ok.exit_code == 0, ok.stderr
    assert "carn-m (multi_scale=False), x2 from upsample.up2 only" in ok.stdout
    # --model-arg reaches the builder: forcing the multi-scale build names the missing upsamplers.
    one_error(run("eval", "--weights", tmp_path / "x2.pth", "--data", mini, "--model-arg", "multi_scale=true"),
              "x2.pth", "missing key", "upsample.up3")
    one_error(run("eval", "--weights", tmp_path / "x2.pth", "--data", mini, "--model-arg", "multiscale=false"),
              "'multiscale'", "accepted: multi_scale, group")
    one_error(run("eval", "--weights", tmp_path / "x2.pth", "--data", mini, "--model-arg", "multi_scale"),
              "--model-arg multi_scale", "KEY=VALUE")


def test_model_spec_errors(mini, tmp_path):
    pan = need(WEIGHTS / "pan" / "PANx4_DF2K.pth")
    one_error(run("eval", "--model", "demo", "--weights", pan, "--scale", 4, "--data", mini),
              "--model demo", "its own weights", "drop --weights")
    one_error(run("eval", "--model", "bicubic", "--weights", pan, "--scale", 4, "--data", mini),
              "bicubic has no weights", "drop --weights")
    one_error(run("interpret", "--model", "pan:", "--data", mini, "--scale", 4, "--out", tmp_path / "o"),
              "--model pan:", "no weights after ':'")
    one_error(run("interpret", "--model", "pna", "--data", mini, "--scale", 4, "--out", tmp_path / "o"),
              "unknown model 'pna'", "did you mean 'pan'")
    one_error(run("interpret", "--model", "pan", "--data", mini, "--scale", 4, "--out", tmp_path / "o"),
              "--model pan needs weights")
    one_error(run("eval", "--model", f"pan:{pan}", "--weights", pan, "--data", mini), "weights given twice")
    one_error(run("eval", "--model", "pan", "--weights", pan, "--scale", 2, "--data", mini),
              "PANx4_DF2K.pth", "for scale 4", "not scale 2")
    assert not (tmp_path / "o").exists()


def test_bad_checkpoints_give_one_error_line(mini, tmp_path):
    carn = need(WEIGHTS / "carn" / "carn_m.pth")
    one_error(run("eval", "--weights", carn, "--data", mini), "carn_m.pth", "scale 2, 3, 4", "--scale")
    one_error(run("eval", "--weights", WEIGHTS / "fsrcnn" / "fsrcnn_x2.pth", "--data", mini),
              "fsrcnn_x2.pth", "do not tell their scale", "--scale")
    torch.save({"encoder.layer.0.weight": torch.zeros(8, 3, 3, 3), "decoder.weight": torch.zeros(3, 8)}, tmp_path / "odd.pth")
    one_error(run("eval", "--weights", tmp_path / "odd.pth", "--scale", 2, "--data", mini),
              "odd.pth", "no architecture of the zoo fits", "Closest:", "--model NAME")
    (tmp_path / "cut.pth").write_bytes(carn.read_bytes()[:100_000])
    one_error(run("eval", "--weights", tmp_path / "cut.pth", "--scale", 2, "--data", mini), "cut.pth", "ends early")
    (tmp_path / "photo.pth").write_bytes((SET5 / "HR" / "bird.png").read_bytes())
    one_error(run("eval", "--weights", tmp_path / "photo.pth", "--scale", 2, "--data", mini), "photo.pth", "cannot read checkpoint")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")
    one_error(run("eval", "--weights", tmp_path / "cut.safetensors", "--scale", 2, "--data", mini), "cut.safetensors")


def test_lam_and_interpret_read_the_scale_from_the_weights(tmp_path):
    pan = need(WEIGHTS / "pan" / "PANx4_DF2K.pth", LAM_IMAGES)
    out = tmp_path / "lam"
    r = run("lam", "--weights", pan, "--hr", LAM_IMAGES / "3.png", "--x", 100, "--y", 120, "--steps", 2, "--out", out)
    assert r.exit_code == 0, r.stderr
    info = json.loads((out / "result.json").read_text())
    assert info["model"] == "pan" and info["scale"] == 4
    said = [line for line in r.stdout.splitlines() if line.startswith("model: ")]  # one line: what, from what
    assert len(said) == 1 and "pan" in said[0] and "x4 from" in said[0] and "key names and shapes" in said[0], r.stdout
    data = tmp_path / "imgs"
    data.mkdir()
    shutil.copy(LAM_IMAGES / "3.png", data)
    r = run("interpret", "--model", pan, "--data", data, "--n-windows", 1, "--steps", 2, "--out", tmp_path / "rep")
    assert r.exit_code == 0, r.stderr
    assert sum(line.startswith("model: pan ") for line in r.stdout.splitlines()) == 1, r.stdout
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["models"] == ["pan"]


def test_tiles_too_small_for_the_model_are_refused(mini):
    from attrsr import images, metrics, models
    from attrsr.errors import AttrsrError
    from attrsr.models.tiling import smallest_sound_tile, tiled_forward

    pan = models.load(weights=need(WEIGHTS / "pan" / "PANx4_DF2K.pth"))
    lr = images.load_image(mini / "LR_bicubic" / "X4" / "birdx4.png")[None]
    hr = images.modcrop(images.read_image(mini / "HR" / "bird.png"), 4)
    min_tile, overlap = smallest_sound_tile(pan, lr)
    assert 8 < min_tile <= 64 and min_tile == 2 * overlap
    with pytest.raises(AttrsrError, match=f"tile 8 is too small for pan.*smallest sound tile is {min_tile}"):
        tiled_forward(pan, lr, 8)
    with torch.inference_mode():
        whole = metrics.psnr(pan(lr)[0], hr, 4)
        # The smallest sound tile, even with a too-small overlap asked for (it grows), stays within
        # 0.02 dB of the whole image (measured: 0.008); 8-px tiles with a 4-px overlap lost 0.36 dB.
        assert abs(metrics.psnr(tiled_forward(pan, lr, min_tile, overlap=2)[0], hr, 4) - whole) < 0.02
    one_error(run("eval", "--weights", WEIGHTS / "pan" / "PANx4_DF2K.pth", "--data", mini, "--tile", 8),
              "tile 8 is too small for pan", f"--tile {min_tile}")
