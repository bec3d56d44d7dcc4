"""DDP: ``attrsr train --nproc 2`` (torchrun, gloo on CPU) matches one process with the same global batch."""

from __future__ import annotations

import subprocess

import pytest
import torch

from engine_helpers import subprocess_env, train_cmd, weights

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
