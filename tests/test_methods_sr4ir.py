"""SR4IR in the engine on real CamVid frames: labels stay aligned with the patches, phase 2 trains
only the task network, both networks resume exactly, bad recipes are refused."""

from __future__ import annotations

import json

import pytest
import torch

from attrsr.errors import AttrsrError
from conftest import DATA, need
from engine_helpers import run, same_weights, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(cache, *extra, **params):
    camvid = need(DATA / "tasks" / "camvid" / "train")
    spec = {"name": "sr4ir", "warmup": 0.0, "val_images": 1, **params}
    return tiny_config(cache, f"data.train={camvid}", "data.flip=false", "data.rot90=false", "data.batch_size=2",
                       "data.patch_size=24", "scale=2", "train.log_every=1", "methods=[" + json.dumps(spec) + "]", *extra)


def test_labels_follow_the_patches_and_phase_two_leaves_sr_alone(tmp_path_factory, monkeypatch):
    from attrsr.methods.sr4ir import SR4IR

    cache = tmp_path_factory.mktemp("cache")
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
    assert any(r.get("kind") == "val" and "miou_sr" in r for r in rows)
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


def test_sr4ir_resumes_exactly_and_refuses_flips(tmp_path_factory, monkeypatch):
    from attrsr.methods.sr4ir import SR4IR

    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("runs")
    cfg = _cfg(cache, "train.iterations=4", "train.checkpoint_every=2", val_images=0)
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
