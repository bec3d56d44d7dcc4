"""DDP: ``attrsr train --nproc 2`` (torchrun, gloo on CPU) matches one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_helpers import TINY, subprocess_env, train_cmd, weights

pytestmark = pytest.mark.slow


def _cmd(out, *extra):
    sets = ["train.iterations=6", "train.checkpoint_every=3", "data.batch_size=4", "val.data=[]", "train.threads=1"]
    return train_cmd(out, sets, *extra)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    env = subprocess_env(tmp_path / "cache")
    one = subprocess.run(_cmd(tmp_path / "one"), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(_cmd(tmp_path / "two", "--nproc", "2"), env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]

    state = torch.load(tmp_path / "two" / "latest.pt", weights_only=True)
    assert state["world"] == 2 and len(state["rng"]) == 2  # really two ranks, each RNG stream saved
    w1, w2 = weights(tmp_path / "one" / "model.safetensors"), weights(tmp_path / "two" / "model.safetensors")
    for k in w1:  # equal up to the order of the float reductions
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    from attrsr import models

    torch.manual_seed(0)  # the trainer's initial weights (seed 0): training must have moved them
    init = models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=16).state_dict()
    assert (w1["body.0.body.0.weight"] - init["body.0.body.0.weight"]).abs().max() > 1e-3
    # Only rank 0 wrote the run folder's logs: one row per logged step, with the loss of the whole
    # global batch (averaged over the ranks), as one process logs it.
    rows = {}
    for run in ("one", "two"):
        head, *body = (tmp_path / run / "train.csv").read_text().splitlines()
        rows[run] = [dict(zip(head.split(","), map(float, line.split(",")))) for line in body]
    assert [r["step"] for r in rows["two"]] == [5, 6]
    for a, b in zip(rows["one"], rows["two"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["lr"] == a["lr"]


def test_a_user_error_under_nproc_is_one_line(tmp_path):
    """Both ranks fail on the missing folder; the user sees its message once, no launcher traceback."""
    env = subprocess_env(tmp_path / "cache")
    out = subprocess.run(_cmd(tmp_path / "run", "--nproc", "2") + ["--set", f"data.train={tmp_path / 'missing'}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


_THREADS_SCRIPT = """
import json, os, sys
from pathlib import Path

def threads():
    return sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task"))

from attrsr.config import load_config
from attrsr.engine import train

out, tiny, cache = sys.argv[1:4]
before = threads()
cfg = load_config(tiny, [f"data.cache_dir={cache}", "train.threads=1", "val.data=[]", "train.iterations=4",
                         "train.checkpoint_every=2", "data.batch_size=4"])
train(cfg, out=out, progress=False)
Path(out, f"threads{os.environ['RANK']}.json").write_text(json.dumps({"before": before, "after": threads()}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread list read from /proc")
def test_no_communication_thread_outlives_training(tmp_path):
    """Issue 14: a rank aborted at exit ("terminate called without an active exception") because
    gloo's threads were still running when the interpreter shut down — DDP kept the default group
    alive past destroy_process_group. After ``train`` returns, each rank runs only the threads it
    had before."""
    script = tmp_path / "train_threads.py"
    script.write_text(_THREADS_SCRIPT)
    env = subprocess_env(tmp_path / "cache")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
           "--rdzv_endpoint", "localhost:0", str(script), str(tmp_path / "run"), str(TINY), str(tmp_path / "cache")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / "run" / f"threads{rank}.json").read_text())
        assert seen["after"] == seen["before"], (rank, seen)
