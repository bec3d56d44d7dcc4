"""The method protocol as a contract: a leaf module, a registry the engine does not fill itself, and
the :class:`MethodContext` a method works through."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attrsr.engine import Method, Trainer, register_method
from attrsr.engine.hooks import MethodContext, method_names
from engine_helpers import REPO, run, subprocess_env, tiny_config

ENGINE = REPO / "src" / "attrsr" / "engine"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _imports(path: Path, *, skip_type_checking: bool = True) -> set[str]:
    """Modules a file imports (``from a.b import c`` → ``a.b`` and ``a.b.c``), outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if skip_type_checking and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def test_the_engine_never_imports_the_methods_package():
    for path in sorted(ENGINE.glob("*.py")):
        bad = {m for m in _imports(path, skip_type_checking=False) if m == "attrsr.methods" or m.startswith("attrsr.methods.")}
        assert not bad, f"{path.name} imports {bad}"


def test_the_protocol_module_is_a_leaf():
    engine_imports = {m for m in _imports(ENGINE / "hooks.py") if m.startswith("attrsr.engine")}
    assert engine_imports == {"attrsr.engine", "attrsr.engine.distributed"}  # rank helpers, themselves a leaf
    # Importing it (as a method module does) loads no trainer, checkpointing or composition code.
    code = "import sys, attrsr.engine.hooks; print(sorted(m for m in sys.modules if m.startswith('attrsr.engine')))"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(REPO / ".unused"), capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    assert loaded == {"attrsr.engine", "attrsr.engine.hooks", "attrsr.engine.distributed"}, loaded


class _Registered(Method):
    def __init__(self, params=None):
        super().__init__(params)
        self.steps = 0

    def after_step(self, step):
        self.steps = step


def test_a_registered_method_is_usable_by_name_and_names_are_unique(tmp_path, cache):
    register_method("test-registered")(_Registered)
    assert "test-registered" in method_names()
    tr = run(tiny_config(cache, "train.iterations=3", "methods=[{name: test-registered}]"), tmp_path / "r")
    assert isinstance(tr.methods.methods[0], _Registered) and tr.methods.methods[0].steps == 3
    register_method("test-registered")(_Registered)  # the same class again is harmless (re-import)

    class Other(Method):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register_method("test-registered")(Other)


def test_a_method_works_through_its_context(tmp_path, cache):
    """setup wraps the model through ctx.model (the optimiser then trains the wrapper's parameter too),
    ctx.log writes to the run log, ctx.losses is the step's forward pass and losses, and the model
    cannot be swapped once the optimiser holds it."""
    gain = json.dumps({"name": "hook_methods:LearnedGain"})
    pen = json.dumps({"name": "hook_methods:InputGradPenalty", "weight": 3.0})
    tr = run(tiny_config(cache, "train.iterations=6", f"methods=[{gain}, {pen}]"), tmp_path / "c")
    ctx = tr.methods.methods[0].ctx
    assert isinstance(ctx, MethodContext) and ctx.model is tr.model and ctx.out == tmp_path / "c"
    assert ctx.device == tr.device and ctx.dist.world == 1 and ctx.cfg.scale == 2 and len(ctx.images) == 12
    assert float(tr.model.gain.detach()) != 1.0  # the wrapper's parameter was trained
    probes = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines() if '"probe"' in x]
    assert [p["epoch"] for p in probes] == [0, 1]

    batch = next(ctx.batches(tr._make_plan(0), 2))
    batch["lr"].requires_grad_(True)  # the penalty differentiates through the input
    total, terms = ctx.losses(batch)
    assert set(terms) == {"pixel", "hook_methods:InputGradPenalty.input_grad"}
    with torch.no_grad():
        sr = tr.model(batch["lr"])
    value = {k: float(v.detach()) for k, v in terms.items()}
    assert value["pixel"] == pytest.approx(float((sr - batch["hr"]).abs().mean()), rel=1e-6)
    assert float(total.detach()) == pytest.approx(value["pixel"] + value["hook_methods:InputGradPenalty.input_grad"], rel=1e-6)
    total.backward()
    assert tr.model.gain.grad is not None
    with pytest.raises(RuntimeError, match="only in setup"):
        ctx.model = torch.nn.Identity()


def test_augment_gets_a_numpy_generator_per_step_rank_and_method():
    """Both generators are a pure function of (seed, step, rank, method index): the same numbers
    give the same draws (exact resume), and any other step, rank or method a different stream."""
    from attrsr.engine.compose import MethodStack, augment_generators

    def draws(seed, step, rank, index):
        gen, rng = augment_generators(seed, step, rank, index, torch.device("cpu"))
        return float(torch.rand((), generator=gen)), float(rng.beta(1.2, 1.2))

    base = draws(0, 5, 0, 0)
    assert draws(0, 5, 0, 0) == base
    others = [draws(1, 5, 0, 0), draws(0, 6, 0, 0), draws(0, 5, 1, 0), draws(0, 5, 0, 1)]
    assert all(o[0] != base[0] and o[1] != base[1] for o in others)
    assert len({o[1] for o in others}) == 4

    from hook_methods import BetaMixup

    stack = MethodStack([BetaMixup(), BetaMixup()], seed=0)
    batch = {"lr": torch.rand(4, 3, 8, 8), "hr": torch.rand(4, 3, 16, 16)}
    stack.augment(dict(batch), step=5, rank=1)
    assert [m.draws[0] for m in stack.methods] == [draws(0, 5, 1, i)[1] for i in (0, 1)]  # each method its own stream


def test_loss_terms_must_be_the_same_at_every_step(tmp_path, cache):
    from attrsr.engine.compose import LossTermsChanged

    flaky = json.dumps({"name": "hook_methods:FlakyTerm"})
    tr = Trainer(tiny_config(cache, "train.iterations=4", f"methods=[{flaky}]"), out=tmp_path / "f", progress=False)
    with pytest.raises(LossTermsChanged, match=r"method hook_methods:FlakyTerm: extra_losses returned terms \[\] after returning \['sometimes'\]"):
        tr.fit()
    assert tr.step == 1


def test_loss_terms_must_be_the_same_on_every_rank():
    from attrsr.engine.compose import LossTermsChanged, MethodStack
    from hook_methods import FlakyTerm, InputGradPenalty

    a, b = InputGradPenalty(), FlakyTerm()
    a.name, b.name = "prior", "flaky"
    stack = MethodStack([a, b], seed=0)
    stack.check_terms_across_ranks([["flaky.sometimes", "pixel", "prior.input_grad"]] * 2)  # equal: fine
    with pytest.raises(LossTermsChanged, match=r"method flaky: loss terms differ between ranks .*rank 1: \['pixel', 'prior.input_grad'\]"):
        stack.check_terms_across_ranks([["flaky.sometimes", "pixel", "prior.input_grad"], ["pixel", "prior.input_grad"]])


def test_two_methods_owning_the_sampler_is_a_recipe_error(tmp_path, cache):
    from attrsr.errors import AttrsrError

    a = json.dumps({"name": "hook_methods:ImageWeights", "weights": [1] * 12})
    b = json.dumps({"name": "hook_methods:SwapRB"})
    with pytest.raises(AttrsrError, match=r"methods\.0 \(hook_methods:ImageWeights\) and methods\.2 \(hook_methods:ImageWeights\) both take over the sampler"):
        Trainer(tiny_config(cache, f"methods=[{a}, {b}, {a}]"), out=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # reported before anything is written
    Trainer(tiny_config(cache, f"methods=[{a}, {b}]"), out=tmp_path / "y", progress=False)  # one owner is fine
    from attrsr.engine.compose import build_methods  # the same check without a trainer (a grid's recipes)

    with pytest.raises(AttrsrError, match="both take over the sampler"):
        build_methods(tiny_config(cache, f"methods=[{a}, {a}]").methods, seed=0)


def test_loss_masks_of_several_methods_multiply(tmp_path, cache):
    half, top = json.dumps({"name": "hook_methods:HalfMask"}), json.dumps({"name": "hook_methods:TopMask"})
    tr = Trainer(tiny_config(cache, f"methods=[{half}, {top}]"), out=tmp_path / "m", progress=False)
    batch = next(tr.batches(tr._make_plan(0), 4))
    with torch.no_grad():
        err = (tr.model(batch["lr"]) - batch["hr"]).abs()
    h, w = err.shape[-2:]
    quarter = err[..., : h // 2, : w // 2].mean()  # left half × top half
    terms = tr._train_step(batch)
    assert float(terms["pixel"]) == pytest.approx(float(quarter), rel=1e-5)
    assert float(terms["pixel"]) != pytest.approx(float(err[..., : h // 2, :].mean()), rel=1e-3)


def test_a_method_adds_validation_rows_logged_like_the_built_in_ones(tmp_path, cache):
    import csv

    probe = json.dumps({"name": "hook_methods:ValidationProbe"})
    tr = run(tiny_config(cache, "train.iterations=6", "val.every=3", f"methods=[{probe}]", val=True), tmp_path / "v")
    rows = [json.loads(x) for x in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"kind": "setup", "step": 0, "images": 12}  # the log existed before setup
    val = [r for r in rows if r["kind"] == "val"]
    assert [(r["step"], r["dataset"]) for r in val] == [
        (s, d) for s in (3, 6) for d in ("samples-val", "probe", "probe-left")
    ]
    from hook_methods import ValidationProbe

    model = tr.eval_model.eval()
    with torch.no_grad():
        sr = model(ValidationProbe.probe_input())
    last = {r["dataset"]: r for r in val if r["step"] == 6}
    assert last["probe"]["out_mean"] == pytest.approx(float(sr.mean()), rel=1e-6)
    assert last["probe-left"]["out_mean"] == pytest.approx(float(sr[..., :12].mean()), rel=1e-6)
    assert last["probe"]["method"] == "hook_methods:ValidationProbe"
    with (tmp_path / "v" / "val.csv").open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["dataset"] for r in table] == ["samples-val", "probe", "probe-left"] * 2
    assert float(table[-1]["out_mean"]) == pytest.approx(last["probe-left"]["out_mean"])
    assert float(table[3]["psnr_y"]) == pytest.approx(last["samples-val"]["psnr_y"]) and table[4]["psnr_y"] == ""
    assert table[2]["calls"] == "3" and table[1]["calls"] == ""


def test_a_forward_hook_decides_what_the_network_sees(tmp_path, cache):
    mirrored = json.dumps({"name": "hook_methods:MirroredInput"})
    tr = Trainer(tiny_config(cache, f"methods=[{mirrored}]"), out=tmp_path / "f", progress=False)
    batch = next(tr.batches(tr._make_plan(0), 4))
    with torch.no_grad():
        seen = tr.model(batch["lr"].flip(-1)).flip(-1)
        plain = tr.model(batch["lr"])
    terms = tr._train_step(batch)
    assert float(terms["pixel"]) == pytest.approx(float((seen - batch["hr"]).abs().mean()), rel=1e-6)
    assert float(terms["pixel"]) != pytest.approx(float((plain - batch["hr"]).abs().mean()), rel=1e-4)


def test_two_forward_hooks_are_a_recipe_error(tmp_path, cache):
    from attrsr.errors import AttrsrError

    a, b = json.dumps({"name": "hook_methods:MirroredInput"}), json.dumps({"name": "hook_methods:SpaceToDepthHead"})
    with pytest.raises(AttrsrError, match=r"methods\.0 \(hook_methods:MirroredInput\) and methods\.1 \(hook_methods:SpaceToDepthHead\) both take over the forward pass"):
        Trainer(tiny_config(cache, f"methods=[{a}, {b}]"), out=tmp_path / "x", progress=False)


def test_a_wrapped_network_trains_on_hr_size_input_and_its_export_says_what_it_is(tmp_path, cache):
    from safetensors import safe_open

    from attrsr import models
    from attrsr.errors import AttrsrError

    head = json.dumps({"name": "hook_methods:SpaceToDepthHead"})
    tr = run(tiny_config(cache, "train.iterations=3", f"methods=[{head}]", val=True), tmp_path / "h")
    assert tr.methods.methods[0].last_input_size == (32, 32)  # HR-size input (LR patches are 16×16)
    with safe_open(str(tmp_path / "h" / "model.safetensors"), "pt") as fh:
        meta, keys = fh.metadata(), set(fh.keys())
    assert meta["zoo_loadable"] == "false" and meta["architecture"].startswith("hook_methods:SpaceToDepthHead: space-to-depth head")
    assert {"head.weight", "net.head.0.weight"} <= keys
    with pytest.raises(AttrsrError):
        models.load("edsr-baseline", weights=tmp_path / "h" / "model.safetensors", scale=2, n_resblocks=2, n_feats=16)
    plain = run(tiny_config(cache, "train.iterations=1"), tmp_path / "p")
    with safe_open(str(plain.out / "model.safetensors"), "pt") as fh:
        assert fh.metadata()["zoo_loadable"] == "true" and "architecture" not in fh.metadata()


def test_a_second_network_with_its_own_optimiser_is_checkpointed_and_resumes_exactly(tmp_path, cache, monkeypatch):
    """The SR4IR shape: two networks, two optimisers. Crash after the checkpoint, resume: both
    networks, T's momentum and its schedule continue exactly as in an uninterrupted run."""
    from attrsr.engine.networks import Network, restore_networks
    from attrsr.errors import AttrsrError
    from engine_helpers import same_weights, weights

    task = json.dumps({"name": "hook_methods:TaskNetwork"})
    opts = ["train.iterations=8", "train.checkpoint_every=4", f"methods=[{task}]"]
    full = run(tiny_config(cache, *opts), tmp_path / "full")
    t0 = full.methods.methods[0]
    crashed = Trainer(tiny_config(cache, *opts), out=tmp_path / "crash", progress=False)
    init_task = {k: v.clone() for k, v in crashed.methods.methods[0].task.state_dict().items()}
    step = crashed._train_step

    def failing(batch):
        if crashed.step == 6:
            raise RuntimeError("simulated crash")
        return step(batch)

    monkeypatch.setattr(crashed, "_train_step", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    saved = torch.load(tmp_path / "crash" / "latest.pt", weights_only=True)["networks"]["task"]
    assert saved["optimizer"]["state"] and saved["scheduler"]["last_epoch"] == 4  # momentum and schedule saved
    resumed = run(tiny_config(cache, *opts), tmp_path / "crash", resume=True)
    t1 = resumed.methods.methods[0]

    assert same_weights(weights(full.out / "model.safetensors"), weights(resumed.out / "model.safetensors"))
    assert same_weights(t0.task.state_dict(), t1.task.state_dict())
    assert not same_weights(t0.task.state_dict(), init_task)  # T was trained
    assert t1.sched.get_last_lr() == t0.sched.get_last_lr() == [0.05 * 0.5**2]
    assert full.networks["task"].module is t0.task and tr_keys(full) == {"task"}

    with pytest.raises(AttrsrError, match=r"holds networks \['task'\] besides the model, this run registers none"):
        restore_networks({}, {"task": saved}, "latest.pt")
    with pytest.raises(AttrsrError, match="holds networks none"):
        restore_networks({"task": Network(t1.task, t1.opt)}, None, "latest.pt")


def tr_keys(trainer):
    return set(trainer.networks)


def test_a_method_runs_extra_batches_through_the_normal_optimisation_step(tmp_path, cache):
    """ctx.optimise(batch) changes the weights exactly as the loop's step does (same losses, clipping,
    optimiser), without advancing the step count or the schedule."""
    from engine_helpers import same_weights

    opts = ["optim.grad_clip=0.05", "schedule.warmup=4", "methods=" + json.dumps([{"name": "hook_methods:LearnedGain"}])]
    loop = Trainer(tiny_config(cache, *opts), out=tmp_path / "a", progress=False)
    extra = Trainer(tiny_config(cache, *opts), out=tmp_path / "b", progress=False)
    ctx = extra.methods.methods[0].ctx
    batch = next(loop.batches(loop._make_plan(0), 4))
    t_loop = loop._train_step({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
    t_extra = ctx.optimise({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
    assert set(t_extra) == set(t_loop) and float(t_extra["loss"]) == float(t_loop["loss"])
    assert same_weights(loop.model.state_dict(), extra.model.state_dict())
    assert extra.step == 0 and extra.scheduler.last_epoch == 0 and loop.scheduler.last_epoch == 1
