"""Per-image artifacts: computed once, memory-mapped next to the decoded images, keyed by content,
reused by later runs, and resumed image by image after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attrsr.data.artifacts import cached_per_image, weights_hash
from attrsr.engine import Trainer
from engine_helpers import run, tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


class Counted:
    def __init__(self, images, fail_at=None):
        self.images, self.calls, self.fail_at = images, 0, fail_at

    def __call__(self, i):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.images.lr(i)[..., 0].astype(np.float32) + i


def test_computed_once_reused_resumed_and_keyed_by_content(tmp_path, cache):
    images = Trainer(tiny_config(cache), out=tmp_path / "t", progress=False).images
    n = len(images)
    first = Counted(images)
    arrays = cached_per_image(images, "maps", {"weights": "abc", "steps": 3}, first, progress=False)
    assert first.calls == n
    assert isinstance(arrays[0], np.memmap) and arrays[0].shape == images.lr_sizes[0]
    assert all(np.array_equal(arrays[i], images.lr(i)[..., 0].astype(np.float32) + i) for i in range(n))
    assert arrays.folder.parent.parent == images.root  # next to the decoded images

    again = Counted(images)
    cached_per_image(images, "maps", {"steps": 3, "weights": "abc"}, again, progress=False)
    assert again.calls == 0  # the same content (key order does not matter): reused

    killed = Counted(images, fail_at=5)  # a build killed while computing its 5th image
    with pytest.raises(KeyboardInterrupt):
        cached_per_image(images, "maps", {"weights": "abc", "steps": 4}, killed, progress=False)
    resumed = Counted(images)
    arrays4 = cached_per_image(images, "maps", {"weights": "abc", "steps": 4}, resumed, progress=False)
    assert resumed.calls == n - 4  # the 4 finished images were kept
    assert arrays4.folder != arrays.folder and len(arrays4) == n
    assert all(np.array_equal(arrays4[i], arrays[i]) for i in range(n))
    assert not list(arrays4.folder.glob(".*"))  # no temporary files left

    other = Counted(images)
    cached_per_image(images, "maps", {"weights": "abd", "steps": 3}, other, progress=False)
    assert other.calls == n  # other weights: computed anew


def test_weights_hash_follows_the_values():
    a = torch.nn.Conv2d(3, 4, 3)
    b = torch.nn.Conv2d(3, 4, 3)
    assert weights_hash(a) == weights_hash(a.state_dict()) != weights_hash(b)
    b.load_state_dict(a.state_dict())
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        b.weight[0, 0, 0, 0] += 1e-6
    assert weights_hash(a) != weights_hash(b)


def test_a_method_computes_its_artifact_in_the_first_run_only(tmp_path, cache):
    from hook_methods import CachedGrey

    grey = json.dumps({"name": "hook_methods:CachedGrey"})
    CachedGrey.CALLS = 0
    tr = run(tiny_config(cache, "train.iterations=2", f"methods=[{grey}]"), tmp_path / "a")
    assert CachedGrey.CALLS == 12
    run(tiny_config(cache, "train.iterations=2", f"methods=[{grey}]"), tmp_path / "b")
    assert CachedGrey.CALLS == 12  # the second run reused the first run's arrays
    batch = next(tr.batches(tr._make_plan(0), 4))
    torch.testing.assert_close(batch["aux"]["grey"], batch["lr"].mul(255).mean(1), rtol=0, atol=1e-4)
    v2 = json.dumps({"name": "hook_methods:CachedGrey", "version": 2})
    run(tiny_config(cache, "train.iterations=1", f"methods=[{v2}]"), tmp_path / "c")
    assert CachedGrey.CALLS == 24  # other parameters: another set


def _build_logging_calls(images, log_path, key):
    import time

    def compute(i):
        with open(log_path, "a") as fh:
            fh.write(f"{i}\n")
        time.sleep(0.02)  # long enough for the builders to overlap
        return images.lr(i)[..., 0].astype(np.float32) + i

    cached_per_image(images, "maps", key, compute, progress=False)


def test_concurrent_builders_share_the_work_and_take_over_dead_claims(tmp_path, cache):
    import multiprocessing as mp

    images = Trainer(tiny_config(cache), out=tmp_path / "t", progress=False).images
    n = len(images)
    key = {"weights": "concurrent", "steps": 1}
    folder = cached_per_image.__globals__["artifact_dir"](images, "maps", key)
    folder.mkdir(parents=True)
    (folder / ".claim-00000").write_text("")  # left by a builder killed while computing image 0

    ctx = mp.get_context("fork")
    logs = [tmp_path / f"calls{k}.txt" for k in range(2)]
    procs = [ctx.Process(target=_build_logging_calls, args=(images, log, key)) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    calls = [[int(x) for x in log.read_text().split()] if log.exists() else [] for log in logs]
    assert sorted(calls[0] + calls[1]) == list(range(n))  # every image computed exactly once overall
    assert calls[0] and calls[1]  # both builders did part of it
    arrays = cached_per_image(images, "maps", key, lambda i: pytest.fail("recomputed"), progress=False)
    assert all(np.array_equal(arrays[i], images.lr(i)[..., 0].astype(np.float32) + i) for i in range(n))
    assert not list(folder.glob(".claim-*"))
