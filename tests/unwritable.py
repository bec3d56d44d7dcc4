"""A folder nobody can create files in — root included — for the output-path tests.

Not root: ``chmod 555``. Root ignores permission bits, so there the folder is made immutable with
``chattr +i`` (refused even to root); where that is not possible the test is skipped. Tests that
need no such folder use a regular file in the way instead, which works for everyone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is not possible: no read-only folder can be made")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
