"""SR4IR and its five baselines in the engine on real CamVid frames and CUB-50 images: labels stay
aligned with the patches, each variant trains the network(s) it should on the input it should, phase 2
leaves S alone, both networks resume exactly (also after SIGKILL), the task metric reaches the
experiment report, bad labels and feature levels are refused with one line before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attrsr.errors import AttrsrError
from conftest import DATA, need
from sr4ir_trace import EXPECTED_UPDATES, trace_updates
from engine_helpers import REPO, cli_train, run, same_weights, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One decoded-image cache for the module (CamVid at x2 is decoded once)."""
    return tmp_path_factory.mktemp("cache")


def _cfg(cache, *extra, **params):
    camvid = need(DATA / "tasks" / "camvid" / "train")
    spec = {"name": "sr4ir", "warmup": 0.0, "val_images": 1, "task_width": 8, "aspp_channels": 16, **params}
    return tiny_config(cache, f"data.train={camvid}", "data.flip=false", "data.rot90=false", "data.batch_size=2",
                       "data.patch_size=24", "scale=2", "train.log_every=1", "methods=[" + json.dumps(spec) + "]", *extra)


def test_labels_follow_the_patches_and_phase_two_leaves_sr_alone(cache, tmp_path_factory, monkeypatch):
    from attrsr.methods.sr4ir import SR4IR

    seen = []
    original = SR4IR.after_step

    def check(self, step):
        b = self.batch
        label = b["task_label"]
        # (the exact alignment of the label crop is checked in test_labels_are_the_hr_crop_of_the_label_map)
        assert label.shape == b["hr"].shape[:1] + b["hr"].shape[-2:] and int(label.max()) <= 11
        before = {k: v.clone() for k, v in self.ctx.model.state_dict().items()}
        task_before = {k: v.clone() for k, v in self.task.state_dict().items()}
        original(self, step)
        assert all(torch.equal(v, before[k]) for k, v in self.ctx.model.state_dict().items())  # S untouched
        assert any(not torch.equal(v, task_before[k]) for k, v in self.task.state_dict().items())  # T moved
        seen.append(step)

    monkeypatch.setattr(SR4IR, "after_step", check)
    tr = run(_cfg(cache, "train.iterations=2"), tmp_path_factory.mktemp("run") / "r")
    assert seen == [1, 2]
    rows = [json.loads(x) for x in (tr.out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("kind") == "val" and "miou" in r and "psnr_rgb" in r for r in rows)
    assert [r["step"] for r in rows if r.get("kind") == "sr4ir"] == [1, 2]


def test_labels_are_the_hr_crop_of_the_label_map(tmp_path):
    """The pixel-unshuffled aux round trip: cropping on the LR grid then shuffling gives the HR crop."""
    import torch.nn.functional as F

    from attrsr.tasks.datasets import read_camvid_label

    lab = read_camvid_label(need(DATA / "tasks" / "camvid" / "trainannot" / "0001TP_006690.png"))
    aux = F.pixel_unshuffle(lab[None, None].float(), 2)[0]  # (4, 180, 240) on the LR grid
    crop = aux[:, 30:54, 40:64]
    back = F.pixel_shuffle(crop[None], 2)[0, 0].long()
    assert torch.equal(back, lab[60:108, 80:128])


def test_sr4ir_resumes_exactly_and_refuses_flips(cache, tmp_path_factory, monkeypatch):
    from attrsr.methods.sr4ir import SR4IR

    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(cache, "train.iterations=4", "train.checkpoint_every=2", val="")
    full = run(cfg, out / "full")
    original = SR4IR.after_step

    def crash(self, step):
        original(self, step)
        if step == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(SR4IR, "after_step", crash)
    with pytest.raises(RuntimeError):
        run(cfg, out / "part")
    monkeypatch.undo()
    part = run(cfg, out / "part", resume=True)
    assert same_weights(weights(out / "full" / "model.safetensors"), weights(out / "part" / "model.safetensors"))
    assert all(torch.equal(v, part.methods.methods[0].task.state_dict()[k]) for k, v in full.methods.methods[0].task.state_dict().items())
    with pytest.raises(AttrsrError, match="flip"):
        run(tiny_config(cache, f"data.train={DATA / 'tasks' / 'camvid' / 'train'}", "methods=[{name: sr4ir}]"), out / "bad")


# ------------------------------------------------------------------------------------------------
# The five baselines: which network learns at which step, from what


@pytest.mark.parametrize("variant, expect", EXPECTED_UPDATES)
def test_each_variant_trains_the_right_network_on_the_right_input(cache, tmp_path_factory, monkeypatch, variant, expect):
    import torch.nn.functional as F

    trace = trace_updates(monkeypatch)
    tr = run(_cfg(cache, "train.iterations=4", variant=variant, val=""), tmp_path_factory.mktemp("run") / "r")
    assert [(t["S"], t["T"]) for t in trace] == expect
    m = tr.methods.methods[0]
    for t in trace:
        b, seen = t["batch"], t["seen"]
        if variant in ("joint",) or not t["T"]:
            assert seen is None  # joint: T's gradient came with the engine's backward; idle T: no inputs
            continue
        if variant in ("hr_t", "t_then_s"):
            assert len(seen) == 1 and torch.equal(seen[0], b["hr"])
        elif variant == "lr_t":
            assert len(seen) == 1 and torch.equal(seen[0], F.interpolate(b["lr"], scale_factor=2, mode="bilinear", align_corners=False))
        else:
            with torch.no_grad():
                sr = m.ctx.model(b["lr"]).clamp(0, 1) if t is trace[-1] else seen[0]
            torch.testing.assert_close(seen[0], sr, rtol=0, atol=1e-6)  # S(LR) with the S after that step's update
            if variant == "sr4ir":
                mixed = seen[2]
                from_sr, from_hr = mixed == seen[0], mixed == b["hr"]
                assert len(seen) == 3 and torch.equal(seen[1], b["hr"]) and bool((from_sr | from_hr).all())
    # the task network of the finished run is exported beside the SR model
    assert (tr.out / "task.safetensors").is_file()
    assert same_weights(weights(tr.out / "task.safetensors"), {k: v for k, v in m.task.state_dict().items()})


def test_frozen_stage_keeps_sr_weights_and_logs_its_losses(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    run(_cfg(cache, "train.iterations=4", variant="s_then_t", val=""), out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [r["grad_norm"] for r in rows][2:] == [0.0, 0.0] and all(r["grad_norm"] > 0 for r in rows[:2])
    assert all(r["pixel"] > 0 for r in rows)


# ------------------------------------------------------------------------------------------------
# Classification on CUB-50 (a small real subset: 3 species)


def _cub_subset(root, species=3):
    """A CUB-50-shaped folder with the first ``species`` classes (symlinked images, filtered index)."""
    src = need(DATA / "tasks" / "cub50")
    (root / "images").mkdir(parents=True)
    rows = {n: dict(line.split(", ", 1) for line in (src / n).read_text().splitlines() if line.strip())
            for n in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")}
    keep = [i for i, c in rows["image_class_labels.txt"].items() if int(c) < species]
    for i in keep:
        rel = rows["images.txt"][i]
        (root / "images" / rel).parent.mkdir(exist_ok=True)
        (root / "images" / rel).symlink_to(src / "images" / rel)
    for n in ("images.txt", "image_class_labels.txt", "train_test_split.txt"):
        (root / n).write_text("".join(f"{i}, {rows[n][i]}\n" for i in keep))
    return root


def test_classification_draws_only_the_training_split_with_the_index_labels(cache, tmp_path_factory, monkeypatch):
    from attrsr.methods.sr4ir import SR4IR
    from attrsr.tasks.datasets import cub50

    root = _cub_subset(tmp_path_factory.mktemp("cub") / "cub50")
    seen = []
    original = SR4IR.augment

    def record(self, batch, gen, rng):
        out = original(self, batch, gen, rng)
        seen.append(([self.ctx.images.names[i] for i in batch["image"].tolist()], out["task_label"].tolist()))
        return out

    monkeypatch.setattr(SR4IR, "augment", record)
    spec = {"name": "sr4ir", "task": "classification", "num_classes": 3, "task_width": 8, "val_images": 2, "eval_images": 4}
    cfg = tiny_config(cache, f"data.train={root / 'images'}", "data.batch_size=8", "data.patch_size=24", "scale=2",
                      "train.iterations=3", "data.repeat=1", "methods=[" + json.dumps(spec) + "]")
    tr = run(cfg, tmp_path_factory.mktemp("run") / "r")
    train = {f"{s.image.parent.name}/{s.image.stem}": s.label for s in cub50(root, "train", 3)}
    assert len(train) == 90 and len(tr.images) > len(train)  # the folder holds the test images too
    drawn = [(n, c) for names, labels in seen for n, c in zip(names, labels)]
    assert len(drawn) == 24 and all(n in train and train[n] == c for n, c in drawn)
    result = tr.methods.methods[0].evaluate_run(tr.model.eval(), tr.out, tr.cfg)["cub50:test"]
    assert len(result["images"]) == 4 and result["top1"] == pytest.approx(np.mean([r["top1"] for r in result["images"].values()]))
    # one image's PSNR, recomputed here: the central 224-px crop, MATLAB-bicubic LR, S, RGB PSNR (border 2)
    from attrsr.images import load_image
    from attrsr.metrics import psnr
    from attrsr.tasks.datasets import make_lr

    name = next(iter(result["images"]))
    hr = load_image(root / "images" / f"{name}.jpg")[None][..., 1:225, 1:225]  # 227 px: (227-224)//2 = 1
    with torch.no_grad():
        sr = tr.model.eval()(make_lr(hr, 2)).clamp(0, 1)
    assert result["images"][name]["psnr_rgb"] == pytest.approx(psnr(sr[0], hr[0], crop_border=2, y_channel=False), abs=1e-9)


# ------------------------------------------------------------------------------------------------
# The task metric in the experiment report


def test_experiment_report_gives_the_task_metric_with_seed_intervals(cache, tmp_path):
    from attrsr import experiment

    camvid = need(DATA / "tasks" / "camvid" / "train")
    method = {"name": "sr4ir", "warmup": 0.0, "val": "", "task_width": 8, "aspp_channels": 16, "eval_images": 2}
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "base": str(REPO / "configs" / "tiny-cpu.yaml"), "seeds": [0, 1], "benchmarks": ["samples:val"], "baseline": "lr_t",
        "compare": [["sr4ir", "hr_t"]],
        "set": {"data.train": str(camvid), "data.flip": False, "data.rot90": False, "data.batch_size": 2, "data.patch_size": 24,
                "scale": 2, "train.iterations": 2, "val.data": [], "data.cache_dir": str(cache), "train.threads": 1},
        "variants": {v: {"methods": [{**method, "variant": v}]} for v in ("sr4ir", "lr_t", "hr_t")},
    }))
    g = experiment.plan_grid(grid, tmp_path / "out")
    records = experiment.run_grid(g, progress=False, echo=lambda s: None)
    experiment.write_grid_report(g, records)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["benchmarks"] == ["samples:val", "camvid:test"] and report["metrics"]["camvid:test"] == ["miou", "psnr_rgb"]
    recs = {(r["variant"], r["seed"]): r["benchmarks"]["camvid:test"] for r in records}
    row = report["paired"]["sr4ir"]["camvid:test"]
    seed_diffs = [recs["sr4ir", s]["miou"] - recs["lr_t", s]["miou"] for s in (0, 1)]
    assert row["delta_miou"] == pytest.approx(np.mean(seed_diffs), abs=1e-12)
    assert row["ci95_miou"] is None and row["ci95_miou_seeds"] is not None  # mIoU has no per-image values
    img_diffs = [recs["sr4ir", s]["images"][k]["psnr_rgb"] - recs["lr_t", s]["images"][k]["psnr_rgb"] for s in (0, 1) for k in recs["lr_t", s]["images"]]
    assert row["delta_psnr_rgb"] == pytest.approx(np.mean(img_diffs), abs=1e-12) and row["n_psnr_rgb"] == 4 and row["n_miou"] == 2
    pair = report["compare"][0]
    assert (pair["variant"], pair["reference"]) == ("sr4ir", "hr_t") and "miou" in str(pair["benchmarks"]["camvid:test"])
    paired_csv = (tmp_path / "out" / "paired.csv").read_text()
    assert "miou_delta" in paired_csv.splitlines()[0] and "miou_ci95_seeds_lo" in paired_csv
    # hr_t evaluates T on HR and lr_t on bilinear LR: same S training (L1), different task inputs
    assert recs["hr_t", 0]["psnr_rgb"] == pytest.approx(recs["lr_t", 0]["psnr_rgb"], abs=1e-9)


# ------------------------------------------------------------------------------------------------
# Bad input: one line, before training, no run folder left


def _camvid_copy(root, bad_id=None):
    src = need(DATA / "tasks" / "camvid")
    for split in ("train", "trainannot"):
        (root / split).mkdir(parents=True)
    names = sorted(p.name for p in (src / "train").glob("*.png"))[:2]
    for n in names:
        (root / "train" / n).symlink_to(src / "train" / n)
        (root / "trainannot" / n).symlink_to(src / "trainannot" / n)
    if bad_id is not None:
        from PIL import Image

        lab = np.array(Image.open(src / "trainannot" / names[1]))
        lab[5:9, 7:12] = bad_id
        (root / "trainannot" / names[1]).unlink()
        Image.fromarray(lab).save(root / "trainannot" / names[1])
    return root / "train", root / "trainannot" / names[1]


def test_a_label_id_outside_the_classes_is_one_error_before_training(tmp_path):
    from conftest import one_line_error

    train, bad = _camvid_copy(tmp_path / "camvid", bad_id=12)
    res = cli_train(tmp_path / "run", tmp_path / "cache", f"data.train={train}", "methods=[{name: sr4ir, task_width: 8}]")
    line = one_line_error(res, str(bad), "class id(s) 12", "outside 0..10", "void id 11")
    assert "fix the label file" in line and not (tmp_path / "run").exists()
    # the void id itself is fine, and so is a smaller class count's void id
    train_ok, _ = _camvid_copy(tmp_path / "ok", bad_id=11)
    assert cli_train(tmp_path / "run2", tmp_path / "cache", f"data.train={train_ok}", "methods=[{name: sr4ir, task_width: 8, aspp_channels: 8}]").exit_code == 0


def test_an_unknown_feature_level_is_one_error_before_anything_runs(tmp_path):
    from conftest import one_line_error

    train, _ = _camvid_copy(tmp_path / "camvid")
    res = cli_train(tmp_path / "run", tmp_path / "cache", f"data.train={train}", "methods=[{name: sr4ir, tdp: {fpn3: 0.5}}]")
    one_line_error(res, "fpn3", "no feature level", "backbone")
    assert not (tmp_path / "run").exists()
    res = cli_train(tmp_path / "run", tmp_path / "cache", f"data.train={train}", "methods=[{name: sr4ir, task: classification, tdp: {backbone: 1}}]")
    one_line_error(res, "backbone", "classification network has no feature level", "layer4")


# ------------------------------------------------------------------------------------------------
# SIGKILL mid-run, --resume: both networks bit-identical


@pytest.mark.slow
def test_sigkill_then_resume_gives_bit_identical_sr_and_task_networks(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from engine_helpers import subprocess_env, train_cmd

    camvid = need(DATA / "tasks" / "camvid" / "train")
    methods = json.dumps([{"name": "sr4ir", "warmup": 0.25, "task_width": 8, "aspp_channels": 16, "val": ""},
                          {"name": "hook_methods:Sleep", "seconds": 0.15}])
    sets = [f"data.train={camvid}", "data.flip=false", "data.rot90=false", "data.batch_size=2", "data.patch_size=24", "scale=2",
            "train.iterations=12", "train.checkpoint_every=4", "train.log_every=1", "train.threads=1", "val.data=[]", f"methods={methods}"]
    env = subprocess_env(tmp_path / "cache")
    done = subprocess.run(train_cmd(tmp_path / "full", sets), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    victim = subprocess.Popen(train_cmd(tmp_path / "crash", sets), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "crash" / "latest.pt"
    deadline = time.monotonic() + 240
    while not latest.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert not (tmp_path / "crash" / "model.safetensors").exists()
    assert 4 <= torch.load(latest, weights_only=True)["step"] < 12
    resumed = subprocess.run(train_cmd(tmp_path / "crash", sets, "--resume"), env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model", "task"):
        assert same_weights(weights(tmp_path / "full" / f"{name}.safetensors"), weights(tmp_path / "crash" / f"{name}.safetensors")), name


def test_pictures_show_each_runs_input_and_prediction(cache, tmp_path_factory):
    import torch.nn.functional as F

    from attrsr.images import load_image
    from attrsr.methods.sr4ir import pictures
    from attrsr.metrics import psnr
    from attrsr.tasks.datasets import make_lr

    out = tmp_path_factory.mktemp("runs")
    for v in ("lr_t", "sr4ir"):
        run(_cfg(cache, "train.iterations=1", variant=v, val=""), out / v)
    frame = "0001TP_008550"
    shown = pictures({"LR→T": out / "lr_t", "SR4IR": out / "sr4ir"}, [frame], out / "fig.png")
    assert (out / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["column"] for r in shown] == ["LR→T", "SR4IR"] and all(0.0 <= r["miou"] <= 1.0 for r in shown)
    hr = load_image(DATA / "tasks" / "camvid" / "test" / f"{frame}.png")[None]
    bilinear = F.interpolate(make_lr(hr, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert shown[0]["psnr_rgb"] == pytest.approx(psnr(bilinear[0], hr[0], crop_border=2, y_channel=False), abs=1e-9)
    with pytest.raises(AttrsrError, match="nope not in the test split"):
        pictures({"SR4IR": out / "sr4ir"}, ["nope"], out / "fig2.png")
    assert not (out / "fig2.png").exists()
