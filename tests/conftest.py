"""Shared fixtures: where the real benchmark data and weights live, and the bundled photos.

The shared data folder is reached by path (``ATTRSR_DATA``, default ``../shared/data`` beside the
repository); tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ATTRSR_DATA") or REPO.parent / "shared" / "data")
SET5 = DATA / "benchmarks" / "Set5"
WEIGHTS = DATA / "weights"


def need(path: Path) -> Path:
    """Skip the calling test when ``path`` (under the shared data folder) is missing."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def set5() -> Path:
    return need(SET5)


@pytest.fixture
def weights_dir() -> Path:
    return need(WEIGHTS)
