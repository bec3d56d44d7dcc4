"""SR4IR's task pieces: network shapes and sizes, CQMix, the TDP loss's gradient flow, mIoU on real labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attrsr import models
from attrsr.errors import AttrsrError
from attrsr.tasks import ConfusionMatrix, DeepLabV3Segmenter, ResNet18Classifier, cqmix, tdp_loss
from conftest import DATA, need

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resnet18_has_torchvisions_size_and_names():
    net = ResNet18Classifier(1000)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512
    keys = set(net.state_dict())
    assert {"backbone.conv1.weight", "backbone.layer4.1.bn2.running_var", "fc.bias"} <= keys
    seg = DeepLabV3Segmenter(11).eval()
    with torch.no_grad():
        out = seg(torch.rand(1, 3, 64, 48))
        feats = seg.features(torch.rand(1, 3, 64, 48))
    assert out.shape == (1, 11, 64, 48) and feats["backbone"].shape[-2:] == (4, 3)  # output stride 16


def test_cqmix_takes_whole_cells_from_exactly_one_source():
    gen = torch.Generator().manual_seed(0)
    sr, hr = torch.full((64, 3, 32, 32), 0.25), torch.full((64, 3, 32, 32), 0.75)
    mixed, mask = cqmix(sr, hr, 4, gen)
    assert bool(((mixed == 0.25) | (mixed == 0.75)).all())
    assert torch.equal(mixed == 0.25, mask.bool().expand_as(mixed))
    cells = mask[:, 0].unfold(1, 8, 8).unfold(2, 8, 8)  # (B,4,4,8,8)
    assert bool((cells.amin((-2, -1)) == cells.amax((-2, -1))).all())
    share = float(mask.mean())
    assert 0.45 < share < 0.55  # 1024 Bernoulli(0.5) cells
    with pytest.raises(AttrsrError, match="whole cells"):
        cqmix(sr[..., :30], hr[..., :30], 4)


def test_tdp_loss_is_zero_for_equal_images_and_trains_only_the_sr_network():
    torch.manual_seed(0)
    sr_net = models.create("edsr-baseline", scale=2, n_resblocks=1, n_feats=8)
    task = DeepLabV3Segmenter(11).eval()
    for p in task.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    assert float(tdp_loss(task, hr, hr, {"backbone": 1.0})) == 0.0
    loss = tdp_loss(task, sr_net(lr), hr, {"backbone": 1.0, "layer2": 0.5})
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in sr_net.parameters() if p.requires_grad)
    assert all(p.grad is None for p in task.parameters())
    assert all(torch.equal(v, before[k]) for k, v in task.state_dict().items())  # eval mode: BN stats untouched
    with pytest.raises(AttrsrError, match="no feature level"):
        tdp_loss(task, hr, hr, {"fpn3": 1.0})


def test_miou_equals_a_hand_computation_on_real_camvid_labels():
    path = need(DATA / "tasks" / "camvid" / "trainannot" / "0001TP_006690.png")
    label = torch.from_numpy(np.array(Image.open(path))).long()
    assert int(label.max()) <= 11
    pred = label.clone()
    pred[100:200, 100:300] = 3  # paint a block as road
    pred[pred == 11] = 0  # the ignore region gets some prediction; it must not count
    pred[:, :40] = torch.roll(label[:, :40], 7, 0).clamp(max=10)
    cm = ConfusionMatrix(11, ignore_index=11)
    cm.update(pred, label)
    keep = label != 11
    ious = []
    for c in range(11):
        t, p = (label == c) & keep, (pred == c) & keep
        if t.any():
            ious.append(float((t & p).sum()) / float((t | p).sum()))
    assert cm.miou() == pytest.approx(np.mean(ious), abs=1e-12)
    assert 0.3 < cm.miou() < 0.99
    bad = label.clone()
    bad[0, 0] = 12
    with pytest.raises(AttrsrError, match="outside 0..10"):
        ConfusionMatrix(11, ignore_index=11).update(pred, bad)


def test_task_data_follow_the_readme():
    from attrsr.tasks.datasets import camvid, cub50, load_segmentation, make_lr, random_crop_flip

    root = need(DATA / "tasks")
    train, test = cub50(root / "cub50", "train"), cub50(root / "cub50", "test")
    assert (len(train), len(test)) == (1500, 1449)  # the inverted flag: 0 = train
    assert np.bincount([s.label for s in train]).tolist() == [30] * 50
    seg = camvid(root / "camvid", "train")
    assert len(seg) == 62
    img, lab = load_segmentation(seg[0])
    assert img.shape == (3, 360, 480) and lab.shape == (360, 480) and int(lab.max()) <= 11
    rng = np.random.default_rng(0)
    ci, cl = random_crop_flip(img, lab, 96, rng)
    # the crop of the label is the crop of the image: find it back by matching pixels
    hits = [(t, l) for t in range(360 - 95) for l in range(480 - 95)
            if torch.equal(img[:, t, l : l + 96], ci[:, 0]) or torch.equal(img[:, t, l : l + 96].flip(-1), ci[:, 0])]
    assert hits
    t, l = hits[0]
    flipped = not torch.equal(img[:, t, l : l + 96], ci[:, 0])
    expect = lab[t : t + 96, l : l + 96]
    assert torch.equal(cl, expect.flip(-1) if flipped else expect)
    lr = make_lr(ci[None], 4)
    assert lr.shape == (1, 3, 24, 24) and torch.equal(lr, (lr * 255).round() / 255)


def _coco_rows(data, jitter=0.0, seed=0):
    """Ground-truth boxes of COCO128 as detection rows, each box moved by ``jitter`` × its size."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in data["annotations"]:
        if a.get("iscrowd"):
            continue
        x, y, w, h = a["bbox"]
        dx, dy = rng.uniform(-jitter, jitter, 2) * (w, h)
        rows.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + dx, y + dy, w, h], "score": 1.0})
    return rows


def test_coco_map_is_one_on_ground_truth_and_drops_with_jitter():
    pytest.importorskip("pycocotools")
    import json

    from attrsr.tasks.metrics import coco_map

    path = need(DATA / "tasks" / "coco128" / "annotations" / "instances_train2017.json")
    data = json.loads(path.read_text())
    exact = coco_map(path, _coco_rows(data))
    assert exact["map"] == pytest.approx(1.0, abs=1e-12) and exact["map50"] == pytest.approx(1.0, abs=1e-12)
    small, large = coco_map(data, _coco_rows(data, 0.1)), coco_map(data, _coco_rows(data, 0.3))
    # A shift of up to 10 % of the box keeps IoU ≥ 0.67: AP@0.5 stays 1, the strict thresholds fail.
    assert small["map50"] == pytest.approx(1.0, abs=1e-12) and 0.3 < small["map"] < 0.95
    assert large["map"] < small["map"] - 0.2 and large["map50"] < 1.0
    # dropping half the detections of one frequent class lowers mAP as recall falls
    rows = _coco_rows(data)
    people = [r for r in rows if r["category_id"] == 1]
    fewer = coco_map(data, [r for r in rows if r["category_id"] != 1] + people[::2])
    assert fewer["map"] < 1.0


def test_coco_boxes_outside_their_image_are_refused(tmp_path):
    import json

    from attrsr.tasks.datasets import coco_detection

    root = need(DATA / "tasks" / "coco128")
    samples = coco_detection(root)
    assert len(samples) == 128 and sum(len(s.boxes) for s in samples) == 939
    empty = [s.image.name for s in samples if len(s.boxes) == 0]
    assert empty == ["000000000250.jpg", "000000000508.jpg"]
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    bad = data["annotations"][3]
    im = next(i for i in data["images"] if i["id"] == bad["image_id"])
    bad["bbox"] = [im["width"] - 5.0, 10.0, 20.0, 20.0]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    with pytest.raises(AttrsrError, match=rf"annotation {bad['id']} box .* outside its image {im['file_name']}"):
        coco_detection(tmp_path)
