"""``attrsr experiment``: a grid of variants × seeds on the tiny recipe, its statistics checked against
the per-run evaluation files, bad grids refused before any run, and a killed grid completed on re-run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from attrsr.cli import app
from engine_helpers import PYTHON, TINY, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SET = {"train.iterations": 4, "val.data": [], "train.threads": 1, "train.checkpoint_every": 2}


def write_grid(folder: Path, cache: Path, variants: dict, **extra) -> Path:
    grid = {
        "base": str(TINY),
        "seeds": [0, 1],
        "benchmarks": ["samples:val"],
        "baseline": "plain",
        "set": {**TINY_SET, "data.cache_dir": str(cache)},
        "variants": variants,
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["experiment", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    """plain, an identical copy of it, and a higher learning rate; 2 seeds each."""
    root = tmp_path_factory.mktemp("grid")
    grid = write_grid(root, cache, {"plain": {}, "same": {}, "fast": {"optim": {"lr": 2.0e-3}}}, compare=[["fast", "same"]])
    res = invoke(grid, "--out", root / "out")
    assert res.exit_code == 0, res.output
    return root / "out", res.output


def per_run(out: Path, variant: str, seed: int) -> dict:
    return json.loads((out / "runs" / variant / f"seed{seed}" / "eval.json").read_text())


def test_report_statistics_match_the_per_run_evaluations(finished):
    out, _ = finished
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "plain" and set(report["variants"]) == {"plain", "same", "fast"}
    for variant, entry in report["variants"].items():
        assert entry["runs"] == {"0": f"runs/{variant}/seed0", "1": f"runs/{variant}/seed1"}
        for metric in ("psnr_y", "ssim_y"):
            values = [per_run(out, variant, s)["benchmarks"]["samples:val"][metric] for s in (0, 1)]
            # The benchmark value of a run is the mean of its per-image values.
            images = per_run(out, variant, 0)["benchmarks"]["samples:val"]["images"]
            assert values[0] == pytest.approx(np.mean([v[metric] for v in images.values()]), abs=1e-12)
            got = entry["benchmarks"]["samples:val"][metric]
            assert got["per_seed"] == {"0": values[0], "1": values[1]}
            assert got["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert got["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        assert all(w is not None and w > 0 for w in entry["wall_s"].values())
    md = (out / "report.md").read_text()
    mean = report["variants"]["fast"]["benchmarks"]["samples:val"]["psnr_y"]
    assert f"| samples:val | fast | {mean['mean']:.2f} ± {mean['std']:.2f} |" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    csv_rows = (out / "report.csv").read_text().splitlines()
    assert csv_rows[0].startswith("benchmark,variant,images,psnr_y_mean,psnr_y_std") and len(csv_rows) == 4


def test_identical_variants_differ_by_exactly_zero(finished):
    """Same recipe and seeds → bit-identical runs → every paired difference is 0 and so is the CI."""
    out, _ = finished
    paired = json.loads((out / "report.json").read_text())["paired"]["same"]["samples:val"]
    assert paired["delta_psnr_y"] == 0.0 and paired["ci95"] == [0.0, 0.0]
    assert paired["ci95"][0] <= 0.0 <= paired["ci95"][1]


def test_a_real_difference_and_its_interval(finished):
    """The paired CI equals scipy's one-sample t interval of the per-(image, seed) differences."""
    out, _ = finished
    paired = json.loads((out / "report.json").read_text())["paired"]["fast"]["samples:val"]
    diffs, seed_diffs = [], []
    for s in (0, 1):
        a, b = per_run(out, "fast", s)["benchmarks"]["samples:val"], per_run(out, "plain", s)["benchmarks"]["samples:val"]
        diffs += [a["images"][k]["psnr_y"] - b["images"][k]["psnr_y"] for k in b["images"]]
        seed_diffs.append(a["psnr_y"] - b["psnr_y"])
    assert len(diffs) == paired["n"] == 8
    assert paired["delta_psnr_y"] == pytest.approx(np.mean(diffs), abs=1e-12) and abs(paired["delta_psnr_y"]) > 0.1
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert paired["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-9)
    ci_s = stats.ttest_1samp(seed_diffs, 0.0).confidence_interval(0.95)
    assert paired["ci95_seeds"] == pytest.approx([ci_s.low, ci_s.high], abs=1e-9)
    # The mean paired difference is the difference of the variants' means.
    report = json.loads((out / "report.json").read_text())["variants"]
    means = {v: report[v]["benchmarks"]["samples:val"]["psnr_y"]["mean"] for v in ("fast", "plain")}
    assert paired["delta_psnr_y"] == pytest.approx(means["fast"] - means["plain"], abs=1e-12)


def test_compare_pairs_are_differenced_like_the_baseline(finished):
    """``compare: [[fast, same]]``: 'same' is bit-identical to the baseline, so fast − same equals
    fast − plain exactly, and the pair gets its own rows in paired.csv."""
    out, _ = finished
    report = json.loads((out / "report.json").read_text())
    [pair] = report["compare"]
    assert (pair["variant"], pair["reference"]) == ("fast", "same")
    assert pair["benchmarks"]["samples:val"] == report["paired"]["fast"]["samples:val"]
    rows = (out / "paired.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and sum(r.startswith("samples:val,fast,same,") for r in rows) == 1


def test_rerun_skips_finished_runs_and_dry_run_lists_them(finished):
    out, _ = finished
    grid = out.parent / "grid.yaml"
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed*/model.safetensors")}
    assert len(stamps) == 6
    res = invoke(grid, "--out", out, "--dry-run")
    assert res.exit_code == 0 and res.output.count(" done ") == 6 and "6 runs (3 variants × 2 seeds)" in res.output
    res = invoke(grid, "--out", out)
    assert res.exit_code == 0, res.output
    assert "6 of 6 runs already finished; 0 to go" in res.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_dry_run_writes_nothing(tmp_path, cache):
    grid = write_grid(tmp_path, cache, {"plain": {}, "wide": {"model.args.n_feats": 24}})
    res = invoke(grid, "--out", tmp_path / "out", "--dry-run")
    assert res.exit_code == 0, res.output
    assert [ln.split()[:2] for ln in res.output.splitlines()[:4]] == [
        ["plain/seed0", "new"], ["plain/seed1", "new"], ["wide/seed0", "new"], ["wide/seed1", "new"]
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("variants", "extra", "message"),
    [
        ({"plain": {}, "bad": {"optim.lrr": 1.0e-3}}, {},
         "variant 'bad': unknown key 'optim.lrr' (did you mean 'lr'?)"),
        ({"plain": {}, "bad": {"model.args.n_fetas": 8}}, {},
         "variant 'bad': model.args.n_fetas: not an argument of 'edsr-baseline' (did you mean 'n_feats'?)"),
        ({"plain": {}, "bad": {"methods": [{"name": "no-such-method"}]}}, {},
         "variant 'bad': unknown method 'no-such-method'"),
        ({"plain": {}}, {"benchmarks": ["samples:val", "/no/such/Set14"]},
         "benchmark '/no/such/Set14': /no/such/Set14: dataset folder not found"),
        ({"plain": {}}, {"seed": [0]}, "unknown key 'seed' (did you mean 'seeds'?)"),
        ({"plain": {}}, {"baseline": "plane"}, "baseline 'plane' is not a variant (did you mean 'plain'?)"),
        ({"plain": {}, "../x": {}}, {}, "variant name '../x' must be"),
        ({"plain": {}, "fast": {}}, {"compare": [["fast", "plian"]]}, "compare: 'plian' is not a variant (did you mean 'plain'?)"),
    ],
)
def test_bad_grids_fail_in_one_line_before_any_run(tmp_path, cache, variants, extra, message):
    grid = write_grid(tmp_path, cache, variants, **extra)
    res = invoke(grid, "--out", tmp_path / "out")
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {grid}: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_run_folder_from_another_recipe_is_refused(tmp_path, cache):
    grid = write_grid(tmp_path, cache, {"plain": {}}, seeds=[0])
    assert invoke(grid, "--out", tmp_path / "out").exit_code == 0
    grid = write_grid(tmp_path, cache, {"plain": {"optim.lr": 1.0e-3}}, seeds=[0])
    res = invoke(grid, "--out", tmp_path / "out")
    assert res.exit_code == 1
    assert "runs/plain/seed0: this run was trained with a different recipe (optim.lr)" in res.stderr


def _experiment(grid: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "attrsr", "experiment", str(grid), "--out", str(out), "--no-progress", *extra]


def _wait_for(predicate, proc, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_killed_grid_completes_without_redoing_finished_runs(tmp_path, cache):
    """SIGKILL once the first run is finished and the second has a checkpoint; the re-run keeps the
    first run untouched, resumes the second from its checkpoint (to the same weights as an
    uninterrupted run) and trains the rest."""
    from engine_helpers import run, same_weights, weights

    grid = write_grid(tmp_path, cache, {"plain": {}, "fast": {"optim.lr": 2.0e-3}},
                      set={**TINY_SET, "train.iterations": 20, "train.checkpoint_every": 5, "data.cache_dir": str(cache)})
    out = tmp_path / "out"
    env = subprocess_env(cache)
    first, second = out / "runs/plain/seed0", out / "runs/plain/seed1"
    proc = subprocess.Popen(_experiment(grid, out, cache), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ok = _wait_for(lambda: (first / "eval.json").exists() and (second / "latest.pt").exists(), proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert ok, proc.stdout.read().decode()
    assert not (second / "eval.json").exists() and not (out / "report.json").exists()
    stamp = {p: p.stat().st_mtime_ns for p in (first / "eval.json", first / "model.safetensors", first / "latest.pt")}

    res = subprocess.run(_experiment(grid, out, cache), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "1 of 4 runs already finished; 3 to go" in res.stdout
    assert "plain/seed1: resume@" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert all((out / f"runs/{v}/seed{s}/eval.json").exists() for v in ("plain", "fast") for s in (0, 1))
    assert json.loads((out / "report.json").read_text())["variants"]["fast"]["runs"]["1"] == "runs/fast/seed1"

    # Exact resume: the interrupted run ends with the weights of the same run trained in one go.
    from attrsr.config import load_config

    sets = {**TINY_SET, "train.iterations": 20, "train.checkpoint_every": 5, "data.cache_dir": str(cache), "seed": 1}
    run(load_config(TINY, [f"{k}={json.dumps(v)}" for k, v in sets.items()]), tmp_path / "fresh")
    assert same_weights(weights(tmp_path / "fresh" / "model.safetensors"), weights(second / "model.safetensors"))


@pytest.mark.slow
def test_parallel_jobs_and_their_children_die_with_the_grid(tmp_path, cache):
    """--jobs 2 runs two children at once; SIGKILL of the grid takes its children along (no run keeps
    training unseen), and a re-run with --jobs 2 finishes with the same numbers as a sequential grid."""
    grid = write_grid(tmp_path, cache, {"plain": {}, "fast": {"optim.lr": 2.0e-3}}, seeds=[0],
                      set={**TINY_SET, "train.iterations": 20, "train.checkpoint_every": 5, "data.cache_dir": str(cache)})
    out = tmp_path / "out"
    env = subprocess_env(cache)
    proc = subprocess.Popen(_experiment(grid, out, cache, "--jobs", "2"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ok = _wait_for(lambda: len(list(out.glob("runs/*/seed*/config.yaml"))) >= 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert ok, proc.stdout.read().decode()
    time.sleep(3.0)
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, str(out))]
    assert children == []

    unfinished = [d for d in out.glob("runs/*/seed0") if not (d / "eval.json").exists()]
    res = subprocess.run(_experiment(grid, out, cache, "--jobs", "2"), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": started (") == len(unfinished) >= 1 and (out / "report.json").exists()
    seq = tmp_path / "seq"
    res = invoke(grid, "--out", seq)  # sequential, in this process
    assert res.exit_code == 0, res.output
    par, ser = (json.loads((d / "report.json").read_text())["variants"] for d in (out, seq))
    for v in ("plain", "fast"):
        a, b = par[v]["benchmarks"]["samples:val"]["psnr_y"], ser[v]["benchmarks"]["samples:val"]["psnr_y"]
        assert a["per_seed"] == b["per_seed"] and not any(math.isnan(x) for x in a["per_seed"].values())


def _cmdline_has(proc_dir: Path, text: str) -> bool:
    try:
        return text in (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("grid", sorted((Path(__file__).resolve().parents[1] / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_grids_plan(grid, tmp_path, monkeypatch):
    """Every shipped grid passes all the up-front checks (recipes, data, benchmarks) and lists its runs."""
    from attrsr.experiment import plan_grid
    from conftest import DATA, need

    need(DATA / "train" / "T91", DATA / "train" / "BSD200", DATA / "benchmarks" / "Set5")
    monkeypatch.setenv("ATTRSR_DATA", str(DATA))
    planned = plan_grid(grid, tmp_path / "out")
    assert len(planned.runs) == len(planned.spec.variants) * len(planned.spec.seeds) >= 2
    assert not (tmp_path / "out").exists()
