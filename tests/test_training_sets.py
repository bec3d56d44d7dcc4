"""The real training sets by bare name (T91, BSD200, 291 and their held-aside split), and images too
small for a patch skipped with a count in the run log."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attrsr.data.datasets import open_dataset
from attrsr.errors import AttrsrError
from conftest import DATA, need
from engine_helpers import run, tiny_config

T91 = DATA / "train" / "T91" / "HR"
BSD200 = DATA / "train" / "BSD200" / "HR"


@pytest.fixture(autouse=True)
def _data_root(monkeypatch):
    need(T91, BSD200)
    monkeypatch.setenv("ATTRSR_DATA", str(DATA))


def test_bare_names_and_the_held_aside_split():
    t91 = sorted(p.stem for p in T91.iterdir())
    bsd = sorted(p.stem for p in BSD200.iterdir())
    assert open_dataset("T91", 2, check=False).names == t91 and len(t91) == 91
    assert open_dataset("BSD200", 2, check=False).names == bsd and len(bsd) == 199
    assert open_dataset("291", 2, check=False).names == t91 + bsd
    val = open_dataset("291:val", 2, check=False)
    train = open_dataset("291:train", 2, check=False)
    # Every 20th image of each folder by file name, starting with the first: 5 + 10.
    assert val.names == t91[::20] + bsd[::20] and len(val) == 15
    assert set(train.names) == set(t91 + bsd) - set(val.names) and len(train) == 275
    assert val.name == "291-val" and open_dataset("T91:val", 2, check=False).names == t91[::20]


def test_unknown_split_and_missing_folder(monkeypatch, tmp_path):
    with pytest.raises(AttrsrError, match=r"291:test: unknown split 'test'; use 291:train, 291:val or 291"):
        open_dataset("291:test", 2)
    monkeypatch.setenv("ATTRSR_DATA", str(tmp_path))
    with pytest.raises(AttrsrError, match=r"T91: training images not found in .*train/T91/HR; set ATTRSR_DATA"):
        open_dataset("T91", 2)


def test_images_smaller_than_the_patch_are_found_from_headers():
    """At x4 with 32-pixel LR patches, the T91 images under 128 HR pixels on a side are left out."""
    expected = sorted(p.stem for p in T91.iterdir() if min(s // 4 for s in Image.open(p).size) < 32)
    ds, skipped = open_dataset("T91", 4, check=False).without_smaller_than(32)
    assert sorted(skipped) == expected and len(expected) == 7
    assert len(ds) == 91 - 7 and not set(ds.names) & set(skipped)
    with pytest.raises(AttrsrError, match="every image is smaller than the 400-pixel LR patch"):
        open_dataset("T91", 4, check=False).without_smaller_than(400)


def test_training_skips_small_images_and_logs_the_count(tmp_path, capsys):
    """A folder of three real crops, one too small for the 16-pixel LR patch: training runs on the
    other two, says so on stderr and records it in metrics.jsonl."""
    folder = tmp_path / "crops"
    folder.mkdir()
    photo = np.asarray(Image.open(sorted(BSD200.iterdir())[0]).convert("RGB"))
    for name, side in (("a", 64), ("b", 48), ("c", 24)):  # c: LR 12×12 at x2
        Image.fromarray(photo[:side, :side]).save(folder / f"{name}.png")
    cfg = tiny_config(tmp_path / "cache", f"data.train={folder}", "data.batch_size=2", "data.repeat=2", "train.iterations=2")
    trainer = run(cfg, tmp_path / "run")
    assert trainer.images.names == ["a", "b"]
    assert "skipped 1 image(s) smaller than the 16-pixel LR patch at x2 (c); training on 2" in capsys.readouterr().err
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["kind"] == "data"] == [
        {"kind": "data", "step": 0, "skipped_small": 1, "skipped": ["c"], "images": 2}
    ]
