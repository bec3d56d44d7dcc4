"""``attrsr bspa bank``: the sub-image bank of a folder (scores checked against an independent
computation, small images skipped and counted, the report), and bad input refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.data.bank import read_bank
from attrsr.images import read_image, save_image
from conftest import one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three 48×64 HR crops of a photo and one 20×20 image (LR 10×10 at ×2: smaller than a sub-image)."""
    from skimage import data

    root = tmp_path_factory.mktemp("imgs")
    photo = data.chelsea()
    for i, (t, l) in enumerate([(40, 60), (120, 200), (200, 300)]):
        save_image(photo[t : t + 48, l : l + 64], root / f"crop{i}.png")
    save_image(photo[:20, :20], root / "tiny.png")
    return root


def _bank(args, tmp_path):
    env = {"ATTRSR_CACHE": str(tmp_path / "cache")}
    return CliRunner().invoke(app, ["bspa", "bank", "--scale", "2", "--size", "16", "--step", "8", "--no-progress", *args], env=env)


def test_bank_command_scores_every_sub_image_and_reports(folder, tmp_path):
    res = _bank(["--data", str(folder), "--k", "3", "--factor", "2", "--examples", "2", "--out", str(tmp_path / "bank")], tmp_path)
    assert res.exit_code == 0, res.output
    assert "skipped 1 of 4 images smaller than a 16-px LR sub-image (e.g. tiny)" in res.output
    bank = read_bank(tmp_path / "bank")
    # LR 24×32: tops 0, 8 × lefts 0, 8, 16 → 6 sub-images per crop, none of the tiny image
    assert len(bank) == 18 and sorted(set(bank.names)) == ["crop0", "crop1", "crop2"]
    rows = np.array(bank.names) == "crop1"
    assert sorted(zip(bank.top[rows].tolist(), bank.left[rows].tolist())) == [(0, 0), (0, 8), (0, 16), (8, 0), (8, 8), (8, 16)]
    meta = json.loads((tmp_path / "bank" / "classes.json").read_text())
    assert (meta["k"], meta["factor"], meta["scale"], meta["size"], meta["step"], meta["skipped_images"]) == (3, 2.0, 2, 16, 8, 1)
    assert meta["sizes"] == [8, 6, 4] and meta["mu"] == pytest.approx(2 ** -0.5)
    for c, t in enumerate(meta["thresholds"]):
        assert bank.mse[bank.classes.classes == c].max() == pytest.approx(t, rel=1e-7)
        assert bank.mse[bank.classes.classes == c + 1].min() >= bank.mse[bank.classes.classes == c].max()
    # one row recomputed independently: MATLAB-bicubic LR of the whole image, the demo model, numpy MSE
    from attrsr.models.pretrained import load_default
    from attrsr.resize import imresize

    j = int(np.argmax(bank.mse))
    hr = torch.from_numpy(read_image(folder / f"{bank.names[j]}.png")).permute(2, 0, 1).float() / 255
    lr = (imresize(hr, 0.5).clamp(0, 1) * 255).round() / 255  # the decoded LR is 8-bit
    t, l = int(bank.top[j]), int(bank.left[j])
    with torch.no_grad():
        sr = load_default(2)(lr[None, :, t : t + 16, l : l + 16])[0].clamp(0, 1)
    expected = float(((sr - hr[:, 2 * t : 2 * t + 32, 2 * l : 2 * l + 32]) ** 2).mean())
    assert bank.mse[j] == pytest.approx(expected, rel=1e-5)
    for name in ("bank.md", "bank.html", "bank_hist.png", "bank_examples.png"):
        assert (tmp_path / "bank" / name).stat().st_size > 500
    md = (tmp_path / "bank" / "bank.md").read_text()
    assert "| 0 | 8 |" in md and "images smaller than a sub-image (skipped): 1" in md


@pytest.mark.parametrize("args,words", [
    (["--k", "1"], ["K (number of classes)", "2..100", "1"]),
    (["--k", "101"], ["K (number of classes)", "101"]),
    (["--factor", "0.5"], ["imbalance factor", "0.5"]),
    (["--size", "40"], ["0 sub-images of 40 px", "4 of 4 images smaller", "lower K or --size"]),
])
def test_bank_command_refuses_bad_input_in_one_line(folder, tmp_path, args, words):
    res = _bank(["--data", str(folder), "--out", str(tmp_path / "bank"), *args], tmp_path)
    one_line_error(res, *words)
    assert not (tmp_path / "bank").exists()


def test_pooled_psnr_is_the_psnr_of_the_mean_squared_error():
    from attrsr.data.bank import pooled_psnr

    mse = np.array([1.0, 4.0, 0.0])  # 8-bit units; the last crop exact
    psnrs = [10 * np.log10(255**2 / m) if m else np.inf for m in mse]
    assert pooled_psnr(psnrs) == pytest.approx(10 * np.log10(255**2 / mse.mean()), abs=1e-9)
    assert pooled_psnr([np.inf, np.inf]) == np.inf and pooled_psnr([30.0]) == pytest.approx(30.0)


def _fake_run(folder, seed, noise=0.0, scale=2):
    """A run folder holding the shipped demo model (optionally with noise on its convolutions)."""
    from safetensors.torch import load_file, save_file

    from attrsr.config import dump_config, load_config
    from engine_helpers import REPO

    folder.mkdir(parents=True)
    cfg = load_config(REPO / "configs" / f"demo-x{scale}.yaml", [f"seed={seed}"])
    (folder / "config.yaml").write_text(dump_config(cfg))
    state = load_file(str(REPO / "src" / "attrsr" / "assets" / f"demo-x{scale}.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + noise * v.std() * torch.randn(v.shape, generator=gen) if v.ndim == 4 else v for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))


def sub_image_psnr(model, folder, bank, j: int) -> float:
    """Y-PSNR of ``model`` on the bank's sub-image ``j`` (16-px LR, ×2), recomputed from the PNG
    without the report's code: MATLAB-bicubic LR rounded to 8 bits, border 2."""
    from attrsr.metrics import psnr
    from attrsr.resize import imresize

    hr = torch.from_numpy(read_image(folder / f"{bank.names[j]}.png")).permute(2, 0, 1).float() / 255
    lr = (imresize(hr, 0.5).clamp(0, 1) * 255).round() / 255
    t, l = int(bank.top[j]), int(bank.left[j])
    with torch.no_grad():
        sr = model(lr[None, :, t : t + 16, l : l + 16])[0].clamp(0, 1)
    return psnr(sr, hr[:, 2 * t : 2 * t + 32, 2 * l : 2 * l + 32], crop_border=2)


def test_runs_report_per_class_psnr_and_mse_shares(folder, tmp_path):
    from attrsr.models.pretrained import load_default

    assert _bank(["--data", str(folder), "--k", "3", "--factor", "2", "--out", str(tmp_path / "bank")], tmp_path).exit_code == 0
    exp = tmp_path / "exp" / "runs"
    for seed in (0, 1):
        _fake_run(exp / "uniform" / f"seed{seed}", seed)  # the scorer itself
        _fake_run(exp / "noisy" / f"seed{seed}", seed, noise=2.0)
    (tmp_path / "exp" / "grid.yaml").write_text("variants:\n  uniform: {}\n  noisy: {}\n")  # the grid's order, not a-z
    res = CliRunner().invoke(app, ["bspa", "report", str(tmp_path / "exp"), "--bank", str(tmp_path / "bank"), "--out",
                                   str(tmp_path / "rep"), "--no-progress"], env={"ATTRSR_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "bspa_report.json").read_text())
    bank = read_bank(tmp_path / "bank")
    assert rep["baseline"] == "uniform" and rep["seeds"] == {"noisy": [0, 1], "uniform": [0, 1]} and rep["sub_images"] == 18
    assert rep["variants"] == ["uniform", "noisy"]
    # the scorer run reproduces the bank's MSEs; its shares of the bank's classes are the class sizes (± a boundary row)
    assert np.allclose(rep["mean_mse"]["uniform"], bank.mse, rtol=1e-5)
    shares = {r["model"]: r for r in rep["shares"]}
    assert [shares["scorer (bank)"][f"class{c}"] for c in range(3)] == pytest.approx([8 / 18, 6 / 18, 4 / 18])
    assert all(abs(shares["uniform"][f"class{c}"] - shares["scorer (bank)"][f"class{c}"]) <= 1 / 18 + 1e-12 for c in range(3))
    assert shares["noisy"]["mean_mse"] > 1.2 * shares["uniform"]["mean_mse"]
    # per-class Y-PSNR recomputed directly for the scorer
    model = load_default(2)
    rows = {(r["variant"], r["class"]): r for r in rep["per_class"]}
    for c in range(3):
        values = [sub_image_psnr(model, folder, bank, j) for j in np.flatnonzero(bank.classes.classes == c)]
        pooled = 10 * np.log10(1 / np.mean(10 ** (-np.array(values) / 10)))  # the class's squared errors pooled
        assert rows[("uniform", c)]["psnr_y"] == pytest.approx(pooled, abs=1e-6)
        assert rows[("uniform", c)]["std"] == 0.0 and rows[("uniform", c)]["n"] == bank.classes.sizes[c]
        assert rows[("noisy", c)]["delta"] < 0 and rows[("noisy", c)]["delta"] == pytest.approx(rows[("noisy", c)]["psnr_y"] - rows[("uniform", c)]["psnr_y"])
    for name in ("bspa_report.md", "bspa_report.html", "per_class.png", "mse_hist.png", "per_class.csv", "shares.csv", "bank.html"):
        assert (tmp_path / "rep" / name).stat().st_size > 200
    assert "| noisy | 0 |" in (tmp_path / "rep" / "bspa_report.md").read_text()

    # bad input: one line, no report folder
    _fake_run(tmp_path / "x4" / "seed0", 0, scale=4)
    (tmp_path / "empty").mkdir()
    for args, words in [([str(tmp_path / "x4")], ["trains ×4, the bank is ×2"]),
                        ([str(tmp_path / "empty")], ["no finished run in it"]),
                        ([str(tmp_path / "exp"), "--baseline", "bspa"], ["--baseline bspa", "uniform, noisy"])]:
        res = CliRunner().invoke(app, ["bspa", "report", *args, "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "bad")],
                                 env={"ATTRSR_CACHE": str(tmp_path / "cache")})
        one_line_error(res, *words)
        assert not (tmp_path / "bad").exists()
