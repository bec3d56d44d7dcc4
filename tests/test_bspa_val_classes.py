"""Held-aside (val) classes of BSPA (the paper's Fig. 3, right): sub-images of other images sorted by
the *training* bank's thresholds — `attrsr bspa bank --thresholds-from` — and `attrsr bspa report
--val-bank` with train and val classes side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.data.bank import SubImageBank, build_bank, read_bank, write_bank
from attrsr.data.longtail import classes_by_thresholds, long_tail_classes
from attrsr.errors import AttrsrError
from attrsr.images import read_image, save_image
from conftest import one_line_error
from test_bspa_bank import _bank, _fake_run, folder, sub_image_psnr  # noqa: F401  (folder: the train images fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _synthetic(grids: dict[str, np.ndarray], *, thresholds_from=None, k=4, factor=4.0, size=16, step=8, scale=2):
    """build_bank on hand-made per-image score grids (the cache hands them over; nothing is scored)."""
    names = list(grids)
    return build_bank(names, None, None, torch.nn.Conv2d(1, 1, 1), size=size, step=step, scale=scale, k=k, factor=factor,
                      cache=lambda name, key, compute: [grids[n] for n in names], thresholds_from=thresholds_from)


def test_held_aside_scores_land_in_the_training_banks_classes(tmp_path):
    train_mse = np.arange(1, 41, dtype=np.float64) * 1e-3  # 40 sub-images, K=4, factor 4: μ = 0.63, sizes 18, 11, 7, 4 (rounded)
    train = _synthetic({"t0": train_mse[:20].reshape(4, 5).astype(np.float32), "t1": train_mse[20:].reshape(4, 5).astype(np.float32)})
    t = train.classes.thresholds
    assert train.classes.sizes == [18, 11, 7, 4] and t == pytest.approx([0.018, 0.029, 0.036])
    write_bank(train, tmp_path / "train")
    train = read_bank(tmp_path / "train")
    # hand-made held-aside MSEs: below the first threshold, exactly on thresholds (inclusive upper bounds),
    # just above them, beyond the last (the open last class); nothing lands in class 2
    val_mse = np.array([[1e-5, t[0], t[0] * 1.0001], [t[1], 0.5, 0.04]], dtype=np.float64)
    val = _synthetic({"v0": val_mse}, thresholds_from=train)
    assert val.classes.classes.tolist() == [0, 0, 1, 1, 3, 3]
    assert val.classes.sizes == [2, 2, 0, 2] and val.classes.thresholds == train.classes.thresholds
    assert (val.classes.k, val.classes.factor, val.classes.mu) == (train.classes.k, train.classes.factor, train.classes.mu)
    assert val.meta["thresholds_from"] == {"bank": str((tmp_path / "train").resolve()), "data": None, "n": 40, "sizes": [18, 11, 7, 4]}
    # written and read back with its empty class; the long-tail law is not asked of it
    write_bank(val, tmp_path / "val")
    back = read_bank(tmp_path / "val")
    assert back.held_aside and back.classes.sizes == [2, 2, 0, 2] and back.classes.classes.tolist() == [0, 0, 1, 1, 3, 3]

    for kw, words in [({"scale": 3}, "the training bank is ×2, these sub-images ×3"),
                      ({"size": 12, "step": 6}, "16 px with step 8, these 12 px with step 6"),
                      ({"step": 4}, "16 px with step 8, these 16 px with step 4")]:
        with pytest.raises(AttrsrError, match=words):
            _synthetic({"v0": val_mse}, thresholds_from=train, **kw)
    with pytest.raises(AttrsrError, match="itself held-aside"):
        _synthetic({"v0": val_mse}, thresholds_from=back)


def test_runs_report_leaves_an_empty_val_class_without_psnr():
    from attrsr.report.bspa import attach_val, per_class_png, runs_report

    cls = np.array([0, 0, 1, 1, 2, 2])
    train = SubImageBank(["a"] * 6, np.zeros(6, int), np.zeros(6, int), np.array([1, 2, 3, 4, 5, 6]) * 1e-3,
                         long_tail_classes(np.array([1, 2, 3, 4, 5, 6]) * 1e-3, 3, 1), 16, 8, 2, {})
    assert train.classes.classes.tolist() == cls.tolist()
    val_classes = classes_by_thresholds(np.array([1e-3, 1.5e-3, 9e-3, 8e-3]), train.classes)
    assert val_classes.sizes == [2, 0, 2]
    val = SubImageBank(["b"] * 4, np.zeros(4, int), np.zeros(4, int), np.array([1e-3, 1.5e-3, 9e-3, 8e-3]), val_classes, 16, 8, 2,
                       {"thresholds_from": {}})
    psnr = lambda n, base: np.column_stack([np.full(n, 1e-3), base + np.arange(n, dtype=float)])  # noqa: E731
    scores = {("uniform", 0): psnr(6, 30.0), ("uniform", 1): psnr(6, 30.0), ("inverse", 0): psnr(6, 30.5), ("inverse", 1): psnr(6, 30.3)}
    vscores = {key: v[:4] - [0, 1.0] for key, v in scores.items()}
    report = attach_val(runs_report(scores, train, np.arange(6), "uniform"), runs_report(vscores, val, np.arange(4), "uniform"))
    rows = {(r["variant"], r["class"]): r for r in report["val"]["per_class"]}
    assert rows[("uniform", 1)]["psnr_y"] is None and rows[("uniform", 1)]["n"] == 0 and "delta" not in rows[("inverse", 1)]
    # class 2 of val holds the rows 2, 3: PSNR 31 and 32 for uniform, pooled; inverse 0.5 / 0.3 dB higher by seed
    pooled = -10 * np.log10(np.mean(10 ** (-np.array([31.0, 32.0]) / 10)))
    assert rows[("uniform", 2)]["psnr_y"] == pytest.approx(pooled) and rows[("inverse", 2)]["delta"] == pytest.approx(0.4)
    assert rows[("inverse", 2)]["ci95"][0] < 0.4 < rows[("inverse", 2)]["ci95"][1]
    assert per_class_png(report)[:4] == b"\x89PNG"
    with pytest.raises(AttrsrError, match="thresholds differ"):
        attach_val(report, {**report["val"], "thresholds": [0.0, 1.0]})


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """Held-aside images: other 48×64 crops of the training photo and two of another photo."""
    from skimage import data

    root = tmp_path_factory.mktemp("val")
    for i, (t, l) in enumerate([(80, 100), (160, 250)]):
        save_image(data.chelsea()[t : t + 48, l : l + 64], root / f"val{i}.png")
    for i, (t, l) in enumerate([(100, 150), (250, 200)]):
        save_image(data.astronaut()[t : t + 48, l : l + 64], root / f"astro{i}.png")
    return root


def _classes_by_hand(mse, thresholds):
    return [next((c for c, t in enumerate(thresholds) if m <= t), len(thresholds)) for m in mse]


def test_val_bank_command_uses_the_training_banks_thresholds(folder, val_folder, tmp_path):  # noqa: F811
    assert _bank(["--data", str(folder), "--k", "3", "--factor", "2", "--out", str(tmp_path / "train")], tmp_path).exit_code == 0
    env = {"ATTRSR_CACHE": str(tmp_path / "cache")}
    res = CliRunner().invoke(app, ["bspa", "bank", "--data", str(val_folder), "--thresholds-from", str(tmp_path / "train"),
                                   "--out", str(tmp_path / "val"), "--examples", "2", "--no-progress"], env=env)
    assert res.exit_code == 0, res.output
    train, val = read_bank(tmp_path / "train"), read_bank(tmp_path / "val")
    meta = json.loads((tmp_path / "val" / "classes.json").read_text())
    assert meta["thresholds"] == json.loads((tmp_path / "train" / "classes.json").read_text())["thresholds"]
    assert (meta["k"], meta["factor"], meta["scale"], meta["size"], meta["step"]) == (3, 2.0, 2, 16, 8)
    assert meta["thresholds_from"] == {"bank": str((tmp_path / "train").resolve()), "data": str(folder), "n": 18, "sizes": [8, 6, 4]}
    assert len(val) == 24 and sorted(set(val.names)) == ["astro0", "astro1", "val0", "val1"]
    assert val.classes.classes.tolist() == _classes_by_hand(val.mse, train.classes.thresholds)
    assert meta["sizes"] == np.bincount(val.classes.classes, minlength=3).tolist() and meta["data"] == str(val_folder)
    assert "sorted by the thresholds of" in (tmp_path / "val" / "bank.md").read_text()
    # one val score recomputed independently (the demo ×2 scorer, MATLAB-bicubic LR)
    from attrsr.models.pretrained import load_default
    from attrsr.resize import imresize

    j = int(np.argmax(val.mse))
    hr = torch.from_numpy(read_image(val_folder / f"{val.names[j]}.png")).permute(2, 0, 1).float() / 255
    lr = (imresize(hr, 0.5).clamp(0, 1) * 255).round() / 255
    t, l = int(val.top[j]), int(val.left[j])
    with torch.no_grad():
        sr = load_default(2)(lr[None, :, t : t + 16, l : l + 16])[0].clamp(0, 1)
    assert val.mse[j] == pytest.approx(float(((sr - hr[:, 2 * t : 2 * t + 32, 2 * l : 2 * l + 32]) ** 2).mean()), rel=1e-5)

    # another scorer (the demo's weights with noise): its scores are not the bank's, so its thresholds would not apply
    _fake_run(tmp_path / "noisy", 0, noise=1.0)
    bad = [(["--scale", "3"], ["the training bank is ×2, these sub-images ×3", "drop --scale"]),
           (["--size", "12"], ["16 px with step 8, these 12 px with step 8", "drop --size/--step"]),
           (["--step", "4"], ["16 px with step 8, these 16 px with step 4"]),
           (["--k", "4"], ["--k 4", "has k 3"]),
           (["--factor", "3"], ["--factor 3", "has factor 2"]),
           (["--weights", str(tmp_path / "noisy" / "model.safetensors")], ["the scorer gives MSE", "the training bank records"]),
           (["--thresholds-from", str(tmp_path / "val")], ["itself held-aside", "give the training bank"])]
    for args, words in bad:
        cmd = ["bspa", "bank", "--data", str(val_folder), "--out", str(tmp_path / "bad"), "--no-progress"]
        if "--thresholds-from" not in args:
            cmd += ["--thresholds-from", str(tmp_path / "train")]
        one_line_error(CliRunner().invoke(app, cmd + args, env=env), *words)
        assert not (tmp_path / "bad").exists()


def test_report_puts_train_and_val_classes_side_by_side(folder, val_folder, tmp_path):  # noqa: F811
    from matplotlib.image import imread

    from attrsr.data.bank import pooled_psnr
    from attrsr.models.pretrained import load_default

    env = {"ATTRSR_CACHE": str(tmp_path / "cache")}
    assert _bank(["--data", str(folder), "--k", "3", "--factor", "2", "--out", str(tmp_path / "train")], tmp_path).exit_code == 0
    assert CliRunner().invoke(app, ["bspa", "bank", "--data", str(val_folder), "--thresholds-from", str(tmp_path / "train"),
                                    "--out", str(tmp_path / "val"), "--no-progress"], env=env).exit_code == 0
    exp = tmp_path / "exp" / "runs"
    for seed in (0, 1):
        _fake_run(exp / "uniform" / f"seed{seed}", seed)  # the scorer itself
        _fake_run(exp / "noisy" / f"seed{seed}", seed, noise=2.0)

    def report(*args):
        return CliRunner().invoke(app, ["bspa", "report", str(tmp_path / "exp"), "--no-progress", *args], env=env)

    res = report("--bank", str(tmp_path / "train"), "--val-bank", str(tmp_path / "val"), "--out", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    assert "on 18 and 24 held-aside sub-images" in res.output
    rep = json.loads((tmp_path / "rep" / "bspa_report.json").read_text())
    val = read_bank(tmp_path / "val")
    assert rep["sub_images"] == 18 and rep["val"]["sub_images"] == 24 and rep["val"]["thresholds"] == rep["thresholds"]
    assert np.allclose(rep["val"]["mean_mse"]["uniform"], val.mse, rtol=1e-5)  # the scorer run reproduces the val bank's MSEs
    rows = {(r["variant"], r["class"]): r for r in rep["val"]["per_class"]}
    model = load_default(2)
    for c in range(3):
        members = np.flatnonzero(val.classes.classes == c)
        assert rows[("uniform", c)]["n"] == len(members)
        if not len(members):
            assert rows[("uniform", c)]["psnr_y"] is None
            continue
        values = [sub_image_psnr(model, val_folder, val, j) for j in members]  # recomputed for the scorer run
        assert rows[("uniform", c)]["psnr_y"] == pytest.approx(pooled_psnr(values), abs=1e-6)
        assert rows[("noisy", c)]["delta"] < 0 and len(rows[("noisy", c)]["ci95"]) == 2
    csv_rows = (tmp_path / "rep" / "per_class.csv").read_text().splitlines()
    assert csv_rows[0].startswith("split,variant,class,n,psnr_y")
    assert sum(r.startswith("train,") for r in csv_rows) == sum(r.startswith("val,") for r in csv_rows) == 6
    md = (tmp_path / "rep" / "bspa_report.md").read_text()
    assert "| train n | train Y-PSNR | train Δ vs uniform | val n | val Y-PSNR | val Δ vs uniform |" in md
    assert "### Train classes (seed means, dB)" in md and "### Val classes (held aside, seed means, dB)" in md
    assert "| noisy − uniform |" in md
    both = imread(tmp_path / "rep" / "per_class.png")
    for name in ("mse_hist_val.png", "shares_val.csv", "bspa_report.html"):
        assert (tmp_path / "rep" / name).stat().st_size > 200

    # without --val-bank: one panel column, half as wide
    assert report("--bank", str(tmp_path / "train"), "--out", str(tmp_path / "one")).exit_code == 0
    one = imread(tmp_path / "one" / "per_class.png")
    assert both.shape[0] == one.shape[0] and both.shape[1] == 2 * one.shape[1]
    assert "val" not in json.loads((tmp_path / "one" / "bspa_report.json").read_text())

    # the banks swapped or unrelated: one line, no report
    for args, words in [(["--bank", str(tmp_path / "val")], ["--bank", "a held-aside bank", "--val-bank"]),
                        (["--bank", str(tmp_path / "train"), "--val-bank", str(tmp_path / "train")],
                         ["--val-bank", "not sorted by the thresholds of --bank", "--thresholds-from"])]:
        one_line_error(report(*args, "--out", str(tmp_path / "bad")), *words)
        assert not (tmp_path / "bad").exists()
