"""Per-image auxiliary arrays travel with their patch: same crop, flips and rotation as the LR patch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attrsr.data.samplers import PatchRequest
from attrsr.engine import Trainer
from engine_helpers import run, tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_aux_arrays_equal_to_the_lr_image_arrive_equal_to_the_lr_patch_under_all_8_symmetries(tmp_path, cache):
    tr = Trainer(tiny_config(cache), out=tmp_path / "d", progress=False)
    ds, images = tr.train_set, tr.images
    ds.add_aux("lr_copy", [images.lr(i) for i in range(len(images))])
    # A one-channel float map and a coordinate map: the (row, col) each patch pixel came from.
    ds.add_aux("grey", [images.lr(i).mean(axis=2).astype(np.float32) for i in range(len(images))])
    coords = []
    for i in range(len(images)):
        h, w = images.lr_sizes[i]
        coords.append(np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=2).astype(np.int32))
    ds.add_aux("coords", coords)

    seen = set()
    for seed in range(64):
        req = PatchRequest(seed % len(images), seed)
        item = ds[req]
        assert torch.equal(item["aux"]["lr_copy"].float() / 255, item["lr"])
        assert item["aux"]["grey"].shape == (16, 16) and item["aux"]["grey"].dtype == torch.float32
        torch.testing.assert_close(item["aux"]["grey"], item["lr"].mul(255).mean(0), rtol=0, atol=1e-4)
        # The patch's pixels come from the LR window at (top, left), in some symmetric arrangement.
        rows, cols = item["aux"]["coords"]
        assert set(rows.flatten().tolist()) == set(range(item["top"], item["top"] + 16))
        assert set(cols.flatten().tolist()) == set(range(item["left"], item["left"] + 16))
        # Which corner of the window lands top-left, and whether rows run down or across: one of 8.
        seen.add((int(rows[0, 0]) - item["top"], int(cols[0, 0]) - item["left"], bool(rows[0, 0] == rows[0, 1])))
    assert len(seen) == 8  # every flip/rotation was exercised


def test_aux_arrays_reach_the_batch_through_workers_and_ddp_slicing(tmp_path, cache):
    aux = json.dumps({"name": "hook_methods:AuxIsLR"})
    tr = run(tiny_config(cache, "train.iterations=6", "data.num_workers=2", f"methods=[{aux}]"), tmp_path / "w")
    assert tr.methods.methods[0].checked == 6 * 4


def test_aux_arrays_must_have_the_lr_size(tmp_path, cache):
    tr = Trainer(tiny_config(cache), out=tmp_path / "e", progress=False)
    wrong = [tr.images.hr(i) for i in range(len(tr.images))]
    with pytest.raises(ValueError, match=r"auxiliary array 'hr' of image .* expected the LR size"):
        tr.train_set.add_aux("hr", wrong)
