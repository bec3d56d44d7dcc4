"""Small real methods that exercise every engine hook (used by tests/test_engine*.py).

They are referenced from recipes as ``hook_methods:ClassName`` (the tests put this folder on the
import path), which also exercises the engine's ``module:Class`` plug-in route.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from attrsr.engine import Method, SamplePlan


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageWeights(Method):
    """Sampler: draw images with probability ∝ ``weights`` (by image index) instead of uniformly."""

    owns = frozenset({"sampler"})

    class Params(_P):
        weights: list[float]

    def plan_epoch(self, epoch: int, plan: SamplePlan, rng: np.random.Generator) -> SamplePlan:
        w = np.asarray(self.params.weights, dtype=float)
        return SamplePlan.random_crops(rng.choice(len(w), size=len(plan), p=w / w.sum()), rng)


class SwapRB(Method):
    """Augmentation: swap the red and blue channels of LR and HR alike, with probability ``prob``."""

    class Params(_P):
        prob: float = 1.0

    def augment(self, batch, gen, rng):
        swap = torch.rand(batch["lr"].shape[0], generator=gen, device=batch["lr"].device) < self.params.prob
        for key in ("lr", "hr"):
            x = batch[key].clone()
            x[swap] = x[swap].flip(1)
            batch[key] = x
        return batch


class HalfMask(Method):
    """Augmentation with a loss mask: only the left half of each HR patch counts in the pixel loss."""

    def augment(self, batch, gen, rng):
        hr = batch["hr"]
        mask = torch.zeros(hr.shape[0], 1, *hr.shape[-2:], device=hr.device)
        mask[..., : hr.shape[-1] // 2] = 1
        batch["loss_mask"] = mask
        return batch


class InputGradPenalty(Method):
    """Extra loss through the input gradient (double backprop, like the attribution prior):
    ``weight * mean((∂ Σ_window SR / ∂ LR)²)`` for a centred ``window``×``window`` SR window."""

    needs_input_grad = True

    class Params(_P):
        weight: float = 1.0
        window: int = 8

    def extra_losses(self, batch, sr, model):
        h, w = sr.shape[-2:]
        k = self.params.window
        target = sr[..., (h - k) // 2 : (h + k) // 2, (w - k) // 2 : (w + k) // 2].sum()
        (grad,) = torch.autograd.grad(target, batch["lr"], create_graph=True)
        return {"input_grad": self.params.weight * grad.pow(2).mean()}


class FreezeHead(Method):
    """After every optimiser step, restore the first conv's weights (BSPA-style freezing); the
    frozen copy is the method's checkpoint state."""

    def setup(self, ctx):
        self.param = next(p for n, p in ctx.model.named_parameters() if n.endswith("weight"))
        self.frozen = self.param.detach().clone()

    def after_step(self, step):
        with torch.no_grad():
            self.param.copy_(self.frozen)

    def state_dict(self):
        return {"frozen": self.frozen}

    def load_state_dict(self, state):
        self.frozen = state["frozen"]


class EpochCounter(Method):
    """Counts epoch ends and steps seen (state survives resume); records what it saw."""

    def __init__(self, params=None):
        super().__init__(params)
        self.epochs: list[int] = []
        self.steps = 0
        self.images_seen: list[int] = []
        self.hr_seen: list[torch.Tensor] = []

    def extra_losses(self, batch, sr, model):
        self.images_seen += batch["image"].tolist()
        self.hr_seen.append(batch["hr"].detach().clone())
        return {}

    def after_step(self, step):
        self.steps = step

    def on_epoch_end(self, epoch):
        self.epochs.append(epoch)

    def state_dict(self):
        return {"epochs": list(self.epochs), "steps": self.steps}

    def load_state_dict(self, state):
        self.epochs, self.steps = list(state["epochs"]), state["steps"]


class Sleep(Method):
    """Slows each step down so a test can kill the process mid-run."""

    class Params(_P):
        seconds: float = 0.05

    def after_step(self, step):
        time.sleep(self.params.seconds)


class NanAt(Method):
    """Makes the loss NaN at one iteration (1-based), to test the non-finite-loss stop."""

    class Params(_P):
        step: int = 3

    def __init__(self, params=None):
        super().__init__(params)
        self.calls = 0

    def extra_losses(self, batch, sr, model):
        self.calls += 1
        bad = self.calls == self.params.step
        return {"nan": sr.sum() * (float("nan") if bad else 0.0)}


class WeightRecorder(Method):
    """Records the model's parameters after every ``after_step`` (listed after other methods, it sees
    the weights their ``after_step`` left)."""

    def setup(self, ctx):
        self.model = ctx.model
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def after_step(self, step):
        self.snapshots.append({k: v.detach().clone() for k, v in self.model.named_parameters()})


class GlobalNoise(Method):
    """Augmentation drawing from the *global* RNGs (torch, numpy, Python), as third-party code does:
    LR noise whose amplitude comes from numpy and Python draws."""

    def augment(self, batch, gen, rng):
        import random

        amp = 0.02 * float(np.random.rand()) + 0.01 * random.random()
        batch["lr"] = batch["lr"] + amp * torch.rand(batch["lr"].shape)
        return batch


class LearnedGain(Method):
    """Wraps the network in ``setup`` (``ctx.model = …``) with a learnable output gain; keeps the
    context and logs one ``probe`` row per epoch through it."""

    class Wrapped(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.gain = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.gain * self.net(x)

    def setup(self, ctx):
        self.ctx = ctx
        ctx.model = self.Wrapped(ctx.model)

    def on_epoch_end(self, epoch):
        self.ctx.log("probe", {"step": -1, "epoch": epoch, "gain": float(self.ctx.model.gain.detach())})


class BetaMixup(Method):
    """Mixup with a permuted batch, v ~ Beta(a, a) from the numpy generator (LR and HR alike); records its draws."""

    class Params(_P):
        alpha: float = 1.2

    def __init__(self, params=None):
        super().__init__(params)
        self.draws: list[float] = []

    def augment(self, batch, gen, rng):
        v = float(rng.beta(self.params.alpha, self.params.alpha))
        perm = torch.randperm(batch["lr"].shape[0], generator=gen, device=batch["lr"].device)
        for key in ("lr", "hr"):
            batch[key] = v * batch[key] + (1 - v) * batch[key][perm]
        self.draws.append(v)
        return batch


class FlakyTerm(Method):
    """Returns its loss term only at odd calls (a bug the engine must catch: terms must be stable)."""

    def __init__(self, params=None):
        super().__init__(params)
        self.calls = 0

    def extra_losses(self, batch, sr, model):
        self.calls += 1
        return {"sometimes": sr.mean() * 0} if self.calls % 2 else {}


class TopMask(Method):
    """A second loss mask: only the top half of each HR patch counts (with HalfMask: the top-left quarter)."""

    def augment(self, batch, gen, rng):
        assert "loss_mask" not in batch  # a method sees only its own mask
        hr = batch["hr"]
        mask = torch.zeros(hr.shape[0], 1, *hr.shape[-2:], device=hr.device)
        mask[..., : hr.shape[-2] // 2, :] = 1
        batch["loss_mask"] = mask
        return batch


class ValidationProbe(Method):
    """Logs a row from ``setup`` (the run log must exist by then) and adds its own validation rows: the
    mean output on a fixed input, over the whole image and over its left half (a "region" metric)."""

    def setup(self, ctx):
        ctx.log("setup", {"step": ctx.step, "images": len(ctx.images)})

    @staticmethod
    def probe_input():
        return torch.linspace(0, 1, 3 * 12 * 12).reshape(1, 3, 12, 12)

    def validate(self, model, step):
        assert not model.training
        with torch.no_grad():
            sr = model(self.probe_input().to(next(model.parameters()).device))
        return [
            {"dataset": "probe", "out_mean": float(sr.mean())},
            {"dataset": "probe-left", "out_mean": float(sr[..., : sr.shape[-1] // 2].mean()), "calls": step},
        ]


class AuxIsLR(Method):
    """Adds each training image's own LR array as an auxiliary array; ``augment`` checks that it
    arrives equal to the LR patch (uint8 → [0,1]) and counts the patches checked."""

    def setup(self, ctx):
        ctx.add_aux("lr_copy", [ctx.images.lr(i) for i in range(len(ctx.images))])
        self.checked = 0

    def augment(self, batch, gen, rng):
        aux = batch["aux"]["lr_copy"]
        assert aux.dtype == torch.uint8 and aux.device == batch["lr"].device
        assert torch.equal(aux.float() / 255, batch["lr"]), "auxiliary patch not aligned with the LR patch"
        self.checked += aux.shape[0]
        return batch


class CachedGrey(Method):
    """Computes a grey map per training image once through ``ctx.cached_per_image`` (counting calls in
    ``CALLS``), and trains with it as an auxiliary array."""

    CALLS = 0

    class Params(_P):
        version: int = 1

    def setup(self, ctx):
        from attrsr.data.artifacts import weights_hash

        def compute(i):
            type(self).CALLS += 1
            return ctx.images.lr(i).mean(axis=2).astype(np.float32)

        key = {"weights": weights_hash(ctx.model), "version": self.params.version}
        self.arrays = ctx.cached_per_image("grey", key, compute, progress=False)
        ctx.add_aux("grey", self.arrays)


class MirroredInput(Method):
    """Forward hook: the network sees the horizontally mirrored LR patch; its output is mirrored back."""

    def forward(self, model, batch):
        return model(batch["lr"].flip(-1)).flip(-1)


class SpaceToDepthHead(Method):
    """Wraps the network with a learnable head on a nearest-upsampled (HR-size) input, as CutBlur's
    reference does, and feeds HR-size input through its forward hook."""

    export_note = "space-to-depth head (head.*) in front of the zoo network (net.*); input: LR nearest-upsampled ×scale"

    class Wrapped(torch.nn.Module):
        def __init__(self, net, scale):
            super().__init__()
            self.net, self.scale = net, scale
            self.head = torch.nn.Conv2d(3 * scale * scale, 3, 1)

        def forward(self, x, hr_size=False):
            if not hr_size:  # test time: LR in
                x = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
            return self.net(self.head(torch.nn.functional.pixel_unshuffle(x, self.scale)))

    def setup(self, ctx):
        ctx.model = self.Wrapped(ctx.model, ctx.cfg.scale)

    def forward(self, model, batch):
        x = torch.nn.functional.interpolate(batch["lr"], scale_factor=2, mode="nearest")
        self.last_input_size = tuple(x.shape[-2:])
        return model(x, hr_size=True)


class TaskNetwork(Method):
    """A toy SR4IR: a task network T trained beside the SR network S with its own optimiser (SGD with
    momentum) and schedule, registered through ``ctx.add_network``. Phase 1 (the normal step): S's loss
    gets a feature term through T, frozen. Phase 2 (``after_step``): T steps on the SR of the updated S
    (detached) and on HR, classifying each patch by its image index mod 4."""

    class Params(_P):
        weight: float = 0.5

    def setup(self, ctx):
        self.ctx = ctx
        self.task = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1))
        self.opt = torch.optim.SGD(self.task.parameters(), lr=0.05, momentum=0.9)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.task_train = ctx.add_network("task", self.task, self.opt, self.sched)

    def extra_losses(self, batch, sr, model):
        self.batch = batch
        self.task.requires_grad_(False)  # frozen in phase 1: S's loss does not reach T
        term = (self.task(sr) - self.task(batch["hr"])).abs().mean()
        self.task.requires_grad_(True)
        return {"tdp": self.params.weight * term}

    def after_step(self, step):
        with torch.no_grad():
            sr = self.ctx.model(self.batch["lr"].detach())
        labels = self.batch["image"] % 4
        logits = self.task_train(torch.cat([sr, self.batch["hr"]])).mean((2, 3))  # one forward through DDP
        loss = torch.nn.functional.cross_entropy(logits, torch.cat([labels, labels]))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
