"""BSPA in the engine: the bank and its classes, refreshes with complete IG, frozen weights kept
bit-identical, exact resume, bad parameters refused before training."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from attrsr.errors import AttrsrError
from engine_helpers import run, same_weights, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _bspa(**kw) -> str:
    spec = {"name": "bspa", "k": 4, "factor": 4, "every": 3, "finetune_steps": 2, "ig_steps": 4, "ig_batches": 1, "beta": 0.5, **kw}
    spec = {key: v for key, v in spec.items() if v is not None}  # None: leave the key out
    return "methods=[" + json.dumps(spec) + "]"


def test_bank_refresh_and_frozen_weights(tmp_path, cache):
    tr = run(tiny_config(cache, "train.iterations=7", "train.log_every=1", _bspa(val_per_class=2), val=True), tmp_path / "run")
    bank = (tmp_path / "run" / "bank.csv").read_text().splitlines()
    meta = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert bank[0] == "image,top,left,size,mse,class" and len(bank) - 1 == sum(meta["sizes"])
    assert meta["sizes"][0] / meta["sizes"][-1] == pytest.approx(4, rel=0.1)
    mse = np.array([float(r.split(",")[4]) for r in bank[1:]])
    cls = np.array([int(r.split(",")[5]) for r in bank[1:]])
    assert all(mse[cls == c].max() <= mse[cls == c + 1].min() for c in range(3))  # easy first
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    refreshes = [r for r in rows if r.get("kind") == "bspa" and "refresh" in r]
    assert [r["step"] for r in refreshes] == [3, 6]
    assert all(r["completeness_error"] < 0.25 for r in refreshes)
    per_class = [r for r in rows if r.get("kind") == "val" and str(r.get("dataset", "")).startswith("bspa-class")]
    assert {r["dataset"] for r in per_class} == {f"bspa-class{c}" for c in range(4)}
    assert all(r["n"] == 2 and 10 < r["psnr_y"] < 60 for r in per_class)
    method = tr.methods.methods[0]
    sd = tr.model.state_dict()
    assert method.masks and sum(int(m.sum()) for m in method.masks.values()) == refreshes[-1]["frozen"] > 0
    for n, m in method.masks.items():  # trained on after the last refresh, the frozen weights did not move
        assert torch.equal(sd[n][m], method.frozen[n][m])


def test_bspa_resumes_exactly(tmp_path, cache, monkeypatch):
    from attrsr.methods.bspa import BSPA

    cfg = tiny_config(cache, "train.iterations=8", "train.checkpoint_every=4", _bspa())
    run(cfg, tmp_path / "full")
    original = BSPA.after_step

    def crash_at_5(self, step):  # a crash after the step-4 checkpoint and the step-3 refresh
        original(self, step)
        if step == 5:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(BSPA, "after_step", crash_at_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg, tmp_path / "part")
    monkeypatch.undo()
    run(cfg, tmp_path / "part", resume=True)
    assert same_weights(weights(tmp_path / "full" / "model.safetensors"), weights(tmp_path / "part" / "model.safetensors"))


@pytest.mark.parametrize("bad,msg", [({"sub_size": 24}, "must equal data.patch_size"), ({"k": 100000}, "less than or equal"),
                                     ({"factor": 0.5}, "greater than or equal")])
def test_bad_bspa_parameters(tmp_path, cache, bad, msg):
    with pytest.raises(AttrsrError, match=msg):
        run(tiny_config(cache, _bspa(**bad)), tmp_path / "run")


def _every_row(fn):
    fn.every_row = True
    return fn


def _edit_bank(src, dst, meta_change=None, row_change=None):
    dst.mkdir()
    meta = json.loads((src / "classes.json").read_text())
    meta.update(meta_change or {})
    (dst / "classes.json").write_text(json.dumps(meta))
    rows = (src / "bank.csv").read_text().splitlines()
    if row_change:  # on the first row, or on every row (_every_row)
        rows[1:] = [row_change(r) for r in rows[1:]] if getattr(row_change, "every_row", False) else [row_change(rows[1]), *rows[2:]]
    (dst / "bank.csv").write_text("\n".join(rows) + "\n")
    return dst


def test_method_reuses_a_bank_by_path_and_checks_it(tmp_path, cache):
    first = tmp_path / "built"
    run(tiny_config(cache, "train.iterations=1", _bspa(alternate=False, val_per_class=0)), first)
    again = run(tiny_config(cache, "train.iterations=1", _bspa(alternate=False, val_per_class=0, bank=str(first), k=None)), tmp_path / "reused")
    assert (tmp_path / "reused" / "bank.csv").read_text() == (first / "bank.csv").read_text()
    log = [json.loads(line) for line in (tmp_path / "reused" / "metrics.jsonl").read_text().splitlines()]
    assert [r["bank"] for r in log if r.get("kind") == "bspa"] == [str(first)]
    assert again.methods.methods[0].classes.k == 4  # the bank's K, the recipe leaving it out

    bad = {
        "scale": ({"scale": 3}, None, {}, "built at ×3, the recipe trains ×2"),
        "size": ({"size": 24, "step": 12}, _every_row(lambda r: ",".join([*r.split(",")[:3], "24", *r.split(",")[4:]])), {},
                 "sub-images are 24 px with step 12, the recipe's 16 px with step 8"),
        "step": ({"step": 4}, None, {}, "sub-images are 16 px with step 4, the recipe's 16 px with step 8"),
        "k": (None, None, {"k": 5}, "the bank has K=4 classes, the recipe asks K=5"),
        "factor": (None, None, {"factor": 3}, "imbalance factor is 4, the recipe asks 3"),
        "k-range": ({"k": 1}, None, {}, "K=1, factor=4 out of range"),
        "image": (None, lambda r: "nosuchimage" + r[r.index(","):], {}, "1 image(s) of the bank are not in the training set (e.g. nosuchimage)"),
        "off": (None, lambda r: ",".join([r.split(",")[0], "5000", *r.split(",")[2:]]), {}, "runs off its"),
        "classes": (None, lambda r: ",".join([*r.split(",")[:5], "3" if r.split(",")[5] != "3" else "0"]), {}, "class counts disagree"),
    }
    for name, (meta, row, recipe, msg) in bad.items():
        folder = _edit_bank(first, tmp_path / f"bad-{name}", meta, row)
        params = {"alternate": False, "val_per_class": 0, "bank": str(folder), "k": None, **recipe}
        with pytest.raises(AttrsrError, match=re.escape(msg)):
            run(tiny_config(cache, "train.iterations=1", _bspa(**params)), tmp_path / f"run-{name}")
        assert not (tmp_path / f"run-{name}" / "model.safetensors").exists()  # refused before training


def _synthetic_bank(folder):
    """A bank of the tiny recipe's images (samples:train ×2, 16-px sub-images, step 8) with random scores:
    for tests of the training loop that need no scoring pass."""
    from attrsr.data.bank import SubImageBank, write_bank
    from attrsr.data.datasets import open_dataset
    from attrsr.data.longtail import long_tail_classes

    ds = open_dataset("samples:train", 2)
    names, tops, lefts = [], [], []
    for i, e in enumerate(ds.entries):
        for t in range(0, 24, 8):
            for left in range(0, 24, 8):
                names.append(e.name), tops.append(t), lefts.append(left)
    mse = np.random.default_rng(0).lognormal(-7, 1, size=len(names))
    bank = SubImageBank(names, np.array(tops), np.array(lefts), mse, long_tail_classes(mse, 4, 4), 16, 8, 2, {"data": "samples:train"})
    folder.mkdir()
    write_bank(bank, folder)
    return folder


def test_frozen_weights_stay_bit_identical_for_100_steps_and_the_ema_sees_them(tmp_path, cache, monkeypatch):
    """One refresh at step 3, then 100 optimiser steps: the frozen weights never move (bit for bit) and
    the EMA is the hand-computed average of the weights as restored after every step."""
    from attrsr.methods.bspa import BSPA

    original = BSPA._refresh
    monkeypatch.setattr(BSPA, "_refresh", lambda self, step: original(self, step) if self.refreshes == 0 else None)
    decay = 0.9
    spec = _bspa(val_per_class=0, bank=str(_synthetic_bank(tmp_path / "bank")), k=None)[len("methods=[") : -1]
    recorder = json.dumps({"name": "hook_methods:WeightRecorder"})
    tr = run(tiny_config(cache, "train.iterations=103", f"train.ema={decay}", "train.log_every=50", f"methods=[{spec}, {recorder}]"),
             tmp_path / "run")
    bspa, rec = tr.methods.methods
    assert bspa.refreshes == 1 and len(rec.snapshots) == 103
    state_name = {id(v): k for k, v in tr.model.state_dict(keep_vars=True).items()}
    param_name = {state_name[id(p)]: n for n, p in tr.model.named_parameters()}
    frozen = {param_name[n]: (m, bspa.frozen[n]) for n, m in bspa.masks.items() if m.any()}
    assert sum(int(m.sum()) for m, _ in frozen.values()) > 100
    for snap in rec.snapshots[2:]:  # step 3 (the refresh) and the 100 steps after it
        assert all(torch.equal(snap[n][m], f[m]) for n, (m, f) in frozen.items())
    assert any(not torch.equal(rec.snapshots[-1][n][~m], f[~m]) for n, (m, f) in frozen.items())  # the rest trained on
    expected = {k: v.double() for k, v in rec.snapshots[0].items()}
    for snap in rec.snapshots[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * snap[k].double() for k in expected}
    # float32 rounding over 103 averages stays ~1e-7; an EMA of the unrestored weights would be off on the
    # frozen entries by about one Adam step (lr 2e-4)
    ema = dict(tr.ema.module.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(ema[k].double(), v, rtol=0, atol=1e-6)


def test_val_bank_rows_score_the_held_aside_classes(tmp_path, cache):
    """``val_bank``: per-class PSNR rows on a held-aside bank sorted by the training bank's thresholds
    (every sub-image of each non-empty class, recomputed batched), and a bank sorted otherwise refused."""
    from attrsr.data.bank import SubImageBank, pooled_psnr, read_bank, score_crops, write_bank
    from attrsr.data.cache import prepare_cache
    from attrsr.data.datasets import open_dataset
    from attrsr.data.longtail import classes_by_thresholds

    train = read_bank(_synthetic_bank(tmp_path / "bank"))
    ds = open_dataset("samples:val", 2)
    names, tops, lefts = zip(*[(e.name, t, left) for e in ds.entries[:2] for t in (0, 8) for left in (0, 8, 16)])
    mse = np.random.default_rng(1).lognormal(-7, 1.5, size=len(names))
    val = SubImageBank(list(names), np.array(tops), np.array(lefts), mse, classes_by_thresholds(mse, train.classes), 16, 8, 2,
                       {"data": "samples:val", "thresholds_from": {"bank": str(tmp_path / "bank")}})
    write_bank(val, tmp_path / "val")
    tr = run(tiny_config(cache, "train.iterations=1", _bspa(alternate=False, val_per_class=20, k=None, bank=str(tmp_path / "bank"),
                                                            val_bank=str(tmp_path / "val")), val=True), tmp_path / "run")
    rows = {r["dataset"]: r for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if (r := json.loads(line)).get("kind") == "val" and str(r.get("dataset", "")).startswith("bspa-")}
    sizes = val.classes.sizes
    assert {d for d in rows if d.startswith("bspa-val-class")} == {f"bspa-val-class{c}" for c in range(4) if sizes[c]}
    assert {d for d in rows if d.startswith("bspa-class")} == {f"bspa-class{c}" for c in range(4)}
    images = prepare_cache(ds, cache, progress=False)
    at = {n: i for i, n in enumerate(images.names)}
    model = tr.model.eval()
    for c in range(4):
        members = np.flatnonzero(val.classes.classes == c)
        if not len(members):
            continue
        crops = [(images.lr(at[names[j]]), images.hr(at[names[j]]), tops[j], lefts[j]) for j in members]
        expected = pooled_psnr(score_crops(model, crops, 16, 2, 64, psnr_y=True)[:, 1])
        assert rows[f"bspa-val-class{c}"]["n"] == len(members)
        assert rows[f"bspa-val-class{c}"]["psnr_y"] == pytest.approx(expected, abs=1e-4)

    other = _edit_bank(tmp_path / "val", tmp_path / "other", {"thresholds": [t * 2 for t in train.classes.thresholds]})
    for params, msg in [({"bank": str(tmp_path / "bank"), "val_bank": str(other)}, "not sorted by the thresholds of the training bank"),
                        ({"bank": str(tmp_path / "val")}, f"a held-aside bank (classes from {tmp_path / 'bank'}'s thresholds) cannot be trained on")]:
        with pytest.raises(AttrsrError, match=re.escape(msg)):
            run(tiny_config(cache, "train.iterations=1", _bspa(alternate=False, k=None, **params)), tmp_path / "refused")
        assert not (tmp_path / "refused" / "model.safetensors").exists()
