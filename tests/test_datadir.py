"""Bare names (``PANx4_DF2K.pth``, ``LAM_test_images/1.png``, ``Set5``) resolve in the shared data folder,
the same way in every command and in the Python API, with the same default (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import attrsr
from attrsr import datadir
from attrsr.cli import app
from attrsr.errors import AttrsrError


@pytest.fixture
def clone(tmp_path, monkeypatch) -> Path:
    """A working directory ``<tmp>/repo`` with a small data folder at ``<tmp>/shared/data``."""
    data = tmp_path / "shared" / "data"
    model = attrsr.models.create("espcn", scale=2)
    (data / "weights" / "espcn").mkdir(parents=True)
    torch.save(model.state_dict(), data / "weights" / "espcn" / "tiny_x2.pth")
    hr = data / "benchmarks" / "Tiny" / "HR"
    hr.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(hr / f"{name}.png")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.delenv("ATTRSR_DATA", raising=False)
    return data


@pytest.mark.parametrize("env", [None, ""])
def test_default_is_shared_data_beside_the_working_directory(clone, monkeypatch, env):
    if env is not None:
        monkeypatch.setenv("ATTRSR_DATA", env)  # empty counts as unset
    assert datadir.data_root() == Path("../shared/data")
    assert datadir.resolve("tiny_x2.pth", "weights").resolve() == (clone / "weights" / "espcn" / "tiny_x2.pth").resolve()
    assert datadir.resolve("Tiny/HR/a.png", "benchmarks").resolve() == (clone / "benchmarks" / "Tiny" / "HR" / "a.png").resolve()


def test_env_var_wins_and_existing_paths_are_kept(clone, tmp_path, monkeypatch):
    other = tmp_path / "other"
    (other / "weights").mkdir(parents=True)
    (other / "weights" / "tiny_x2.pth").write_bytes(b"x")
    monkeypatch.setenv("ATTRSR_DATA", str(other))
    assert datadir.resolve("tiny_x2.pth", "weights") == other / "weights" / "tiny_x2.pth"
    Path("tiny_x2.pth").write_bytes(b"local")  # a file in the working directory is taken as given
    assert datadir.resolve("tiny_x2.pth", "weights") == Path("tiny_x2.pth")


def test_two_files_of_one_name_are_refused(clone):
    (clone / "weights" / "other").mkdir()
    (clone / "weights" / "other" / "tiny_x2.pth").write_bytes(b"x")
    with pytest.raises(AttrsrError, match="several files of that name"):
        datadir.resolve("tiny_x2.pth", "weights")


def test_python_api_loads_bare_weight_and_dataset_names(clone):
    model = attrsr.models.load("espcn", weights="tiny_x2.pth", scale=2)
    res = attrsr.evaluate(model, ["Tiny"], scale=2, progress=False)
    assert sorted(res["Tiny"]["images"]) == ["a", "b"]


def test_missing_bare_names_say_where_they_were_looked_for(clone):
    with pytest.raises(AttrsrError, match=r"nope\.pth: checkpoint file not found \(also looked in \.\./shared/data/weights"):
        attrsr.models.load("espcn", weights="nope.pth", scale=2)
    with pytest.raises(AttrsrError, match=r"Set14: dataset folder not found \(also looked in \.\./shared/data/benchmarks"):
        attrsr.data.open_dataset("Set14", 2)


def test_every_command_resolves_bare_names_with_the_same_default(clone, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--model", "espcn", "--weights", "tiny_x2.pth", "--scale", "2", "--data", "Tiny",
                            "--json", "res.json"])
    assert r.exit_code == 0, r.output
    assert Path("res.json").is_file()
    r = runner.invoke(app, ["lam", "--model", "espcn", "--weights", "tiny_x2.pth", "--scale", "2",
                            "--hr", "Tiny/HR/a.png", "--x", "4", "--y", "4", "--window", "8", "--method", "grad",
                            "--out", "lam-out"])
    assert r.exit_code == 0, r.output
    assert Path("lam-out/index.html").is_file()
    r = runner.invoke(app, ["lam", "--model", "espcn", "--weights", "tiny_x2.pth", "--scale", "2",
                            "--hr", "Tiny/HR/zz.png", "--x", "4", "--y", "4", "--out", "lam-out2"])
    assert r.exit_code == 1
    assert "Tiny/HR/zz.png: image file not found (also looked in ../shared/data/benchmarks" in r.output
    assert not Path("lam-out2").exists()
