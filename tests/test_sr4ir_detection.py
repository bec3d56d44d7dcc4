"""SR4IR's detection task on real COCO128: boxes follow the crop and flip, the CenterNet targets decode
back to the ground truth (COCO mAP 1.0 through pycocotools), the detector learns, every variant runs
end to end and reports mAP, bad boxes and feature levels are refused with one line before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attrsr.errors import AttrsrError
from conftest import DATA, need, one_line_error
from engine_helpers import cli_train, run, tiny_config
from sr4ir_trace import EXPECTED_UPDATES, trace_updates

pytestmark = pytest.mark.usefixtures("one_thread")

COCO = DATA / "tasks" / "coco128"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One decoded-image cache for the module (the 16-image subset at x2 is decoded once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def coco16(tmp_path_factory):
    """COCO128's first 16 images (symlinks, filtered json): 12 train, 4 held out as test."""
    return _coco_copy(tmp_path_factory.mktemp("coco") / "coco128", n=16)[0]


def test_boxes_follow_a_crop_and_a_flip():
    from attrsr.tasks.datasets import crop_flip_boxes

    boxes = torch.tensor([[[10.0, 20, 50, 60], [0, 0, 5, 5], [90, 90, 200, 200], [60, 70, 100, 75], [70, 20, 72, 40], [71, 20, 72.5, 40]]])
    labels = torch.tensor([[3, 4, 5, 6, 7, 8]])
    top, left = torch.tensor([16]), torch.tensor([8])
    # by hand: shift by (left, top) = (8, 16), clip to [0, 64]; under 2 px wide or high is dropped
    kept = torch.tensor([[2.0, 4, 42, 44], [0, 0, 0, 0], [64, 64, 64, 64], [52, 54, 64, 59], [62, 4, 64, 24], [63, 4, 64, 24]])
    out, lab = crop_flip_boxes(boxes, labels, top, left, 64, torch.tensor([False]))
    assert torch.equal(out[0], kept) and lab.tolist() == [[3, -1, -1, 6, 7, -1]]
    out, lab = crop_flip_boxes(boxes, labels, top, left, 64, torch.tensor([True]))
    mirrored = torch.stack([64 - kept[:, 2], kept[:, 1], 64 - kept[:, 0], kept[:, 3]], 1)
    assert torch.equal(out[0], mirrored) and out[0, 0].tolist() == [22, 4, 62, 44] and lab.tolist() == [[3, -1, -1, 6, 7, -1]]
    # padding stays padding
    _, lab = crop_flip_boxes(boxes, torch.full_like(labels, -1), top, left, 64, torch.tensor([False]))
    assert bool((lab == -1).all())


def _dense(values: torch.Tensor, index: torch.Tensor, mask: torch.Tensor, grid) -> torch.Tensor:
    """Per-object values (B,N,2) written at their centre cells of a (B,2,h,w) map."""
    b, n, _ = values.shape
    out = torch.zeros(b, 2, grid[0] * grid[1])
    out.scatter_(2, index[:, None].expand(b, 2, n), (values * mask[..., None]).transpose(1, 2))
    return out.view(b, 2, *grid)


def test_decoding_the_encoded_ground_truth_recovers_the_boxes_and_map_one():
    pytest.importorskip("pycocotools")
    from attrsr.tasks.datasets import coco_categories, coco_detection, coco_split, pad_boxes
    from attrsr.tasks.detection import centernet_decode, centernet_targets
    from attrsr.tasks.metrics import coco_map

    ann = need(COCO / "annotations" / "instances_train2017.json")
    ids = coco_categories(COCO)
    assert len(ids) == 80 and ids[:3] == [1, 2, 3] and ids[-1] == 90  # COCO's ids 1..90 with gaps → 0..79
    samples = coco_split(coco_detection(COCO), "test")
    assert len(samples) == 32 and [s.image_id for s in samples[:2]] == [34, 61]  # every 4th image by id
    boxes, labels, crowd = pad_boxes(samples, ids)
    assert [[ids[c] for c in row[row >= 0].tolist()] for row in labels] == [s.labels.tolist() for s in samples]
    h, w = max(s.height for s in samples), max(s.width for s in samples)
    grid = (-(-h // 4), -(-w // 4))
    t = centernet_targets(boxes, labels, 80, grid, 4, crowd)
    # two objects of one class centred in one stride-4 cell cannot both be decoded: leave those images out
    key = torch.stack([torch.arange(len(samples))[:, None].expand_as(labels), labels, t["index"]], -1)[t["mask"]]
    clash = {int(k[0]) for k, c in zip(*torch.unique(key, dim=0, return_counts=True)) if c > 1}
    keep = [i for i in range(len(samples)) if i not in clash]
    assert len(keep) >= 25
    out = {"heatmap": torch.logit(t["heat"].clamp(1e-6, 1 - 1e-6)), "size": _dense(t["size"], t["index"], t["mask"], grid),
           "offset": _dense(t["offset"], t["index"], t["mask"], grid)}
    dec, scores, cls = centernet_decode(out, 4, 100)
    rows = []
    for i in keep:
        s, real = samples[i], t["mask"][i]
        found = scores[i] > 0.999  # the Gaussians peak at exactly 1 on the centre cells
        assert int(found.sum()) == int(real.sum())
        got = sorted(zip([ids[c] for c in cls[i][found].tolist()], dec[i][found].tolist()))
        want = sorted(zip([ids[c] for c in labels[i][real].tolist()], boxes[i][real].tolist()))
        assert [g[0] for g in got] == [x[0] for x in want]
        assert np.allclose([g[1] for g in got], [x[1] for x in want], atol=1e-3)
        rows += [{"image_id": s.image_id, "category_id": ids[c], "bbox": [x0, y0, x1 - x0, y1 - y0], "score": p}
                 for (x0, y0, x1, y1), p, c in zip(dec[i].tolist(), scores[i].tolist(), cls[i].tolist()) if p > 0]
    data = json.loads(ann.read_text())
    wanted = {samples[i].image_id for i in keep}
    truth = {**data, "images": [im for im in data["images"] if im["id"] in wanted],
             "annotations": [a for a in data["annotations"] if a["image_id"] in wanted]}
    result = coco_map(truth, rows)
    assert result["map"] == pytest.approx(1.0, abs=1e-9) and result["map50"] == pytest.approx(1.0, abs=1e-9)


def test_crowd_boxes_are_ignored_not_negative_and_not_objects():
    from attrsr.tasks.detection import centernet_targets

    boxes = torch.tensor([[[8.0, 8, 40, 40], [20, 20, 60, 60]]])
    t = centernet_targets(boxes, torch.tensor([[2, 5]]), 6, (16, 16), 4, torch.tensor([[False, True]]))
    assert t["mask"].tolist() == [[True, False]] and int((t["heat"] == 1).sum()) == 1
    assert float(t["heat"][0, 5].max()) == 0.0  # no Gaussian for the crowd
    region = t["ignore"][0, 5]
    assert region[5:15, 5:15].all() and int(region.sum()) == 100 and not t["ignore"][0, :5].any()


def _coco_batch(size=64):
    """Two real 64-px COCO128 crops holding objects, with their boxes (class indices)."""
    from attrsr.images import load_image
    from attrsr.tasks.datasets import coco_categories, coco_detection, crop_flip_boxes, pad_boxes

    need(COCO)
    samples = [s for s in coco_detection(COCO) if s.image.stem in ("000000000009", "000000000025")]
    boxes, labels, crowd = pad_boxes(samples, coco_categories(COCO))
    top, left = torch.tensor([200, 100]), torch.tensor([250, 150])
    boxes, labels = crop_flip_boxes(boxes, labels, top, left, size, torch.tensor([False, True]))
    imgs = []
    for s, t, l, f in zip(samples, top.tolist(), left.tolist(), (False, True)):
        crop = load_image(s.image)[:, t : t + size, l : l + size]
        imgs.append(crop.flip(-1) if f else crop)
    assert int((labels >= 0).sum()) >= 2
    return torch.stack(imgs), {"boxes": boxes, "labels": labels, "crowd": crowd}


def test_a_few_training_steps_lower_the_detector_loss():
    from attrsr.methods.sr4ir import SR4IRParams
    from attrsr.tasks.detection import centernet_loss, centernet_targets
    from attrsr.tasks.networks import CenterNetDetector

    torch.manual_seed(0)
    x, label = _coco_batch()
    net = CenterNetDetector(80, fpn_channels=16, width=8)
    out = net(x)
    assert out["heatmap"].shape == (2, 80, 16, 16) and out["size"].shape == out["offset"].shape == (2, 2, 16, 16)
    t = centernet_targets(label["boxes"], label["labels"], 80, (16, 16), net.STRIDE, label["crowd"])
    p = SR4IRParams(task="detection")
    opt = torch.optim.SGD(net.parameters(), lr=p.task_lr, momentum=p.momentum)
    losses = []
    for _ in range(15):  # SR4IR's phase-2 step: SGD 2e-2, gradient norm clipped to 10
        loss = centernet_loss(net(x), t)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), p.task_grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses


def test_the_detector_has_two_fpn_levels_for_tdp_and_any_input_size():
    from attrsr.methods.sr4ir import SR4IRParams
    from attrsr.tasks.networks import CenterNetDetector

    net = CenterNetDetector(80, fpn_channels=8, width=8).eval()
    assert SR4IRParams(task="detection").tdp == {"p2": 0.5, "p3": 0.5}
    feats = net.features(torch.rand(1, 3, 50, 70))  # padded to 64×96
    assert feats["p2"].shape[-2:] == (16, 24) and feats["p3"].shape[-2:] == (8, 12) and feats["p5"].shape[-2:] == (2, 3)
    with pytest.raises(AttrsrError, match="no feature level.*fpn3.*p2"):
        net.check_levels(["fpn3"])


# ------------------------------------------------------------------------------------------------
# The method end to end


def _cfg(cache, images, *extra, **params):
    spec = {"name": "sr4ir", "task": "detection", "warmup": 0.0, "val_images": 2, "eval_images": 3, "task_width": 8, "fpn_channels": 16, **params}
    return tiny_config(cache, f"data.train={images}", "data.flip=false", "data.rot90=false", "data.batch_size=2",
                       "data.patch_size=32", "scale=2", "train.log_every=1", "methods=[" + json.dumps(spec) + "]", *extra)


def test_sr4ir_detection_trains_on_the_train_split_with_aligned_boxes_and_reports_map(cache, coco16, tmp_path_factory, monkeypatch):
    pytest.importorskip("pycocotools")
    from attrsr.images import load_image
    from attrsr.methods.sr4ir import SR4IR
    from attrsr.metrics import psnr
    from attrsr.tasks.datasets import coco_detection, coco_split, crop_flip_boxes, make_lr

    seen = []
    original = SR4IR.augment

    def record(self, batch, gen, rng):
        before = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
        out = original(self, batch, gen, rng)
        seen.append((self, before, out))
        return out

    monkeypatch.setattr(SR4IR, "augment", record)
    tr = run(_cfg(cache, coco16, "train.iterations=4", "val.every=4"), tmp_path_factory.mktemp("run") / "r")
    m = tr.methods.methods[0]
    names = tr.images.names
    held_out = {s.image.stem for s in coco_split(coco_detection(coco16.parent), "test")}
    assert len(held_out) == 4 and len(names) == 16
    flips = 0
    for _, before, out in seen:
        for j, i in enumerate(out["image"].tolist()):
            assert names[i] not in held_out  # never a held-out test image (every 4th)
            hr_full = torch.from_numpy(np.array(tr.images.hr(i)).transpose(2, 0, 1)).float().div_(255.0)
            t, l = int(before["top"][j]) * 2, int(before["left"][j]) * 2
            crop = hr_full[:, t : t + 64, l : l + 64]
            flipped = not torch.equal(out["hr"][j], crop)
            assert torch.equal(out["hr"][j], crop.flip(-1) if flipped else crop)
            assert torch.equal(out["lr"][j], before["lr"][j].flip(-1) if flipped else before["lr"][j])
            want, lab = crop_flip_boxes(m.det_boxes[i : i + 1], m.det_labels[i : i + 1], torch.tensor([t]), torch.tensor([l]), 64, torch.tensor([flipped]))
            assert torch.equal(out["task_label"]["boxes"][j], want[0]) and torch.equal(out["task_label"]["labels"][j], lab[0])
            flips += flipped
    assert len(seen) == 4 and 0 < flips < 8
    rows = [json.loads(x) for x in (tr.out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("kind") == "val" and r.get("dataset") == "sr4ir-coco128:test"]
    assert val and all(0.0 <= r["map"] <= 1.0 and 0.0 <= r["map50"] <= 1.0 and r["psnr_rgb"] > 10 for r in val)
    assert [r["step"] for r in rows if r.get("kind") == "sr4ir"] == [1, 2, 3, 4]
    result = m.evaluate_run(tr.model.eval(), tr.out, tr.cfg)["coco128:test"]
    assert set(result) == {"map", "map50", "psnr_rgb", "images"} and len(result["images"]) == 3 and set(result["images"]) <= held_out
    # one image's PSNR recomputed: modcropped HR, MATLAB-bicubic LR, S, RGB PSNR (border 2)
    name = next(iter(result["images"]))
    hr = load_image(COCO / "train2017" / f"{name}.jpg")[None]
    hr = hr[..., : hr.shape[-2] // 2 * 2, : hr.shape[-1] // 2 * 2]
    with torch.no_grad():
        sr = tr.model.eval()(make_lr(hr, 2)).clamp(0, 1)
    assert result["images"][name]["psnr_rgb"] == pytest.approx(psnr(sr[0], hr[0], crop_border=2, y_channel=False), abs=1e-9)


@pytest.mark.parametrize("variant, expect", [v for v in EXPECTED_UPDATES if v[0] != "sr4ir"])
def test_each_baseline_trains_the_right_network_on_detection(cache, coco16, tmp_path_factory, monkeypatch, variant, expect):
    """The baselines' update pattern (which of S, T moves at each step, on which input) is the one
    the segmentation tests pin, and each run reports an mAP on held-out images."""
    pytest.importorskip("pycocotools")
    trace = trace_updates(monkeypatch)
    tr = run(_cfg(cache, coco16, "train.iterations=4", variant=variant, val="", eval_images=2), tmp_path_factory.mktemp("run") / "r")
    assert [(t["S"], t["T"]) for t in trace] == expect
    for t in trace:
        if variant in ("hr_t", "t_then_s") and t["T"]:
            assert len(t["seen"]) == 1 and torch.equal(t["seen"][0], t["batch"]["hr"])
    result = tr.methods.methods[0].evaluate_run(tr.model.eval(), tr.out, tr.cfg)["coco128:test"]
    assert 0.0 <= result["map"] <= 1.0 and len(result["images"]) == 2 and (tr.out / "task.safetensors").is_file()


# ------------------------------------------------------------------------------------------------
# Bad input: one line, before training, no run folder left


def _coco_copy(root, bad_box=False, n=4):
    """COCO128's first ``n`` images (symlinked images, filtered json); ``bad_box`` moves one box out of its image."""
    src = need(COCO)
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    data = json.loads((src / "annotations" / "instances_train2017.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    ids = {im["id"] for im in images}
    for im in images:
        (root / "train2017" / im["file_name"]).symlink_to(src / "train2017" / im["file_name"])
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    bad = None
    if bad_box:
        bad = anns[2]
        im = next(i for i in images if i["id"] == bad["image_id"])
        bad["bbox"] = [10.0, im["height"] - 4.0, 30.0, 12.0]
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps({**data, "images": images, "annotations": anns}))
    return root / "train2017", bad


def test_a_box_outside_its_image_is_one_error_before_training(tmp_path):
    train, bad = _coco_copy(tmp_path / "coco", bad_box=True)
    res = cli_train(tmp_path / "run", tmp_path / "cache", "train.iterations=1", f"data.train={train}", "methods=[{name: sr4ir, task: detection, task_width: 8, fpn_channels: 8}]")
    one_line_error(res, "instances_train2017.json", f"annotation {bad['id']}", "outside its image", "fix or drop that annotation")
    assert not (tmp_path / "run").exists()
    # the same copy with the box inside its image trains
    train_ok, _ = _coco_copy(tmp_path / "ok")
    ok = cli_train(tmp_path / "run2", tmp_path / "cache", "train.iterations=1", f"data.train={train_ok}", "methods=[{name: sr4ir, task: detection, task_width: 8, fpn_channels: 8, val: ''}]")
    assert ok.exit_code == 0, ok.output


def test_an_unknown_detection_feature_level_is_one_error_before_anything_runs(tmp_path):
    train, _ = _coco_copy(tmp_path / "coco")
    res = cli_train(tmp_path / "run", tmp_path / "cache", "train.iterations=1", f"data.train={train}", "methods=[{name: sr4ir, task: detection, tdp: {backbone: 1}}]")
    one_line_error(res, "backbone", "detection network has no feature level", "p2, p3, p4, p5")
    assert not (tmp_path / "run").exists()


def test_pictures_draw_each_runs_boxes_with_its_map(cache, coco16, tmp_path_factory):
    pytest.importorskip("pycocotools")
    import torch.nn.functional as F

    from attrsr.images import load_image
    from attrsr.methods.sr4ir import pictures
    from attrsr.metrics import psnr
    from attrsr.tasks.datasets import make_lr

    out = tmp_path_factory.mktemp("runs")
    for v in ("lr_t", "sr4ir"):
        run(_cfg(cache, coco16, "train.iterations=1", variant=v, val=""), out / v)
    image = "000000000034"  # the first held-out image (a zebra)
    shown = pictures({"LR→T": out / "lr_t", "SR4IR": out / "sr4ir"}, [image], out / "fig.png", score_threshold=0.0)
    assert (out / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["column"] for r in shown] == ["LR→T", "SR4IR"]
    assert all(0.0 <= r["map"] <= 1.0 and 0 < r["boxes"] <= 100 for r in shown)  # threshold 0: every decoded box drawn
    hr = load_image(COCO / "train2017" / f"{image}.jpg")[None]
    hr = hr[..., : hr.shape[-2] // 2 * 2, : hr.shape[-1] // 2 * 2]
    bilinear = F.interpolate(make_lr(hr, 2), scale_factor=2, mode="bilinear", align_corners=False)
    assert shown[0]["psnr_rgb"] == pytest.approx(psnr(bilinear[0], hr[0], crop_border=2, y_channel=False), abs=1e-9)
    with pytest.raises(AttrsrError, match="000000000009 not in the test split"):  # a training image
        pictures({"SR4IR": out / "sr4ir"}, ["000000000009"], out / "fig2.png")
    assert not (out / "fig2.png").exists()
