"""``attrsr lam`` and ``attrsr interpret`` end to end, on real images and real weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from attrsr.cli import app

from conftest import IMDN_X4, LAM_IMAGES, PAN_X4, SET5, need

pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "attrsr", *args], capture_output=True, text=True, timeout=600, env=env)


def test_lam_command_writes_pictures_and_json(tmp_path):
    need(PAN_X4, LAM_IMAGES)
    out = tmp_path / "lam"
    res = cli("lam", "--model", "pan", "--weights", str(PAN_X4), "--scale", "4", "--hr", str(LAM_IMAGES / "3.png"),
              "--x", "100", "--y", "120", "--steps", "8", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "DI" in res.stdout and "completeness" in res.stdout
    for name in ("heatmap", "blend", "kde", "sr_window", "sr"):
        with Image.open(out / f"{name}.png") as im:
            assert im.size == (256, 256), name
    with Image.open(out / "figure.png") as im:
        assert im.size[0] > 3 * im.size[1]  # one row of panels
    info = json.loads((out / "result.json").read_text())
    assert info["method"] == "lam" and info["model"] == "pan" and info["scale"] == 4
    assert info["window"] == {"x": 100, "y": 120, "size": 16}
    assert 0 < info["di"] <= 100 and info["seconds"] > 0
    comp = info["completeness"]
    assert comp["steps"] == 8 and comp["objective_input"] > comp["objective_baseline"]
    assert comp["error"] == pytest.approx(abs(comp["attribution_sum"] - (comp["objective_input"] - comp["objective_baseline"])))
    assert 20 < info["psnr_y"] < 40
    assert "Diffusion Index" in (out / "index.html").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_lam_command_with_an_lr_file_and_another_method(tmp_path):
    need(PAN_X4, SET5)
    out = tmp_path / "grad"
    r = CliRunner().invoke(app, ["lam", "--model", f"pan:{PAN_X4}", "--scale", "4", "--lr",
                                 str(SET5 / "LR_bicubic" / "X4" / "birdx4.png"), "--x", "200", "--y", "100",
                                 "--method", "grad", "--window", "24", "--out", str(out)])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "result.json").read_text())
    assert info["method"] == "grad" and "completeness" not in info and info["image_kind"] == "lr"
    assert info["window"]["size"] == 24 and "psnr_y" not in info


@pytest.mark.parametrize(
    "args, words",
    [
        (["--x", "250", "--y", "120"], ["outside", "x ≤ 239"]),
        (["--x", "10", "--y", "10", "--window", "1"], ["too small"]),
        (["--x", "10", "--y", "10", "--method", "guided_backprop"], ["ReLU networks", "sigmoid"]),
        (["--x", "10", "--y", "10", "--method", "grad", "--steps", "20"], ["does not use --steps"]),
        (["--x", "10", "--y", "10", "--lr", "x.png"], ["exactly one of --lr"]),
    ],
)
def test_lam_command_refuses_bad_input_and_writes_nothing(tmp_path, args, words):
    need(PAN_X4, LAM_IMAGES)
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(app, ["lam", "--model", "pan", "--weights", str(PAN_X4), "--scale", "4",
                                 "--hr", str(LAM_IMAGES / "3.png"), "--out", str(out), *args])
    assert r.exit_code == 1
    text = r.stderr if hasattr(r, "stderr") else r.output
    assert text.startswith("error: ") and text.count("\n") == 1, text
    for w in words:
        assert w in text
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_lam_command_failure_is_one_line_and_exit_1(tmp_path):
    need(PAN_X4, LAM_IMAGES)
    out = tmp_path / "never"
    res = cli("lam", "--model", "pan", "--weights", str(PAN_X4), "--scale", "4", "--hr", str(LAM_IMAGES / "3.png"),
              "--x", "0", "--y", "300", "--out", str(out))
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: window") and "Traceback" not in res.stderr
    assert not out.exists()


def test_interpret_command_compares_two_networks(tmp_path):
    need(PAN_X4, IMDN_X4, LAM_IMAGES)
    data = tmp_path / "imgs"
    data.mkdir()
    (data / "3.png").write_bytes((LAM_IMAGES / "3.png").read_bytes())
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["interpret", "--model", f"pan:{PAN_X4}", "--model", f"imdn:{IMDN_X4}",
                                 "--data", str(data), "--scale", "4", "--n-windows", "2", "--steps", "4",
                                 "--methods", "lam", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "attributions.csv").open()))
    assert len(rows) == 4  # 1 image × 2 windows × 2 models
    assert {row["model"] for row in rows} == {"pan", "imdn"}
    assert all(0 < float(row["di"]) <= 100 and float(row["psnr_y"]) > 20 for row in rows)
    # auto windows: non-overlapping, and the same for both networks
    wins = {(int(row["x"]), int(row["y"])) for row in rows}
    assert len(wins) == 2
    (ax, ay), (bx, by) = sorted(wins)
    assert abs(ax - bx) >= 16 or abs(ay - by) >= 16
    table = list(csv.DictReader((out / "di_lam.csv").open()))
    assert len(table) == 2 and set(table[0]) == {"case", "pan", "imdn"}
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == ["pan", "imdn"] and len(report["figures"]) == 2
    assert all((out / f["aoi"]).is_file() for f in report["figures"])
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and 'src="figures' not in html  # self-contained
    assert (out / "di_vs_psnr.png").is_file()


def test_interpret_command_with_a_windows_file_checks_every_window_first(tmp_path):
    need(PAN_X4, LAM_IMAGES)
    data = tmp_path / "imgs"
    data.mkdir()
    (data / "3.png").write_bytes((LAM_IMAGES / "3.png").read_bytes())
    wfile = tmp_path / "w.json"
    wfile.write_text(json.dumps({"3": [[100, 120, 16], [250, 10, 16]]}))
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["interpret", "--model", f"pan:{PAN_X4}", "--data", str(data), "--scale", "4",
                                 "--windows", str(wfile), "--steps", "2", "--out", str(out)])
    assert r.exit_code == 1
    assert "window for image '3'" in (r.stderr if hasattr(r, "stderr") else r.output)
    assert not out.exists()


def test_interpret_help_documents_the_windows_file_format():
    import re

    from attrsr.report.interpret import parse_windows

    r = CliRunner().invoke(app, ["interpret", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    text = re.sub(r"[\s│]+", " ", r.output)  # undo the help box's wrapping
    # both documented examples are shown whole (rich markup once ate "[x, y]") and parse as documented
    every = re.search(r"e\.g\. (\[\[.*?\]\])", text).group(1)
    named = re.search(r"e\.g\. (\{.*?\})", text).group(1)
    assert parse_windows(json.loads(every), 16)["*"] == [parse_windows([[120, 80, 16]])["*"][0], parse_windows([[40, 200, 16]])["*"][0]]
    wins = parse_windows(json.loads(named), 16)
    assert [(w.x, w.y, w.size) for w in wins["1"]] == [(120, 80, 16)]
    assert [(w.x, w.y, w.size) for w in wins["*"]] == [(40, 200, 24)]
    assert "x = column" in text and "without its extension" in text
    assert "file entries without a size" in text  # --window's help survived too


def test_interpret_refuses_the_same_model_twice_before_loading_it(tmp_path):
    need(PAN_X4, LAM_IMAGES)
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["interpret", "--model", f"pan:{PAN_X4}", "--model", f"pan:{PAN_X4}",
                                 "--data", str(LAM_IMAGES), "--scale", "4", "--steps", "2", "--out", str(out)])
    assert r.exit_code == 1
    assert "given twice" in (r.stderr if hasattr(r, "stderr") else r.output)
    assert not out.exists()
