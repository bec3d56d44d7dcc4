"""The attribution prior's evaluation (thesis Table 4.7, Fig. 4.5) on small real images: the regions land
on planted repeats, region PSNR equals an independent scikit-image computation on those pixels, the
LAM context crop changes no section norm, the paired comparison, and ``attrsr prior-report`` on real
(tiny) trained runs with its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from attrsr.attribution.prior_eval import RegionSettings, SpreadSettings, attribution_spread, image_regions, region_psnr, similar_mask
from attrsr.models.tiling import Bicubic

pytestmark = pytest.mark.usefixtures("one_thread")


def _astronaut(top: int, left: int, size: int) -> np.ndarray:
    from skimage import data

    return data.astronaut()[top : top + size, left : left + size]


def _planted_lr() -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A 48×48 LR crop of a real photo with one 5×5 patch of another real photo pasted at 3 places."""
    from skimage import data

    lr = torch.from_numpy(_astronaut(250, 250, 48).copy()).permute(2, 0, 1).double() / 255
    stamp = torch.from_numpy(data.chelsea()[100:105, 200:205].copy()).permute(2, 0, 1).double() / 255
    places = [(10, 10), (5, 35), (35, 25)]
    for r, c in places:
        lr[:, r : r + 5, c : c + 5] = stamp
    return lr, [(r + 2, c + 2) for r, c in places]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """An HR-only benchmark folder: two real photo crops and a flat image (no regions)."""
    root = tmp_path_factory.mktemp("mini")
    Image.fromarray(_astronaut(100, 180, 96)).save(root / "face.png")
    Image.fromarray(_astronaut(300, 40, 96)).save(root / "suit.png")
    Image.fromarray(np.full((96, 96, 3), 90, np.uint8)).save(root / "flat.png")
    return root


def test_regions_land_on_planted_repeats_on_the_sr_grid():
    lr, centres = _planted_lr()
    poi, ssr = image_regions(lr, 2, RegionSettings(n_ssr=2, mask_size=5, crop=48))
    squares = []
    for r, c in centres:
        m = torch.zeros(96, 96, dtype=torch.bool)
        m[2 * (r - 2) : 2 * (r + 3), 2 * (c - 2) : 2 * (c + 3)] = True
        squares.append(m)
    assert any(torch.equal(poi, s) for s in squares)
    assert torch.equal(poi | ssr, squares[0] | squares[1] | squares[2])
    assert int(ssr.sum()) == 2 * 100
    flat = torch.full((3, 48, 48), 0.4, dtype=torch.float64)
    assert image_regions(flat, 2) is None


def test_region_psnr_equals_an_independent_computation(mini):
    from skimage.color import rgb2ycbcr

    from attrsr.data.datasets import open_dataset
    from attrsr.evaluation import evaluate
    from attrsr.images import to_uint8

    ds = open_dataset(mini, 2)
    model = Bicubic(2)
    settings = RegionSettings(n_ssr=3, mask_size=6, crop=40)
    res = region_psnr(model, ds, 2, settings)
    assert res["skipped"] == ["flat"] and sorted(res["images"]) == ["face", "suit"]
    whole = evaluate(model, ds, 2, progress=False)[ds.name]["images"]
    for i in range(len(ds)):
        pair = ds[i]
        if pair.name == "flat":
            continue
        row = res["images"][pair.name]
        assert row["psnr_y"] == whole[pair.name]["psnr_y"]
        with torch.no_grad():
            sr = to_uint8(model(pair.lr[None])[0])
        hr = to_uint8(pair.hr)
        y_sr, y_hr = rgb2ycbcr(sr)[..., 0], rgb2ycbcr(hr)[..., 0]
        for key, mask in zip(("psnr_poi", "psnr_ssr"), image_regions(pair.lr, 2, settings)):
            m = mask.numpy().copy()
            m[:2], m[-2:], m[:, :2], m[:, -2:] = False, False, False, False  # the border crop (= scale)
            mse = np.mean((y_sr[m] - y_hr[m]) ** 2)
            assert row[key] == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-6)
        assert row["psnr_poi"] != row["psnr_ssr"]
    assert res["psnr_poi"] == pytest.approx(np.mean([r["psnr_poi"] for r in res["images"].values()]), abs=1e-12)


def test_similar_mask_marks_the_planted_repeats():
    lr, centres = _planted_lr()
    r, c = centres[0]
    sim = similar_mask(lr, (c - 2, r - 2, c + 3, r + 3), 0.9)
    assert all(sim[y, x] for y, x in centres)
    assert sim.sum() < 0.02 * sim.size  # few other pixels of the photo reach NCC 0.9


def test_context_crop_keeps_the_section_norms_of_a_local_model(mini):
    """Bicubic ×2 reads ±2 LR pixels: LAM on a 32-px context crop gives the same attribution around
    the window as on the whole image, so every relative norm and similarity ratio is unchanged."""
    from attrsr.data.datasets import open_dataset

    ds = open_dataset(mini, 2)
    whole = attribution_spread(Bicubic(2), ds, 2, SpreadSettings(windows=1, steps=6, context=0, growth=4))
    crop = attribution_spread(Bicubic(2), ds, 2, SpreadSettings(windows=1, steps=6, context=32, growth=4))
    assert [w["window"] for w in whole["windows"]] == [w["window"] for w in crop["windows"]] and len(whole["windows"]) == 3
    for a, b in zip(whole["windows"], crop["windows"]):
        if a["image"] == "flat":
            continue
        np.testing.assert_allclose(a["relative_norm"], b["relative_norm"], rtol=1e-5)
        assert a["relative_norm"][0] > 1 and bool(np.all(np.diff(a["relative_norm"]) >= -1e-12))  # nested sections
        assert math.isfinite(a["di"]) and math.isfinite(b["di"])


def test_paired_summary_of_identical_and_different_models(mini):
    from attrsr.models.pretrained import load_default
    from attrsr.report.prior import evaluate_models, summarize

    demo = load_default(2)
    models = {"a0": Bicubic(2), "a1": Bicubic(2), "b0": demo, "b1": demo}
    labels = {"a0": ("none", 0), "a1": ("none", 1), "b0": ("demo", 0), "b1": ("demo", 1)}
    rows = evaluate_models(models, [str(mini)], 2, regions=RegionSettings(crop=40, mask_size=6, n_ssr=3), spread=None, labels=labels)
    summary = {s["variant"]: s for s in summarize(rows, "none")}
    demo_row = next(r for r in rows if r["run"] == "b0")
    bic_row = next(r for r in rows if r["run"] == "a0")
    d = summary["demo"]
    assert d["d_psnr_ssr"] == pytest.approx(demo_row["psnr_ssr"] - bic_row["psnr_ssr"], abs=1e-12)
    assert d["d_psnr_ssr_ci"] == pytest.approx([d["d_psnr_ssr"]] * 2, abs=1e-9)  # equal pairs: a zero-width interval
    assert d["d_psnr_poi"] > 0 and d["d_psnr_ssr"] > 0  # the trained demo model beats bicubic on textured regions
    assert summary["none"]["psnr_poi_std"] == 0.0 and "d_psnr_poi" not in summary["none"]


def _train_tiny(cache, out, *sets):
    from engine_helpers import run, tiny_config

    run(tiny_config(cache, "train.iterations=2", "train.checkpoint_every=2", *sets), out)


def test_prior_report_command_on_trained_runs(tmp_path, mini):
    from typer.testing import CliRunner

    from attrsr.cli import app
    from attrsr.experiment import load_run_model
    from conftest import one_line_error

    cache = tmp_path / "cache"
    runs = tmp_path / "runs"
    _train_tiny(cache, runs / "none" / "seed0")
    _train_tiny(cache, runs / "prior" / "seed0", 'methods=[{"name": "attribution_prior", "threshold": 0.0, "lambda_ap": 10.0}]',
                f"val.data=[{mini}]", "val.every=2")
    val = (runs / "prior" / "seed0" / "val.csv").read_text().splitlines()
    head = val[0].split(",")
    regions_rows = [dict(zip(head, line.split(","))) for line in val[1:] if f"{mini.name}-regions" in line]
    folders = [str(runs / "none" / "seed0"), str(runs / "prior" / "seed0")]
    at_val = region_psnr(load_run_model(folders[1]), str(mini), 2)  # the validation ran on the final (step-2) weights
    assert len(regions_rows) == 1 and regions_rows[0]["images"] == "2"
    for key in ("psnr_y", "psnr_ssr", "psnr_poi"):
        assert float(regions_rows[0][key]) == pytest.approx(at_val[key], abs=1e-9)
    opts = ["--data", str(mini), "--crop", "40", "--mask-size", "6", "--n-ssr", "3", "--windows", "1", "--steps", "4", "--context", "32"]
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["prior-report", *folders, "--out", str(out), "--baseline", "none", "--no-progress", *opts])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "prior-report.json").read_text())
    assert {(r["variant"], r["seed"]) for r in report["runs"]} == {("none", 0), ("prior", 0)}
    direct = region_psnr(load_run_model(folders[1]), str(mini), 2, RegionSettings(crop=40, mask_size=6, n_ssr=3))
    prior_row = next(r for r in report["runs"] if r["variant"] == "prior")
    assert prior_row["psnr_ssr"] == pytest.approx(direct["psnr_ssr"], abs=1e-9) and prior_row["skipped"] == 1
    assert len([k for k in prior_row if k.startswith("rel_norm_")]) == 5 and math.isfinite(prior_row["di"])
    s = next(s for s in report["summary"] if s["variant"] == "prior")
    none_row = next(r for r in report["runs"] if r["variant"] == "none")
    assert s["d_psnr_poi"] == pytest.approx(prior_row["psnr_poi"] - none_row["psnr_poi"], abs=1e-9)
    for name in ("runs.csv", "runs.md", "summary.csv", "summary.md"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "prior-report.png").size[0] > 400
    # errors: one line, nothing written
    bad = tmp_path / "bad"
    one_line_error(CliRunner().invoke(app, ["prior-report", *folders, "--out", str(bad), "--baseline", "plain", *opts]),
                   "baseline 'plain' is none of the runs' variants: none, prior")
    one_line_error(CliRunner().invoke(app, ["prior-report", str(mini), "--out", str(bad)]), "not a run folder (no config.yaml)")
    one_line_error(CliRunner().invoke(app, ["prior-report", *folders, "--out", str(bad), "--threshold", "2"]), "--threshold must be in [0, 1]")
    assert not bad.exists()
