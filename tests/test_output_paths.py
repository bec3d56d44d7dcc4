"""Every command checks that it can write its outputs before any work: an unwritable path is one
``error:`` line naming it, exit 1, no traceback, nothing written — and the model is never loaded."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import one_line_error as _one_line_error
from PIL import Image
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.errors import AttrsrError
from attrsr.fileio import check_output

from engine_helpers import TINY
from unwritable import unwritable


def _no_model(*args, **kwargs):
    raise AssertionError("the model was loaded before the outputs were checked")


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a model or building a training."""
    for module in ("eval_cmd", "lam_cmd", "interpret_cmd"):
        monkeypatch.setattr(f"attrsr.cli.{module}.resolve_model", _no_model)
    monkeypatch.setattr("attrsr.engine.trainer._build_model", _no_model)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_eval_json_into_a_read_only_folder(tmp_path, no_work):
    with unwritable(tmp_path / "ro") as ro:
        r = invoke("eval", "--data", "samples", "--scale", "2", "--json", ro / "r.json")
        _one_line_error(r, str(ro / "r.json"), "--json", "not writable")
        assert _files(ro) == []


def test_eval_save_sr_into_a_read_only_folder(tmp_path, no_work):
    with unwritable(tmp_path / "ro") as ro:
        r = invoke("eval", "--data", "samples", "--scale", "2", "--save-sr", ro / "sr")
        _one_line_error(r, str(ro / "sr"), "--save-sr", "not writable")
        assert _files(ro) == []
    # An existing but read-only --save-sr folder: the images would be moved into it at the end.
    with unwritable(tmp_path / "sr") as sr:
        _one_line_error(invoke("eval", "--data", "samples", "--scale", "2", "--save-sr", sr), "--save-sr", "not writable")
    assert _files(tmp_path) == ["ro", "sr"]


def test_eval_outputs_under_a_file(tmp_path, no_work):
    (tmp_path / "taken").write_text("a file")
    _one_line_error(invoke("eval", "--data", "samples", "--scale", "2", "--json", tmp_path / "taken" / "r.json"), "taken", "is a file")
    _one_line_error(invoke("eval", "--data", "samples", "--scale", "2", "--save-sr", tmp_path / "taken" / "sr"), "taken", "is a file")
    assert _files(tmp_path) == ["taken"] and (tmp_path / "taken").read_text() == "a file"


def test_lam_out_that_is_a_file_or_read_only(tmp_path, image, no_work):
    lam = ["lam", "--model", "demo", "--scale", "2", "--x", "8", "--y", "8", "--hr", image]
    (tmp_path / "taken").write_text("a file")
    _one_line_error(invoke(*lam, "--out", tmp_path / "taken"), "taken", "--out must be a folder")
    with unwritable(tmp_path / "ro") as ro:
        _one_line_error(invoke(*lam, "--out", ro / "lam"), str(ro / "lam"), "not writable")
        assert _files(ro) == []
    assert (tmp_path / "taken").read_text() == "a file"


def test_interpret_out_that_is_a_file(tmp_path, no_work):
    (tmp_path / "taken").write_text("a file")
    r = invoke("interpret", "--model", "pan:PANx4.pth", "--data", "samples", "--scale", "4", "--out", tmp_path / "taken")
    _one_line_error(r, "taken", "--out must be a folder")
    assert (tmp_path / "taken").read_text() == "a file"


def test_train_out_read_only_or_under_a_file(tmp_path, no_work):
    train = ["train", TINY, "--no-progress", "--set", "val.data=[]"]
    with unwritable(tmp_path / "ro") as ro:
        _one_line_error(invoke(*train, "--out", ro / "run"), str(ro / "run"), "the run folder", "not writable")
        assert _files(ro) == []
    (tmp_path / "taken").write_text("a file")
    _one_line_error(invoke(*train, "--out", tmp_path / "taken" / "run"), "taken", "is a file")
    _one_line_error(invoke(*train, "--out", tmp_path / "taken"), "must be a folder")
    assert _files(tmp_path) == ["ro", "taken"]


def test_demo_out_that_is_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr("attrsr.models.pretrained.load_default", _no_model)
    (tmp_path / "taken").write_text("a file")
    _one_line_error(invoke("demo", "--out", tmp_path / "taken"), "--out must be a folder")


def test_check_output_creates_nothing_and_accepts_writable_paths(tmp_path):
    check_output(tmp_path / "a" / "b" / "r.json", "--json", "file")
    check_output(tmp_path / "a" / "report", "--out", "staged")
    check_output(tmp_path / "run", "the run folder", "folder")
    (tmp_path / "report").mkdir()
    check_output(tmp_path / "report", "--out", "staged")
    assert _files(tmp_path) == ["report"]  # probes leave nothing behind
    with pytest.raises(AttrsrError, match="names a folder"):
        check_output(tmp_path / "report", "--json", "file")
