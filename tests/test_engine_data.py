"""Training data: decode-once cache, aligned crops and symmetries, the sample plan and DDP slicing,
LR from files vs MATLAB bicubic, and the user errors (missing folder, patch too large, wrong scale)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attrsr.data import open_dataset
from attrsr.data.cache import prepare_cache
from attrsr.data.patches import PatchDataset
from attrsr.data.samplers import PatchRequest, PlanBatchSampler, SamplePlan, epoch_rng
from attrsr.engine import Trainer
from attrsr.errors import AttrsrError
from attrsr.images import to_uint8
from attrsr.resize import imresize
from engine_helpers import tiny_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def images(cache):
    return prepare_cache(open_dataset("samples:train", 2), cache, progress=False)


def test_cache_holds_the_dataset_pairs_and_is_reused(cache, images, monkeypatch):
    ds = open_dataset("samples:train", 2)
    assert images.names == list(ds.names)
    for i in (0, 7):
        pair = ds[i]
        assert np.array_equal(images.hr(i), to_uint8(pair.hr))
        assert np.array_equal(images.lr(i), to_uint8(pair.lr))
        assert isinstance(images.hr(i), np.memmap)

    import attrsr.data.cache as cache_mod

    monkeypatch.setattr(cache_mod, "_decode_all", lambda *a: pytest.fail("decoded again"))
    again = prepare_cache(ds, cache, progress=False)
    assert again.root == images.root


def test_the_cache_key_follows_the_files_not_how_their_folder_is_spelled(tmp_path):
    from skimage import data as skdata

    from attrsr.data.cache import cache_key
    from attrsr.images import save_image

    folder = tmp_path / "photos"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    for name in ("astronaut", "coffee"):
        save_image(torch.from_numpy(getattr(skdata, name)()[:96, :96].copy()).permute(2, 0, 1).float() / 255, folder / f"{name}.png")
    key = cache_key(open_dataset(str(folder), 2))
    assert cache_key(open_dataset(str(tmp_path / "elsewhere" / ".." / "photos"), 2)) == key
    save_image(torch.zeros(3, 96, 96), folder / "coffee.png")  # other content: another key
    assert cache_key(open_dataset(str(folder), 2)) != key


def test_patches_are_aligned_under_every_symmetry(images):
    """HR patch covers exactly the LR patch: bicubic-downsampling the (augmented) HR patch gives the
    (augmented) LR patch in its interior, for all 8 flips/transpositions."""
    ds = PatchDataset(images, 24, flip=True, rot90=True)
    combos = set()
    for seed in range(100):
        item = ds[PatchRequest(3, seed)]
        lr, hr = item["lr"], item["hr"]
        assert lr.shape == (3, 24, 24) and hr.shape == (3, 48, 48)
        top, left = item["top"], item["left"]
        raw_lr = torch.from_numpy(np.ascontiguousarray(images.lr(3)[top : top + 24, left : left + 24])).permute(2, 0, 1).float() / 255
        combos.add(tuple(bool(torch.equal(lr, t)) for t in _symmetries(raw_lr)))
        down = imresize(hr, scale=0.5).clamp(0, 1)  # LR files are clipped to 8 bits too
        assert (down - lr)[:, 3:-3, 3:-3].abs().max() < 3 / 255
    assert len(combos) == 8  # every symmetry occurs


def _symmetries(x):
    out = []
    for t in (False, True):
        for v in (False, True):
            for h in (False, True):
                y = x.flip(-1) if h else x
                y = y.flip(-2) if v else y
                out.append(y.transpose(-1, -2) if t else y)
    return out


def test_same_request_same_patch_and_fixed_positions(images):
    ds = PatchDataset(images, 16, flip=False, rot90=False)
    a, b = ds[PatchRequest(1, 123)], ds[PatchRequest(1, 123)]
    assert torch.equal(a["hr"], b["hr"])
    fixed = ds[PatchRequest(1, 5, top=10, left=20)]
    assert (fixed["top"], fixed["left"]) == (10, 20)
    assert torch.equal(fixed["lr"], torch.from_numpy(images.lr(1)[10:26, 20:36].copy()).permute(2, 0, 1).float() / 255)


def test_plan_and_rank_slices_form_the_global_batch():
    plan = SamplePlan.shuffled(12, 2, epoch_rng(0, 3))
    assert sorted(plan.image.tolist()) == sorted(list(range(12)) * 2)
    assert SamplePlan.shuffled(12, 2, epoch_rng(0, 3)).seed.tolist() == plan.seed.tolist()
    assert SamplePlan.shuffled(12, 2, epoch_rng(0, 4)).image.tolist() != plan.image.tolist()
    one = PlanBatchSampler(8)
    one.start(plan, first_batch=1)
    ranks = [PlanBatchSampler(8, r, 2) for r in range(2)]
    for s in ranks:
        s.start(plan, first_batch=1)
    assert len(one) == 2  # 24 // 8 = 3 batches, starting at the second
    for full, r0, r1 in zip(one, *ranks):
        assert full == r0 + r1
    with pytest.raises(AttrsrError, match="not divisible"):
        PlanBatchSampler(6, 0, 4)


def test_workers_do_not_change_the_data(tmp_path, cache):
    def batches(workers):
        tr = Trainer(tiny_config(cache, f"data.num_workers={workers}"), out=tmp_path / f"w{workers}", progress=False)
        it = tr._epoch_batches()
        return [next(it) for _ in range(3)]

    for a, b in zip(batches(0), batches(2)):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"]) and torch.equal(a["image"], b["image"])


def _div2k(root, scale=2, n=3, lr_maker=None):
    """A DIV2K-layout folder from real photos: X_HR/000k.png + X_LR_bicubic/X{s}/000kx{s}.png."""
    from attrsr.data import load_sample

    hr_dir = root / "MINI_HR"
    lr_dir = root / "MINI_LR_bicubic" / f"X{scale}"
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    for k, name in enumerate(("astronaut", "rocket", "camera")[:n], 1):
        hr = load_sample(name)[:200, :240]
        Image.fromarray(hr).save(hr_dir / f"{k:04d}.png")
        lr = lr_maker(hr) if lr_maker else np.asarray(Image.fromarray(hr).resize((240 // scale, 200 // scale), Image.BICUBIC))
        Image.fromarray(lr).save(lr_dir / f"{k:04d}x{scale}.png")
    return root


def test_lr_from_files_or_matlab_bicubic(tmp_path, cache):
    root = _div2k(tmp_path / "div2k")  # LR files made with PIL's bicubic: differ from MATLAB's
    files = Trainer(tiny_config(cache, f"data.train={root}", "data.repeat=2"), out=tmp_path / "a", progress=False)
    lr_file = np.asarray(Image.open(root / "MINI_LR_bicubic" / "X2" / "0001x2.png"))
    assert np.array_equal(files.images.lr(0), lr_file)
    bic = Trainer(tiny_config(cache, f"data.train={root}", "data.lr=bicubic", "data.repeat=2"), out=tmp_path / "b", progress=False)
    assert not np.array_equal(bic.images.lr(0), lr_file)
    hr = torch.from_numpy(np.asarray(Image.open(root / "MINI_HR" / "0001.png")).copy()).permute(2, 0, 1).float() / 255
    from attrsr.resize import downsample

    assert np.array_equal(bic.images.lr(0), to_uint8(downsample(hr[None], 2)[0]))


def test_data_errors_are_caught_before_anything_is_written(tmp_path, cache):
    out = tmp_path / "out"
    with pytest.raises(AttrsrError, match="dataset folder not found"):
        Trainer(tiny_config(cache, f"data.train={tmp_path / 'nope'}"), out=out, progress=False)
    with pytest.raises(AttrsrError, match=r"every image is smaller than the 2000-pixel LR patch at x2; lower data.patch_size"):
        Trainer(tiny_config(cache, "data.patch_size=2000"), out=out, progress=False)
    root = _div2k(tmp_path / "d2")
    with pytest.raises(AttrsrError, match="no X3 folder"):
        Trainer(tiny_config(cache, f"data.train={root}", "scale=3"), out=out, progress=False)
    bad = _div2k(tmp_path / "d3", lr_maker=lambda hr: hr[:90, :110])  # LR not HR/2
    with pytest.raises(AttrsrError, match="does not match HR size"):
        Trainer(tiny_config(cache, f"data.train={bad}"), out=out, progress=False)
    with pytest.raises(AttrsrError, match="fewer patches per epoch than data.batch_size=4"):
        Trainer(tiny_config(cache, f"data.train={root}"), out=out, progress=False)
    assert not out.exists()
