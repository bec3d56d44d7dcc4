"""The test suite does not quietly test less than it claims: real-data tests do not vanish under a
wrong or empty ``ATTRSR_DATA``, and exact-arithmetic tests do not need an optional package."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, need


def _pytest(*args: str, env_update: dict[str, str], extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_update)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [extra_path, str(REPO / "src"), str(REPO / "tests")] if p)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_an_empty_data_folder_stops_the_run(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    r = _pytest("tests/test_zoo_light.py", "-k", "real_checkpoint_loads_strictly", env_update={"ATTRSR_DATA": str(empty)})
    assert r.returncode != 0
    assert f"ATTRSR_DATA={empty} is an empty folder" in r.stderr + r.stdout
    assert "skipped" not in r.stdout


def test_an_empty_variable_means_the_default_folder():
    default = REPO.parent / "shared" / "data"
    need(default / "weights" / "fsrcnn" / "fsrcnn_x2.pth")
    r = _pytest("tests/test_zoo_light.py", "-k", "real_checkpoint_loads_strictly and fsrcnn", env_update={"ATTRSR_DATA": ""})
    assert r.returncode == 0, r.stdout[-2000:]
    assert "3 passed" in r.stdout and "skipped" not in r.stdout


def test_exact_resize_tests_run_without_bicubic_pytorch(tmp_path):
    blocker = tmp_path / "bicubic_pytorch"
    blocker.mkdir()
    (blocker / "__init__.py").write_text(  # what Python raises for a package that is not installed
        "raise ModuleNotFoundError(\"No module named 'bicubic_pytorch'\", name='bicubic_pytorch')\n")
    r = _pytest("tests/test_resize.py", "-k", "exact or rounding or constant or matches_bicubic_pytorch_scale",
                env_update={}, extra_path=str(tmp_path))
    assert r.returncode == 0, r.stdout[-2000:]
    # the exact-arithmetic tests ran; only the comparisons with the package itself were skipped
    assert "3 passed, 8 skipped" in r.stdout
