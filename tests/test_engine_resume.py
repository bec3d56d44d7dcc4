"""Crash safety end to end: SIGKILL a real ``attrsr train`` process mid-run, resume it, and get the
same final weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from engine_helpers import same_weights, subprocess_env, train_cmd, weights

pytestmark = pytest.mark.slow

SLEEP = json.dumps({"name": "hook_methods:Sleep", "seconds": 0.1})


def _cmd(out, *extra):
    sets = [
        "train.iterations=30", "train.checkpoint_every=5", "train.log_every=1", "train.threads=1",
        "train.ema=0.9", "data.num_workers=1", "val.data=[]", f"methods=[{SLEEP}]",
    ]
    return train_cmd(out, sets, *extra)


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    env = subprocess_env(tmp_path / "cache")
    done = subprocess.run(_cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    victim = subprocess.Popen(_cmd(tmp_path / "crash"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "crash" / "latest.pt"
    deadline = time.monotonic() + 240
    while not latest.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.25)  # a couple of steps past the checkpoint, so the kill lands between checkpoints
    assert victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    state = torch.load(latest, weights_only=True)  # complete and readable, never truncated
    assert 5 <= state["step"] < 30 and state["step"] % 5 == 0
    assert not (tmp_path / "crash" / "model.safetensors").exists()

    resumed = subprocess.run(_cmd(tmp_path / "crash", "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert same_weights(weights(tmp_path / "full" / "model.safetensors"), weights(tmp_path / "crash" / "model.safetensors"))
    full_state = torch.load(tmp_path / "full" / "latest.pt", weights_only=True)
    crash_state = torch.load(latest, weights_only=True)
    assert all(torch.equal(full_state["model"][k], crash_state["model"][k]) for k in full_state["model"])
    steps = [json.loads(x)["step"] for x in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # the killed run's rows after its checkpoint were dropped
