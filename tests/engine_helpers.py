"""Shared set-up for the engine tests: the tiny CPU recipe with per-test overrides."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"


def tiny_config(cache_dir: Path, *overrides: str, val: bool = False):
    """The tiny recipe (2-block, 16-feature EDSR at x2, 16×16 LR patches, batch 4) for tests."""
    from attrsr.config import load_config

    base = [f"data.cache_dir={cache_dir}", "train.threads=1"]
    if not val:
        base.append("val.data=[]")
    return load_config(TINY, [*base, *overrides])


def run(cfg, out: Path, *, resume: bool = False):
    """Train in this process; returns the trainer after ``fit``."""
    from attrsr.engine import Trainer

    trainer = Trainer(cfg, out=out, resume=resume, progress=False)
    trainer.summary = trainer.fit()
    return trainer


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def subprocess_env(cache_dir: Path) -> dict[str, str]:
    """Environment for ``python -m attrsr`` subprocesses: src and tests importable, 1 thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env["ATTRSR_CACHE"] = str(cache_dir)
    env["OMP_NUM_THREADS"] = "1"
    return env


PYTHON = sys.executable


def train_cmd(out: Path, sets: list[str], *extra: str) -> list[str]:
    """``python -m attrsr train`` on the tiny recipe with ``--set`` overrides (for subprocess tests)."""
    args = [PYTHON, "-m", "attrsr", "train", str(TINY), "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


def cli_train(out: Path, cache: Path, *sets: str):
    """``attrsr train`` of the tiny recipe in-process (CliRunner): 2 iterations of 2 unaugmented 24-px
    patches, no validation; ``sets`` are further ``--set`` overrides (later ones win)."""
    from typer.testing import CliRunner

    from attrsr.cli import app

    args = ["train", str(REPO / "configs" / "tiny-cpu.yaml"), "--out", str(out), "--no-progress"]
    for s in (f"data.cache_dir={cache}", "val.data=[]", "train.threads=1", "data.flip=false", "data.rot90=false",
              "data.batch_size=2", "data.patch_size=24", "train.iterations=2", *sets):
        args += ["--set", s]
    return CliRunner().invoke(app, args)
