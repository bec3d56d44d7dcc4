"""``attrsr interpret`` at dataset scale: work items written as they finish, shared among ranks
(``--nproc``) with the same numbers as one process, a killed run resumed without recomputing what
was finished, and a report on demand from a partial run.

Small but real: 3 networks (PAN, IMDN, FSRCNN ×4, real weights) × 3 LAM test images (a 48×48 crop
each) × 2 windows, 2 LAM steps: 18 items of a few milliseconds each; the figures of each report
cost most of the time.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import IMDN_X4, LAM_IMAGES, PAN_X4, WEIGHTS, need

FSRCNN_X4 = WEIGHTS / "fsrcnn" / "fsrcnn_x4.pth"
N_ITEMS = 3 * 3 * 2

pytestmark = pytest.mark.slow


def cli(*args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "attrsr", *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    need(PAN_X4, IMDN_X4, FSRCNN_X4, LAM_IMAGES)
    folder = tmp_path_factory.mktemp("lam48")
    for k in (2, 4, 6):
        with Image.open(LAM_IMAGES / f"{k}.png") as im:
            im.convert("RGB").crop((96, 96, 144, 144)).save(folder / f"{k}.png")
    return folder


def run(data, out, *extra, env=None):
    return cli("interpret", "--model", f"pan:{PAN_X4}", "--model", f"imdn:{IMDN_X4}", "--model", f"fsrcnn:{FSRCNN_X4}",
               "--data", data, "--scale", 4, "--n-windows", 2, "--window", 8, "--steps", 2, "--out", out,
               "--no-progress", *extra, env=env)


def rows(out):
    return sorted(((r["image"], r["window"], r["model"]), r) for r in csv.DictReader((out / "attributions.csv").open()))


def item_arrays(out):
    arrays = {}
    for path in sorted((out / "items").glob("*.npz")):
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            arrays[(meta["image"], meta["window_index"], meta["model"])] = z["attribution"].copy()
    return arrays


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "one"
    r = run(data, out)
    assert r.returncode == 0, r.stderr
    assert f"attributions: {N_ITEMS} computed, 0 reused (of {N_ITEMS})" in r.stdout
    return out


def test_the_report_has_the_attribution_norm_by_distance_from_the_stored_items(one_process):
    from attrsr.attribution.analysis import norm_by_distance
    from attrsr.report.interpret import read_item

    table = list(csv.DictReader((one_process / "norm_by_distance.csv").open()))
    assert {r["model"] for r in table} == {"pan", "imdn", "fsrcnn"} and all(int(r["n"]) == 6 for r in table)
    for r in table:  # nested rectangles of |A|: never less than the window's own norm, never shrinking
        v = [float(r[f"section {k}"]) for k in range(1, 6)]
        assert v[0] >= 1 and all(b >= a for a, b in zip(v, v[1:]))
    # the mean is over the stored maps: recompute PAN's from its items
    sections = []
    for path in (one_process / "items").glob("*.npz"):
        res, meta = read_item(path)
        if meta["model"] == "pan":
            sections.append([row["relative_norm"] for row in norm_by_distance(res.attribution, res.window, 4, sections=5, growth=20)])
    pan = next(r for r in table if r["model"] == "pan")
    assert [float(pan[f"section {k}"]) for k in range(1, 6)] == pytest.approx(np.mean(sections, axis=0).tolist(), rel=1e-9)


def test_two_ranks_give_the_numbers_of_one_process(data, one_process, tmp_path):
    out = tmp_path / "two"
    r = run(data, out, "--nproc", 2)
    assert r.returncode == 0, r.stderr
    assert f"attributions: {N_ITEMS} computed, 0 reused (of {N_ITEMS})" in r.stdout
    # both ranks worked: the items name two different processes
    pids = set()
    for path in (out / "items").glob("*.npz"):
        with np.load(path) as z:
            pids.add(json.loads(str(z["meta"]))["pid"])
    assert len(pids) == 2
    a, b = rows(one_process), rows(out)
    assert [k for k, _ in a] == [k for k, _ in b] and len(a) == N_ITEMS
    for (key, ra), (_, rb) in zip(a, b):
        for col in ("x", "y", "size", "di", "psnr_y", "completeness_error"):
            assert ra[col] == rb[col], (key, col)  # one thread per process on both sides: identical
    ia, ib = item_arrays(one_process), item_arrays(out)
    assert ia.keys() == ib.keys() and len(ia) == N_ITEMS
    assert all(np.array_equal(ia[k], ib[k]) for k in ia)
    ja, jb = (json.loads((o / "report.json").read_text()) for o in (one_process, out))
    assert ja["models_summary"] == jb["models_summary"] and ja["figures"] == jb["figures"]


def test_a_killed_run_resumes_without_recomputing_finished_items(data, one_process, tmp_path):
    out = tmp_path / "killed"
    r = run(data, out, env={"ATTRSR_INTERPRET_KILL_AFTER": "5"})
    assert r.returncode == -9, r.stderr  # SIGKILL after the 5th item: no clean-up ran
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "items").glob("*.npz")}
    assert len(finished) == 5 and not (out / "index.html").exists()
    assert not list((out / "items").glob(".*"))  # atomic writes: no half-written item left behind

    partial = cli("interpret", "--model", f"pan:{PAN_X4}", "--model", f"imdn:{IMDN_X4}", "--model", f"fsrcnn:{FSRCNN_X4}",
                  "--data", data, "--scale", 4, "--n-windows", 2, "--window", 8, "--steps", 2, "--out", out, "--report-only")
    assert partial.returncode == 0, partial.stderr
    assert f"partial report: 5 of {N_ITEMS} attributions finished" in partial.stdout
    assert len(rows(out)) == 5 and "Partial report: 5 of" in (out / "index.html").read_text()

    r = run(data, out, "--nproc", 2)  # resumed with another process count
    assert r.returncode == 0, r.stderr
    assert f"attributions: {N_ITEMS - 5} computed, 5 reused (of {N_ITEMS})" in r.stdout
    for name, stamp in finished.items():  # the finished items were not written again
        p = out / "items" / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    # A group cut by the kill is finished by a LAM of its last window alone instead of one sharing the
    # forward pass with the other window: the same numbers up to rounding.
    resumed, whole = rows(out), rows(one_process)
    assert [k for k, _ in resumed] == [k for k, _ in whole]
    assert all(float(a["di"]) == pytest.approx(float(b["di"]), rel=1e-6) for (_, a), (_, b) in zip(resumed, whole))


def test_other_settings_do_not_reuse_items(data, one_process, tmp_path):
    """Items are named by everything their result depends on: 3 steps instead of 2 computes anew."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(one_process / "items", out / "items")
    r = cli("interpret", "--model", f"pan:{PAN_X4}", "--data", data, "--scale", 4, "--n-windows", 2, "--window", 8,
            "--steps", 3, "--out", out, "--no-progress", "--max-images", 1)
    assert r.returncode == 0, r.stderr
    assert "attributions: 2 computed, 0 reused (of 2)" in r.stdout
