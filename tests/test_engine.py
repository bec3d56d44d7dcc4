"""The trainer and its method hooks, on the tiny recipe and the real bundled photos.

Every hook is exercised by a small real method from ``hook_methods.py``, and each test checks the
change the hook should make to training (which images are drawn, what the loss sees, which weights
move), not only that it runs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from attrsr.config import ScheduleConfig
from attrsr.engine import NonFiniteLoss, Trainer
from attrsr.engine.optim import lr_factor
from attrsr.errors import AttrsrError
from engine_helpers import run, same_weights, tiny_config, weights


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def method(name: str, **params) -> str:
    return json.dumps({"name": f"hook_methods:{name}", **params})


def methods(*items: str) -> str:
    return "methods=[" + ", ".join(items) + "]"


# ---------------------------------------------------------------------------------------------
# The loop


def test_training_learns_and_writes_the_run_folder(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=30", "val.every=0", val=True)
    tr = run(cfg, tmp_path / "run")
    out = tmp_path / "run"
    for name in ("config.yaml", "latest.pt", "model.safetensors", "best.safetensors", "metrics.jsonl", "train.csv", "val.csv"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
    assert train_rows[-1]["loss"] < 0.6 * train_rows[0]["loss"]  # it learns
    assert all(0 <= r["data_wait"] <= 1 and r["it_s"] > 0 for r in train_rows)
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 1 and val[0]["dataset"] == "samples-val" and 10 < val[0]["psnr_y"] < 40
    assert tr.summary["best"]["psnr_y"] == pytest.approx(val[0]["psnr_y"])

    # The exported weights are the zoo model's, loadable by name, and compute what the trainer's model does.
    from attrsr import models

    loaded = models.load("edsr-baseline", weights=out / "model.safetensors", scale=2, n_resblocks=2, n_feats=16)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded(x), tr.model.eval()(x))


def test_one_seed_makes_the_run_reproducible(tmp_path, cache):
    a = run(tiny_config(cache, "train.iterations=6"), tmp_path / "a")
    b = run(tiny_config(cache, "train.iterations=6"), tmp_path / "b")
    c = run(tiny_config(cache, "train.iterations=6", "seed=1"), tmp_path / "c")
    wa, wb, wc = (weights(t.out / "model.safetensors") for t in (a, b, c))
    assert same_weights(wa, wb)
    assert not same_weights(wa, wc)


def test_existing_run_needs_resume(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=2")
    run(cfg, tmp_path / "r")
    with pytest.raises(AttrsrError, match="--resume"):
        Trainer(cfg, out=tmp_path / "r", progress=False)


def test_ema_is_what_gets_validated_and_exported(tmp_path, cache):
    tr = run(tiny_config(cache, "train.iterations=5", "train.ema=0.9"), tmp_path / "e")
    exported = weights(tr.out / "model.safetensors")
    assert same_weights(exported, {k: v for k, v in tr.ema.module.state_dict().items()})
    assert not same_weights(exported, tr.model.state_dict())


def test_ema_is_the_hand_computed_average_of_the_weights_after_every_after_step(tmp_path, cache):
    """EMA_1 = W_1, EMA_t = d·EMA_{t-1} + (1−d)·W_t over the weights *after* the methods' after_step: a
    frozen weight stays frozen in the EMA (FreezeHead restores it), and an inverted decay would miss."""
    decay = 0.9
    cfg = tiny_config(cache, "train.iterations=5", f"train.ema={decay}", methods(method("FreezeHead"), method("WeightRecorder")))
    tr = run(cfg, tmp_path / "e")
    snaps = tr.methods.methods[1].snapshots
    assert len(snaps) == 5
    expected = {k: v.double() for k, v in snaps[0].items()}
    for snap in snaps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * snap[k].double() for k in expected}
    ema = dict(tr.ema.module.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(ema[k].double(), v, rtol=0, atol=1e-7)
    frozen = tr.methods.methods[0].frozen
    assert torch.equal(ema["net.head.0.weight"], frozen)  # the EMA never saw the unfrozen step
    assert not torch.allclose(ema["net.tail.0.0.weight"], snaps[-1]["net.tail.0.0.weight"])  # it is an average, not a copy


def test_schedules():
    multi = lr_factor(ScheduleConfig(name="multistep", milestones=[10, 20], gamma=0.5), 1e-4, 30)
    assert [multi(s) for s in (0, 9, 10, 19, 20, 29)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    warm = lr_factor(ScheduleConfig(name="constant", warmup=4), 1e-4, 30)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    cos = lr_factor(ScheduleConfig(name="cosine", min_lr=1e-5), 1e-4, 100)
    assert cos(0) == 1 and cos(50) == pytest.approx(0.1 + 0.9 * 0.5) and cos(100) == pytest.approx(0.1)
    assert all(cos(s) >= cos(s + 1) for s in range(100))
    cw = lr_factor(ScheduleConfig(name="cosine", warmup=10), 1e-4, 110)
    assert cw(4) == pytest.approx(0.5) and cw(10) == 1 and cw(60) == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["l1", "mse", "charbonnier"])
def test_the_configured_pixel_loss_is_the_one_trained(tmp_path, cache, name):
    tr = Trainer(tiny_config(cache, f"loss.name={name}", "loss.eps=0.1"), out=tmp_path / name, progress=False)
    batch = next(tr.batches(tr._make_plan(0), 4))
    with torch.no_grad():
        d = tr.model(batch["lr"]) - batch["hr"]
    expected = {"l1": d.abs().mean(), "mse": d.pow(2).mean(), "charbonnier": torch.sqrt(d * d + 0.01).mean()}[name]
    assert tr._train_step(batch)["pixel"] == pytest.approx(float(expected), rel=1e-5)


def test_optimiser_gradient_clipping_and_schedule_are_applied(tmp_path, cache):
    cfg = tiny_config(
        cache, "optim.name=adamw", "optim.lr=1e-3", "optim.weight_decay=0.05", "optim.grad_clip=0.01",
        "schedule.name=multistep", "schedule.milestones=[2]", "schedule.gamma=0.1", "schedule.warmup=2",
    )
    tr = Trainer(cfg, out=tmp_path / "o", progress=False)
    assert type(tr.optimizer) is torch.optim.AdamW and tr.optimizer.param_groups[0]["weight_decay"] == 0.05
    batches = list(tr.batches(tr._make_plan(0), 4))  # 3 batches
    used = []
    for i in range(4):
        terms = tr._train_step(batches[i % 3])
        used.append(tr.step_lr)
        grads = [p.grad for p in tr.model.parameters() if p.grad is not None]
        assert float(terms["grad_norm"]) > 0.01  # the norm before clipping (what gets logged) ...
        assert float(torch.nn.utils.get_total_norm(grads)) == pytest.approx(0.01, rel=1e-3)  # ... the step used the clipped one
    assert used == pytest.approx([5e-4, 1e-3, 1e-4, 1e-4])  # warm-up, then the milestone


def test_logs_show_each_steps_lr_and_a_fresh_run_starts_new_logs(tmp_path, cache):
    out = tmp_path / "w"
    out.mkdir()
    # Rows left by an earlier attempt that stopped before its first checkpoint (no latest.pt).
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9}\n')
    (out / "train.csv").write_text("step,stale\n1,9\n")
    run(tiny_config(cache, "train.iterations=5", "train.log_every=1", "schedule.warmup=4"), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in rows] == pytest.approx([0.5e-4, 1e-4, 1.5e-4, 2e-4, 2e-4])  # the rate each step used
    head, *body = (out / "train.csv").read_text().splitlines()
    assert head.startswith("step,epoch,lr,loss") and [b.split(",")[0] for b in body] == ["1", "2", "3", "4", "5"]


def test_tensorboard_gets_the_metrics_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    from attrsr.engine.logs import RunLog

    scalars = []

    class SummaryWriter:
        def __init__(self, logdir, purge_step=None):
            self.logdir = logdir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    log = RunLog(tmp_path)
    log.write("train", {"step": 5, "epoch": 0, "loss": 0.25})
    log.write("val", {"step": 5, "dataset": "Set5", "psnr_y": 30.5})
    log.close()
    assert log._tb.logdir == str(tmp_path / "tb")
    assert scalars == [("train/loss", 0.25, 5), ("val/Set5/psnr_y", 30.5, 5)]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=10", "train.checkpoint_every=4", methods(method("NanAt", step=6)))
    tr = Trainer(cfg, out=tmp_path / "n", progress=False)
    with pytest.raises(NonFiniteLoss, match=r"not finite at iteration 6 .*latest\.pt \(iteration 4\)"):
        tr.fit()
    state = torch.load(tmp_path / "n" / "latest.pt", weights_only=True)
    assert state["step"] == 4
    assert not (tmp_path / "n" / "model.safetensors").exists()
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# ---------------------------------------------------------------------------------------------
# Method hooks


def test_sampler_hook_decides_which_images_are_drawn(tmp_path, cache):
    # Only images 2 and 5 (of 12) get weight: every trained patch comes from them, in both proportions.
    cfg = tiny_config(
        cache, "train.iterations=12", "data.repeat=4",
        methods(method("ImageWeights", weights=[0, 0, 3, 0, 0, 1] + [0] * 6), method("EpochCounter")),
    )
    tr = run(cfg, tmp_path / "s")
    seen = tr.methods.methods[1].images_seen
    assert len(seen) == 48 and set(seen) <= {2, 5}
    assert seen.count(2) > 2 * seen.count(5)


def test_augment_hook_changes_what_the_loss_sees(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=2", methods(method("SwapRB"), method("EpochCounter")))
    tr = run(cfg, tmp_path / "a")
    plain = list(tr.batches(tr.plan, 4))[:2]  # the same patches without method augmentation
    recorded = tr.methods.methods[1].hr_seen
    for seen, ref in zip(recorded, plain):
        assert torch.equal(seen, ref["hr"].flip(1))


def test_loss_mask_from_an_augmentation_restricts_the_pixel_loss(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=1", methods(method("HalfMask")))
    tr = Trainer(cfg, out=tmp_path / "m", progress=False)
    tr.plan = tr._make_plan(0)
    batch = next(tr.batches(tr.plan, 4))
    with torch.no_grad():
        sr = tr.model(batch["lr"])
    w = sr.shape[-1] // 2
    expected = (sr - batch["hr"])[..., :w].abs().mean()
    terms = tr._train_step(batch)
    assert terms["pixel"] == pytest.approx(float(expected), rel=1e-5)
    assert terms["pixel"] != pytest.approx(float((sr - batch["hr"]).abs().mean()), rel=1e-3)


def _input_grad_norm(model, lr):
    lr = lr.clone().requires_grad_(True)
    sr = model(lr)
    h, w = sr.shape[-2:]
    (g,) = torch.autograd.grad(sr[..., h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4].sum(), lr)
    return float(g.pow(2).mean())


def test_extra_loss_hook_trains_through_the_input_gradient(tmp_path, cache):
    """Double backprop: a loss on ∂SR/∂LR reaches the weights, and training shrinks that gradient."""
    base = tiny_config(cache, "train.iterations=1")
    zero = tiny_config(cache, "train.iterations=1", methods(method("InputGradPenalty", weight=0.0)))
    strong = tiny_config(cache, "train.iterations=1", methods(method("InputGradPenalty", weight=1e3)))
    w0 = weights(run(base, tmp_path / "b").out / "model.safetensors")
    wz = weights(run(zero, tmp_path / "z").out / "model.safetensors")
    ws = weights(run(strong, tmp_path / "s").out / "model.safetensors")
    assert same_weights(w0, wz)  # a zero-weight term changes nothing
    assert not same_weights(w0, ws)  # a non-zero one moves the weights: its gradient got through

    plain = run(tiny_config(cache, "train.iterations=25"), tmp_path / "p")
    pen = run(tiny_config(cache, "train.iterations=25", methods(method("InputGradPenalty", weight=30.0))), tmp_path / "q")
    rows = [json.loads(x) for x in (pen.out / "metrics.jsonl").read_text().splitlines()]
    assert "InputGradPenalty.input_grad" not in rows[0]
    assert "hook_methods:InputGradPenalty.input_grad" in rows[0]
    lr = next(plain.batches(plain._make_plan(0), 4))["lr"]
    assert _input_grad_norm(pen.model, lr) < 0.5 * _input_grad_norm(plain.model, lr)


def test_after_step_hook_keeps_frozen_weights(tmp_path, cache):
    from attrsr import models

    torch.manual_seed(0)
    init = models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=16).state_dict()
    tr = run(tiny_config(cache, "train.iterations=6", methods(method("FreezeHead"))), tmp_path / "f")
    final = weights(tr.out / "model.safetensors")
    assert torch.equal(final["head.0.weight"], init["head.0.weight"])
    assert not torch.equal(final["head.0.bias"], init["head.0.bias"])
    assert not torch.equal(final["body.0.body.0.weight"], init["body.0.body.0.weight"])


def test_epoch_end_hook_and_method_state(tmp_path, cache):
    # 12 images, batch 4: an epoch is 3 batches, so 10 iterations end epochs 0, 1 and 2.
    tr = run(tiny_config(cache, "train.iterations=10", methods(method("EpochCounter"))), tmp_path / "c")
    counter = tr.methods.methods[0]
    assert counter.epochs == [0, 1, 2] and counter.steps == 10
    state = torch.load(tr.out / "latest.pt", weights_only=True)
    assert state["methods"]["hook_methods:EpochCounter"] == {"epochs": [0, 1, 2], "steps": 10}


def test_several_methods_compose(tmp_path, cache):
    """All hooks at once: each method's effect holds alongside the others', and their loss terms add."""
    from attrsr import models

    torch.manual_seed(0)
    init = models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=16).state_dict()
    cfg = tiny_config(
        cache, "train.iterations=6", "train.log_every=1",
        methods(
            method("ImageWeights", weights=[0, 1] + [0] * 10), method("SwapRB"), method("FreezeHead"),
            method("InputGradPenalty", weight=5.0), method("EpochCounter"),
        ),
    )
    tr = run(cfg, tmp_path / "all")
    counter = tr.methods.methods[-1]
    assert set(counter.images_seen) == {1}  # the sampler
    first = next(tr.batches(tr._make_plan(0), 4))  # epoch 0's first batch, before method augmentation
    assert torch.equal(counter.hr_seen[0], first["hr"].flip(1))  # the augmentation, after the sampler
    assert torch.equal(weights(tr.out / "model.safetensors")["head.0.weight"], init["head.0.weight"])  # the freeze
    assert counter.epochs == [0, 1]  # 12 patches / batch 4 = 3 batches per epoch
    row = json.loads((tr.out / "metrics.jsonl").read_text().splitlines()[0])
    term = row["hook_methods:InputGradPenalty.input_grad"]
    assert term > 0 and row["loss"] == pytest.approx(row["pixel"] + term, rel=1e-5)


def test_method_errors_are_one_line(tmp_path, cache):
    with pytest.raises(AttrsrError, match="unknown method 'nope'"):
        Trainer(tiny_config(cache, 'methods=[{name: nope}]'), out=tmp_path / "x", progress=False)
    with pytest.raises(AttrsrError, match=r"methods\.0 \(hook_methods:SwapRB\): unknown key 'probb'; valid keys: prob"):
        Trainer(tiny_config(cache, methods(method("SwapRB", probb=1))), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# Resume


def test_resume_after_a_crash_is_exact_with_workers_ema_and_methods(tmp_path, cache, monkeypatch):
    """Crash mid-epoch (an exception at iteration 8, checkpoint at 5), resume: same final weights,
    same method state, and a log without the crashed run's rows after iteration 5."""
    opts = [
        "train.iterations=11", "train.checkpoint_every=5", "train.log_every=1", "train.ema=0.5",
        "data.num_workers=2", "schedule.name=cosine", "schedule.warmup=3",
        methods(method("SwapRB", prob=0.5), method("FreezeHead"), method("EpochCounter")),
    ]
    full = run(tiny_config(cache, *opts), tmp_path / "full")

    crashed = Trainer(tiny_config(cache, *opts), out=tmp_path / "crash", progress=False)
    step = crashed._train_step

    def failing(batch):
        if crashed.step == 7:
            raise RuntimeError("simulated crash")
        return step(batch)

    monkeypatch.setattr(crashed, "_train_step", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    resumed = run(tiny_config(cache, *opts), tmp_path / "crash", resume=True)

    assert same_weights(weights(full.out / "model.safetensors"), weights(resumed.out / "model.safetensors"))
    assert resumed.methods.methods[2].epochs == full.methods.methods[2].epochs == [0, 1, 2]
    steps = [int(line.split(",")[0]) for line in (tmp_path / "crash" / "train.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 12))
    assert math.isclose(full.scheduler.get_last_lr()[0], resumed.scheduler.get_last_lr()[0])


SWINIR_DROP_PATH = "model={name: swinir, args: {img_size: 16, embed_dim: 12, depths: [2], num_heads: [2], window_size: 4, mlp_ratio: 1.0, drop_path_rate: 0.5}}"


@pytest.mark.parametrize(
    "opts", [[SWINIR_DROP_PATH], [methods(method("GlobalNoise"))], [methods(method("BetaMixup"))]],
    ids=["swinir-drop-path", "global-rng-method", "numpy-generator-method"],
)
def test_resume_restores_the_global_rngs(tmp_path, cache, monkeypatch, opts):
    """Stochastic depth (SwinIR) and a method drawing from torch/numpy/Python's global generators:
    crash after the checkpoint, resume, and the weights equal an uninterrupted run's bit for bit."""
    opts = ["train.iterations=8", "train.checkpoint_every=4", *opts]
    full = run(tiny_config(cache, *opts), tmp_path / "full")
    crashed = Trainer(tiny_config(cache, *opts), out=tmp_path / "crash", progress=False)
    step = crashed._train_step

    def failing(batch):
        if crashed.step == 6:
            raise RuntimeError("simulated crash")
        return step(batch)

    monkeypatch.setattr(crashed, "_train_step", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    resumed = run(tiny_config(cache, *opts), tmp_path / "crash", resume=True)
    assert same_weights(weights(full.out / "model.safetensors"), weights(resumed.out / "model.safetensors"))
    if full.methods.methods and hasattr(full.methods.methods[0], "draws"):  # the numpy generator's Beta draws continue exactly
        assert resumed.methods.methods[0].draws == full.methods.methods[0].draws[4:]


def test_resume_refuses_a_different_recipe(tmp_path, cache):
    run(tiny_config(cache, "train.iterations=2"), tmp_path / "r")
    with pytest.raises(AttrsrError, match="different optim"):
        Trainer(tiny_config(cache, "train.iterations=4", "optim.lr=1e-3"), out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(AttrsrError, match="no checkpoint to resume"):
        Trainer(tiny_config(cache, "train.iterations=4"), out=tmp_path / "empty", resume=True, progress=False)
