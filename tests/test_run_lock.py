"""A run folder is locked for the training's lifetime: a second training on it fails at once with
one line naming the holder's PID; the OS drops the lock when the holder ends, even by SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from attrsr.cli import app
from attrsr.errors import AttrsrError
from attrsr.fileio import FolderLock

from engine_helpers import PYTHON, TINY, subprocess_env, train_cmd


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train(out, cache, *sets, resume=False):
    args = ["train", str(TINY), "--out", str(out), "--no-progress"]
    for s in (f"data.cache_dir={cache}", "val.data=[]", "train.threads=1", *sets):
        args += ["--set", s]
    return CliRunner().invoke(app, args + (["--resume"] if resume else []))


def _wait_for(predicate, proc, what, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended before {what}: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_second_training_on_a_running_folder_fails_at_once(tmp_path, cache):
    """The issue's case: two trainings on one folder. The second stops before doing anything, names
    the first's PID, and the first's log is not interleaved with anything."""
    out = tmp_path / "run"
    sets = [f"data.cache_dir={cache}", "val.data=[]", "train.threads=1", "train.iterations=100000", "train.log_every=1"]
    first = subprocess.Popen(train_cmd(out, sets), env=subprocess_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / "train.csv").is_file(), first, "the first training's first log row")
        started = time.monotonic()
        second = _train(out, cache)
        assert time.monotonic() - started < 30
        assert second.exit_code == 1, second.output
        lines = second.stderr.strip().splitlines()
        assert lines == [f"error: {out}: the run folder is in use by another process (PID {first.pid}); "
                         "wait for it to finish or stop it, or choose another folder"]
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    # Killed outright: the kernel dropped its lock; the stale .lock file names a dead PID and does not block.
    assert (out / ".lock").read_text().strip() == str(first.pid)
    with FolderLock.acquire(out) as lock:
        assert lock.held
    assert not (out / ".lock").exists()


def test_lock_held_in_this_process_blocks_a_training_and_is_released_after_it(tmp_path, cache):
    import os

    out = tmp_path / "run"
    with FolderLock.acquire(out, "the run folder"):
        r = _train(out, cache, "train.iterations=2")
        assert r.exit_code == 1 and f"(PID {os.getpid()})" in r.stderr
        assert [p.name for p in out.iterdir()] == [".lock"]  # the refused run wrote nothing
    r = _train(out, cache, "train.iterations=2")
    assert r.exit_code == 0, r.output
    assert not (out / ".lock").exists()  # a finished run leaves no lock file
    with pytest.raises(AttrsrError, match="in use by another process"), FolderLock.acquire(out):
        FolderLock.acquire(out)


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, cache):
    r = _train(tmp_path / "new" / "run", cache, "model.args.n_fetas=8")
    assert r.exit_code == 1 and "accepted: n_resblocks, n_feats" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_resume_says_where_it_resumed(tmp_path, cache):
    out = tmp_path / "run"
    first = _train(out, cache, "train.iterations=4", "train.checkpoint_every=2")
    assert first.exit_code == 0, first.output
    assert "resumed" not in first.stdout
    r = _train(out, cache, "train.iterations=6", "train.checkpoint_every=2", resume=True)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"resumed from step 4 of 6 ({out / 'latest.pt'})"
    assert "trained 6 iterations" in r.stdout


@pytest.mark.slow
def test_under_nproc_a_locked_folder_is_one_line_from_every_rank(tmp_path, cache):
    """Rank 0 takes the lock and tells the other ranks; the launcher prints the message once."""
    import os

    out = tmp_path / "run"
    with FolderLock.acquire(out, "the run folder"):
        cmd = train_cmd(out, [f"data.cache_dir={cache}", "val.data=[]"], "--nproc", "2")
        res = subprocess.run(cmd, env=subprocess_env(cache), capture_output=True, text=True, timeout=300)
        assert res.returncode == 1
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert lines == [f"error: {out}: the run folder is in use by another process (PID {os.getpid()}); "
                         "wait for it to finish or stop it, or choose another folder"], res.stderr
        assert [p.name for p in out.iterdir()] == [".lock"]


def test_a_forked_child_releasing_its_copy_keeps_the_lock(tmp_path):
    """DataLoader workers are forked with the trainer (and its lock) in memory: their copy must never
    remove the lock file of the process that holds it."""
    import os

    with FolderLock.acquire(tmp_path / "run") as lock:
        pid = os.fork()
        if pid == 0:  # the child: drop its copy the way garbage collection would
            lock.release()
            os._exit(0)
        os.waitpid(pid, 0)
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(AttrsrError, match=f"PID {os.getpid()}"):
            FolderLock.acquire(tmp_path / "run")
    assert not (tmp_path / "run" / ".lock").exists()
