"""The README runs as written.

Every code block preceded by ``<!-- runnable[: words] -->`` is run from a copy of the repository
layout (``configs/`` beside ``../shared/data``, as on a fresh clone next to the shared data), with
``ATTRSR_DATA`` unset so that the default is what is tested. Words: ``shared-data`` (skipped
without the shared data folder), ``slow`` (run only with ``ATTRSR_README_SLOW=1``). Other blocks
must say which download they need. The run-folder description is checked against the README's own
training run.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, REPO, need

README = REPO / "README.md"
MARK = re.compile(r"<!-- runnable(?::(?P<words>[^>]*))? -->\s*\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, set[str], str]]:
    text = README.read_text()
    return [(m["lang"], set((m["words"] or "").split()), m["code"]) for m in MARK.finditer(text)]


def _block_id(block) -> str:
    lang, words, code = block
    first = next(line for line in code.splitlines() if line.strip() and not line.startswith("#"))
    return f"{lang}:{first[:60]}"


BLOCKS = runnable_blocks()


def test_the_readme_marks_blocks_runnable():
    langs = [lang for lang, _, _ in BLOCKS]
    assert langs.count("bash") >= 3 and langs.count("python") >= 2
    assert all(words <= {"shared-data", "slow"} for _, words, _ in BLOCKS), "unknown word in a runnable mark"


def _outputs(code: str) -> list[str]:
    """Files and folders the block's commands are asked to write."""
    found = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        found += [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "--json", "--save-sr")]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_runnable_readme_block_runs_as_written(block, tmp_path):
    lang, words, code = block
    if "slow" in words and not os.environ.get("ATTRSR_README_SLOW"):
        pytest.skip("a slow README block: set ATTRSR_README_SLOW=1 to run it")
    if "shared-data" in words:
        need(DATA / "benchmarks", DATA / "weights")
    # A clone's layout: <tmp>/repo/configs and <tmp>/shared/data (the default ATTRSR_DATA).
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA.resolve())
    env = {k: v for k, v in os.environ.items() if k != "ATTRSR_DATA"}
    env.update(PYTHONPATH=str(REPO / "src"), ATTRSR_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    if lang == "bash":
        # `attrsr` is this checkout's code, whatever is installed
        args = ["bash", "-c", f'set -euo pipefail\nattrsr() {{ "{sys.executable}" -m attrsr "$@"; }}\n{code}']
    else:
        assert lang == "python"
        args = [sys.executable, "-c", code]
    r = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"README block failed:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr and "error:" not in r.stderr
    for out in _outputs(code):
        assert (repo / out).exists(), f"{out} was not written"
    if "--json results.json" in code:  # the bare names found the real PAN and Set5
        import json

        assert json.loads((repo / "results.json").read_text())["Set5"]["psnr_y"] == pytest.approx(32.13, abs=0.01)
    if "train configs/tiny-cpu.yaml --out runs/tiny" in code:  # the README describes what a run writes
        written = {p.name for p in (repo / "runs" / "tiny").iterdir() if p.is_file()}
        assert _described_run_files() == written


def _described_run_files() -> set[str]:
    text = " ".join(README.read_text().split())
    paragraph = text[text.index("A run folder holds"):]
    paragraph = paragraph[: paragraph.index("Training methods")]
    return set(re.findall(r"`([\w.]+\.(?:pt|safetensors|csv|jsonl|yaml))`", paragraph))
