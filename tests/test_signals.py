"""SIGTERM while outputs are staged cleans up like Ctrl-C, and staging folders that killed processes
left behind are swept by the next run. Real processes receive real signals."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.fileio import staged_dir, sweep_stale_stages

from engine_helpers import subprocess_env


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """An HR-only dataset large enough that evaluating it takes seconds: time to send a signal."""
    folder = tmp_path_factory.mktemp("data") / "Many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _start_eval(data, out, tmp_path):
    cmd = [sys.executable, "-m", "attrsr", "eval", "--data", str(data), "--scale", "2", "--save-sr", str(out)]
    return subprocess.Popen(cmd, env=subprocess_env(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_staged_image(parent, proc, timeout=120.0):
    """The staging folder once it holds an SR image: the run is in the middle of its work."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stages = list(parent.glob(".srout.partial-*"))
        if stages and any(p.is_file() for p in stages[0].rglob("*.png")):
            return stages[0]
        if proc.poll() is not None:
            pytest.fail(f"eval ended before it was signalled: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no staged image appeared")


def _signal_mid_run(sig, data, tmp_path):
    out = tmp_path / "srout"
    proc = _start_eval(data, out, tmp_path)
    stage = _wait_for_staged_image(tmp_path, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr, stage


@pytest.mark.slow
def test_sigterm_during_eval_save_sr_leaves_nothing(many_images, tmp_path):
    rc, stderr, stage = _signal_mid_run(signal.SIGTERM, many_images, tmp_path)
    assert rc == 143, stderr
    assert stderr.strip() == "terminated" and "Traceback" not in stderr
    assert not stage.exists() and not (tmp_path / "srout").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []


@pytest.mark.slow
def test_stage_of_a_killed_run_is_swept_by_the_next(many_images, tmp_path):
    rc, _, stage = _signal_mid_run(signal.SIGKILL, many_images, tmp_path)
    assert rc == -signal.SIGKILL and stage.is_dir()  # SIGKILL cannot be handled: the stage stays
    live = tmp_path / f".srout.partial-{platform.node()}-{os.getpid()}-live"  # a live process's: kept
    live.mkdir()
    few = tmp_path / "Few"
    few.mkdir()
    for name in sorted(os.listdir(many_images))[:2]:
        (few / name).write_bytes((many_images / name).read_bytes())
    r = CliRunner().invoke(app, ["eval", "--data", str(few), "--scale", "2", "--save-sr", str(tmp_path / "srout")])
    assert r.exit_code == 0, r.output
    assert not stage.exists() and live.is_dir()
    assert sorted(p.name for p in (tmp_path / "srout" / "Few").iterdir()) == ["00.png", "01.png"]


def test_sweep_only_touches_dead_processes_of_this_host(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = platform.node()
    stale = tmp_path / f".out.partial-{host}-{dead.pid}-abc_12"
    mine = tmp_path / f".out.partial-{host}-{os.getpid()}-abc_12"
    other_host = tmp_path / f".out.partial-{host}x-{dead.pid}-abc_12"
    unnamed = tmp_path / ".out.partial-abc_12"  # an older attrsr's: no owner to check, kept
    other_output = tmp_path / f".other.partial-{host}-{dead.pid}-abc_12"
    for d in (stale, mine, other_host, unnamed, other_output):
        (d / "sub").mkdir(parents=True)
    assert sweep_stale_stages(tmp_path / "out") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(d.name for d in (mine, other_host, unnamed, other_output))


def test_sigterm_inside_staged_dir_in_python_removes_the_stage(tmp_path):
    """The library path: SIGTERM inside ``staged_dir`` raises, the stage goes, the default comes back."""
    from attrsr.interrupts import Terminated

    with pytest.raises(Terminated), staged_dir(tmp_path / "out") as stage:
        (stage / "a.png").write_bytes(b"x")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow
def test_sigterm_to_train_nproc_is_one_word_not_a_launcher_traceback(tmp_path):
    from engine_helpers import train_cmd

    out = tmp_path / "run"
    sets = ["val.data=[]", "train.iterations=100000", "train.log_every=1"]
    proc = subprocess.Popen(train_cmd(out, sets, "--nproc", "2"), env=subprocess_env(tmp_path / "cache"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 180
    while not (out / "train.csv").is_file():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"training did not start: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert stderr.strip() == "terminated", stderr
