import json
import os

import pytest

from attrsr.fileio import staged_dir, write_json_atomic


def test_json_is_strict_and_inf_becomes_null(tmp_path):
    p = write_json_atomic(tmp_path / "r.json", {"psnr_y": float("inf"), "x": [1.5, float("nan")], "n": 2})
    text = p.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"psnr_y": None, "x": [1.5, None], "n": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert (p.stat().st_mode & 0o777) == 0o666 & ~umask  # the usual permissions, not mkstemp's 0600


def test_staged_dir_publishes_all_or_nothing(tmp_path):
    with staged_dir(tmp_path / "out" / "report") as stage:
        (stage / "a.txt").write_text("a")
    assert (tmp_path / "out" / "report" / "a.txt").read_text() == "a"
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "new" / "report") as stage:
        (stage / "b.txt").write_text("b")
        raise RuntimeError("fails half-way")
    assert not (tmp_path / "new").exists()  # folders it created are gone again
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report"]  # no staging left behind
