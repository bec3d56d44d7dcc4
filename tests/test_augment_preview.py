"""The augmentation picture: each op's panel is the op's real output with the region it drew."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.data import augment as ops
from attrsr.report.augment import COLUMNS, augmentation_panels


def _patches(b=3, p=16, scale=2):
    torch.manual_seed(0)
    hr = torch.rand(b, 3, p * scale, p * scale)
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    sal = torch.full((b, p, p), 0.01)
    sal[:, 12:15, 2:5] = 1.0  # one salient spot, bottom left
    return lr, hr, sal


def test_panels_show_each_ops_output_in_its_region():
    lr, hr, sal = _patches()
    panels = augmentation_panels(lr, hr, sal, 2, alpha=0.25, seed=3)
    assert tuple(panels) == COLUMNS
    up = ops.upsample_nearest(lr, 2)
    image, region = panels["ADD · CutBlur"]
    assert region[:, 0, 12:15, 2:5].eq(1).all()  # the box covers the salient spot
    m = ops.upsample_nearest(region, 2)
    assert torch.equal(image * m, hr * m) and torch.equal(image * (1 - m), up * (1 - m))  # HR inside, LR outside
    image, region = panels["ADD · CutMix"]
    m = ops.upsample_nearest(region, 2)
    source = ops.upsample_nearest(lr[torch.roll(torch.arange(3), -1)], 2)
    assert torch.allclose(image * m, source * m) and torch.allclose(image * (1 - m), up * (1 - m))
    for name in ("CutMix", "CutBlur"):
        assert panels[name][1].sum() == panels["ADD · CutBlur"][1].sum()  # same box size: only the place differs


def test_preview_command_writes_one_png(tmp_path):
    out = tmp_path / "preview.png"
    res = CliRunner().invoke(app, ["augment", "preview", "--data", "samples", "--out", str(out), "--patches", "2",
                                   "--patch-size", "24", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in res.output
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]


def test_preview_with_too_large_patches_is_one_error_and_writes_nothing(tmp_path):
    out = tmp_path / "preview.png"
    res = CliRunner().invoke(app, ["augment", "preview", "--data", "samples", "--out", str(out), "--patch-size", "4000"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --data samples:") and "lower --patch-size" in lines[0]
    assert not out.exists()
