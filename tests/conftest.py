"""Shared fixtures: where the real benchmark data and weights live, and the bundled photos.

The shared data folder is reached by path (``ATTRSR_DATA``, default ``../shared/data`` beside the
repository; an empty ``ATTRSR_DATA`` counts as unset). Tests that need it skip cleanly when the
default folder is absent. An ``ATTRSR_DATA`` that names a missing or empty folder stops the run
with one error instead: the real-data tests would otherwise all be skipped without anyone noticing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = os.environ.get("ATTRSR_DATA") or ""
DATA = Path(DATA_ENV or REPO.parent / "shared" / "data")
SET5 = DATA / "benchmarks" / "Set5"
LAM_IMAGES = DATA / "benchmarks" / "LAM_test_images"
WEIGHTS = DATA / "weights"
PAN_X4 = WEIGHTS / "pan" / "PANx4_DF2K.pth"
IMDN_X4 = WEIGHTS / "imdn" / "IMDN_x4.pth"


def pytest_configure(config) -> None:
    if DATA_ENV and not (DATA.is_dir() and any(DATA.iterdir())):
        raise pytest.UsageError(
            f"ATTRSR_DATA={DATA_ENV} is {'an empty folder' if DATA.is_dir() else 'not a folder'}: every test on real "
            "checkpoints and benchmark images would be skipped. Point it at the shared data folder, or unset it "
            "(default ../shared/data beside the repository; skipped cleanly where that is absent)."
        )


def need(*paths: Path) -> Path:
    """Skip the calling test when any of ``paths`` (under the shared data folder) is missing;
    returns the first."""
    for path in paths:
        if not path.exists():
            pytest.skip(f"shared data not available: {path}")
    return paths[0]


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Small convolutions gain little from a second thread, and on a busy 2-core machine OpenMP threads
    waiting for each other make them 10-100x slower. The old setting is restored afterwards.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pan():
    """The real PAN x4 (authors' weights), loaded once per module."""
    from attrsr import models

    return models.load("pan", weights=need(PAN_X4), scale=4)


@pytest.fixture
def set5() -> Path:
    return need(SET5)


@pytest.fixture
def weights_dir() -> Path:
    return need(WEIGHTS)


def one_line_error(result, *words):
    """A typer CliRunner result that failed with exit 1 and exactly one ``error:`` line holding ``words``."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
