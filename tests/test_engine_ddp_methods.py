"""DDP with methods: 2 processes (gloo on CPU) with a double-backprop method (a loss on ∂SR/∂LR), a
method that adds its own validation rows and a method training a second network with its own
optimiser (SR4IR's shape) match 1 process with the same global batch."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from engine_helpers import subprocess_env, train_cmd, weights

pytestmark = pytest.mark.slow

METHODS = [
    {"name": "hook_methods:InputGradPenalty", "weight": 30.0},
    {"name": "hook_methods:ValidationProbe"},
    {"name": "hook_methods:TaskNetwork"},
    {"name": "hook_methods:CachedGrey"},  # a per-image artifact: built by rank 0 while rank 1 waits
    {"name": "hook_methods:AuxIsLR"},  # auxiliary arrays stay aligned in each rank's slice
]


def _cmd(out, *extra):
    sets = [
        "train.iterations=4", "train.checkpoint_every=4", "train.log_every=2", "data.batch_size=4", "val.every=2",
        "val.data=[]", "train.threads=1", "methods=" + json.dumps(METHODS),
    ]
    return train_cmd(out, sets, *extra)


def test_two_processes_with_double_backprop_method_validation_and_a_second_network_match_one(tmp_path):
    env = subprocess_env(tmp_path / "cache")
    two = subprocess.run(_cmd(tmp_path / "two", "--nproc", "2"), env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    (artifact,) = (tmp_path / "cache").glob("decoded/*/artifacts/grey-*")
    assert (artifact / "done.json").is_file() and len(list(artifact.glob("*.npy"))) == 12
    one = subprocess.run(_cmd(tmp_path / "one"), env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert list((tmp_path / "cache").glob("decoded/*/artifacts/grey-*")) == [artifact]  # reused, same key
    assert torch.load(tmp_path / "two" / "latest.pt", weights_only=True)["world"] == 2

    w1, w2 = weights(tmp_path / "one" / "model.safetensors"), weights(tmp_path / "two" / "model.safetensors")
    for k in w1:  # equal up to the order of the float reductions
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    task1, task2 = (torch.load(tmp_path / r / "latest.pt", weights_only=True)["networks"]["task"]["module"] for r in ("one", "two"))
    for k in task1:  # the second network: one initialisation (rank 0's, broadcast by DDP), synchronised steps
        torch.testing.assert_close(task2[k], task1[k], rtol=1e-4, atol=1e-5)

    def rows(run, kind):
        return [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if json.loads(x)["kind"] == kind]

    term = "hook_methods:InputGradPenalty.input_grad"
    t1, t2 = rows("one", "train"), rows("two", "train")
    assert [r["step"] for r in t2] == [2, 4] and all(r[term] > 0 for r in t2)
    for a, b in zip(t1, t2):  # the penalty of the whole global batch, averaged over the ranks
        assert b[term] == pytest.approx(a[term], rel=1e-4) and b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    v1, v2 = rows("one", "val"), rows("two", "val")
    assert [(r["step"], r["dataset"]) for r in v2] == [(2, "probe"), (2, "probe-left"), (4, "probe"), (4, "probe-left")]
    for a, b in zip(v1, v2):  # logged once (rank 0), with the values one process computes
        assert b["out_mean"] == pytest.approx(a["out_mean"], rel=1e-5)
