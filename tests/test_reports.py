"""Reports say what they show: numbers with their real digits, captions that name the panels, close-ups
of one region at one scale, window counts as chosen."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import attrsr
from attrsr.attribution import viz
from attrsr.images import to_uint8
from attrsr.report.attribution import lam_report
from attrsr.report.interpret import interpret
from attrsr.resize import downsample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small():
    """A randomly initialised ESPCN x2 and a 48×48 textured HR image (fast, deterministic)."""
    torch.manual_seed(0)
    model = attrsr.models.create("espcn", scale=2).eval()
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    hr = torch.stack([0.5 + 0.4 * torch.sin(xx / 3), 0.5 + 0.4 * torch.cos(yy / 4), 0.5 + 0.2 * torch.sin((xx + yy) / 5)])
    lr = downsample(hr[None], 2)[0]
    return model, lr, hr


def test_lam_page_prints_the_measured_digits(small, tmp_path):
    model, lr, hr = small
    info = lam_report(model, lr, (16, 16, 8), tmp_path / "r", hr=hr, steps=4)
    html = (tmp_path / "r" / "index.html").read_text()
    shown = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", html))
    assert shown["Diffusion Index"] == f"{info['di']:.4f}"
    assert shown["SR Y-PSNR (dB)"] == f"{info['psnr_y']:.4f}"
    assert re.fullmatch(r"\d+\.\d\d", shown["time (s)"])


def test_lam_figure_caption_names_every_panel(small, tmp_path):
    model, lr, hr = small
    info = lam_report(model, lr, (16, 16, 8), tmp_path / "r", steps=4)
    html = (tmp_path / "r" / "index.html").read_text()
    caption = re.search(r'<img src="data:image/png;base64,[^"]*" alt="([^"]*)"><figcaption>', html).group(1)
    panels = [k for k in viz.FIGURE_PANELS if k in info["files"]]
    assert len(panels) == 6
    assert caption.split(" · ") == [viz._TITLES[k] for k in panels]


def test_the_two_close_ups_show_the_same_region_at_the_same_scale(small):
    from attrsr.attribution import lam

    model, lr, hr = small
    res = lam(model, lr, (20, 20, 8), steps=4)
    box = viz.focus_box(res.saliency, 2, res.window)
    pics = viz.pictures(res, lr, kde=False, box=box)
    assert pics["zoom"].shape == pics["heat_zoom"].shape
    z = pics["zoom"].shape[0] // (box[3] - box[1])
    assert z > 1 and pics["zoom"].shape[:2] == ((box[3] - box[1]) * z, (box[2] - box[0]) * z)
    sr = to_uint8(res.sr.clamp(0, 1))
    heat = viz.heatmap(res.saliency, 2)
    x0, y0, x1, y1 = box
    for (py, px), (sy, sx) in [((0, 0), (y0, x0)), ((-1, -1), (y1 - 1, x1 - 1)), ((0, -1), (y0, x1 - 1))]:
        np.testing.assert_array_equal(pics["zoom"][py, px], sr[sy, sx])
        np.testing.assert_array_equal(pics["heat_zoom"][py, px], heat[sy, sx])


def test_interpret_says_how_many_windows_per_image(small, tmp_path):
    model, lr, hr = small
    pairs = [SimpleNamespace(name=n, lr=lr, hr=hr) for n in ("a", "b")]
    report = interpret({"espcn": model}, pairs, tmp_path / "rep", n_windows=1, window_size=8, methods=["grad"])
    assert [r["window"] for r in report["rows"]] == [0, 0]
    sub = re.search(r'<p class="sub">([^<]*)</p>', (tmp_path / "rep" / "index.html").read_text()).group(1)
    assert sub.startswith("1 model × 2 images × 1 window per image")
